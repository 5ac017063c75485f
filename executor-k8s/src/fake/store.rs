//! The fake API server's state: objects, resource versions, change history, selectors,
//! and the owner-reference garbage collector.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `pods`
    Pods,
    /// `secrets`
    Secrets,
}

impl Kind {
    /// From the URL segment (`pods`, `secrets`).
    pub fn from_path(s: &str) -> Option<Self> {
        match s {
            "pods" => Some(Kind::Pods),
            "secrets" => Some(Kind::Secrets),
            _ => None,
        }
    }

    /// The URL segment.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Secrets => "secrets",
        }
    }

    /// The object kind (`Pod`).
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Pods => "Pod",
            Kind::Secrets => "Secret",
        }
    }
}

/// An API error: HTTP status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// The `Status` object body.
    pub(crate) fn body(&self, retry_after: Option<u64>) -> Value {
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(s) = retry_after {
            v["details"] = json!({"retryAfterSeconds": s});
        }
        v
    }
}

/// One change, as the watch delivers it.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) kind: Kind,
    pub(crate) ns: String,
    pub(crate) event: &'static str,
    pub(crate) object: Arc<Value>,
}

/// A parsed label selector (`a=b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selector(Vec<Req>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    /// Parses a selector; empty selects everything.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&s[start..]);
        let set = |v: &str| -> Result<Vec<String>, String> {
            let v = v.trim();
            let inner = v
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("bad set {v:?}"))?;
            Ok(inner.split(',').map(|x| x.trim().to_string()).collect())
        };
        let mut reqs = Vec::new();
        for t in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            let r = if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Req::NotIn(k.trim().to_string(), set(v)?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Req::In(k.trim().to_string(), set(v)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Req::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else {
                Req::Exists(t.to_string())
            };
            reqs.push(r);
        }
        Ok(Self(reqs))
    }

    /// Whether an object's labels match.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        })
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

type Key = (Kind, String, String);

/// All objects plus the change log the watch replays from.
pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    history_cap: usize,
    /// Watches from a resource version below this get `410 Gone`.
    compacted: u64,
    uid: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

/// Where a watch starts: replayed changes and the live feed.
pub(crate) struct WatchStart {
    pub(crate) replay: Vec<Arc<Change>>,
    pub(crate) from_rv: u64,
    pub(crate) rx: broadcast::Receiver<Arc<Change>>,
}

impl Store {
    pub(crate) fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(history_cap.max(1024));
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_cap,
            compacted: 0,
            uid: 0,
            tx,
        }
    }

    /// The current resource version.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// A live feed of every change.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    fn record(&mut self, kind: Kind, ns: &str, event: &'static str, object: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            kind,
            ns: ns.to_string(),
            event,
            object: Arc::new(object),
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.tx.send(change);
    }

    fn bump(&mut self, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
    }

    pub(crate) fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, ns.to_string(), name.to_string()))
    }

    pub(crate) fn list(&self, kind: Kind, ns: &str, sel: &Selector) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, n, _), v)| *k == kind && n == ns && sel.matches(v))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn create(
        &mut self,
        kind: Kind,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "body must be a JSON object",
            ));
        }
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match obj["metadata"]["generateName"].as_str() {
                Some(g) => format!("{g}{:05}", self.uid + 1),
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value",
                    ));
                }
            },
        };
        let key = (kind, ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.path()),
            ));
        }
        self.uid += 1;
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!(kind.kind());
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uid));
        meta["creationTimestamp"] = json!(now_rfc3339());
        if kind == Kind::Pods {
            obj["status"] = json!({"phase": "Pending", "qosClass": "Guaranteed"});
        }
        self.bump(&mut obj);
        self.objects.insert(key, obj.clone());
        self.record(kind, ns, "ADDED", obj.clone());
        if kind == Kind::Secrets {
            self.collect_orphan(ns, &name);
        }
        Ok(obj)
    }

    /// Applies `f` to an object and records the change (`MODIFIED`).
    pub(crate) fn update(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let key = (kind, ns.to_string(), name.to_string());
        let mut obj = self.objects.get(&key)?.clone();
        f(&mut obj);
        self.bump(&mut obj);
        self.objects.insert(key, obj.clone());
        self.record(kind, ns, "MODIFIED", obj.clone());
        if kind == Kind::Secrets {
            self.collect_orphan(ns, name);
        }
        self.objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
    }

    pub(crate) fn patch(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let before = self
            .get(kind, ns, name)
            .ok_or_else(|| not_found(kind, name))?
            .clone();
        let result = self.update(kind, ns, name, |o| {
            merge_patch(o, patch);
            // Identity fields are not patchable.
            o["metadata"]["uid"] = before["metadata"]["uid"].clone();
            o["metadata"]["name"] = before["metadata"]["name"].clone();
        });
        // The object may have been garbage-collected at once (orphaned owner).
        Ok(result.unwrap_or(before))
    }

    /// Removes an object (`DELETED`), cascading to the Secrets a pod owns.
    pub(crate) fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (kind, ns.to_string(), name.to_string());
        let mut obj = self
            .objects
            .remove(&key)
            .ok_or_else(|| not_found(kind, name))?;
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        }
        self.bump(&mut obj);
        self.record(kind, ns, "DELETED", obj.clone());
        if kind == Kind::Pods
            && let Some(uid) = obj["metadata"]["uid"].as_str()
        {
            self.collect_owned_by(ns, uid);
        }
        Ok(obj)
    }

    pub(crate) fn delete_collection(&mut self, kind: Kind, ns: &str, sel: &Selector) -> Vec<Value> {
        let names: Vec<String> = self
            .objects
            .iter()
            .filter(|((k, n, _), v)| *k == kind && n == ns && sel.matches(v))
            .map(|((_, _, name), _)| name.clone())
            .collect();
        names
            .iter()
            .filter_map(|n| self.delete(kind, ns, n).ok())
            .collect()
    }

    fn owner_uids(obj: &Value) -> Vec<String> {
        obj["metadata"]["ownerReferences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["uid"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pod_uid_exists(&self, ns: &str, uid: &str) -> bool {
        self.objects
            .iter()
            .any(|((k, n, _), v)| *k == Kind::Pods && n == ns && v["metadata"]["uid"] == uid)
    }

    /// The garbage collector: a Secret whose owners are all gone goes too.
    fn collect_orphan(&mut self, ns: &str, name: &str) {
        let Some(obj) = self.get(Kind::Secrets, ns, name) else {
            return;
        };
        let owners = Self::owner_uids(obj);
        if !owners.is_empty() && owners.iter().all(|u| !self.pod_uid_exists(ns, u)) {
            let _ = self.delete(Kind::Secrets, ns, name);
        }
    }

    fn collect_owned_by(&mut self, ns: &str, uid: &str) {
        let names: Vec<String> = self
            .objects
            .iter()
            .filter(|((k, n, _), v)| {
                *k == Kind::Secrets && n == ns && Self::owner_uids(v).iter().any(|u| u == uid)
            })
            .map(|((_, _, name), _)| name.clone())
            .collect();
        for n in names {
            self.collect_orphan(ns, &n);
        }
    }

    /// Forgets the change history: watches from any older version get `410 Gone`.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Starts a watch of `kind` in `ns` from `rv` (`None`/`0`: synthetic `ADDED` events
    /// for the current objects). `Err` means the version is too old (410).
    pub(crate) fn watch_from(
        &self,
        kind: Kind,
        ns: &str,
        sel: &Selector,
        rv: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let rx = self.tx.subscribe();
        match rv {
            None | Some(0) => {
                let replay = self
                    .objects
                    .iter()
                    .filter(|((k, n, _), v)| *k == kind && n == ns && sel.matches(v))
                    .map(|((_, _, _), v)| {
                        Arc::new(Change {
                            rv: v["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(self.rv),
                            kind,
                            ns: ns.to_string(),
                            event: "ADDED",
                            object: Arc::new(v.clone()),
                        })
                    })
                    .collect();
                Ok(WatchStart {
                    replay,
                    from_rv: self.rv,
                    rx,
                })
            }
            Some(rv) if rv < self.compacted => Err(ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {rv} ({})", self.compacted),
            )),
            Some(rv) => Ok(WatchStart {
                replay: self.history.iter().filter(|c| c.rv > rv).cloned().collect(),
                from_rv: rv.max(self.history.back().map_or(rv, |c| c.rv)),
                rx,
            }),
        }
    }
}

pub(crate) fn not_found(kind: Kind, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", kind.path()),
    )
}
