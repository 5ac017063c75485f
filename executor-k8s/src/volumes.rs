//! [`HostVolumeMount`]: configured `hostPath` volumes mounted into the build container
//! (upstream's `kubernetes.volumeMounts`), their validation and rendering.

use std::collections::BTreeSet;

use executor_base::Error;
use k8s_openapi::api::core::v1::{HostPathVolumeSource, Volume, VolumeMount};
use serde::{Deserialize, Serialize};

use crate::error::config as config_error;
use crate::names;

/// The `hostPath` types Kubernetes accepts (`""` is "no check", as leaving it out).
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// One node directory or file mounted into the build container: a `hostPath` volume
/// `name` for `path` (of `type`, if given) and a mount of it at `mountPath`.
///
/// ```
/// let m: executor_k8s::HostVolumeMount = serde_json::from_value(serde_json::json!({
///     "name": "docker-sock", "mountPath": "/var/run/docker.sock",
///     "path": "/var/run/docker.sock", "type": "Socket"
/// })).unwrap();
/// assert_eq!(m.type_.as_deref(), Some("Socket"));
/// assert!(!m.read_only, "upstream's default: writable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostVolumeMount {
    /// The volume's name (a DNS-1123 label, unique among the pod's volumes).
    pub name: String,
    /// Where the build container sees it (an absolute path).
    pub mount_path: String,
    /// The path on the node (an absolute path).
    pub path: String,
    /// The `hostPath` type (`Directory`, `DirectoryOrCreate`, `File`, `Socket`, ...);
    /// unset: no check.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Mount read-only (default `false`, as upstream).
    #[serde(default)]
    pub read_only: bool,
}

/// An absolute path other than `/` itself, without `..` components.
fn is_abs_path(p: &str) -> bool {
    p.starts_with('/') && p.len() > 1 && !p.split('/').any(|c| c == "..")
}

/// Checks configured mounts against each other and against the crate's own volume
/// (`reserved_volumes`) and build container mount paths (`reserved_paths`). Errors are
/// `ConfigInvalid` naming `volumeMounts[i].<field>`.
pub(crate) fn validate(
    mounts: &[HostVolumeMount],
    reserved_volumes: &[&str],
    reserved_paths: &[&str],
) -> Result<(), Error> {
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let key = |field: &str| format!("volumeMounts[{i}].{field}");
        if !names::is_dns_label(&m.name, 63) {
            return Err(config_error(
                &key("name"),
                format!(
                    "{:?} must be a DNS-1123 label (1-63 lowercase letters, digits or '-')",
                    m.name
                ),
            ));
        }
        if reserved_volumes.contains(&m.name.as_str()) {
            return Err(config_error(
                &key("name"),
                format!("{:?} is the executor's own volume", m.name),
            ));
        }
        if !names.insert(m.name.as_str()) {
            return Err(config_error(
                &key("name"),
                format!("{:?} is used twice", m.name),
            ));
        }
        let mount_path = m.mount_path.trim_end_matches('/');
        if !is_abs_path(&m.mount_path) || mount_path.is_empty() {
            return Err(config_error(
                &key("mountPath"),
                format!("{:?} must be an absolute path other than /", m.mount_path),
            ));
        }
        if reserved_paths
            .iter()
            .any(|p| p.trim_end_matches('/') == mount_path)
        {
            return Err(config_error(
                &key("mountPath"),
                format!("{:?} is where the executor mounts its tools", m.mount_path),
            ));
        }
        if !paths.insert(mount_path) {
            return Err(config_error(
                &key("mountPath"),
                format!("{:?} is used twice", m.mount_path),
            ));
        }
        if !is_abs_path(&m.path) && m.path != "/" {
            return Err(config_error(
                &key("path"),
                format!("{:?} must be an absolute path on the node", m.path),
            ));
        }
        if let Some(t) = &m.type_
            && !HOST_PATH_TYPES.contains(&t.as_str())
        {
            return Err(config_error(
                &key("type"),
                format!("{t:?}: expected one of {}", HOST_PATH_TYPES[1..].join(", ")),
            ));
        }
    }
    Ok(())
}

/// The pod volumes and build container mounts of `mounts`, in order.
pub(crate) fn render(mounts: &[HostVolumeMount]) -> (Vec<Volume>, Vec<VolumeMount>) {
    mounts
        .iter()
        .map(|m| {
            let volume = Volume {
                name: m.name.clone(),
                host_path: Some(HostPathVolumeSource {
                    path: m.path.clone(),
                    type_: m.type_.clone().filter(|t| !t.is_empty()),
                }),
                ..Volume::default()
            };
            let mount = VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: Some(m.read_only),
                ..VolumeMount::default()
            };
            (volume, mount)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(name: &str, mount_path: &str) -> HostVolumeMount {
        HostVolumeMount {
            name: name.into(),
            mount_path: mount_path.into(),
            path: "/var/cache/x".into(),
            type_: None,
            read_only: false,
        }
    }

    fn key_of(mounts: &[HostVolumeMount]) -> String {
        let e = validate(mounts, &["sd-tools"], &["/opt/sd"]).unwrap_err();
        assert_eq!(e.kind(), executor_base::ErrorKind::ConfigInvalid);
        e.context()
            .iter()
            .find(|(k, _)| *k == "key")
            .unwrap()
            .1
            .clone()
    }

    #[test]
    fn valid_mounts_pass_and_render_host_paths() {
        let mut a = mount("cache", "/cache");
        a.type_ = Some("DirectoryOrCreate".into());
        a.read_only = true;
        let b = mount("sock", "/var/run/x.sock");
        validate(&[a.clone(), b.clone()], &["sd-tools"], &["/opt/sd"]).unwrap();
        let (vols, mounts) = render(&[a, b]);
        assert_eq!(vols.len(), 2);
        let hp = vols[0].host_path.as_ref().unwrap();
        assert_eq!(
            (hp.path.as_str(), hp.type_.as_deref()),
            ("/var/cache/x", Some("DirectoryOrCreate"))
        );
        assert_eq!(vols[1].host_path.as_ref().unwrap().type_, None);
        assert_eq!(
            (mounts[0].mount_path.as_str(), mounts[0].read_only),
            ("/cache", Some(true))
        );
        assert_eq!(mounts[1].read_only, Some(false));
    }

    #[test]
    fn bad_mounts_are_refused_naming_the_field() {
        assert_eq!(key_of(&[mount("Bad_Name", "/x")]), "volumeMounts[0].name");
        assert_eq!(
            key_of(&[mount("ok", "/x"), mount("sd-tools", "/y")]),
            "volumeMounts[1].name"
        );
        assert_eq!(
            key_of(&[mount("a", "/x"), mount("a", "/y")]),
            "volumeMounts[1].name"
        );
        assert_eq!(key_of(&[mount("a", "rel")]), "volumeMounts[0].mountPath");
        assert_eq!(key_of(&[mount("a", "/")]), "volumeMounts[0].mountPath");
        assert_eq!(
            key_of(&[mount("a", "/opt/sd/")]),
            "volumeMounts[0].mountPath"
        );
        assert_eq!(
            key_of(&[mount("a", "/x"), mount("b", "/x/")]),
            "volumeMounts[1].mountPath"
        );
        let mut p = mount("a", "/x");
        p.path = "relative".into();
        assert_eq!(key_of(&[p]), "volumeMounts[0].path");
        let mut t = mount("a", "/x");
        t.type_ = Some("Dir".into());
        assert_eq!(key_of(&[t]), "volumeMounts[0].type");
    }
}
