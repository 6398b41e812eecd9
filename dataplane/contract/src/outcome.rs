//! What happened to a request: the metric label every answer is counted under.

/// What happened to a request or handshake. Low cardinality by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// WebSocket upgraded (upstream answered 101).
    Upgraded,
    /// Upstream answered; the status class says how.
    Upstream1xx,
    Upstream2xx,
    Upstream3xx,
    Upstream4xx,
    Upstream5xx,
    Unauthorized,
    /// Refused before routing: an ambiguous or invalid head, or bad body framing.
    BadRequest,
    MethodNotAllowed,
    /// The client stalled its request body.
    RequestTimeout,
    NotFound,
    /// 421: a mutual-TLS host asked for over a connection not made for it.
    Misdirected,
    BadGateway,
    Unavailable,
    GatewayTimeout,
    /// Refused by `ip-restriction` or `consumer-restriction`.
    Restricted,
    /// Refused by `limit-conn`, `limit-count` or `limit-req`.
    Limited,
    /// A CORS preflight answered by the gateway.
    Preflight,
    /// Answered with a redirect by `redirect`.
    Redirected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Upgraded => "101",
            Outcome::Upstream1xx => "upstream_1xx",
            Outcome::Upstream2xx => "upstream_2xx",
            Outcome::Upstream3xx => "upstream_3xx",
            Outcome::Upstream4xx => "upstream_4xx",
            Outcome::Upstream5xx => "upstream_5xx",
            Outcome::Unauthorized => "401",
            Outcome::BadRequest => "400",
            Outcome::MethodNotAllowed => "405",
            Outcome::RequestTimeout => "408",
            Outcome::NotFound => "404",
            Outcome::Misdirected => "421",
            Outcome::BadGateway => "502",
            Outcome::Unavailable => "503",
            Outcome::GatewayTimeout => "504",
            Outcome::Restricted => "restricted",
            Outcome::Limited => "limited",
            Outcome::Preflight => "preflight",
            Outcome::Redirected => "redirect",
        }
    }

    pub fn from_upstream_status(status: u16) -> Self {
        match status {
            100..=199 => Outcome::Upstream1xx,
            200..=299 => Outcome::Upstream2xx,
            300..=399 => Outcome::Upstream3xx,
            400..=499 => Outcome::Upstream4xx,
            _ => Outcome::Upstream5xx,
        }
    }
}
