//! What the real API server checks on create that the fake must check too (each found
//! by running the same requests against kube-apiserver v1.28.7):
//!
//! - `fieldValidation=Strict`: a field the API does not know is a `400 BadRequest`
//!   (`strict decoding error: unknown field "spec.containers[0].imagePullPolicyy"`),
//!   not silently dropped. The fake finds unknown fields by a round trip through the
//!   typed object (k8s-openapi drops what it does not know).
//! - The RuntimeClass admission plugin: a pod naming a `runtimeClassName` that does not
//!   exist is `403 Forbidden` (`pod rejected: RuntimeClass "gvisor" not found`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::Value;

use super::store::{ApiError, Kind};

/// Paths (`spec.containers[0].bogus`) of `original` that `known` lacks.
fn unknown_fields(original: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, v) in o {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    // Nulls are dropped by the round trip, not by the API.
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (v, kv)) in o.iter().zip(k).enumerate() {
                unknown_fields(v, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The strict-decoding check of `obj` as a `kind`.
pub(crate) fn strict(kind: Kind, obj: &Value) -> Result<(), ApiError> {
    let (typed, name) = match kind {
        Kind::Pods => (
            serde_json::from_value::<Pod>(obj.clone()).and_then(serde_json::to_value),
            "Pod",
        ),
        Kind::Secrets => (
            serde_json::from_value::<Secret>(obj.clone()).and_then(serde_json::to_value),
            "Secret",
        ),
    };
    let cannot = |why: String| {
        ApiError::new(
            400,
            "BadRequest",
            format!("{name} in version \"v1\" cannot be handled as a {name}: {why}"),
        )
    };
    let known = typed.map_err(|e| cannot(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &known, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    Err(cannot(format!(
        "strict decoding error: {}",
        list.join(", ")
    )))
}

/// The RuntimeClass admission check of a pod.
pub(crate) fn runtime_class(
    obj: &Value,
    name: &str,
    known: &BTreeSet<String>,
) -> Result<(), ApiError> {
    match obj["spec"]["runtimeClassName"].as_str() {
        Some(rc) if !known.contains(rc) => Err(ApiError::new(
            403,
            "Forbidden",
            format!("pods \"{name}\" is forbidden: pod rejected: RuntimeClass \"{rc}\" not found"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_are_named_as_the_api_server_names_them() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "imagePullPolicyy": "Always", "bogus": {"x": 1}}], "extra": 1}});
        let e = strict(Kind::Pods, &pod).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: \
             unknown field \"spec.containers[0].bogus\", unknown field \
             \"spec.containers[0].imagePullPolicyy\", unknown field \"spec.extra\""
        );
        let ok = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        assert!(strict(Kind::Pods, &ok).is_ok());
    }

    #[test]
    fn a_missing_runtime_class_is_forbidden() {
        let pod = json!({"spec": {"runtimeClassName": "gvisor"}});
        let none = BTreeSet::new();
        assert_eq!(runtime_class(&pod, "p", &none).unwrap_err().code, 403);
        let gvisor = BTreeSet::from(["gvisor".to_string()]);
        assert!(runtime_class(&pod, "p", &gvisor).is_ok());
    }
}
