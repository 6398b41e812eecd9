//! Responses the dataplane writes itself, byte for byte as docs/behaviour.md §6–§10 give them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use crate::auth::Rejection;
use crate::decision::Refusal;

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const TEXT_HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

pub const NOT_FOUND_BODY: &str = "{\"error_msg\":\"404 Route Not Found\"}\n";
pub const NO_CONFIG_BODY: &str = "{\"error_msg\":\"portcullis dataplane has no route table yet: it is waiting for its configuration\"}\n";

/// The header that marks a 502/504 from an upstream attempt or a relayed upstream 5xx.
pub const UPSTREAM_STATUS: &str = "x-apisix-upstream-status";

/// nginx-style HTML error page: `<html>` … `<hr><center>portcullis</center>` … `</html>`.
pub fn html_error_page(status: StatusCode) -> String {
    let text = status_text(status);
    format!(
        "<html>\n<head><title>{text}</title></head>\n<body>\n<center><h1>{text}</h1></center>\n<hr><center>portcullis</center>\n</body>\n</html>\n"
    )
}

/// nginx's status lines, which APISIX's error pages carry.
pub fn status_text(status: StatusCode) -> String {
    match status.as_u16() {
        405 => "405 Not Allowed".into(),
        408 => "408 Request Time-out".into(),
        502 => "502 Bad Gateway".into(),
        503 => "503 Service Temporarily Unavailable".into(),
        504 => "504 Gateway Time-out".into(),
        code => format!("{code} {}", status.canonical_reason().unwrap_or("")),
    }
}

fn with_body(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    resp
}

pub fn not_found() -> Response<ResponseBody> {
    with_body(StatusCode::NOT_FOUND, TEXT_PLAIN, NOT_FOUND_BODY)
}

pub fn no_config() -> Response<ResponseBody> {
    with_body(StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, NO_CONFIG_BODY)
}

pub fn unauthorized(rejection: &Rejection) -> Response<ResponseBody> {
    let mut resp = with_body(
        StatusCode::UNAUTHORIZED,
        TEXT_PLAIN,
        rejection.reason.body(),
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, rejection.www_authenticate.clone());
    resp
}

/// 502/503/504 page; `from_upstream` adds `X-APISIX-Upstream-Status`.
pub fn gateway_error(status: StatusCode, from_upstream: bool) -> Response<ResponseBody> {
    let mut resp = with_body(status, TEXT_HTML, html_error_page(status));
    if from_upstream {
        resp.headers_mut()
            .insert(UPSTREAM_STATUS, HeaderValue::from(status.as_u16()));
    }
    resp
}

/// The answer to a request the decision refused.
pub fn refusal(refusal: &Refusal) -> Response<ResponseBody> {
    match refusal {
        Refusal::BadRequest(_) => client_error(StatusCode::BAD_REQUEST),
        Refusal::Connect => method_not_allowed(),
        Refusal::NotFound => not_found(),
        Refusal::Placeholder => gateway_error(StatusCode::SERVICE_UNAVAILABLE, false),
        Refusal::Unauthorized(rejection) => unauthorized(rejection),
        Refusal::ClientCertificateRequired => client_error(StatusCode::BAD_REQUEST),
        Refusal::Misdirected => client_error(StatusCode::MISDIRECTED_REQUEST),
        Refusal::Plugin(p) => plugin_refusal(p),
    }
}

/// A traffic plugin's answer: its status, its JSON body (or the status page when it has
/// none, as APISIX sends nginx's), its headers.
fn plugin_refusal(p: &crate::plugins::PluginRefusal) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = if p.body.is_empty() && status.is_success() {
        // A CORS preflight's answer: headers only.
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = status;
        resp
    } else if p.body.is_empty() {
        with_body(status, TEXT_HTML, html_error_page(status))
    } else {
        with_body(
            status,
            HeaderValue::from_static("application/json"),
            p.body.clone(),
        )
    };
    for (name, value) in &p.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// The client's fault (400, 408): an HTML page, and the connection is closed after it, since
/// what follows on it cannot be trusted to be a request.
pub fn client_error(status: StatusCode) -> Response<ResponseBody> {
    let mut resp = with_body(status, TEXT_HTML, html_error_page(status));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 429 for an address over `--per-client-request-rate`; the connection closes after it, so
/// that a client over its rate pays a new connection for each further try.
pub fn client_rate_limited(retry_after: std::time::Duration) -> Response<ResponseBody> {
    let mut resp = with_body(
        StatusCode::TOO_MANY_REQUESTS,
        TEXT_PLAIN,
        "too many requests from this address\n",
    );
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 503 for a WebSocket handshake that arrives on an open connection while the dataplane
/// drains: a session started now would get 1001 at once, so the client is told to go elsewhere
/// before an upstream connection is spent on it.
pub fn draining() -> Response<ResponseBody> {
    let mut resp = with_body(
        StatusCode::SERVICE_UNAVAILABLE,
        TEXT_PLAIN,
        "this gateway is shutting down: connect again\n",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 405 for `CONNECT`: this is not a forward proxy.
pub fn method_not_allowed() -> Response<ResponseBody> {
    let mut resp = client_error(StatusCode::METHOD_NOT_ALLOWED);
    resp.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
    );
    resp
}

/// Raw bytes of the 408 written when a client is too slow to send its request head.
pub fn request_timeout_bytes() -> Vec<u8> {
    let body = html_error_page(StatusCode::REQUEST_TIMEOUT);
    format!(
        "HTTP/1.1 408 Request Time-out\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_are_exact() {
        assert_eq!(
            html_error_page(StatusCode::BAD_GATEWAY),
            "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>portcullis</center>\n</body>\n</html>\n"
        );
        assert!(
            html_error_page(StatusCode::SERVICE_UNAVAILABLE)
                .contains("<title>503 Service Temporarily Unavailable</title>")
        );
        assert!(
            html_error_page(StatusCode::GATEWAY_TIMEOUT).contains("<h1>504 Gateway Time-out</h1>")
        );
        assert_eq!(NOT_FOUND_BODY.len(), 36);
        let raw = String::from_utf8(request_timeout_bytes()).unwrap();
        assert!(raw.starts_with("HTTP/1.1 408 Request Time-out\r\n"));
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
