//! Listeners and the request path: accept → (TLS) → HTTP/1.1 with limits → route → auth →
//! upstream → response, or upgrade and splice.

pub mod access_log;
pub mod body;
mod client_body;
pub mod client_io;
pub mod client_limits;
mod failure;
pub(crate) mod fast;
pub mod forward;
mod health;
pub mod proxy_protocol;
pub mod responses;
pub mod sessions;
pub mod splice;
pub mod tls_front;
pub mod upgrade;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info, warn};

use crate::decision::{Forward, Head, Refusal, decide};
use crate::metrics::{Metrics, Outcome};
use crate::plugins::{ConnSlot, Quota, RequestIdHeader, ResponseRewrite};
use crate::table::balance;
use crate::table::{
    CompiledBackend, CompiledNode, CompiledRoute, CompiledTable, CompiledTimeouts, PassHost,
    Registries, RouteTable, TableError,
};
use body::ResponseBody;
use client_body::{BodyProgress, ClientBody, ReadDeadline};
use client_io::{ClientStream, ConnPhase, GuardedIo, HeadLimits};
pub use failure::Failure;
use forward::Listener;
use splice::{Limits, Splice, SpliceEnd};
use upstream::{UpstreamStream, UpstreamTls};

/// Listener limits (docs/dataplane.md), from flags.
#[derive(Clone, Copy, Debug)]
pub struct ProxySettings {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Between two reads of a request body (then 408).
    pub client_body_timeout: Duration,
    /// Request line plus headers; more is answered 431.
    pub max_header_bytes: usize,
    /// More headers than this is answered 431.
    pub max_headers: usize,
    /// How long a write to a WebSocket client may stall before the connection is ended.
    pub client_send_timeout: Duration,
    /// Close established WebSockets when a new table deletes or changes their consumer's
    /// credential (docs/behaviour.md §11).
    pub close_revoked_websockets: bool,
    /// Close jwt-admitted WebSockets when the token's `exp` (plus grace) passes.
    pub enforce_token_expiry: bool,
    /// How long a drain spreads its Close frames over.
    pub drain_period: Duration,
    /// Label session metrics with the consumer (bounded).
    pub metrics_consumer_label: bool,
    /// JSON access-log lines for handshakes and closed sessions.
    pub access_log: bool,
    /// Tables with more routes are refused (bounds the memory one table may take).
    pub max_routes: usize,
    /// Every client connection starts with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
    /// Caps on connections, in total and per client address, and on requests per address.
    pub client_limits: client_limits::ClientLimits,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            client_body_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            client_send_timeout: Duration::from_secs(10),
            close_revoked_websockets: true,
            enforce_token_expiry: true,
            drain_period: Duration::from_secs(30),
            metrics_consumer_label: false,
            access_log: false,
            max_routes: 100_000,
            proxy_protocol: false,
            client_limits: client_limits::ClientLimits::default(),
        }
    }
}

/// The shared state of a dataplane: the live table and what every connection needs.
pub struct Dataplane {
    table: ArcSwapOption<CompiledTable>,
    /// Established WebSockets by consumer, for revocation.
    sessions: Arc<sessions::Sessions>,
    pub metrics: Metrics,
    upstream_tls: Arc<UpstreamTls>,
    /// Open connections, latency and health of upstream nodes, and limit counters: kept
    /// across tables.
    state: Registries,
    health: Arc<health::Health>,
    /// Certificates of the HTTPS listeners, by SNI.
    pub tls: tls_front::TlsFront,
    settings: ProxySettings,
    /// Set once a drain begins: listeners close, `/readyz` answers 503.
    draining: tokio::sync::watch::Sender<bool>,
    /// Counts open connections (and requests per address) against the caps.
    limiter: Arc<client_limits::Limiter>,
}

impl Dataplane {
    pub fn new(settings: ProxySettings, upstream_tls: UpstreamTls, metrics: Metrics) -> Arc<Self> {
        let health = Arc::new(health::Health::new(metrics.upstream_node_healthy.clone()));
        let limiter =
            client_limits::Limiter::new(settings.client_limits, metrics.connections_active.clone());
        Arc::new(Dataplane {
            table: ArcSwapOption::empty(),
            sessions: Arc::default(),
            metrics,
            upstream_tls: Arc::new(upstream_tls),
            state: Registries::default(),
            health,
            tls: tls_front::TlsFront::new(tls_front::Resumption::default()),
            settings,
            draining: tokio::sync::watch::Sender::new(false),
            limiter,
        })
    }

    /// Shuts down gracefully (docs/websocket-sessions.md, "Drain"): stops accepting, turns
    /// `/readyz` to 503, asks every open WebSocket to close with 1001 spread over
    /// `--drain-period`, and returns once they are gone (or a little after the period).
    pub async fn drain(&self) {
        self.draining.send_replace(true);
        let period = self.settings.drain_period;
        info!(
            websockets = self.sessions.len(),
            period = ?period,
            "draining: no new connections, closing WebSockets over the drain period"
        );
        self.sessions.drain(period).await;
        // The last ones asked get the Close grace to answer.
        let deadline =
            tokio::time::Instant::now() + splice::CLOSE_GRACE + Duration::from_millis(500);
        while !self.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(left = self.sessions.len(), "drained");
        if self.settings.access_log {
            // The closed sessions' lines are written before the process exits.
            tokio::task::spawn_blocking(access_log::settle).await.ok();
        }
    }

    /// Starts active health checks on the current runtime (tables applied before it existed
    /// included); call once from inside the runtime that is to run them.
    pub fn run_health_checks(&self) {
        self.health.run_on(
            tokio::runtime::Handle::current(),
            self.current().as_deref(),
            &self.upstream_tls,
        );
    }

    /// Validates and swaps in a table. Listeners and established connections are untouched;
    /// new requests see the new table. On error the current table stays.
    pub fn apply(&self, table: RouteTable) -> Result<Arc<CompiledTable>, TableError> {
        let generation = table.generation;
        let compiled = if table.routes.len() > self.settings.max_routes {
            Err(TableError::TooManyRoutes {
                routes: table.routes.len(),
                limit: self.settings.max_routes,
            })
        } else {
            CompiledTable::compile_after(table, &self.state, self.table.load().as_deref())
        };
        let prepared = compiled.map(Arc::new).and_then(|compiled| {
            // Certificate configs are built before the swap: a table whose TLS cannot be
            // served is refused whole, like any other problem.
            let tls = self.tls.prepare(&compiled).map_err(TableError::Tls)?;
            Ok((compiled, tls))
        });
        match prepared {
            Ok((compiled, tls)) => {
                self.table.store(Some(compiled.clone()));
                self.tls.install(tls);
                self.health.sync(&compiled, &self.upstream_tls);
                self.metrics.tls_certificate_expiry.clear();
                for server in &compiled.tls.servers {
                    for host in &server.hosts {
                        self.metrics
                            .tls_certificate_expiry
                            .get_or_create(&crate::metrics::HostLabels { host: host.clone() })
                            .set(server.not_after);
                    }
                }
                if self.settings.close_revoked_websockets {
                    let closed = self.sessions.revoke(&compiled);
                    if closed > 0 {
                        info!(
                            generation,
                            closed, "closed WebSockets whose credential was revoked"
                        );
                    }
                }
                self.metrics
                    .table_generation
                    .set(compiled.generation as i64);
                self.metrics
                    .table_loads
                    .get_or_create(&crate::metrics::ResultLabels { result: "applied" })
                    .inc();
                info!(generation, hash = %compiled.hash, routes = compiled.routes.len(), consumers = compiled.consumers.list.len(), "route table applied");
                Ok(compiled)
            }
            Err(error) => {
                self.metrics
                    .table_loads
                    .get_or_create(&crate::metrics::ResultLabels { result: "rejected" })
                    .inc();
                warn!(generation, %error, "route table rejected; the previous table stays in effect");
                Err(error)
            }
        }
    }

    pub fn current(&self) -> Option<Arc<CompiledTable>> {
        self.table.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.table.load().is_some() && !*self.draining.borrow()
    }

    /// Accepts connections until a drain begins, then closes the listening socket (the task
    /// stays, as the connections it started run on this worker's runtime).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        let local = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let info = Listener {
            scheme: if tls { "https" } else { "http" },
            port: local,
        };
        let mut draining = self.draining.subscribe();
        loop {
            let accepted = tokio::select! {
                biased;
                _ = draining.wait_for(|d| *d) => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Refused here, before a task or a TLS handshake is spent on it.
            let permit = match self.limiter.admit() {
                Ok(permit) => permit,
                Err(refusal) => {
                    self.metrics.rejected_connection(refusal.reason());
                    client_limits::refuse(tcp, tls, refusal);
                    continue;
                }
            };
            let dp = self.clone();
            tokio::spawn(
                dp.await_first_byte(tcp, permit, peer, info, tls)
                    .instrument(tracing::debug_span!("conn", %peer)),
            );
        }
        drop(listener);
        std::future::pending::<()>().await
    }

    /// Until a connection sends its first byte it holds only this small future: the state of
    /// a whole connection (`serve_connection`'s, kilobytes) and its read buffer are allocated
    /// when there is something to read, so that sockets that send nothing cost little
    /// (docs/reliability.md). The header timeout runs from the first byte; before it, the same
    /// time is allowed.
    async fn await_first_byte(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        mut permit: client_limits::ConnectionPermit,
        peer: SocketAddr,
        listener: Listener,
        tls: bool,
    ) {
        // The client is known now, unless a PROXY header is to name it.
        if !self.settings.proxy_protocol
            && let Err(refusal) = permit.claim_client(peer.ip(), std::time::Instant::now())
        {
            // Its place is free before the client can read that it was refused.
            drop(permit);
            self.metrics.rejected_connection(refusal.reason());
            return client_limits::refuse(tcp, tls, refusal);
        }
        let deadline = tokio::time::Instant::now() + self.settings.header_timeout;
        let timed_out = |dp: &Self| {
            dp.metrics
                .rejected_connection(if dp.settings.proxy_protocol {
                    "proxy_protocol_timeout"
                } else if tls {
                    "tls_handshake_timeout"
                } else {
                    "idle_timeout"
                })
        };
        if tls || self.settings.proxy_protocol {
            // What reads first (rustls, the PROXY header) reads from the socket itself: wait
            // for a byte without taking it.
            match tokio::time::timeout_at(deadline, tcp.peek(&mut [0u8; 1])).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return,
                Err(_) => return timed_out(&self),
            }
            let early = bytes::BytesMut::new();
            return Box::pin(self.serve_connection(tcp, permit, peer, listener, tls, early)).await;
        }
        // An accepted socket is assumed readable (tokio tries it before the first event), and
        // a request is usually there by now: read it, and wait only if nothing came.
        loop {
            let mut early = bytes::BytesMut::with_capacity(1024);
            match tcp.try_read_buf(&mut early) {
                Ok(_) => {
                    return Box::pin(
                        self.serve_connection(tcp, permit, peer, listener, tls, early),
                    )
                    .await;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            drop(early);
            match tokio::time::timeout_at(deadline, tcp.readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => return timed_out(&self),
            }
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        mut tcp: tokio::net::TcpStream,
        mut permit: client_limits::ConnectionPermit,
        mut peer: SocketAddr,
        listener: Listener,
        tls: bool,
        early: bytes::BytesMut,
    ) {
        if self.settings.proxy_protocol {
            let header = tokio::time::timeout(
                self.settings.header_timeout,
                proxy_protocol::read_header(&mut tcp),
            )
            .await;
            match header {
                Ok(Ok(client)) => peer = client.unwrap_or(peer),
                Ok(Err(error)) => {
                    debug!(%error, "PROXY protocol header refused");
                    self.metrics.rejected_connection("proxy_protocol");
                    return;
                }
                Err(_) => {
                    self.metrics.rejected_connection("proxy_protocol_timeout");
                    return;
                }
            }
        }
        // With a PROXY header, the client it names (otherwise claimed already).
        if let Err(refusal) = permit.claim_client(peer.ip(), std::time::Instant::now()) {
            drop(permit);
            self.metrics.rejected_connection(refusal.reason());
            client_limits::refuse(tcp, tls, refusal);
            return;
        }
        let stream = if tls {
            match self.tls.accept(tcp, self.settings.header_timeout).await {
                Ok(s) => ClientStream::tls(s, permit),
                Err(error) => {
                    debug!(%error, "TLS handshake failed");
                    self.metrics.rejected_connection(error.reason());
                    return;
                }
            }
        } else {
            ClientStream::plain(tcp, permit)
        };
        let conn_tls = stream.conn_tls().map(Arc::new);
        let (stream, prefix, answered, counted) = match self
            .first_request(stream, early, peer, listener, conn_tls.as_deref())
            .await
        {
            fast::FirstRequest::Done => return,
            fast::FirstRequest::Handover {
                stream,
                read,
                answered,
                counted,
            } => (stream, read, answered, counted),
        };
        stream.set_nodelay();
        let phase = Arc::new(if counted {
            ConnPhase::first_request_counted()
        } else {
            ConnPhase::default()
        });
        let limits = HeadLimits {
            header_timeout: self.settings.header_timeout,
            keepalive_timeout: self.settings.keepalive_timeout,
        };
        let io = GuardedIo::new(
            stream,
            prefix,
            answered,
            phase.clone(),
            limits,
            self.metrics.clone(),
        );
        let dp = self.clone();
        let service = service_fn(move |req| {
            let dp = dp.clone();
            let phase = phase.clone();
            let conn_tls = conn_tls.clone();
            async move {
                let tls = conn_tls.as_deref();
                Ok::<_, Infallible>(dp.handle(req, peer, listener, tls, phase).await)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .max_buf_size(self.settings.max_header_bytes.max(8192))
            .max_headers(self.settings.max_headers)
            .header_read_timeout(None)
            .keep_alive(true);
        if let Err(error) = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await
        {
            if error.is_parse_too_large() {
                self.metrics.rejected_connection("header_too_large");
            } else if error.is_parse() {
                self.metrics.rejected_connection("bad_request");
            }
            debug!(%error, "client connection ended with an error");
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        listener: Listener,
        tls: Option<&client_io::ConnTls>,
        phase: Arc<ConnPhase>,
    ) -> Response<ResponseBody> {
        phase.serving();
        let response = self
            .route_and_forward(req, peer, listener, tls, &phase)
            .await;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            response
        } else {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, body.notify_end(phase))
        }
    }

    async fn route_and_forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        listener: Listener,
        tls: Option<&client_io::ConnTls>,
        phase: &Arc<ConnPhase>,
    ) -> Response<ResponseBody> {
        if phase.count_request()
            && let Err(retry_after) = self.limiter.take_request(peer.ip())
        {
            self.metrics.rejected_connection("client_request_rate");
            return responses::client_rate_limited(retry_after);
        }
        let Some(table) = self.current() else {
            return responses::no_config();
        };
        let head = Head {
            method: req.method(),
            version: req.version(),
            uri: req.uri(),
            headers: req.headers(),
            peer: peer.ip(),
            tls: tls.map(client_io::ConnTls::facts),
        };
        let started = std::time::Instant::now();
        let decision = decide(&table, head, unix_now());
        let request_id = decision.request_id;
        let log = self
            .logs_handshake(decision.kind)
            .then(|| access_log::PendingHandshake::start(started, peer, req.uri(), req.headers()));
        let mut consumer = None;
        let draining = self.sessions.is_draining();
        let (mut response, outcome, reason) = match decision.verdict {
            Err(refusal) => refused(&decision.route_id, &refusal),
            Ok(forward) if draining && forward.websocket => {
                self.metrics.rejected_connection("draining");
                return responses::draining();
            }
            Ok(forward) => {
                consumer = forward.consumer.map(|c| c.username.as_str());
                self.forward(req, forward, peer, listener, phase, request_id.as_ref())
                    .await
            }
        };
        if let Some(id) = &request_id {
            id.add_to_response(response.headers_mut());
        }
        if draining && response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The client's next request goes to a connection elsewhere.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        self.metrics
            .request(decision.kind, &decision.route_id, outcome, reason);
        if let Some(log) = log {
            log.finish(
                &decision.route_id,
                consumer,
                response.status().as_u16(),
                reason,
                response.extensions().get::<access_log::NodeName>(),
            );
        }
        response
    }

    /// Sends a decided request upstream and relays the answer, or starts its WebSocket.
    async fn forward(
        &self,
        req: Request<Incoming>,
        mut forward: Forward<'_>,
        peer: SocketAddr,
        listener: Listener,
        phase: &Arc<ConnPhase>,
        request_id: Option<&RequestIdHeader>,
    ) -> Answered {
        let route = forward.route;
        let (mut parts, body) = req.into_parts();
        let client_upgrade = if forward.websocket {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        forward::prepare_request(
            &mut parts,
            peer.ip(),
            listener,
            forward.websocket,
            forward::Changes {
                request_id,
                ..forward::Changes::of(&forward)
            },
        );
        let (body, progress) = ClientBody::new(body, self.settings.client_body_timeout);
        let upstream_req = Request::from_parts(parts, body);

        let quota = forward.admission.quota;
        let (mut response, outcome, reason) = match self
            .exchange(route, &mut forward, upstream_req, &progress)
            .await
        {
            Err(failure) => failure_response(route, failure),
            Ok((
                Exchanged::Upgraded {
                    headers,
                    upstream,
                    early,
                    node,
                },
                timeouts,
            )) => {
                let Some(client_upgrade) = client_upgrade else {
                    // A 101 we did not ask for: refuse to relay it.
                    return failure_response(route, Failure::UpstreamInvalid("unexpected_101"));
                };
                phase.upgraded();
                let plan = self.session_plan(&forward, timeouts, peer, &node);
                let route_id = route.id.clone();
                self.spawn_session(plan.revocation_key, move |ticket| {
                    run_websocket(client_upgrade, upstream, early, plan, ticket)
                        .instrument(tracing::debug_span!("websocket", route = %route_id))
                });
                let mut response = Response::new(ResponseBody::empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                // For the handshake's access-log line.
                response.extensions_mut().insert(node);
                *response.headers_mut() = headers;
                forward::prepare_response(response.headers_mut(), true);
                (response, Outcome::Upgraded, "")
            }
            Ok((
                Exchanged::Refused {
                    status,
                    headers,
                    body,
                },
                _,
            )) => refusal_response(
                status,
                headers,
                body,
                route.traffic.response_rewrite.as_ref(),
            ),
            Ok((Exchanged::Response(resp), _)) => {
                let status = resp.status();
                let (mut parts, body) = resp.into_parts();
                forward::prepare_response(&mut parts.headers, false);
                if status.is_server_error() {
                    parts.headers.insert(
                        responses::UPSTREAM_STATUS,
                        http::HeaderValue::from(status.as_u16()),
                    );
                }
                // `response-rewrite`: a replaced body ends the upstream's (its connection
                // closes with it) and is framed by hyper from its length.
                let body = match route
                    .traffic
                    .response_rewrite
                    .as_ref()
                    .and_then(|r| r.apply(&mut parts.status, &mut parts.headers))
                {
                    Some(new) => ResponseBody::full(bytes::Bytes::from_owner(new)),
                    None => ResponseBody::upstream(body),
                };
                (
                    Response::from_parts(parts, body),
                    Outcome::from_upstream_status(status.as_u16()),
                    "",
                )
            }
        };
        add_plugin_headers(response.headers_mut(), quota, &forward.response_headers);
        (response, outcome, reason)
    }

    /// Starts a WebSocket's splice on its own task, registered so that the proxy can close it
    /// (revocation when it authenticated as a consumer and revocation is on; drain always).
    /// `session` gets the registration, which ends with it.
    fn spawn_session<F>(
        &self,
        revocation_key: Option<u64>,
        session: impl FnOnce(sessions::SessionTicket) -> F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let key = revocation_key.filter(|_| self.settings.close_revoked_websockets);
        let ticket = self.sessions.register(key);
        let control = ticket.control.clone();
        // Spawned as is (not wrapped in another async block, which would store the future twice).
        tokio::spawn(session(ticket));
        // The handshake was authenticated against an older table; a table that revoked the
        // credential since then has already swept the sessions without this one. Checked after
        // registering: a table applied from now on sweeps it (the swap precedes the sweep).
        if let Some(key) = key
            && let Some(table) = self.current()
            && !table.consumers.has_revocation_key(key)
            && control.close(sessions::CloseCause::Revoked)
        {
            info!("closing a WebSocket whose credential was revoked during its handshake");
        }
    }

    /// Whether a request of this kind gets an access-log line (handshakes, with the flag).
    fn logs_handshake(&self, kind: &str) -> bool {
        self.settings.access_log && kind == "websocket"
    }

    /// What a WebSocket admitted by `forward` needs for its session: limits from the route's
    /// timeouts and policy, when it must end, its metric labels and its access-log context.
    fn session_plan(
        &self,
        forward: &Forward<'_>,
        timeouts: CompiledTimeouts,
        client: SocketAddr,
        node: &access_log::NodeName,
    ) -> SessionPlan {
        let route = forward.route;
        let policy = &route.websocket_policy;
        let end_at = session_end(
            tokio::time::Instant::now(),
            unix_now(),
            policy.max_lifetime_ms,
            forward
                .credential_expires
                .filter(|_| self.settings.enforce_token_expiry),
            fastrand::f64(),
        );
        let consumer = forward.consumer.map(|c| c.username.as_str());
        SessionPlan {
            limits: Limits {
                idle: timeouts.read,
                upstream_send: timeouts.send,
                client_send: self.settings.client_send_timeout,
                max_message: policy.max_message_bytes,
                end_at,
            },
            revocation_key: forward.revocation_key(),
            metrics: self.metrics.session(crate::metrics::SessionLabels {
                route: route.id.clone(),
                consumer: self
                    .metrics
                    .consumer_label(self.settings.metrics_consumer_label, consumer),
            }),
            log: self.settings.access_log.then(|| {
                Box::new(access_log::SessionContext {
                    client,
                    consumer: consumer.map(Arc::from),
                    node: node.clone(),
                })
            }),
        }
    }

    /// Connects a decided request (both transports): after the wait its limits asked for, to
    /// the node its balancer picks, its `limit-conn` slot riding on the connection.
    async fn connect_for<'t>(
        &self,
        route: &'t CompiledRoute,
        forward: &mut Forward<'_>,
    ) -> Result<Connected<'t>, Failure> {
        if let Some(delay) = forward.admission.delay {
            tokio::time::sleep(delay).await;
        }
        self.connect_upstream(
            route,
            forward.host.as_deref(),
            &forward.balance_keys,
            forward.admission.slot.take(),
        )
        .await
    }

    /// Picks a backend and node and connects, trying the backend's other nodes on connect
    /// failure (at most its `retries`). 503 without nodes; after failures, 504 if the last try
    /// timed out, else 502. Each attempt is counted on its node (`least_conn`), timed (`ewma`)
    /// and, with passive checks, reported to its health.
    async fn connect_upstream<'t>(
        &self,
        route: &'t CompiledRoute,
        request_host: Option<&str>,
        balance_keys: &[Option<u64>],
        mut slot: Option<ConnSlot>,
    ) -> Result<Connected<'t>, Failure> {
        let upstream = &route.upstream;
        let (index, backend) = upstream.pick_backend().ok_or(Failure::NoNodes)?;
        if backend.nodes.is_empty() {
            return Err(Failure::NoNodes);
        }
        let timeouts = backend.timeouts(upstream);
        let key = balance_keys.get(index).copied().flatten();
        let mut last_error = None;
        for node in backend.node_order(key) {
            let open = node.state.track();
            let started = std::time::Instant::now();
            match upstream::connect(
                node,
                backend,
                request_host,
                &self.upstream_tls,
                timeouts.connect,
            )
            .await
            {
                Ok(stream) => {
                    node.state.record_latency(
                        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    );
                    return Ok(Connected {
                        stream: stream.counted(open, slot.take()),
                        backend,
                        node,
                        timeouts,
                    });
                }
                Err(error) => {
                    debug!(route = %route.id, backend = %backend.name, %error, "upstream connect failed");
                    let outcome = if error.is_timeout() {
                        balance::Outcome::Timeout
                    } else {
                        balance::Outcome::TcpFailure
                    };
                    self.health.passive(backend, node, outcome);
                    last_error = Some(error);
                }
            }
        }
        let timed_out = last_error.as_ref().is_some_and(|e| e.is_timeout());
        match last_error {
            Some(error) => {
                warn!(route = %route.id, backend = %backend.name, %error, "no upstream node reachable")
            }
            // Every node has weight 0.
            None => return Err(Failure::NoNodes),
        }
        Err(if timed_out {
            Failure::ConnectTimeout
        } else {
            Failure::ConnectFailed
        })
    }

    /// Connects, sends the request and waits for the response head. Also the timeouts in
    /// force for what follows (the chosen backend's).
    async fn exchange(
        &self,
        route: &CompiledRoute,
        forward: &mut Forward<'_>,
        mut req: Request<ClientBody>,
        progress: &BodyProgress,
    ) -> Result<(Exchanged, CompiledTimeouts), Failure> {
        let connected = self.connect_for(route, forward).await?;
        let timeouts = connected.timeouts;
        pass_host(req.headers_mut(), &connected, forward);
        if forward.websocket && http_body::Body::is_end_stream(req.body()) {
            let (parts, _empty_body) = req.into_parts();
            return Ok((
                self.exchange_upgrade(route, connected, &parts).await?,
                timeouts,
            ));
        }
        let Connected {
            stream,
            backend,
            node,
            ..
        } = connected;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, ClientBody>(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::UpstreamInvalid("handshake"))?;
        // The connection is driven here until the response head arrives (no task of its own
        // for a handshake); afterwards it is either handed back for the splice (101) or spawned
        // to stream the body.
        let mut conn = Box::pin(conn.without_shutdown());
        let send = sender.send_request(req);
        tokio::pin!(send);
        let deadline = tokio::time::sleep(timeouts.read);
        tokio::pin!(deadline);
        let mut read_deadline = ReadDeadline::new(timeouts.read);
        let mut finished: Option<
            hyper::Result<hyper::client::conn::http1::Parts<TokioIo<UpstreamStream>>>,
        > = None;
        let response = loop {
            tokio::select! {
                biased;
                sent = &mut send => break sent,
                done = &mut conn, if finished.is_none() => finished = Some(done),
                _ = &mut deadline => match read_deadline.on_fire(progress, tokio::time::Instant::now()) {
                    Some(next) => deadline.as_mut().reset(next),
                    None => {
                        self.health.passive(backend, node, balance::Outcome::Timeout);
                        return Err(Failure::UpstreamTimeout);
                    }
                },
            }
        };
        // A failed exchange is the client's when its body was at fault.
        let client_fault = || match progress.state() {
            client_body::BodyState::Malformed => Some(Failure::ClientFraming),
            client_body::BodyState::TimedOut => Some(Failure::ClientBodyTimeout),
            _ => None,
        };
        let response = response.map_err(|error| {
            debug!(route = %route.id, %error, "upstream request failed");
            client_fault().unwrap_or(Failure::UpstreamInvalid("upstream_error"))
        })?;
        if !(100..=599).contains(&response.status().as_u16()) {
            self.health
                .passive(backend, node, balance::Outcome::HttpFailure);
            return Err(Failure::UpstreamInvalid("invalid_status"));
        }
        self.health
            .passive_status(backend, node, response.status().as_u16());
        // hyper lets Transfer-Encoding override Content-Length; RFC 9112 §6.3 calls the pair
        // a sign of smuggling, and the strict reading refuses it.
        let headers = response.headers();
        if headers.contains_key(http::header::TRANSFER_ENCODING)
            && headers.contains_key(http::header::CONTENT_LENGTH)
        {
            return Err(Failure::UpstreamInvalid("invalid_framing"));
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if !forward::upgrade_acceptable(route, response.headers()) {
                return Err(Failure::UpstreamInvalid(CREDENTIAL_SELECTED));
            }
            let parts = match finished {
                Some(done) => done,
                None => conn.await,
            }
            .map_err(|_| Failure::UpstreamInvalid("upstream_error"))?;
            return Ok((
                Exchanged::Upgraded {
                    headers: response.into_parts().0.headers,
                    upstream: parts.io.into_inner(),
                    early: parts.read_buf,
                    node: access_log::NodeName::of(node),
                },
                timeouts,
            ));
        }
        if finished.is_none() {
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    debug!(%error, "upstream connection ended with an error");
                }
            });
        }
        Ok((Exchanged::Response(response), timeouts))
    }

    /// A body-less WebSocket handshake: written and answered without hyper's client.
    async fn exchange_upgrade(
        &self,
        route: &CompiledRoute,
        connected: Connected<'_>,
        parts: &http::request::Parts,
    ) -> Result<Exchanged, Failure> {
        let Connected {
            mut stream,
            backend,
            node,
            timeouts,
        } = connected;
        let answer =
            match tokio::time::timeout(timeouts.read, upgrade::handshake(&mut stream, parts)).await
            {
                Err(_) => {
                    self.health
                        .passive(backend, node, balance::Outcome::Timeout);
                    return Err(Failure::UpstreamTimeout);
                }
                Ok(Err(error)) => {
                    debug!(route = %route.id, %error, "upstream handshake failed");
                    self.health
                        .passive(backend, node, balance::Outcome::HttpFailure);
                    return Err(Failure::UpstreamInvalid(error.reason()));
                }
                Ok(Ok(answer)) => answer,
            };
        // A failed upgrade is a status like any other for passive checks (a 101 is a success
        // when the healthy list has it, as APISIX's default list does not: then it says nothing).
        self.health
            .passive_status(backend, node, answer.status.as_u16());
        if answer.status == StatusCode::SWITCHING_PROTOCOLS {
            if !forward::upgrade_acceptable(route, &answer.headers) {
                return Err(Failure::UpstreamInvalid(CREDENTIAL_SELECTED));
            }
            return Ok(Exchanged::Upgraded {
                headers: answer.headers,
                upstream: stream,
                early: answer.rest,
                node: access_log::NodeName::of(node),
            });
        }
        Ok(Exchanged::Refused {
            status: answer.status,
            headers: answer.headers,
            body: answer.rest,
        })
    }
}

/// 502 reason: the upstream selected a subprotocol carrying the route's credential prefix.
const CREDENTIAL_SELECTED: &str = "credential_subprotocol_selected";

/// A connection to the node chosen for a request, and what it was chosen under.
pub(super) struct Connected<'t> {
    pub stream: UpstreamStream,
    pub backend: &'t CompiledBackend,
    pub node: &'t CompiledNode,
    /// The backend's timeouts (or the rule's).
    pub timeouts: CompiledTimeouts,
}

/// What the route's plugins add to an answer that went upstream: `limit-count`'s
/// `X-RateLimit-*`, `cors`'s headers.
fn add_plugin_headers(
    headers: &mut http::HeaderMap,
    quota: Option<Quota>,
    extra: &[(http::HeaderName, http::HeaderValue)],
) {
    if let Some(quota) = quota {
        for (name, value) in quota.headers() {
            headers.insert(name, value);
        }
    }
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
}

/// `passHost`: the `Host` the upstream sees (the client's, the node's, or `upstreamHost`).
/// `X-Forwarded-Host` keeps the client's.
fn pass_host(headers: &mut http::HeaderMap, connected: &Connected<'_>, forward: &Forward<'_>) {
    // `proxy-rewrite`'s host wins, as in APISIX.
    if forward.rewrite.as_ref().is_some_and(|r| r.host.is_some()) {
        return;
    }
    let value = match &connected.backend.pass_host {
        PassHost::Pass => return,
        PassHost::Node => {
            let node = connected.node;
            http::HeaderValue::from_str(&format!("{}:{}", node.host, node.port))
        }
        PassHost::Rewrite(host) => http::HeaderValue::from_str(host),
    };
    if let Ok(value) = value {
        headers.insert(http::header::HOST, value);
    }
}

/// A response with the outcome and reason it is counted under.
type Answered = (Response<ResponseBody>, Outcome, &'static str);

/// The answer to a request the decision refused (both transports).
fn refused(route_id: &str, refusal: &Refusal) -> Answered {
    debug!(route = %route_id, reason = refusal.reason(), "request refused");
    (
        responses::refusal(refusal),
        refusal.outcome(),
        refusal.reason(),
    )
}

/// The answer when the exchange failed: the client's 400/408, or 502/503/504.
fn failure_response(route: &CompiledRoute, failure: Failure) -> Answered {
    debug!(route = %route.id, reason = failure.reason(), "request failed");
    let response = if failure.from_client() {
        responses::client_error(failure.status())
    } else {
        responses::gateway_error(failure.status(), failure.upstream_tried())
    };
    (response, failure.outcome(), failure.reason())
}

/// An upstream's non-101 answer to a handshake, read whole, relayed as a normal response
/// (after the route's `response-rewrite`).
fn refusal_response(
    status: StatusCode,
    mut headers: http::HeaderMap,
    body: bytes::Bytes,
    rewrite: Option<&ResponseRewrite>,
) -> Answered {
    forward::prepare_response(&mut headers, false);
    // Re-framed by us: the length is what was read.
    headers.remove(http::header::CONTENT_LENGTH);
    if status.is_server_error() {
        headers.insert(
            responses::UPSTREAM_STATUS,
            http::HeaderValue::from(status.as_u16()),
        );
    }
    let mut sent = status;
    let body = match rewrite.and_then(|r| r.apply(&mut sent, &mut headers)) {
        Some(new) => bytes::Bytes::from_owner(new),
        None => body,
    };
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = sent;
    *response.headers_mut() = headers;
    (response, Outcome::from_upstream_status(status.as_u16()), "")
}

/// What the upstream answered.
enum Exchanged {
    /// Any response but a 101; its connection streams the body on its own task.
    Response(Response<Incoming>),
    /// A 101: its headers, the raw upstream stream and any bytes read past the head.
    Upgraded {
        headers: http::HeaderMap,
        upstream: UpstreamStream,
        early: bytes::Bytes,
        /// The node it was proxied to.
        node: access_log::NodeName,
    },
    /// A handshake the upstream answered with anything but 101, read whole.
    Refused {
        status: StatusCode,
        headers: http::HeaderMap,
        body: bytes::Bytes,
    },
}

/// Binds `count` listening sockets on one address with `SO_REUSEPORT`, so that each worker
/// thread accepts its own connections and keeps them (the kernel spreads new connections), as
/// nginx's worker processes do. With port 0 the first socket picks the port for all.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut addr = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When a session must end and why: after the route's lifetime (less `jitter` × a tenth, so
/// that sessions opened together end apart), or when its credential expires (`expires`, Unix
/// seconds), whichever comes first. A time too far ahead to represent is no end at all.
fn session_end(
    now: tokio::time::Instant,
    unix_now: u64,
    lifetime_ms: u64,
    expires: Option<u64>,
    jitter: f64,
) -> Option<(tokio::time::Instant, sessions::CloseCause)> {
    let lifetime = (lifetime_ms > 0).then(|| {
        let lifetime = Duration::from_millis(lifetime_ms);
        let at = lifetime.saturating_sub(lifetime.mul_f64(jitter.clamp(0.0, 1.0) / 10.0));
        (now.checked_add(at), sessions::CloseCause::MaxLifetime)
    });
    let expiry = expires.map(|expires| {
        let left = Duration::from_secs(expires.saturating_sub(unix_now));
        (now.checked_add(left), sessions::CloseCause::TokenExpired)
    });
    [lifetime, expiry]
        .into_iter()
        .flatten()
        .filter_map(|(at, cause)| Some((at?, cause)))
        .min()
}

/// What a WebSocket session takes from its handshake (see [`Dataplane::session_plan`]).
pub(super) struct SessionPlan {
    limits: Limits,
    revocation_key: Option<u64>,
    metrics: Arc<crate::metrics::SessionHandles>,
    /// For the access-log line when the session ends; `None` without `--access-log`.
    log: Option<Box<access_log::SessionContext>>,
}

impl SessionPlan {
    /// The node it goes to, when the access log wants it.
    fn node(&self) -> Option<&access_log::NodeName> {
        self.log.as_ref().map(|l| &l.node)
    }
}

/// Waits for the client's upgrade, then hands the connection to a [`WebSocketSession`] on a task
/// of its own: this future holds hyper's upgrade and the session plan, the session's task only
/// what an open WebSocket needs.
async fn run_websocket(
    client: hyper::upgrade::OnUpgrade,
    upstream: UpstreamStream,
    upstream_early: bytes::Bytes,
    plan: SessionPlan,
    ticket: sessions::SessionTicket,
) {
    let Ok(client) = client.await else {
        debug!("client upgrade did not complete");
        return;
    };
    // Unwrap hyper's box to the raw stream: an idle WebSocket then holds only the two sockets.
    let (client, client_early) = match client.downcast::<TokioIo<GuardedIo>>() {
        Ok(parts) => (parts.io.into_inner().into_inner(), parts.read_buf),
        Err(_) => {
            warn!("internal: client upgrade has an unexpected type");
            return;
        }
    };
    let session = WebSocketSession::new(
        client,
        &client_early,
        upstream,
        &upstream_early,
        plan,
        ticket,
    );
    tokio::spawn(session.instrument(tracing::Span::current()));
}

/// A WebSocket being relayed: all that an open one holds, in one struct, so that its task is
/// this and a few bytes of `await` state. (An `async fn` taking these as arguments keeps the
/// arguments and the locals made from them side by side: 936 bytes against about 520.)
pub(super) struct WebSocketSession {
    client: ClientStream,
    upstream: UpstreamStream,
    splice: Splice,
    metrics: Active,
    /// For the access-log line when the session ends; `None` without `--access-log`.
    log: Option<Box<access_log::SessionContext>>,
    started: std::time::Instant,
    /// Its place in the registry of open sessions, left when the task drops this.
    _ticket: sessions::SessionTicket,
    /// The splice ended and was counted.
    finished: bool,
}

impl WebSocketSession {
    /// The session of an upgraded client and its upstream. What each side sent right behind
    /// its handshake (already read) starts its stream of frames.
    pub(super) fn new(
        client: ClientStream,
        client_early: &[u8],
        upstream: UpstreamStream,
        upstream_early: &[u8],
        plan: SessionPlan,
        ticket: sessions::SessionTicket,
    ) -> WebSocketSession {
        let SessionPlan {
            limits,
            metrics,
            log,
            ..
        } = plan;
        let metrics = Active::new(metrics);
        let mut splice = Splice::new(limits, ticket.control.clone(), metrics.0.clone());
        splice.early(client_early, upstream_early);
        WebSocketSession {
            client,
            upstream,
            splice,
            metrics,
            log,
            started: std::time::Instant::now(),
            _ticket: ticket,
            finished: false,
        }
    }

    /// Counts and logs how the session ended.
    fn ended(&mut self, end: std::io::Result<SpliceEnd>) {
        let report = self.splice.finish();
        let (reason, code) = match end {
            Ok(SpliceEnd::Closed) => ("closed", ""),
            Ok(SpliceEnd::Proxy(cause)) => (cause.label(), cause.code_str()),
            Ok(SpliceEnd::WriteStalled) => ("write_stalled", ""),
            Err(_) => ("io_error", ""),
        };
        let duration = self.started.elapsed();
        let metrics = &self.metrics.0;
        metrics.closed(reason, code);
        metrics.duration.observe(duration.as_secs_f64());
        if let Some(context) = self.log.take() {
            access_log::session_closed(
                &context,
                &metrics.labels.route,
                duration,
                &report,
                reason,
                code,
            );
        }
        debug!(reason, "websocket ended");
    }
}

/// Copies bytes between the two until the connection ends, then counts and logs how. Written
/// by hand rather than as an `async fn (self)`, which would keep `self` twice (its argument and
/// the local it is moved into).
impl Future for WebSocketSession {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.finished {
            // Polled again after it ended (not by a task): count and log nothing twice.
            return Poll::Ready(());
        }
        let mut run = this.splice.run(&mut this.client, &mut this.upstream);
        let end = std::task::ready!(Pin::new(&mut run).poll(cx));
        this.finished = true;
        this.ended(end);
        // The ticket, the sockets and the rest go when the task drops this future, right after.
        Poll::Ready(())
    }
}

/// Counts a session as active while it lives, however its task ends.
struct Active(Arc<crate::metrics::SessionHandles>);

impl Active {
    fn new(metrics: Arc<crate::metrics::SessionHandles>) -> Self {
        metrics.active.inc();
        Active(metrics)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Consumer, Credential, RouteTable, key_digest_hex};

    fn table(generation: u64, consumers: &[(&str, &[u8])]) -> RouteTable {
        RouteTable {
            global: Default::default(),
            generation,
            hash: String::new(),
            routes: vec![],
            consumers: consumers
                .iter()
                .map(|(name, key)| Consumer {
                    plugins: Default::default(),
                    username: name.to_string(),
                    custom_id: None,
                    credential: Some(Credential::KeyAuth {
                        key_sha256: key_digest_hex(key),
                    }),
                })
                .collect(),
            tls: Vec::new(),
        }
    }

    #[test]
    fn a_session_ends_at_its_lifetime_or_its_token_expiry_whichever_is_first() {
        use sessions::CloseCause::{MaxLifetime, TokenExpired};
        let now = tokio::time::Instant::now();
        let unix = 1_800_000_000;
        assert_eq!(session_end(now, unix, 0, None, 0.5), None);
        assert_eq!(
            session_end(now, unix, 10_000, None, 0.0),
            Some((now + Duration::from_secs(10), MaxLifetime))
        );
        assert_eq!(
            session_end(now, unix, 10_000, None, 1.0),
            Some((now + Duration::from_secs(9), MaxLifetime)),
            "less a tenth at most"
        );
        assert_eq!(
            session_end(now, unix, 10_000, Some(unix + 3), 0.0),
            Some((now + Duration::from_secs(3), TokenExpired))
        );
        assert_eq!(
            session_end(now, unix, 0, Some(unix - 5), 0.0),
            Some((now, TokenExpired)),
            "expired during the handshake: at once"
        );
        // A crafted token with an `exp` of 1e19 (or u64::MAX): no deadline, and no panic.
        assert_eq!(session_end(now, unix, 0, Some(u64::MAX), 0.0), None);
        assert_eq!(
            session_end(now, unix, 5_000, Some(u64::MAX), 0.0),
            Some((now + Duration::from_secs(5), MaxLifetime))
        );
        assert_eq!(
            session_end(now, unix, u64::MAX, None, 0.0).map(|e| e.1),
            Some(MaxLifetime)
        );
    }

    /// Starts a session that runs until asked to close; the receiver gets the cause.
    fn start(dp: &Dataplane, key: u64) -> tokio::sync::oneshot::Receiver<sessions::CloseCause> {
        let (tell, told) = tokio::sync::oneshot::channel();
        dp.spawn_session(Some(key), move |ticket| async move {
            let cause =
                std::future::poll_fn(|cx| match ticket.control.poll_requested(cx.waker()) {
                    Some(cause) => std::task::Poll::Ready(cause),
                    None => std::task::Poll::Pending,
                })
                .await;
            drop(ticket);
            let _ = tell.send(cause);
        });
        told
    }

    #[tokio::test]
    async fn a_credential_revoked_during_the_handshake_closes_the_session_at_registration() {
        let dp = Dataplane::new(
            ProxySettings::default(),
            UpstreamTls::new(None).unwrap(),
            Metrics::default(),
        );
        let authenticated_under = dp.apply(table(1, &[("jack", b"old")])).unwrap();
        let key = authenticated_under.consumers.list[0].revocation_key;
        let kept = start(&dp, key);
        // The revoking table lands between authentication and the upstream's 101.
        dp.apply(table(2, &[("jack", b"new")])).unwrap();
        let late = start(&dp, key);
        let within = Duration::from_secs(5);
        assert_eq!(
            tokio::time::timeout(within, late).await.unwrap().ok(),
            Some(sessions::CloseCause::Revoked),
            "the late session must be closed"
        );
        assert_eq!(
            tokio::time::timeout(within, kept).await.unwrap().ok(),
            Some(sessions::CloseCause::Revoked),
            "the sweep closes the registered one"
        );
        let valid_key = dp.current().unwrap().consumers.list[0].revocation_key;
        let mut valid = start(&dp, valid_key);
        tokio::task::yield_now().await;
        assert!(
            valid
                .try_recv()
                .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Empty),
            "a session with a current credential runs on"
        );
        assert_eq!(dp.sessions.len(), 1);
    }

    /// An idle WebSocket's cost is mostly its task, whose size is this future's: ~500 bytes
    /// holds the two sockets and the splice; more means something else is kept per connection
    /// (docs/benchmarks.md, idle RSS per WebSocket, target 2 KiB in all).
    #[test]
    fn an_open_websocket_task_holds_little_more_than_its_sockets_and_splice() {
        fn future_size<F>(
            _: impl FnOnce(ClientStream, UpstreamStream, SessionPlan, sessions::SessionTicket) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let task = future_size(|client, upstream, plan, ticket| {
            WebSocketSession::new(client, b"", upstream, b"", plan, ticket)
        });
        let parts = std::mem::size_of::<ClientStream>()
            + std::mem::size_of::<UpstreamStream>()
            + std::mem::size_of::<Splice>();
        assert!(
            task <= parts + 128,
            "session future is {task} bytes, its parts {parts}"
        );
    }
}
