//! Tests that need an address other than loopback run in a network namespace of their own.

use std::process::Command;

/// The address [`in_private_netns`] puts on the namespace's `lo`: a stand-in for a pod IP,
/// which the API server would refuse in `127.0.0.0/8`.
pub const POD_IP: &str = "10.123.0.1";

/// Runs the calling test again inside a network namespace of its own (`unshare -rn`, `lo` up,
/// [`POD_IP`] on `lo`), so EndpointSlices can name an address that is not loopback while
/// every connection stays on the test's own `lo`. Returns `true` in the re-run (do the test),
/// `false` in the original (the re-run passed).
pub fn in_private_netns(test: &str) -> bool {
    if std::env::var_os("PORTCULLIS_TEST_NETNS").is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let script =
        format!("ip link set lo up && ip addr add {POD_IP}/32 dev lo && exec \"$0\" \"$@\"");
    // A mount namespace too, so a test may mount over paths (e.g. a pod's /run) privately.
    let out = Command::new("unshare")
        .args(["-rnm", "sh", "-c", &script])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("PORTCULLIS_TEST_NETNS", "1")
        .output()
        .expect("unshare (util-linux) and ip (iproute2) are installed");
    // The re-run's output goes through this test's captured stdout, prefixed, so that its own
    // `test result:` line is not counted as a second test run.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines() {
        println!("netns| {line}");
    }
    assert!(
        out.status.success(),
        "{test} failed inside its network namespace:\n{text}"
    );
    false
}
