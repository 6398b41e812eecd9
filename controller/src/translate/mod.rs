//! `translate(&Snapshot) -> Translation`: a pure function from cluster objects to the route table
//! and the `Accepted` condition of every object that is ours (docs/behaviour.md §2–§5).
//!
//! Problems never stop the rest of the table: a rule with a match problem is left out (A,
//! `Problems::leave_out`), any other rule problem makes it a 503 placeholder (B,
//! `Problems::placeholder`), unresolved references are served without them (C,
//! `Problems::unresolved`), and a consumer problem withdraws its credential (D). Each problem is one
//! `<field path>: <problem>` in the object's status message, in spec order.

mod consumer;
mod route;
mod shadow;
mod tls;
mod upstream;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use portcullis_contract::table::{Consumer, Route, RouteTable};

use crate::snapshot::{CONTROLLER_NAME, Mode, STANDALONE_CLASS, Snapshot};

/// Which kind of object a status is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ApisixRoute,
    ApisixConsumer,
    ApisixTls,
    ApisixUpstream,
    ApisixPluginConfig,
    ApisixGlobalRule,
}

impl Kind {
    /// The object's `kind` on the wire (manifests, the API server, `GET /status`, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApisixRoute => "ApisixRoute",
            Kind::ApisixConsumer => "ApisixConsumer",
            Kind::ApisixTls => "ApisixTls",
            Kind::ApisixUpstream => "ApisixUpstream",
            Kind::ApisixPluginConfig => "ApisixPluginConfig",
            Kind::ApisixGlobalRule => "ApisixGlobalRule",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The `Accepted` condition of one object, as translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` that was translated.
    pub generation: i64,
    /// Every problem, in spec order; empty means `Accepted=True`.
    pub problems: Vec<String>,
    /// What is accepted but probably not meant (a rule another rule always answers first):
    /// shown in the message and as a Warning Event, without refusing the object.
    pub warnings: Vec<String>,
    /// Fingerprint of what the object contributes to the table (and of its problems): when it
    /// changes, the object's `Programmed` waits for the generation that carries the change.
    pub content: u64,
}

impl StatusUpdate {
    pub fn accepted(&self) -> bool {
        self.problems.is_empty()
    }
    /// `Accepted` reason: `Accepted` or `InvalidSpec`.
    pub fn reason(&self) -> &'static str {
        if self.accepted() {
            "Accepted"
        } else {
            "InvalidSpec"
        }
    }
    /// `Accepted` message: empty, or the problems, then the warnings, joined by `; `.
    pub fn message(&self) -> String {
        let warnings = self.warnings.iter().map(|w| format!("warning: {w}"));
        let all: Vec<String> = self.problems.iter().cloned().chain(warnings).collect();
        all.join("; ")
    }
}

/// The result of one translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    pub table: RouteTable,
    pub statuses: Vec<StatusUpdate>,
    /// The Secrets (namespace, name) translation looked up, present or not: the only ones whose
    /// data a provider needs to keep.
    pub secrets_read: BTreeSet<(String, String)>,
}

/// Translates a snapshot into a table of the given generation. Deterministic: the same objects
/// in any order give the same table (and hash) and statuses.
pub fn translate(snapshot: &Snapshot, generation: u64) -> Translation {
    translate_with(snapshot, generation, &mut Memo::default())
}

/// What one translation keeps for the next: each ApisixRoute's rules, problems and content
/// fingerprint, with what they were computed from. A provider keeps one across translations so
/// that a change re-translates only the routes whose inputs changed (a key rotation in a
/// 10,000-rule table re-translates none of them). Reuse never changes the result:
/// [`translate_with`] with any memo gives what [`translate`] gives.
#[derive(Default)]
pub struct Memo {
    routes: std::collections::HashMap<(String, String), MemoRoute>,
    /// The last table's routes as JSON: hashing the next serialises only new routes.
    hashes: portcullis_contract::model::RouteJsonCache,
    /// Routes reused and translated by the last translation.
    pub reused: usize,
    pub translated: usize,
}

struct MemoRoute {
    /// The object: in a cluster its `uid` and `resourceVersion` (the API server changes the
    /// version with every write), from the file provider the content version it gave, else its
    /// whole serialised form (a manifest file may carry both, copied from a cluster, and keep
    /// them through any edit).
    object: u64,
    /// Everything else a route's translation reads, but Secrets: see [`route_environment`].
    environment: u64,
    /// The Secrets it read, with a fingerprint of their data then (`None`: missing).
    secrets: Vec<((String, String), u64)>,
    /// The Services it looked up, with a fingerprint of each and its EndpointSlices then: an
    /// endpoint change re-translates only the routes of that Service.
    services: Vec<((String, String), u64)>,
    rules: Vec<Arc<Route>>,
    problems: Vec<String>,
    content: u64,
}

/// A fingerprint of what [`route::translate`] reads besides its object, Secrets and Services:
/// the translated ApisixUpstreams and plugin configs, and the consumers a rule may name (only
/// names: a route never reads a credential).
fn route_environment(
    upstreams: &upstream::Index,
    plugin_configs: &route::PluginConfigs,
    known: &std::collections::HashSet<&str>,
    compiled: &portcullis_contract::auth::Consumers,
) -> u64 {
    let mut names: Vec<(&str, bool)> = known
        .iter()
        .map(|n| (*n, compiled.id_of(n).is_some()))
        .collect();
    names.sort_unstable();
    // Maps keyed by (namespace, name) as lists: JSON map keys must be strings.
    memo_print(&(
        upstreams.iter().collect::<Vec<_>>(),
        plugin_configs.iter().collect::<Vec<_>>(),
        names,
    ))
}

fn object_fingerprint<K: ResourceExt + serde::Serialize>(object: &K, mode: Mode) -> u64 {
    let meta = object.meta();
    match (mode, &meta.uid, &meta.resource_version) {
        (Mode::Cluster, Some(uid), Some(version)) => memo_print(&(uid, version)),
        // The file provider's versions are made from the content (a manifest's own are not
        // trusted: it replaces them).
        (Mode::Standalone, _, Some(version))
            if version.starts_with(crate::files::CONTENT_VERSION) =>
        {
            memo_print(&(object.namespace(), object.name_any(), version))
        }
        _ => memo_print(object),
    }
}

/// A fingerprint for [`Memo`]: where [`fingerprint`] may hash a part of what does not serialise,
/// this gives a value never given before, so nothing is reused on a partial view.
fn memo_print(value: &impl serde::Serialize) -> u64 {
    use std::hash::Hasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEVER_BEFORE: AtomicU64 = AtomicU64::new(0);
    let mut writer = HashWriter(std::hash::DefaultHasher::new());
    match serde_json::to_writer(&mut writer, value) {
        Ok(()) => writer.0.finish(),
        Err(_) => (1 << 63) | NEVER_BEFORE.fetch_add(1, Ordering::Relaxed),
    }
}

/// [`translate`], reusing from `memo` what has not changed since the last translation with it,
/// and leaving in it what this one computed.
pub fn translate_with(snapshot: &Snapshot, generation: u64, memo: &mut Memo) -> Translation {
    let classes = Classes::of(snapshot);
    let secrets = Secrets::of(snapshot);

    let mut consumer_objects: Vec<_> = snapshot
        .consumers
        .iter()
        .map(Arc::as_ref)
        .filter(|c| classes.is_ours(c.spec.ingress_class_name.as_deref()))
        .collect();
    // Older objects keep duplicate credentials (docs/behaviour.md §4.4).
    oldest_first(&mut consumer_objects);
    let consumer_objects = first_of_each(consumer_objects);
    let mut statuses = Vec::new();
    let mut consumers: Vec<Consumer> = Vec::new();
    let mut claimed = consumer::Claims::default();
    for object in consumer_objects {
        let (consumer, problems) = consumer::translate(object, &secrets, &mut claimed);
        let content = fingerprint(&consumer, &problems);
        statuses.push(status(Kind::ApisixConsumer, object, problems, content));
        consumers.push(consumer);
    }
    consumers.sort_by(|a, b| a.username.cmp(&b.username));

    let upstreams = translate_upstreams(snapshot, &classes, &secrets, &mut statuses);
    let known: std::collections::HashSet<&str> =
        consumers.iter().map(|c| c.username.as_str()).collect();
    let plugin_configs =
        translate_plugin_configs(snapshot, &classes, &secrets, &known, &mut statuses);
    let global = translate_global_rules(snapshot, &classes, &secrets, &mut statuses);

    let mut route_objects: Vec<_> = snapshot
        .routes
        .iter()
        .map(Arc::as_ref)
        .filter(|r| classes.is_ours(r.spec.ingress_class_name.as_deref()))
        .collect();
    route_objects.sort_by_key(|r| (r.namespace().unwrap_or_default(), r.name_any()));
    let route_objects = first_of_each(route_objects);
    // Consumer translation already applies the dataplane's consumer rules, so this compiles;
    // routes are checked against it as a dataplane will.
    let compiled_consumers =
        portcullis_contract::auth::Consumers::compile(&consumers).unwrap_or_default();
    let mut routes: Vec<Arc<Route>> = Vec::new();
    // The status (index in `statuses`) of each route's object.
    let mut owner: Vec<usize> = Vec::new();
    let services = Services::of(snapshot);
    let environment = route_environment(&upstreams, &plugin_configs, &known, &compiled_consumers);
    let secret_print = |id: &(String, String)| memo_print(&secrets.data(&id.0, &id.1));
    let mut kept = std::collections::HashMap::with_capacity(memo.routes.len());
    (memo.reused, memo.translated) = (0, 0);
    for object in route_objects {
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        let object_print = object_fingerprint(object, snapshot.mode);
        let reusable = memo.routes.remove(&key).filter(|m| {
            m.object == object_print
                && m.environment == environment
                // Reading them again also records them as read, as translating would.
                && m.secrets.iter().all(|(id, print)| secret_print(id) == *print)
                && m.services.iter().all(|(id, print)| services.print(id) == *print)
        });
        let entry = match reusable {
            Some(entry) => {
                memo.reused += 1;
                entry
            }
            None => {
                memo.translated += 1;
                // The Secrets this route reads, apart from those read before it.
                let before = secrets.read.take();
                services.read.take();
                let (rules, problems) = route::translate(
                    object,
                    &services,
                    &secrets,
                    &upstreams,
                    &known,
                    &compiled_consumers,
                    &plugin_configs,
                );
                let read = secrets.read.replace(before);
                secrets.read.borrow_mut().extend(read.iter().cloned());
                MemoRoute {
                    object: object_print,
                    environment,
                    secrets: read
                        .into_iter()
                        .map(|id| {
                            let p = secret_print(&id);
                            (id, p)
                        })
                        .collect(),
                    services: services
                        .read
                        .take()
                        .into_iter()
                        .map(|id| {
                            let p = services.print(&id);
                            (id, p)
                        })
                        .collect(),
                    content: fingerprint(&rules, &problems),
                    rules: rules.into_iter().map(Arc::new).collect(),
                    problems,
                }
            }
        };
        owner.extend(std::iter::repeat_n(statuses.len(), entry.rules.len()));
        routes.extend(entry.rules.iter().cloned());
        statuses.push(status(
            Kind::ApisixRoute,
            object,
            entry.problems.clone(),
            entry.content,
        ));
        kept.insert(key, entry);
    }
    // Routes gone from the snapshot leave the memo.
    memo.routes = kept;
    for s in shadow::find(&routes) {
        let (shadowed, by) = (&routes[s.shadowed], &routes[s.by]);
        let rule_name = |r: &Route| {
            r.id.rsplit_once('/')
                .map_or(r.id.clone(), |(_, n)| n.to_string())
        };
        let auth_note = match (shadow::authenticates(shadowed), shadow::authenticates(by)) {
            (true, false) => " and asks for no credential",
            _ => "",
        };
        let place = shadow::place(&s);
        statuses[owner[s.shadowed]].warnings.push(format!(
            "rule {:?} is never matched on {place}: rule {} (same host, path and priority, earlier in table order) takes these requests first{auth_note}; give one of them a higher priority or a distinct match",
            rule_name(shadowed),
            by.id
        ));
        statuses[owner[s.by]].warnings.push(format!(
            "rule {:?} shadows rule {} on {place} (same host, path and priority, earlier in table order){}",
            rule_name(by),
            shadowed.id,
            if auth_note.is_empty() { "" } else { ", which asks for a credential this rule does not" }
        ));
    }
    let tls = translate_tls(snapshot, &classes, &secrets, &mut statuses);
    statuses.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));

    let mut table = RouteTable {
        global,
        generation,
        hash: String::new(),
        routes,
        consumers,
        tls,
    };
    table.hash = memo.hashes.content_hash(&table);
    Translation {
        table,
        statuses,
        secrets_read: secrets.read.into_inner(),
    }
}

/// ApisixUpstreams of our classes by namespace and name, each with its status. Translated
/// before routes, which apply them (a broken one applies to nothing: its backends fail closed).
fn translate_upstreams(
    snapshot: &Snapshot,
    classes: &Classes,
    secrets: &Secrets<'_>,
    statuses: &mut Vec<StatusUpdate>,
) -> upstream::Index {
    let mut index = upstream::Index::new();
    for object in snapshot
        .upstreams
        .iter()
        .map(Arc::as_ref)
        .filter(|u| classes.is_ours(u.spec.ingress_class_name.as_deref()))
    {
        let translated = upstream::translate(object, &snapshot.services, secrets);
        let content = fingerprint(
            &(&translated.base, &translated.ports, &translated.nodes),
            &translated.problems,
        );
        let mut update = status(
            Kind::ApisixUpstream,
            object,
            translated.problems.clone(),
            content,
        );
        update.warnings = translated.warnings.clone();
        statuses.push(update);
        index.insert(
            (object.namespace().unwrap_or_default(), object.name_any()),
            translated,
        );
    }
    index
}

/// ApisixPluginConfigs of our classes, each with its status; rules name them.
fn translate_plugin_configs(
    snapshot: &Snapshot,
    classes: &Classes,
    secrets: &Secrets<'_>,
    consumers: &std::collections::HashSet<&str>,
    statuses: &mut Vec<StatusUpdate>,
) -> route::PluginConfigs {
    let mut index = route::PluginConfigs::new();
    for object in snapshot
        .plugin_configs
        .iter()
        .map(Arc::as_ref)
        .filter(|c| classes.is_ours(c.spec.ingress_class_name.as_deref()))
    {
        let namespace = object.namespace().unwrap_or_default();
        let (plugins, problems) = route::plugin_set(
            &route::PluginList {
                prefix: ".spec",
                plugins: &object.spec.plugins,
                holder: route::Holder::PluginConfig,
                namespace: &namespace,
            },
            secrets,
            consumers,
        );
        let content = fingerprint(&plugins, &problems);
        let accepted = problems.is_empty();
        statuses.push(status(Kind::ApisixPluginConfig, object, problems, content));
        let reads_secrets = object
            .spec
            .plugins
            .iter()
            .any(|p| p.enable && p.secret_ref.is_some());
        index.insert(
            (namespace, object.name_any()),
            accepted.then_some(route::PluginConfig {
                plugins,
                reads_secrets,
            }),
        );
    }
    index
}

/// ApisixGlobalRules of our classes, oldest first, merged into one set of plugins: a plugin
/// two of them name is the older one's (AIC 2.2.0 merges them in no defined order). One that
/// cannot be translated refuses every rule (503) until it is fixed.
fn translate_global_rules(
    snapshot: &Snapshot,
    classes: &Classes,
    secrets: &Secrets<'_>,
    statuses: &mut Vec<StatusUpdate>,
) -> portcullis_contract::table::GlobalRules {
    let mut objects: Vec<_> = snapshot
        .global_rules
        .iter()
        .map(Arc::as_ref)
        .filter(|g| classes.is_ours(g.spec.ingress_class_name.as_deref()))
        .collect();
    oldest_first(&mut objects);
    let mut merged = serde_json::Map::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut refused = Vec::new();
    for object in objects {
        let namespace = object.namespace().unwrap_or_default();
        let own = format!("{namespace}/{}", object.name_any());
        let (plugins, mut problems) = route::plugin_set(
            &route::PluginList {
                prefix: ".spec",
                plugins: &object.spec.plugins,
                holder: route::Holder::GlobalRule,
                namespace: &namespace,
            },
            secrets,
            &Default::default(),
        );
        // Plain data: merging by plugin name is merging the fields of its JSON form.
        let fields = match serde_json::to_value(&plugins) {
            Ok(serde_json::Value::Object(fields)) => Some(fields),
            _ => None,
        };
        if let (true, Some(fields)) = (problems.is_empty(), fields) {
            for (name, config) in fields {
                match owners.get(&name) {
                    Some(older) => problems.push(format!(
                        ".spec.plugins: plugin \"{name}\" is also set by the older ApisixGlobalRule {older}, whose setting applies; remove it from one of them"
                    )),
                    None => {
                        owners.insert(name.clone(), own.clone());
                        merged.insert(name, config);
                    }
                }
            }
        } else {
            if problems.is_empty() {
                problems
                    .push(".spec.plugins: could not be merged with the other global rules".into());
            }
            refused.push(own);
        }
        let content = fingerprint(&plugins, &problems);
        statuses.push(status(Kind::ApisixGlobalRule, object, problems, content));
    }
    // Each part was checked on its own and the merged set is made of them; should it still not
    // read back, every rule fails closed rather than run without the global rules.
    let plugins = match serde_json::from_value(serde_json::Value::Object(merged)) {
        Ok(plugins) => plugins,
        Err(_) => {
            refused.push("(merged)".into());
            Default::default()
        }
    };
    portcullis_contract::table::GlobalRules {
        plugins,
        refused: (!refused.is_empty()).then(|| {
            format!(
                "ApisixGlobalRule {} not accepted: every rule answers 503 until it is fixed or deleted",
                refused.join(", ")
            )
        }),
    }
}

/// ApisixTls objects, oldest first (the older keeps a host two of them claim); the table's
/// certificates in namespace/name order.
fn translate_tls(
    snapshot: &Snapshot,
    classes: &Classes,
    secrets: &Secrets<'_>,
    statuses: &mut Vec<StatusUpdate>,
) -> Vec<portcullis_contract::table::TlsServer> {
    let mut objects: Vec<_> = snapshot
        .tls
        .iter()
        .map(Arc::as_ref)
        .filter(|t| classes.is_ours(t.spec.ingress_class_name.as_deref()))
        .collect();
    oldest_first(&mut objects);
    let mut claims = tls::HostClaims::default();
    let mut servers = Vec::new();
    for object in objects {
        let translated = tls::translate(object, secrets, &mut claims, snapshot.now);
        let content = fingerprint(&translated.server, &translated.problems);
        let mut update = status(Kind::ApisixTls, object, translated.problems, content);
        update.warnings = translated.warnings;
        statuses.push(update);
        servers.extend(translated.server);
    }
    servers.sort_by(|a, b| a.id.cmp(&b.id));
    servers
}

/// One object per namespace and name, the first: a cluster never has two, but manifest files
/// can define one twice, and its consumer or rules twice in a table would make a dataplane
/// refuse the whole table.
fn first_of_each<K: ResourceExt>(objects: Vec<&K>) -> Vec<&K> {
    let mut seen = std::collections::HashSet::new();
    objects
        .into_iter()
        .filter(|o| seen.insert((o.namespace().unwrap_or_default(), o.name_any())))
        .collect()
}

/// Oldest first (creation time, then namespace and name): the older object keeps what two of
/// them claim.
fn oldest_first<K: ResourceExt>(objects: &mut [&K]) {
    objects.sort_by(|a, b| {
        let created = |o: &K| o.creation_timestamp().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| (a.namespace(), a.name_any()).cmp(&(b.namespace(), b.name_any())))
    });
}

fn status<K: ResourceExt>(
    kind: Kind,
    object: &K,
    problems: Vec<String>,
    content: u64,
) -> StatusUpdate {
    StatusUpdate {
        kind,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        generation: object.meta().generation.unwrap_or(0),
        problems,
        warnings: Vec::new(),
        content,
    }
}

/// A stable (per build) hash of an object's translated output, streamed from its JSON form.
fn fingerprint(output: &impl serde::Serialize, problems: &[String]) -> u64 {
    json_print(&(output, problems))
}

/// A stable (per build) 64-bit hash of a value's JSON form, streamed without a buffer.
pub(crate) fn json_print(value: &impl serde::Serialize) -> u64 {
    use std::hash::Hasher;
    let mut writer = HashWriter(std::hash::DefaultHasher::new());
    // Plain data with string keys: serialising cannot fail; a failure would only weaken
    // change detection.
    let _ = serde_json::to_writer(&mut writer, value);
    writer.0.finish()
}

/// Streams a serialisation into a hasher, without a buffer.
struct HashWriter(std::hash::DefaultHasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::hash::Hasher;
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which `ingressClassName`s are ours (docs/behaviour.md §2).
struct Classes {
    mode: Mode,
    /// `--ingress-class`: when not empty, only these of our classes.
    only: Vec<String>,
    /// Our IngressClasses by name, with whether each is marked default.
    ours: BTreeMap<String, bool>,
}

impl Classes {
    fn of(snapshot: &Snapshot) -> Self {
        let ours = snapshot
            .ingress_classes
            .iter()
            .map(Arc::as_ref)
            .filter(|c| {
                c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER_NAME)
                    && (snapshot.only_classes.is_empty()
                        || snapshot.only_classes.contains(&c.name_any()))
            })
            .map(|c| {
                let default = c
                    .annotations()
                    .get("ingressclass.kubernetes.io/is-default-class")
                    .is_some_and(|v| v == "true");
                (c.name_any(), default)
            })
            .collect();
        Classes {
            mode: snapshot.mode,
            only: snapshot.only_classes.clone(),
            ours,
        }
    }

    fn is_ours(&self, class: Option<&str>) -> bool {
        match (self.mode, class.unwrap_or("")) {
            // No class is the `portcullis` class in standalone mode.
            (Mode::Standalone, "" | STANDALONE_CLASS) => {
                self.only.is_empty() || self.only.iter().any(|c| c == STANDALONE_CLASS)
            }
            (Mode::Cluster, "") => self.ours.values().any(|default| *default),
            (_, name) => self.ours.contains_key(name),
        }
    }
}

/// Secret data by namespace and name, decoded once.
pub(crate) struct Secrets<'a> {
    by_name: BTreeMap<(String, String), &'a Secret>,
    read: RefCell<BTreeSet<(String, String)>>,
}

impl<'a> Secrets<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let by_name = snapshot
            .secrets
            .iter()
            .map(Arc::as_ref)
            .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
            .collect();
        Secrets {
            by_name,
            read: RefCell::default(),
        }
    }

    /// `Ok(None)`: the Secret is missing. `data` and `stringData` (folded, as the API server
    /// does) are both read.
    pub(crate) fn data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.read
            .borrow_mut()
            .insert((namespace.to_string(), name.to_string()));
        let secret = self
            .by_name
            .get(&(namespace.to_string(), name.to_string()))?;
        let mut out: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Some(out)
    }
}

/// Services and their EndpointSlices by namespace and Service name, with the names looked up
/// (what a route's translation read, for [`Memo`]).
pub(crate) struct Services<'a> {
    by_name: std::collections::HashMap<(String, String), ServiceEntry<'a>>,
    read: RefCell<BTreeSet<(String, String)>>,
}

#[derive(Default, serde::Serialize)]
struct ServiceEntry<'a> {
    service: Option<&'a k8s_openapi::api::core::v1::Service>,
    /// By name, so that their order in the snapshot does not matter.
    slices: Vec<&'a k8s_openapi::api::discovery::v1::EndpointSlice>,
}

impl<'a> Services<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let mut by_name: std::collections::HashMap<(String, String), ServiceEntry<'a>> =
            std::collections::HashMap::new();
        for service in &snapshot.services {
            let key = (service.namespace().unwrap_or_default(), service.name_any());
            // The first of duplicates, as a search in snapshot order finds.
            by_name
                .entry(key)
                .or_default()
                .service
                .get_or_insert(service);
        }
        for slice in &snapshot.endpoint_slices {
            let Some(name) = slice.labels().get("kubernetes.io/service-name") else {
                continue;
            };
            let key = (slice.namespace().unwrap_or_default(), name.clone());
            by_name.entry(key).or_default().slices.push(slice);
        }
        for entry in by_name.values_mut() {
            entry.slices.sort_by_key(|s| s.name_any());
        }
        Services {
            by_name,
            read: RefCell::default(),
        }
    }

    fn record(&self, namespace: &str, name: &str) -> Option<&ServiceEntry<'a>> {
        self.read
            .borrow_mut()
            .insert((namespace.to_string(), name.to_string()));
        self.by_name.get(&(namespace.to_string(), name.to_string()))
    }

    /// The Service `namespace/name`, if any.
    pub(crate) fn service(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&'a k8s_openapi::api::core::v1::Service> {
        self.record(namespace, name).and_then(|e| e.service)
    }

    /// The EndpointSlices labelled for Service `namespace/name`.
    pub(crate) fn endpoint_slices(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<&'a k8s_openapi::api::discovery::v1::EndpointSlice> {
        self.record(namespace, name)
            .map(|e| e.slices.clone())
            .unwrap_or_default()
    }

    /// A fingerprint of what a route reads of Service `namespace/name` and its slices.
    fn print(&self, id: &(String, String)) -> u64 {
        memo_print(&self.by_name.get(id))
    }
}

#[cfg(test)]
mod tests;
