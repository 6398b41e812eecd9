//! `?watch=true`: a chunked stream of `{"type", "object"}` lines from the store's history, with
//! `resourceVersion` semantics, `410 Gone` for compacted versions, bookmarks, `timeoutSeconds`,
//! and `sendInitialEvents`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use super::http::{Body, Shared};
use super::resources::ResourceType;
use super::selector::{FieldSelector, Selector};
use super::store::ApiError;

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(json!({"type": kind, "object": object}).to_string() + "\n")
}

pub fn respond(
    shared: Arc<Shared>,
    t: ResourceType,
    ns: String,
    q: &[(String, String)],
) -> hyper::Response<Body> {
    // A selector the API server cannot parse is refused before the watch starts (400).
    let selectors = Selector::parse(param(q, "labelSelector").unwrap_or(""))
        .map_err(|e| format!("unable to parse requirement: {e}"))
        .and_then(|l| {
            FieldSelector::parse(param(q, "fieldSelector").unwrap_or("")).map(|f| (l, f))
        });
    let (labels, fields) = match selectors {
        Ok(s) => s,
        Err(message) => {
            return super::http::json_response(
                400,
                &super::store::ApiError::new(400, "BadRequest", message).status(),
            );
        }
    };
    let bookmarks = param(q, "allowWatchBookmarks") == Some("true");
    let initial_events = param(q, "sendInitialEvents") == Some("true");
    let timeout = Duration::from_secs(
        param(q, "timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1800),
    );
    let requested: Option<u64> = param(q, "resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut changes = shared.changed.subscribe();
    tokio::spawn(async move {
        let matches = |o: &Value| {
            (ns.is_empty() || o["metadata"]["namespace"].as_str() == Some(ns.as_str()))
                && labels.matches(&o["metadata"]["labels"])
                && fields.matches(o)
        };
        let stored = super::store::key(&t);
        let bookmark = |rv: u64| json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
        // Decide under the lock, send after it.
        let (first, start): (Vec<Bytes>, Option<u64>) = {
            let store = shared.lock();
            match requested {
                Some(rv) if rv < store.oldest_watchable() => {
                    let gone = ApiError::new(
                        410,
                        "Expired",
                        format!(
                            "too old resource version: {rv} ({})",
                            store.oldest_watchable() + 1
                        ),
                    );
                    (vec![line("ERROR", &gone.status())], None)
                }
                Some(rv) if !initial_events => (vec![], Some(rv)),
                _ => {
                    // No version (or "0", or initial events asked for): the current state first.
                    let now = store.resource_version();
                    let mut first: Vec<Bytes> = store
                        .list(&t, &ns)
                        .into_iter()
                        .filter(|o| matches(o))
                        .map(|o| line("ADDED", &o))
                        .collect();
                    if initial_events {
                        let mut b = bookmark(now);
                        b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                        first.push(line("BOOKMARK", &b));
                    }
                    (first, Some(now))
                }
            }
        };
        for l in first {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let Some(mut cursor) = start else { return };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let pending: Result<Vec<Bytes>, ()> = {
                let store = shared.lock();
                if cursor < store.oldest_watchable() {
                    Err(())
                } else {
                    let out = store
                        .history
                        .iter()
                        .filter(|e| {
                            e.resource_version > cursor
                                && (e.group.as_str(), e.plural.as_str())
                                    == (stored.0.as_str(), stored.1.as_str())
                        })
                        .filter(|e| matches(&e.object))
                        .map(|e| line(e.kind, &store.as_version(&t, e.object.clone())))
                        .collect();
                    cursor = store.resource_version();
                    Ok(out)
                }
            };
            match pending {
                Err(()) => {
                    let gone = ApiError::new(410, "Expired", "too old resource version");
                    let _ = tx.send(line("ERROR", &gone.status())).await;
                    return;
                }
                Ok(lines) => {
                    for l in lines {
                        if tx.send(l).await.is_err() {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                _ = changes.recv() => {}
                _ = tick.tick() => {
                    if bookmarks && tx.send(line("BOOKMARK", &bookmark(cursor))).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let mut r = hyper::Response::new(StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        http::header::TRANSFER_ENCODING,
        http::HeaderValue::from_static("chunked"),
    );
    r
}
