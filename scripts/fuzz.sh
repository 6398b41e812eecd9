#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser (docs/reliability.md, "Fuzzing"): builds the libFuzzer
# targets of fuzz/libfuzzer on the stable toolchain and runs each for a bounded time.
#
#   scripts/fuzz.sh [--seconds N] [--build-only | --no-build] [TARGET...]
#
# N defaults to 10 per target; no TARGET means all. New inputs go to target/fuzz/corpus/<t>/
# (the committed seeds in fuzz/corpus/<t>/ are read, never written); a crash leaves its input in
# target/fuzz/artifacts/<t>/ and the run fails. One line per target; the full libFuzzer output is
# in target/fuzz/logs/<t>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
build_only=false
build=true
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --build-only) build_only=true; shift ;;
        --no-build) build=false; shift ;;
        -h|--help) sed -n 2,10p "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/libfuzzer/Cargo.toml | grep -v '^portcullis-fuzz-targets$')
if [ ${#targets[@]} -eq 0 ]; then
    read -r -a targets <<<"$(echo $all)"
fi
for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$all"; then
        echo "fuzz.sh: no target $t (targets: $(echo $all))" >&2
        exit 2
    fi
done

if ! command -v c++ >/dev/null; then
    echo "fuzz.sh: libfuzzer-sys builds libFuzzer with a C++ compiler and there is none; install one (apt-get install g++)" >&2
    exit 1
fi

# Coverage instrumentation as cargo-fuzz sets it, on stable: the flags are stable rustc and LLVM
# options; `--target` keeps them off build scripts and proc macros (they would not link).
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$PWD/target/fuzz"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
unset CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
started=$(date +%s)
if $build && ! cargo build --release --locked --quiet --manifest-path fuzz/libfuzzer/Cargo.toml \
    --target "$host" "${bins[@]}"; then
    echo "fuzz.sh: the fuzz targets do not build" >&2
    exit 1
fi
$build && echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - started )) s"
$build_only && exit 0

bin_dir="$CARGO_TARGET_DIR/$host/release"
failed=()
for t in "${targets[@]}"; do
    work="$CARGO_TARGET_DIR/corpus/$t"
    artifacts="$CARGO_TARGET_DIR/artifacts/$t"
    log="$CARGO_TARGET_DIR/logs/$t.log"
    mkdir -p "$work" "$artifacts" "$(dirname "$log")"
    # Tables and manifests need room; heads, frames and tokens are small.
    case "$t" in
        sync_table|manifests) max_len=16384 ;;
        *) max_len=4096 ;;
    esac
    status=0
    "$bin_dir/$t" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$work" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p' <<<"$last")
    if [ "$status" -ne 0 ]; then
        echo "fuzz $t: FAILED after ${execs:-?} runs ($cov); input in $artifacts/, log $log"
        grep -m 3 -E "panicked at|ERROR: libFuzzer" "$log" | sed 's/^/    /' || true
        failed+=("$t")
    else
        echo "fuzz $t: ok, ${execs:-?} runs in ${seconds} s ($cov)"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]} (reproduce: docs/reliability.md)" >&2
    exit 1
fi
