//! Structured logs to stderr for the binaries: `text` or `json`, levels from `PORTCULLIS_LOG`
//! (e.g. `info`, `portcullis_dataplane=debug`), default `info`.

pub fn init(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into files or log collectors.
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Prints a binary's failure as one line (`error: what: why`), with no stack trace even when
/// `RUST_BACKTRACE` is set (a user error is not a crash), and exits with code 1. Causes whose
/// text the line already holds are not repeated.
pub fn exit_on_error(result: anyhow::Result<()>) {
    if let Err(error) = result {
        eprintln!("error: {}", one_line(&error));
        std::process::exit(1);
    }
}

fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_print_as_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let error = anyhow::Error::new(io).context("cannot read --table t.yaml");
        assert_eq!(
            super::one_line(&error),
            "cannot read --table t.yaml: No such file"
        );
        let error = anyhow::anyhow!("a: b").context("x\ny");
        assert_eq!(super::one_line(&error), "x y: a: b");
        let error = anyhow::Error::msg("inner").context("outer: inner");
        assert_eq!(super::one_line(&error), "outer: inner");
    }
}
