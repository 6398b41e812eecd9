//! The HTTP side of the test API server: paths, verbs, content types, `Status` errors.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::{Value, json};

use super::resources::ResourceType;
use super::selector::Selector;
use super::store::{ApiError, Store, Writer};

pub type Body = BoxBody<Bytes, Infallible>;

pub struct Shared {
    pub store: Mutex<Store>,
    pub token: String,
    pub changed: tokio::sync::broadcast::Sender<()>,
    /// Tokens bound to RBAC rules (a service account's); the main token may do everything.
    pub restricted: Mutex<Vec<(String, super::rbac::Rules)>>,
    /// Every request received, in order (tests count what a client sends).
    pub requests: Mutex<Vec<Received>>,
    /// While set, every request is answered `500` as an API server whose etcd is down answers
    /// (the port accepts, nothing succeeds; not `503`, which kube-rs retries by itself).
    pub unavailable: std::sync::atomic::AtomicBool,
    /// While true, `PATCH …/status` requests are held unanswered (an API server too slow to
    /// answer); they proceed when it turns false. `held_status_patches` counts those held now.
    pub hold_status_patches: tokio::sync::watch::Sender<bool>,
    pub held_status_patches: std::sync::atomic::AtomicUsize,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: std::time::Instant,
    pub method: Method,
    /// Path and query.
    pub uri: String,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn json_response(code: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(e: ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
pub enum Target {
    Version,
    OpenApiRoot,
    OpenApiV2,
    OpenApi { group_version: String },
    CoreVersions,
    Groups,
    Resources { group: String, version: String },
    Objects(ObjectPath),
    Unknown,
}

#[derive(Debug, PartialEq, Clone)]
pub struct ObjectPath {
    pub group: String,
    pub version: String,
    pub plural: String,
    /// `None`: every namespace (or a cluster-scoped resource).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn route(path: &str, known: impl Fn(&str, &str, &str) -> bool) -> Target {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return Target::Version,
        ["openapi", "v3"] => return Target::OpenApiRoot,
        ["openapi", "v2"] => return Target::OpenApiV2,
        ["openapi", "v3", "api", v] => {
            return Target::OpenApi {
                group_version: v.to_string(),
            };
        }
        ["openapi", "v3", "apis", g, v] => {
            return Target::OpenApi {
                group_version: format!("{g}/{v}"),
            };
        }
        ["api"] => return Target::CoreVersions,
        ["apis"] => return Target::Groups,
        ["api", v] => {
            return Target::Resources {
                group: String::new(),
                version: v.to_string(),
            };
        }
        ["apis", g, v] => {
            return Target::Resources {
                group: g.to_string(),
                version: v.to_string(),
            };
        }
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Target::Unknown,
    };
    let object =
        |plural: &str, namespace: Option<&str>, name: Option<&&str>, sub: Option<&&str>| {
            Target::Objects(ObjectPath {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                namespace: namespace.map(str::to_string),
                name: name.map(|s| s.to_string()),
                subresource: sub.map(|s| s.to_string()),
            })
        };
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if tail.len() <= 2 && known(group, version, plural) =>
        {
            object(plural, Some(ns), tail.first(), tail.get(1))
        }
        [plural, tail @ ..] if tail.len() <= 2 => object(plural, None, tail.first(), tail.get(1)),
        _ => Target::Unknown,
    }
}

fn query(req: &Request<hyper::body::Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub async fn handle(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            at: std::time::Instant::now(),
            method: req.method().clone(),
            uri: req.uri().to_string(),
        });
    {
        // Bounded for the long-running `kube-test-apiserver`: the oldest half goes.
        let mut log = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() > 200_000 {
            log.drain(..100_000);
        }
    }
    if shared
        .unavailable
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Ok(error(ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: etcdserver: request timed out",
        )));
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let rules = shared
        .restricted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(t, _)| *t == token)
        .map(|(_, r)| r.clone());
    if token != shared.token && rules.is_none() {
        return Ok(error(ApiError::new(401, "Unauthorized", "Unauthorized")));
    }
    let target = {
        let store = shared.lock();
        route(req.uri().path(), |g, v, p| store.find(g, v, p).is_some())
    };
    if let (Some(rules), Target::Objects(path)) = (&rules, &target) {
        let q = query(&req);
        if let Err(e) = rules.allow(req.method(), path, &q) {
            return Ok(error(e));
        }
    }
    Ok(match target {
        Target::Version => json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-portcullis-test", "platform": "linux/amd64"}),
        ),
        Target::CoreVersions => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        Target::Groups => json_response(200, &groups(&shared.lock())),
        Target::OpenApiRoot => json_response(200, &super::openapi::root(&shared.lock())),
        Target::OpenApiV2 => {
            let protobuf = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains(super::openapi::V2_PROTOBUF));
            let mut r = Response::new(Full::new(Bytes::from(super::openapi::v2(protobuf))).boxed());
            let media = if protobuf {
                super::openapi::V2_PROTOBUF_SERVED
            } else {
                "application/json"
            };
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(media),
            );
            r
        }
        Target::OpenApi { group_version } => {
            match super::openapi::group_version(&shared.lock(), &group_version) {
                Some(doc) => json_response(200, &doc),
                None => error(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            }
        }
        Target::Resources { group, version } => {
            let store = shared.lock();
            let resources: Vec<Value> = store
                .types()
                .iter()
                .filter(|t| t.group == group && t.version == version)
                .flat_map(ResourceType::discovery)
                .collect();
            if resources.is_empty() {
                error(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ))
            } else {
                let gv = if group.is_empty() {
                    version
                } else {
                    format!("{group}/{version}")
                };
                json_response(
                    200,
                    &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
                )
            }
        }
        Target::Objects(path) => objects(req, path, shared).await,
        Target::Unknown => error(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    })
}

fn groups(store: &Store) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in store.types().iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) if !versions.contains(&t.version) => {
                versions.push(t.version.clone())
            }
            Some(_) => {}
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let list: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": list, "preferredVersion": list[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

async fn objects(
    req: Request<hyper::body::Incoming>,
    path: ObjectPath,
    shared: Arc<Shared>,
) -> Response<Body> {
    let Some(t) = shared.lock().find(&path.group, &path.version, &path.plural) else {
        return error(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    if t.namespaced != path.namespace.is_some()
        && (path.name.is_some() || req.method() != Method::GET)
    {
        return error(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let q = query(&req);
    let ns = path.namespace.clone().unwrap_or_default();
    let method = req.method().clone();
    let header_text = |name: header::HeaderName, default: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(default)
            .to_string()
    };
    // The field manager: ?fieldManager=, else the user agent's program name (as the server does).
    let user_agent = header_text(header::USER_AGENT, "");
    let manager = param(&q, "fieldManager")
        .map(str::to_string)
        .unwrap_or_else(|| user_agent.split('/').next().unwrap_or("").to_string());
    let content_type = header_text(header::CONTENT_TYPE, "application/json");
    let accept = header_text(header::ACCEPT, "");
    // Who writes, for managedFields and fieldValidation; apply patches add what they applied.
    let writer = Writer {
        manager: manager.clone(),
        applied: None,
        force: param(&q, "force") == Some("true"),
        field_validation: param(&q, "fieldValidation").map(str::to_string),
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(ApiError::new(
                400,
                "BadRequest",
                "cannot read the request body",
            ));
        }
    };
    let protobuf = content_type.starts_with(super::protobuf::CONTENT_TYPE);
    let parse = |body: &Bytes| -> Result<Value, ApiError> {
        if protobuf {
            return super::protobuf::decode(body)
                .map_err(|e| ApiError::new(415, "UnsupportedMediaType", e));
        }
        serde_json::from_slice(body)
            .or_else(|_| serde_yaml::from_slice(body))
            .map_err(|e| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("the body is not JSON or YAML: {e}"),
                )
            })
    };
    // Taken under the same lock as the write they belong to.
    let mut warnings = Vec::new();
    let result = match (method, &path.name) {
        (Method::GET, None) if param(&q, "watch").is_some_and(|w| w == "true" || w == "1") => {
            return super::watch::respond(shared, t, ns, &q);
        }
        (Method::GET, None) => list(&mut shared.lock(), &t, &ns, &q).map(|v| (200, v)),
        (Method::GET, Some(name)) => shared.lock().get(&t, &ns, name).map(|v| (200, v)),
        (Method::POST, None) => parse(&body)
            .and_then(|obj| {
                let mut store = shared.lock();
                store.writer = Some(writer.clone());
                let created = store.create(&t, &ns, obj);
                warnings = std::mem::take(&mut store.warnings);
                created
            })
            .map(|v| (201, v)),
        (Method::PUT, Some(name)) => parse(&body)
            .and_then(|obj| {
                let mut store = shared.lock();
                store.writer = Some(writer.clone());
                let updated = store.update(&t, &ns, name, obj, path.subresource.as_deref());
                warnings = std::mem::take(&mut store.warnings);
                updated
            })
            .map(|v| (200, v)),
        (Method::PATCH, Some(name)) => {
            if path.subresource.as_deref() == Some("status") {
                hold_status_patch(&shared).await;
            }
            let is_apply = content_type.starts_with("application/apply-patch");
            let subresource = path.subresource.as_deref();
            let mut store = shared.lock();
            let applied = if is_apply {
                if param(&q, "fieldManager").is_none_or(str::is_empty) {
                    return error(ApiError::new(
                        422,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                match parse(&body) {
                    Ok(v) => Some(v),
                    Err(e) => return error(e),
                }
            } else {
                None
            };
            let force = writer.force;
            let writer = Writer {
                applied: applied.clone(),
                ..writer
            };
            let patched = match (store.get(&t, &ns, name), &applied) {
                // Server-side apply creates what does not exist (a subresource: 404).
                (Err(e), Some(applied)) if e.code == 404 && subresource.is_none() => {
                    store.writer = Some(writer);
                    store.create(&t, &ns, applied.clone()).map(|v| (201, v))
                }
                (current, _) => current
                    .and_then(|current| {
                        if let Some(applied) = &applied {
                            super::managed::check_apply(
                                &current,
                                applied,
                                &manager,
                                subresource,
                                force,
                            )?;
                        }
                        let builtin = super::resources::is_builtin(&t);
                        let patched = super::patch::apply(&current, &body, &content_type, builtin)?;
                        // A patch that changes the uid (a stale writer's, for an object
                        // re-created under the same name) is refused; the status strategy
                        // takes metadata from the stored object instead.
                        let uid = |o: &serde_json::Value| {
                            o["metadata"]["uid"].as_str().map(str::to_owned)
                        };
                        if subresource.is_none() && uid(&patched) != uid(&current) {
                            return Err(ApiError::invalid(
                                &t,
                                name,
                                &[format!(
                                    "metadata.uid: Invalid value: {:?}: field is immutable",
                                    uid(&patched).unwrap_or_default()
                                )],
                            ));
                        }
                        store.writer = Some(writer);
                        store.update(&t, &ns, name, patched, subresource)
                    })
                    .map(|v| (200, v)),
            };
            warnings = std::mem::take(&mut store.warnings);
            patched
        }
        (Method::DELETE, Some(name)) => shared.lock().delete(&t, &ns, name).map(|v| (200, v)),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    };
    let _ = shared.changed.send(());
    let mut response = match result {
        Ok((code, value)) if accept.contains("as=Table") => {
            json_response(code, &super::table::render(&t, value))
        }
        Ok((code, value)) => json_response(code, &value),
        Err(e) => error(e),
    };
    for warning in warnings {
        // RFC 7234 warn-code 299, as the API server sends them.
        let text = format!("299 - {}", serde_json::Value::String(warning));
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

/// Waits while status patches are held; counted as held until then (or until the client gives
/// up and the request is dropped).
async fn hold_status_patch(shared: &Shared) {
    use std::sync::atomic::Ordering;
    struct Held<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let mut hold = shared.hold_status_patches.subscribe();
    if !*hold.borrow_and_update() {
        return;
    }
    shared.held_status_patches.fetch_add(1, Ordering::Relaxed);
    let _held = Held(&shared.held_status_patches);
    let _ = hold.wait_for(|h| !*h).await;
}

fn list(
    store: &mut Store,
    t: &ResourceType,
    ns: &str,
    q: &[(String, String)],
) -> Result<Value, ApiError> {
    let labels = Selector::parse(param(q, "labelSelector").unwrap_or("")).map_err(|e| {
        ApiError::new(
            400,
            "BadRequest",
            format!("unable to parse requirement: {e}"),
        )
    })?;
    let fields = super::selector::FieldSelector::parse(param(q, "fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    let limit: Option<usize> = param(q, "limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    // A continued list reads the snapshot its first page was served from.
    let (rv, snapshot, start) = match param(q, "continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, start) = super::paging::decode(token)?;
            let snapshot = store.snapshot(t, rv)?;
            (rv, snapshot, Some(start))
        }
        None => {
            let rv = store.resource_version();
            let all = store.list(t, "");
            if limit.is_some() {
                store.keep_snapshot(t, rv, all.clone());
            }
            (rv, all, None)
        }
    };
    let selected: Vec<Value> = snapshot
        .into_iter()
        .filter(|o| ns.is_empty() || o["metadata"]["namespace"].as_str() == Some(ns))
        .filter(|o| {
            start
                .as_ref()
                .is_none_or(|s| super::paging::position(o) >= *s)
        })
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    let items = match limit {
        Some(limit) if selected.len() > limit => {
            let next = super::paging::position(&selected[limit]);
            metadata["continue"] = json!(super::paging::encode(rv, &next));
            if labels.is_empty() && fields.is_empty() {
                metadata["remainingItemCount"] = json!(selected.len() - limit);
            }
            selected.into_iter().take(limit).collect()
        }
        _ => selected,
    };
    Ok(json!({
        "kind": format!("{}List", t.kind),
        "apiVersion": t.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_objects_and_discovery() {
        let known = |_: &str, _: &str, p: &str| p != "status";
        assert_eq!(route("/version", known), Target::Version);
        assert_eq!(
            route("/apis/discovery.k8s.io/v1", known),
            Target::Resources {
                group: "discovery.k8s.io".into(),
                version: "v1".into()
            }
        );
        let Target::Objects(p) = route("/api/v1/namespaces/demo/secrets/jack-key", known) else {
            panic!()
        };
        assert_eq!(
            (p.namespace.as_deref(), p.plural.as_str(), p.name.as_deref()),
            (Some("demo"), "secrets", Some("jack-key"))
        );
        let Target::Objects(p) = route("/api/v1/namespaces/demo", known) else {
            panic!()
        };
        assert_eq!(
            (p.namespace, p.plural.as_str(), p.name.as_deref()),
            (None, "namespaces", Some("demo"))
        );
        let Target::Objects(p) = route(
            "/apis/apisix.apache.org/v2/namespaces/demo/apisixroutes/echo/status",
            known,
        ) else {
            panic!()
        };
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let Target::Objects(p) = route("/apis/apisix.apache.org/v2/apisixroutes", known) else {
            panic!()
        };
        assert_eq!((p.namespace, p.name), (None, None));
        assert_eq!(route("/healthz/x/y/z/w", known), Target::Unknown);
    }
}
