//! Structured logs to stderr for the binaries: `text` or `json`, levels from `PORTCULLIS_LOG`
//! (e.g. `info`, `portcullis_dataplane=debug`), default `info`.

pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
