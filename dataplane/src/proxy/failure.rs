//! Why a request was answered by the dataplane instead of the upstream. The failure keeps its
//! source — the client, the upstream, or no upstream to try — until the response is built, so
//! that each maps to exactly one status code, one metric outcome and reason, and one page.

use http::StatusCode;

use crate::metrics::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The client's request body was not valid HTTP/1.1 framing (e.g. a bad chunk size): 400.
    ClientFraming,
    /// The client stopped sending its request body for longer than the body timeout: 408.
    ClientBodyTimeout,
    /// The rule's upstream has no node (or only zero weights): 503.
    NoNodes,
    /// Connecting to every node failed, the last one with a timeout: 504.
    ConnectTimeout,
    /// Connecting to every node failed: 502.
    ConnectFailed,
    /// The upstream's answer did not arrive in time: 504.
    UpstreamTimeout,
    /// The upstream broke the exchange: closed early, or answered something that is not valid
    /// HTTP/1.1 (conflicting lengths, a status outside 100–599, a 101 nobody asked for): 502.
    UpstreamInvalid(&'static str),
}

impl Failure {
    pub fn status(self) -> StatusCode {
        match self {
            Failure::ClientFraming => StatusCode::BAD_REQUEST,
            Failure::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Failure::NoNodes => StatusCode::SERVICE_UNAVAILABLE,
            Failure::ConnectTimeout | Failure::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::ConnectFailed | Failure::UpstreamInvalid(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether an upstream was tried (the response then carries `X-APISIX-Upstream-Status`).
    pub fn upstream_tried(self) -> bool {
        !matches!(
            self,
            Failure::ClientFraming | Failure::ClientBodyTimeout | Failure::NoNodes
        )
    }

    /// The client's fault: the connection cannot be trusted to carry another request.
    pub fn from_client(self) -> bool {
        matches!(self, Failure::ClientFraming | Failure::ClientBodyTimeout)
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Failure::ClientFraming => Outcome::BadRequest,
            Failure::ClientBodyTimeout => Outcome::RequestTimeout,
            Failure::NoNodes => Outcome::Unavailable,
            Failure::ConnectTimeout | Failure::UpstreamTimeout => Outcome::GatewayTimeout,
            Failure::ConnectFailed | Failure::UpstreamInvalid(_) => Outcome::BadGateway,
        }
    }

    /// Metrics reason label.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::ClientFraming => "client_body_framing",
            Failure::ClientBodyTimeout => "client_body_timeout",
            Failure::NoNodes => "no_nodes",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ConnectFailed => "connect_failed",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::UpstreamInvalid(reason) => reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_one_status_and_source() {
        let cases = [
            (Failure::ClientFraming, 400, false, true),
            (Failure::ClientBodyTimeout, 408, false, true),
            (Failure::NoNodes, 503, false, false),
            (Failure::ConnectTimeout, 504, true, false),
            (Failure::ConnectFailed, 502, true, false),
            (Failure::UpstreamTimeout, 504, true, false),
            (Failure::UpstreamInvalid("x"), 502, true, false),
        ];
        for (failure, status, tried, client) in cases {
            assert_eq!(failure.status().as_u16(), status, "{failure:?}");
            assert_eq!(failure.upstream_tried(), tried, "{failure:?}");
            assert_eq!(failure.from_client(), client, "{failure:?}");
            assert_eq!(
                failure.outcome().as_str(),
                status.to_string(),
                "{failure:?}"
            );
        }
    }
}
