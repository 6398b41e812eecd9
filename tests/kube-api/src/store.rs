//! Objects by resource type, `resourceVersion`s from one counter, and the event history that
//! watches read (bounded: older versions are compacted and answered `410 Gone`).

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use super::resources::{self, ResourceType};

/// How many events the history keeps; a watch from an older version gets 410.
pub const HISTORY: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Event {
    pub resource_version: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    /// ADDED, MODIFIED, DELETED.
    pub kind: &'static str,
    pub object: Value,
}

/// An API error, rendered as a `Status`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn not_found(t: &ResourceType, name: &str) -> Self {
        ApiError {
            details: json!({"name": name, "group": t.group, "kind": t.plural}),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", t.qualified()),
            )
        }
    }

    /// `causes` are `field: message`, as the API server words them.
    pub fn invalid(t: &ResourceType, name: &str, causes: &[String]) -> Self {
        let qualified_kind = if t.group.is_empty() {
            t.kind.clone()
        } else {
            format!("{}.{}", t.kind, t.group)
        };
        ApiError {
            details: json!({
                "name": name, "group": t.group, "kind": t.kind,
                "causes": causes.iter().map(|c| {
                    let (field, message) = c.split_once(": ").unwrap_or(("", c));
                    json!({"reason": "FieldValueInvalid", "message": message, "field": field})
                }).collect::<Vec<_>>(),
            }),
            ..Self::new(
                422,
                "Invalid",
                format!(
                    "{qualified_kind} \"{name}\" is invalid: {}",
                    causes.join(", ")
                ),
            )
        }
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

pub struct Store {
    resource_version: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<(String, String), BTreeMap<(String, String), Value>>,
    pub history: VecDeque<Event>,
    uid_counter: u64,
    /// Who makes the next write, for `managedFields` (set by the HTTP layer per request).
    pub writer: Option<Writer>,
    /// `Warning` headers for the response to the current write (unknown fields pruned).
    pub warnings: Vec<String>,
    /// Lists whose first page was served with `limit`, by (version, kind), for `continue`.
    snapshots: VecDeque<(u64, (String, String), Vec<Value>)>,
}

/// How many paged lists the store keeps for their continuations.
const SNAPSHOTS: usize = 64;

/// The field manager of a write and, for server-side apply, what it applied.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    pub manager: String,
    pub applied: Option<Value>,
    pub force: bool,
    /// `?fieldValidation=`: `Strict` rejects unknown fields, `Ignore` drops them silently, and
    /// anything else (the server's default, `Warn`) drops them with a warning.
    pub field_validation: Option<String>,
}

/// Where objects of `t` are kept: `events.k8s.io/v1` Events are the core Events seen through
/// another schema, as in the real API server.
pub fn key(t: &ResourceType) -> (String, String) {
    if events_api(t) {
        return (String::new(), "events".into());
    }
    (t.group.clone(), t.plural.clone())
}

fn events_api(t: &ResourceType) -> bool {
    t.group == "events.k8s.io" && t.plural == "events"
}

/// `events.k8s.io/v1` field names and their core `v1` counterparts (the API server's conversion).
const EVENT_FIELDS: [(&str, &str); 8] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("related", "related"),
];

fn rename_fields(mut o: Value, to_core: bool) -> Value {
    if let Some(map) = o.as_object_mut() {
        for (events, core) in EVENT_FIELDS {
            let (from, to) = if to_core {
                (events, core)
            } else {
                (core, events)
            };
            if let Some(v) = map.remove(from) {
                map.insert(to.to_string(), v);
            }
        }
    }
    o
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj["metadata"][field].as_str().map(str::to_string)
}

impl Default for Store {
    fn default() -> Self {
        let mut store = Store {
            resource_version: 0,
            types: resources::builtins(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            uid_counter: 0,
            writer: None,
            warnings: Vec::new(),
            snapshots: VecDeque::new(),
        };
        let ns = store.find("", "v1", "namespaces").unwrap();
        for name in ["default", "kube-system", "kube-public"] {
            store
                .create(
                    &ns,
                    "",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                )
                .expect("built-in namespaces");
        }
        store
    }
}

impl Store {
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Every stored version of one object after resource version `after` (as written, oldest
    /// first): what a watch would have seen, for tests that look for intermediate states.
    pub fn versions_of(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        after: u64,
    ) -> Vec<Value> {
        self.history
            .iter()
            .filter(|e| e.resource_version > after && e.group == group && e.plural == plural)
            .filter(|e| e.namespace == namespace && e.object["metadata"]["name"] == name)
            .map(|e| e.object.clone())
            .collect()
    }

    /// The oldest version a watch can start from.
    pub fn oldest_watchable(&self) -> u64 {
        self.history
            .front()
            .map_or(self.resource_version, |e| e.resource_version - 1)
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Keeps what a paged list saw at `rv`, so its continuations read the same state.
    pub fn keep_snapshot(&mut self, t: &ResourceType, rv: u64, objects: Vec<Value>) {
        let k = key(t);
        if self.snapshots.iter().any(|(v, sk, _)| *v == rv && *sk == k) {
            return;
        }
        self.snapshots.push_back((rv, k, objects));
        while self.snapshots.len() > SNAPSHOTS {
            self.snapshots.pop_front();
        }
    }

    /// The objects of `t` as a paged list saw them at `rv`; 410 once that version is compacted
    /// (the API server's wording).
    pub fn snapshot(&self, t: &ResourceType, rv: u64) -> Result<Vec<Value>, ApiError> {
        let k = key(t);
        self.snapshots
            .iter()
            .find(|(v, sk, _)| *v == rv && *sk == k && rv >= self.oldest_watchable())
            .map(|(_, _, objects)| objects.iter().map(|o| self.as_version(t, o.clone())).collect())
            .ok_or_else(|| ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ))
    }

    fn next_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn record(&mut self, t: &ResourceType, kind: &'static str, object: &Value) {
        let (group, plural) = key(t);
        self.history.push_back(Event {
            resource_version: self.resource_version,
            group,
            plural,
            namespace: meta(object, "namespace").unwrap_or_default(),
            kind,
            object: object.clone(),
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// Records field ownership for the pending [`Writer`] (a nameless writer when unset).
    fn track_fields(
        &mut self,
        t: &ResourceType,
        previous: Option<&Value>,
        next: &mut Value,
        subresource: Option<&str>,
    ) {
        let writer = self.writer.take().unwrap_or_default();
        super::managed::record(
            previous,
            next,
            &writer.manager,
            writer.applied.as_ref(),
            subresource,
            writer.force,
            &t.api_version(),
            &Self::now(),
        );
    }

    fn now() -> String {
        jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn uid(&mut self) -> String {
        self.uid_counter += 1;
        let n = self.uid_counter;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (t >> 32) as u32,
            (t >> 16) as u16,
            (n >> 12) & 0xfff,
            n & 0xfff,
            t as u64 & 0xffff_ffff_ffff
        )
    }

    pub fn get(&self, t: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get_stored(t, ns, name).map(|o| self.as_version(t, o))
    }

    fn get_stored(&self, t: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(t))
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .map(|mut o| {
                o["apiVersion"] = json!(t.api_version());
                o
            })
            .ok_or_else(|| ApiError::not_found(t, name))
    }

    /// Objects of `t` in `ns` ("" = all), in name order.
    pub fn list(&self, t: &ResourceType, ns: &str) -> Vec<Value> {
        self.objects
            .get(&key(t))
            .into_iter()
            .flatten()
            .filter(|((n, _), _)| ns.is_empty() || n == ns)
            .map(|(_, o)| self.as_version(t, o.clone()))
            .collect()
    }

    /// Objects are stored as written (Events in core form); reads carry the version asked for.
    pub fn as_version(&self, t: &ResourceType, o: Value) -> Value {
        let mut o = if events_api(t) {
            rename_fields(o, false)
        } else {
            o
        };
        o["apiVersion"] = json!(t.api_version());
        o
    }

    fn check_identity(t: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        if let Some(kind) = obj["kind"].as_str()
            && kind != t.kind
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "the kind {kind:?} does not match the resource {:?}",
                    t.qualified()
                ),
            ));
        }
        Ok(())
    }

    pub fn create(&mut self, t: &ResourceType, ns: &str, obj: Value) -> Result<Value, ApiError> {
        let obj = if events_api(t) {
            rename_fields(obj, true)
        } else {
            obj
        };
        let created = self.create_stored(t, ns, obj)?;
        Ok(self.as_version(t, created))
    }

    fn create_stored(
        &mut self,
        t: &ResourceType,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        Self::check_identity(t, &obj)?;
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let name = match (meta(&obj, "name"), meta(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n,
            (_, Some(prefix)) if !prefix.is_empty() => {
                let suffix = format!("{:05x}", self.resource_version + 1);
                format!("{prefix}{suffix}")
            }
            _ => {
                return Err(ApiError::invalid(
                    t,
                    "",
                    &["metadata.name: Required value: name or generateName is required".into()],
                ));
            }
        };
        super::validation::name(t, &name).map_err(|causes| ApiError::invalid(t, &name, &causes))?;
        let ns = if t.namespaced { ns } else { "" };
        if let Some(given) = meta(&obj, "namespace")
            && t.namespaced
            && !given.is_empty()
            && given != ns
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if t.namespaced {
            let namespaces = ("".to_string(), "namespaces".to_string());
            let exists = self
                .objects
                .get(&namespaces)
                .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())));
            if !exists {
                return Err(ApiError {
                    details: json!({"name": ns, "kind": "namespaces"}),
                    ..ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
                });
            }
            // A namespace being deleted takes nothing new (the NamespaceLifecycle admission).
            let terminating = self
                .objects
                .get(&namespaces)
                .and_then(|m| m.get(&(String::new(), ns.to_string())))
                .is_some_and(|n| n["metadata"]["deletionTimestamp"].is_string());
            if terminating {
                return Err(ApiError {
                    details: json!({"name": name, "group": t.group, "kind": t.plural}),
                    ..ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            t.qualified()
                        ),
                    )
                });
            }
        }
        if self
            .objects
            .get(&key(t))
            .is_some_and(|m| m.contains_key(&(ns.to_string(), name.clone())))
        {
            return Err(ApiError {
                details: json!({"name": name, "group": t.group, "kind": t.plural}),
                ..ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", t.qualified()),
                )
            });
        }
        let obj = self.admit(t, &name, obj, None)?;
        let mut obj = obj;
        let rv = self.next_version();
        let uid = self.uid();
        let m = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        m.insert("name".into(), json!(name));
        if t.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(uid));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert("creationTimestamp".into(), json!(Self::now()));
        m.remove("deletionTimestamp");
        if t.generation {
            m.insert("generation".into(), json!(1));
        }
        if t.status_subresource {
            // Status is not set on create through the main resource.
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        obj["apiVersion"] = json!(t.api_version());
        obj["kind"] = json!(t.kind);
        self.track_fields(t, None, &mut obj, None);
        self.after_write(t, &mut obj)?;
        self.objects
            .entry(key(t))
            .or_default()
            .insert((ns.to_string(), name), obj.clone());
        self.record(t, "ADDED", &obj);
        Ok(obj)
    }

    /// Replaces an object (`PUT`), or its status (`subresource == Some("status")`).
    pub fn update(
        &mut self,
        t: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        let obj = if events_api(t) {
            rename_fields(obj, true)
        } else {
            obj
        };
        let updated = self.update_stored(t, ns, name, obj, subresource)?;
        Ok(self.as_version(t, updated))
    }

    fn update_stored(
        &mut self,
        t: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        Self::check_identity(t, &obj)?;
        let ns = if t.namespaced { ns } else { "" };
        let current = self.get_stored(t, ns, name)?;
        if let Some(given) = meta(&obj, "name")
            && given != name
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ));
        }
        // A uid in the body is a precondition (as the API server takes it on update).
        if let Some(uid) = meta(&obj, "uid")
            && !uid.is_empty()
            && meta(&current, "uid").as_deref() != Some(uid.as_str())
        {
            return Err(ApiError {
                details: json!({"name": name, "group": t.group, "kind": t.plural}),
                ..ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {}: Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        t.plural,
                        meta(&current, "uid").unwrap_or_default()
                    ),
                )
            });
        }
        if let Some(rv) = meta(&obj, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta(&current, "resourceVersion")
        {
            return Err(ApiError {
                details: json!({"name": name, "group": t.group, "kind": t.plural}),
                ..ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        t.qualified()
                    ),
                )
            });
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let mut next = match subresource {
            Some("status") => {
                let mut next = current.clone();
                next["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                if next["status"].is_null() {
                    next.as_object_mut().unwrap().remove("status");
                }
                // Status writes are checked against the schema as well.
                self.admit(t, name, next, Some(&current))?
            }
            Some(other) => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("subresource {other:?} not found"),
                ));
            }
            None => {
                let mut next = obj;
                if t.status_subresource {
                    match current.get("status") {
                        Some(s) => next["status"] = s.clone(),
                        None => {
                            next.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
                // Fields the server owns.
                let m = next["metadata"].as_object_mut().unwrap();
                for owned in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "generation",
                    "namespace",
                    "name",
                ] {
                    match current["metadata"].get(owned) {
                        Some(v) => {
                            m.insert(owned.into(), v.clone());
                        }
                        None => {
                            m.remove(owned);
                        }
                    }
                }
                self.admit(t, name, next, Some(&current))?
            }
        };
        if t.generation && subresource.is_none() {
            let spec_changed = strip_for_generation(&next) != strip_for_generation(&current);
            let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(if spec_changed { g + 1 } else { g });
        }
        next["apiVersion"] = json!(t.api_version());
        next["kind"] = json!(t.kind);
        self.track_fields(t, Some(&current), &mut next, subresource);
        // No-op writes do not bump resourceVersion (as the API server does).
        let mut unchanged = next.clone();
        unchanged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if unchanged == current {
            return Ok(current);
        }
        // Removing the last finalizer of an object being deleted deletes it.
        let deleting = current["metadata"]["deletionTimestamp"].is_string();
        let finalizers_left = next["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let rv = self.next_version();
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        if deleting && !finalizers_left {
            self.objects
                .get_mut(&key(t))
                .map(|m| m.remove(&(ns.to_string(), name.to_string())));
            self.after_delete(t, &next);
            self.record(t, "DELETED", &next);
            return Ok(next);
        }
        self.after_write(t, &mut next)?;
        self.objects
            .entry(key(t))
            .or_default()
            .insert((ns.to_string(), name.to_string()), next.clone());
        self.record(t, "MODIFIED", &next);
        Ok(next)
    }

    /// Deletes, or marks for deletion while finalizers remain. Returns the object.
    pub fn delete(&mut self, t: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let ns = if t.namespaced { ns } else { "" };
        let mut current = self.get_stored(t, ns, name)?;
        let has_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if current["metadata"]["deletionTimestamp"].is_string() {
                return Ok(current);
            }
            let rv = self.next_version();
            current["metadata"]["deletionTimestamp"] = json!(Self::now());
            current["metadata"]["resourceVersion"] = json!(rv.to_string());
            if t.group.is_empty() && t.plural == "namespaces" {
                current["status"] = json!({"phase": "Terminating"});
            }
            self.objects
                .entry(key(t))
                .or_default()
                .insert((ns.to_string(), name.to_string()), current.clone());
            self.record(t, "MODIFIED", &current);
            return Ok(current);
        }
        let rv = self.next_version();
        current["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects
            .get_mut(&key(t))
            .map(|m| m.remove(&(ns.to_string(), name.to_string())));
        self.after_delete(t, &current);
        self.record(t, "DELETED", &current);
        Ok(current)
    }

    /// What the API server does to an object before storing it: Secret `stringData` folded
    /// into `data`, kind-specific validation.
    fn admit(
        &mut self,
        t: &ResourceType,
        name: &str,
        mut obj: Value,
        current: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let causes = super::validation::labels(&obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(t, name, &causes));
        }
        match (t.group.as_str(), t.plural.as_str()) {
            ("", "secrets") => {
                if let Some(Value::Object(string_data)) =
                    obj.as_object_mut().and_then(|o| o.remove("stringData"))
                {
                    use base64::Engine;
                    let data = obj["data"].as_object().cloned().unwrap_or_default();
                    let mut data: Map<String, Value> = data;
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default().to_string();
                        data.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(text)),
                        );
                    }
                    obj["data"] = Value::Object(data);
                }
            }
            ("discovery.k8s.io", "endpointslices") => {
                let mut causes = Vec::new();
                for (i, ep) in obj["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    for (j, addr) in ep["addresses"].as_array().into_iter().flatten().enumerate() {
                        if let Some(ip) = addr
                            .as_str()
                            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                            && ip.is_loopback()
                        {
                            causes.push(format!(
                                "endpoints[{i}].addresses[{j}]: Invalid value: \"{ip}\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
                            ));
                        }
                    }
                }
                if !causes.is_empty() {
                    return Err(ApiError::invalid(t, name, &causes));
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                resources::from_crd(&obj).map_err(|e| ApiError::invalid(t, name, &[e]))?;
            }
            ("", "services") => self.allocate_cluster_ip(t, name, &mut obj, current)?,
            _ => {}
        }
        if let Some(schema) = &t.schema {
            return self.admit_custom(t, name, schema, obj);
        }
        Ok(obj)
    }

    /// A Service's `spec.clusterIP`: allocated from 10.96.0.0/12 when absent (`None` means
    /// headless; `ExternalName` Services get none), kept on updates that omit it, immutable.
    fn allocate_cluster_ip(
        &self,
        t: &ResourceType,
        name: &str,
        obj: &mut Value,
        current: Option<&Value>,
    ) -> Result<(), ApiError> {
        if !obj["spec"].is_object() {
            obj["spec"] = json!({});
        }
        let given = obj["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        let old = current.and_then(|c| c["spec"]["clusterIP"].as_str().map(str::to_string));
        if let Some(old) = old {
            if !given.is_empty() && given != old {
                return Err(ApiError::invalid(
                    t,
                    name,
                    &[format!(
                        "spec.clusterIPs[0]: Invalid value: []string{{\"{given}\"}}: may not change once set"
                    )],
                ));
            }
            obj["spec"]["clusterIP"] = json!(old);
            obj["spec"]["clusterIPs"] = json!([old]);
            return Ok(());
        }
        if obj["spec"]["type"] == "ExternalName" {
            return Ok(());
        }
        if obj["spec"]["type"].is_null() {
            obj["spec"]["type"] = json!("ClusterIP");
        }
        let ip = if given.is_empty() {
            let used: std::collections::BTreeSet<String> = self
                .objects
                .get(&("".to_string(), "services".to_string()))
                .into_iter()
                .flat_map(|m| m.values())
                .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_string))
                .collect();
            let base = u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0));
            let free = (1..(1u32 << 20) - 1)
                .map(|i| std::net::Ipv4Addr::from(base + i).to_string())
                .find(|ip| !used.contains(ip));
            let Some(free) = free else {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    "Internal error occurred: failed to allocate a serviceIP: range is full",
                ));
            };
            free
        } else {
            given
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
        Ok(())
    }

    /// A custom resource through its CRD's schema: pruned, defaulted, validated; unknown fields
    /// rejected, warned about or ignored as the request's `fieldValidation` says.
    fn admit_custom(
        &mut self,
        t: &ResourceType,
        name: &str,
        schema: &Value,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let admitted = super::schema::admit(schema, obj)
            .map_err(|causes| ApiError::invalid(t, name, &causes))?;
        let unknown: Vec<String> = admitted
            .unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        let mode = self
            .writer
            .as_ref()
            .and_then(|w| w.field_validation.as_deref())
            .unwrap_or("Warn");
        match mode {
            _ if unknown.is_empty() => {}
            "Strict" => {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!(
                        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                        unknown.join(", "),
                        kind = t.kind,
                        version = t.version
                    ),
                ));
            }
            "Ignore" => {}
            _ => self.warnings.extend(unknown),
        }
        Ok(admitted.object)
    }

    /// Side effects of a stored write: a CRD registers its kinds and is Established at once.
    fn after_write(&mut self, t: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        if t.plural == "customresourcedefinitions" {
            let now = Self::now();
            let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now});
            obj["status"] = json!({
                "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
                "acceptedNames": obj["spec"]["names"].clone(),
                "storedVersions": obj["spec"]["versions"].as_array().into_iter().flatten()
                    .filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
            });
            let defined = resources::from_crd(obj).map_err(|e| ApiError::invalid(t, "", &[e]))?;
            self.unregister(obj);
            self.types.extend(defined);
        }
        Ok(())
    }

    fn after_delete(&mut self, t: &ResourceType, obj: &Value) {
        if t.plural == "customresourcedefinitions" {
            let kind = self.unregister(obj);
            self.objects.remove(&kind);
        }
    }

    /// Forgets the kinds a CRD defined; returns their (group, plural).
    fn unregister(&mut self, crd: &Value) -> (String, String) {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (group, plural) = (
            text(&crd["spec"]["group"]),
            text(&crd["spec"]["names"]["plural"]),
        );
        self.types
            .retain(|r| !(r.group == group && r.plural == plural));
        (group, plural)
    }
}

/// What `metadata.generation` counts: everything but metadata and status.
fn strip_for_generation(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_stamps_are_rfc_3339_in_whole_seconds_utc() {
        let mut store = Store::default();
        let t = store.find("", "v1", "configmaps").unwrap();
        let before = jiff::Timestamp::now().as_second();
        let created = store
            .create(
                &t,
                "default",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            )
            .unwrap();
        let stamp = created["metadata"]["creationTimestamp"].as_str().unwrap();
        // As metav1.Time marshals: `2006-01-02T15:04:05Z`, no fraction, no offset.
        assert_eq!(stamp.len(), 20, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
        let at = stamp.parse::<jiff::Timestamp>().unwrap().as_second();
        assert!(
            (before..=jiff::Timestamp::now().as_second()).contains(&at),
            "{stamp}"
        );
    }
}
