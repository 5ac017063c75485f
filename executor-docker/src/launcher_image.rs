//! The sdx launcher image: built, tagged and pushed through the Docker Engine API.
//!
//! The image is `FROM scratch` and holds only what native launch mode needs:
//!
//! | path / setting | what |
//! |---|---|
//! | `/opt/sd/launch` | the static reference `launch` (crate `sd-launch`, or a static `sdx`, which acts as `launch` under that name) |
//! | `VOLUME /opt/sd` | so `--volumes-from` (the Jenkins job script) sees job-tools too |
//! | `ENTRYPOINT ["/opt/sd/launch"]` | `docker run IMAGE --version` answers |
//! | label [`LABEL_LAUNCH_PROTOCOL`] | [`LAUNCH_PROTOCOL`], which pre-flight compares with the launch mode |
//! | label [`LABEL_SDX_VERSION`] | the sdx version that built it |
//! | label `cd.screwdriver.sdx.launch-version` | what the binary answered to `--version` |
//!
//! The build context is a tar made here (a `Dockerfile` and the binary) and sent to
//! `POST /build`; nothing shells out to a `docker` command. A scratch image needs no base
//! image pull, so the build needs no registry.
//!
//! ```
//! use executor_docker::launcher_image::LauncherImage;
//! let image = LauncherImage::new(b"\x7fELF...".to_vec(), "launch 0.1.0");
//! let dockerfile = image.dockerfile();
//! assert!(dockerfile.starts_with("FROM scratch\n"));
//! assert!(dockerfile.contains("cd.screwdriver.sdx.launch-protocol=\"1\""));
//! assert!(dockerfile.contains("VOLUME /opt/sd"));
//! ```

use std::collections::HashMap;
use std::io::Write as _;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use bytes::Bytes;
use executor_base::launch_protocol::{
    LABEL_LAUNCH_PROTOCOL, LABEL_SDX_VERSION, LAUNCH_PROTOCOL, SDX_LAUNCHER_TAG,
};
use executor_base::{Error, ErrorKind, ImageRef};
use futures::StreamExt;

use crate::error::map;

/// Label holding what the image's `launch` answered to `--version`.
pub const LABEL_LAUNCH_VERSION: &str = "cd.screwdriver.sdx.launch-version";

/// Where the image holds `launch` (the default mount point of job-tools).
pub const LAUNCH_PATH: &str = "/opt/sd/launch";

/// The content of an sdx launcher image.
#[derive(Clone)]
pub struct LauncherImage {
    launch: Vec<u8>,
    launch_version: String,
}

impl std::fmt::Debug for LauncherImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LauncherImage")
            .field("launch_bytes", &self.launch.len())
            .field("launch_version", &self.launch_version)
            .finish()
    }
}

impl LauncherImage {
    /// An image holding `launch` (a static executable) that answered `launch_version`
    /// to `--version`.
    pub fn new(launch: Vec<u8>, launch_version: impl Into<String>) -> Self {
        Self {
            launch,
            launch_version: launch_version.into(),
        }
    }

    /// The image's labels.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            (LABEL_LAUNCH_PROTOCOL, LAUNCH_PROTOCOL.to_string()),
            (LABEL_SDX_VERSION, SDX_LAUNCHER_TAG.to_string()),
            (LABEL_LAUNCH_VERSION, self.launch_version.clone()),
            ("org.opencontainers.image.title", "sdx launcher".to_string()),
            (
                "org.opencontainers.image.description",
                "job-tools for sdx native launch mode: a static launch at /opt/sd/launch"
                    .to_string(),
            ),
            (
                "org.opencontainers.image.version",
                SDX_LAUNCHER_TAG.to_string(),
            ),
        ]
    }

    /// The Dockerfile of the build context.
    pub fn dockerfile(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let labels: Vec<String> = self
            .labels()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", quote(&v)))
            .collect();
        format!(
            "FROM scratch\nCOPY launch {LAUNCH_PATH}\nLABEL {}\nVOLUME /opt/sd\nENTRYPOINT [\"{LAUNCH_PATH}\"]\n",
            labels.join(" \\\n      ")
        )
    }

    /// The build context: a tar with the `Dockerfile` and `launch` (mode 0755).
    pub fn context(&self) -> Bytes {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            // Writing into a Vec cannot fail.
            let _ = b.append_data(&mut h, path, data);
        };
        add("Dockerfile", self.dockerfile().as_bytes(), 0o644);
        add("launch", &self.launch, 0o755);
        let mut out = b.into_inner().unwrap_or_default();
        let _ = out.flush();
        Bytes::from(out)
    }
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image id (`sha256:…`).
    pub id: String,
    /// The references it is tagged with.
    pub tags: Vec<String>,
    /// Its size in bytes, as the daemon reports it.
    pub size: i64,
}

/// What a push produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The reference pushed.
    pub reference: String,
    /// The manifest digest the registry answered (`sha256:…`), when it said.
    pub digest: Option<String>,
}

/// Registry credentials for a push, never shown in `Debug`.
#[derive(Clone, Default)]
pub struct RegistryAuth {
    username: String,
    password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RegistryAuth {
    /// A user name and password (or token).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The credentials `docker login` stored for `registry` in a Docker CLI config
    /// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), when they are stored
    /// inline (`auths.<registry>.auth`). Credential helpers are not consulted.
    pub fn from_docker_config(registry: &str) -> Option<Self> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker"))
            })?;
        let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
        Self::from_config_json(&text, registry)
    }

    /// [`RegistryAuth::from_docker_config`] on the text of a config file.
    ///
    /// ```
    /// use executor_docker::launcher_image::RegistryAuth;
    /// // "user:pa:ss" in base64
    /// let cfg = r#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="}}}"#;
    /// let auth = RegistryAuth::from_config_json(cfg, "127.0.0.1:5000").unwrap();
    /// assert_eq!(format!("{auth:?}"), r#"RegistryAuth { username: "user", .. }"#);
    /// assert!(RegistryAuth::from_config_json(cfg, "other:5000").is_none());
    /// ```
    pub fn from_config_json(text: &str, registry: &str) -> Option<Self> {
        use base64::Engine as _;
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let auths = v.get("auths")?.as_object()?;
        let entry = auths.iter().find_map(|(k, e)| {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("");
            (host == registry).then_some(e)
        })?;
        let raw = entry.get("auth")?.as_str()?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some(Self::new(user, pass))
    }

    fn credentials(&self, registry: &str) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        }
    }
}

/// The Docker Engine calls of `sdx launcher-image`: build, tag, push, and the daemon's
/// architecture (the binary put in the image must run on it).
#[derive(Debug, Clone)]
pub struct ImageClient {
    docker: Docker,
    endpoint: String,
}

impl ImageClient {
    /// Connects to `endpoint` (`unix:///var/run/docker.sock`, `tcp://host:port`); nothing
    /// is sent until the first call.
    pub fn connect(endpoint: &str) -> Result<Self, Error> {
        Ok(Self {
            docker: crate::client::connect_endpoint(endpoint, 600)?,
            endpoint: endpoint.to_string(),
        })
    }

    /// The daemon this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The daemon's architecture in Go's terms (`amd64`, `arm64`).
    pub async fn daemon_arch(&self) -> Result<String, Error> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| map(e, &self.endpoint))?;
        Ok(v.arch.unwrap_or_default())
    }

    /// Builds `image` and tags it with every reference in `tags` (at least one).
    /// Each tag must parse as an image reference; the error names the bad one.
    pub async fn build(&self, image: &LauncherImage, tags: &[String]) -> Result<BuiltImage, Error> {
        let Some(first) = tags.first() else {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                "tag: at least one image reference is needed",
            ));
        };
        for t in tags {
            tag_reference(t)?;
        }
        let opts = BuildImageOptionsBuilder::new()
            .t(first)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream =
            self.docker
                .build_image(opts, None, Some(bollard::body_full(image.context())));
        let mut log = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream {
                        log.push_str(&line);
                    }
                    if let Some(msg) = info.error_detail.and_then(|d| d.message) {
                        return Err(build_failed(first, &msg, &log));
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(build_failed(first, &error, &log));
                }
                Err(e) => return Err(map(e, &self.endpoint).with_context("image", first)),
            }
        }
        for t in &tags[1..] {
            self.tag(first, t).await?;
        }
        let inspect = self
            .docker
            .inspect_image(first)
            .await
            .map_err(|e| map(e, &self.endpoint).with_context("image", first))?;
        Ok(BuiltImage {
            id: inspect.id.unwrap_or_default(),
            tags: tags.to_vec(),
            size: inspect.size.unwrap_or_default(),
        })
    }

    /// Tags the local image `source` as `target`.
    pub async fn tag(&self, source: &str, target: &str) -> Result<(), Error> {
        let r = tag_reference(target)?;
        let opts = bollard::query_parameters::TagImageOptionsBuilder::new()
            .repo(&r.name())
            .tag(r.tag().unwrap_or("latest"))
            .build();
        self.docker
            .tag_image(source, Some(opts))
            .await
            .map_err(|e| map(e, &self.endpoint).with_context("image", source))
    }

    /// Pushes `reference` (which must name its registry, e.g. `127.0.0.1:5000/sdx/launcher:1`)
    /// with `auth` if given.
    pub async fn push(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Pushed, Error> {
        let r = tag_reference(reference)?;
        let registry = r.registry().unwrap_or(DEFAULT_REGISTRY).to_string();
        let creds = auth.map(|a| a.credentials(&registry));
        let mut stream = self.docker.push_image(
            &r.name(),
            Some(
                PushImageOptionsBuilder::new()
                    .tag(r.tag().unwrap_or("latest"))
                    .build(),
            ),
            creds,
        );
        let mut digest = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(d) = info.status.as_deref().and_then(digest_of) {
                        digest = Some(d);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(push_failed(reference, &registry, &error, auth.is_some()));
                }
                Err(e) => return Err(map(e, &self.endpoint).with_context("image", reference)),
            }
        }
        Ok(Pushed {
            reference: reference.to_string(),
            digest,
        })
    }

    /// The labels of a local image, or `None` when the daemon does not have it.
    pub async fn labels(&self, reference: &str) -> Result<Option<HashMap<String, String>>, Error> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(i.config.and_then(|c| c.labels).unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(map(e, &self.endpoint).with_context("image", reference)),
        }
    }
}

fn build_failed(tag: &str, msg: &str, log: &str) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!(
            "building {tag} failed: {}{}",
            msg.trim(),
            if log.trim().is_empty() {
                String::new()
            } else {
                format!(" (build output: {})", log.trim().replace('\n', " | "))
            }
        ),
    )
    .with_context("image", tag)
}

fn push_failed(reference: &str, registry: &str, msg: &str, had_auth: bool) -> Error {
    let lower = msg.to_ascii_lowercase();
    let (kind, hint) = if lower.contains("unauthorized")
        || lower.contains("authentication required")
    {
        (
            ErrorKind::Unauthenticated,
            if had_auth {
                format!("; the registry refused the credentials given for {registry}")
            } else {
                format!(
                    "; give credentials for {registry} (SDX_REGISTRY_USERNAME/SDX_REGISTRY_PASSWORD, or `docker login {registry}` with the auth stored in the config file)"
                )
            },
        )
    } else if lower.contains("connection refused")
        || lower.contains("no such host")
        || lower.contains("i/o timeout")
    {
        (
            ErrorKind::Unavailable,
            format!("; nothing answers at registry {registry}"),
        )
    } else {
        (ErrorKind::Unexpected, String::new())
    };
    Error::new(
        kind,
        format!("pushing {reference} failed: {}{hint}", msg.trim()),
    )
    .with_context("image", reference)
    .with_context("registry", registry)
}

/// The registry of references that name none.
const DEFAULT_REGISTRY: &str = "docker.io";

/// `reference` parsed as a tag to give an image: a digest cannot be one.
pub fn tag_reference(reference: &str) -> Result<ImageRef, Error> {
    let bad = |reason: String| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("tag {reference:?}: {reason}"),
        )
    };
    let r = ImageRef::parse(reference).map_err(bad)?;
    if r.digest().is_some() {
        return Err(bad(
            "a digest names content, it cannot be given to a build".into()
        ));
    }
    Ok(r)
}

/// The digest in a push's last status line (`1: digest: sha256:… size: 528`).
fn digest_of(status: &str) -> Option<String> {
    let rest = status.split("digest: ").nth(1)?;
    let d = rest.split_whitespace().next()?;
    d.starts_with("sha256:").then(|| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_holds_the_dockerfile_and_an_executable_launch() {
        let image = LauncherImage::new(b"binary".to_vec(), "launch 0.1.0");
        let ctx = image.context();
        let mut ar = tar::Archive::new(&ctx[..]);
        let mut seen = HashMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().to_string();
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            seen.insert(path, (mode, data));
        }
        assert_eq!(seen["launch"], (0o755, b"binary".to_vec()));
        let df = String::from_utf8(seen["Dockerfile"].1.clone()).unwrap();
        assert!(df.contains("COPY launch /opt/sd/launch"), "{df}");
        assert!(
            df.contains("cd.screwdriver.sdx.launch-version=\"launch 0.1.0\""),
            "{df}"
        );
        assert!(
            df.contains(&format!(
                "cd.screwdriver.sdx.version=\"{SDX_LAUNCHER_TAG}\""
            )),
            "{df}"
        );
    }

    #[test]
    fn quotes_in_a_version_string_stay_inside_the_label() {
        let df = LauncherImage::new(Vec::new(), "launch \"x\"\\y").dockerfile();
        assert!(df.contains(r#"launch-version="launch \"x\"\\y""#), "{df}");
    }

    #[test]
    fn tags_are_references_without_digest() {
        let r = tag_reference("127.0.0.1:5000/sdx/launcher:1").unwrap();
        assert_eq!(
            (r.name().as_str(), r.tag()),
            ("127.0.0.1:5000/sdx/launcher", Some("1"))
        );
        let e = tag_reference("x@sha256:0123456789abcdef0123456789abcdef").unwrap_err();
        assert!(e.message().contains("digest"), "{e}");
        let e = tag_reference("Bad:Tag").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.message().starts_with("tag \"Bad:Tag\""), "{e}");
    }

    #[test]
    fn push_digest_and_failures_are_read_from_the_daemon_words() {
        assert_eq!(
            digest_of("1: digest: sha256:abc size: 528").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(digest_of("Pushed"), None);
        let e = push_failed(
            "r:5000/x:1",
            "r:5000",
            "unauthorized: authentication required",
            false,
        );
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        assert!(e.message().contains("SDX_REGISTRY_USERNAME"), "{e}");
        let e = push_failed(
            "r:5000/x:1",
            "r:5000",
            "dial tcp 127.0.0.1:5000: connect: connection refused",
            false,
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("registry r:5000"), "{e}");
    }

    #[test]
    fn registry_auth_never_shows_the_password() {
        let a = RegistryAuth::new("u", "hunter2");
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(RegistryAuth::from_config_json("not json", "r").is_none());
        assert!(
            RegistryAuth::from_config_json(r#"{"auths": {"r": {"auth": "!!"}}}"#, "r").is_none()
        );
        let https = r#"{"auths": {"https://r.example:443/v2/": {"auth": "YTpi"}}}"#;
        assert!(RegistryAuth::from_config_json(https, "r.example:443").is_some());
    }
}
