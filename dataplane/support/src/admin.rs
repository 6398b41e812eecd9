//! The admin listener: `/healthz`, `/readyz`, `/metrics`, plus endpoints of the embedding
//! process (the standalone controller adds `/status`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::debug;

/// What `/readyz` asks.
pub type ReadyFn = Arc<dyn Fn() -> bool + Send + Sync>;
/// Further GET endpoints: path → `Some((content type, body))`, or `None` for not found.
pub type ExtraFn = Arc<dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync>;

pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: ReadyFn,
    extra: Option<ExtraFn>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let ready = ready.clone();
        let extra = extra.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let registry = registry.clone();
                let ready = ready.clone();
                let extra = extra.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry, &ready, extra.as_ref())) }
            });
            // Limits as on the traffic listeners: small heads, read within 10 s.
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .max_buf_size(8192)
                .max_headers(50)
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                debug!(%error, "admin connection error");
            }
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    registry: &Registry,
    ready: &ReadyFn,
    extra: Option<&ExtraFn>,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let reply = |status: StatusCode, body: String, content_type: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        r
    };
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "ok\n".into(), TEXT),
        "/readyz" if ready() => reply(StatusCode::OK, "ready\n".into(), TEXT),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no route table yet\n".into(),
            TEXT,
        ),
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, registry) {
                Ok(()) => reply(
                    StatusCode::OK,
                    out,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n".into(),
                    TEXT,
                ),
            }
        }
        path => match extra.and_then(|f| f(path)) {
            Some((content_type, body)) => reply(StatusCode::OK, body, content_type),
            None => reply(
                StatusCode::NOT_FOUND,
                "not found: try /healthz, /readyz or /metrics\n".into(),
                TEXT,
            ),
        },
    }
}
