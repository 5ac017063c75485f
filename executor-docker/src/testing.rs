//! Test support (feature `test-support`; not API-stable): images built locally `FROM
//! scratch` with Debian's static busybox (no remote registry is ever needed), pushes to a
//! loopback registry, and label queries to check that nothing was left behind.
//!
//! [`test_images`] builds, once per process:
//! * a launcher image: busybox, `/opt/sd/launch` = [`TEST_LAUNCH`] (a shell stand-in for
//!   `launch` whose behaviour is picked by the build's `apiUri` path), upstream-style
//!   `launcher_entrypoint.sh` + `run.sh`, and `VOLUME /opt/sd`;
//! * a build image: busybox with the applets the stand-in uses.

use std::collections::HashMap;
use std::io::Write;

pub mod dockerd;
pub use dockerd::PrivateDockerd;

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::OnceCell;

/// Where Debian's `busybox-static` installs busybox.
pub const BUSYBOX: &str = "/bin/busybox";
/// The Docker socket the tests use unless `DOCKER_HOST` names another `unix://` socket.
pub const SOCKET: &str = "/var/run/docker.sock";
/// The loopback registry `.ci/run` starts.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// A stand-in for `launch`. The path of `--api-uri` picks what it does:
///
/// | path | behaviour |
/// |---|---|
/// | `/exit/<n>` | exits with code `n` (with the launch handshake when `n` is 0) |
/// | `/oom` | allocates ~1 GiB in a child (the OOM killer's first choice), then exits **0** |
/// | `/token-sha256/<hex>` | exits 0 iff the `--token-file` content has this SHA-256, else 4 |
/// | `/env-token-sha256/<hex>` | the same for `$SD_TOKEN` |
/// | anything else | runs until stopped |
///
/// Every exit 0 but `/oom`'s is preceded by the launch handshake line, as the reference
/// `launch` writes it.
pub const TEST_LAUNCH: &str = r#"#!/bin/sh
api=""; tokfile=""; id=""
ok() { echo "sdx-launch-result protocol=1 build=$id status=SUCCESS"; exit 0; }
while [ $# -gt 0 ]; do
  case "$1" in
    --api-uri) api="$2"; shift 2 ;;
    --token-file) tokfile="$2"; shift 2 ;;
    --*) shift 2 ;;
    *) id="$1"; shift ;;
  esac
done
echo "test launch: build $id, api $api"
case "$api" in
  */exit/*) code="${api##*/exit/}"; code="${code%%/*}"; [ "$code" = 0 ] && ok; exit "$code" ;;
  */oom*) head -c 1073741824 /dev/zero | sh -c 'echo 1000 > /proc/self/oom_score_adj; exec tail' > /dev/null
     exit 0 ;;
  */env-token-sha256/*) want="${api##*/env-token-sha256/}"; got="$(printf %s "$SD_TOKEN" | sha256sum)"
     [ "${got%% *}" = "${want%%/*}" ] && ok; exit 5 ;;
  */token-sha256/*) want="${api##*/token-sha256/}"; got="$(sha256sum < "$tokfile")"
     [ "${got%% *}" = "${want%%/*}" ] && ok; exit 5 ;;
  *) exec sleep 2147483647 ;;
esac
"#;

/// A stand-in for upstream's `screwdrivercd/launcher` `launch` (urfave/cli, its `app.Run`
/// error ignored): given a flag it does not define, such as native mode's `--token-file`,
/// it prints the error and its usage and **exits 0** without running anything.
pub const STOCK_LAUNCH: &str = r#"#!/bin/sh
for a in "$@"; do
  case "$a" in
    --token-file*) echo "Incorrect Usage. flag provided but not defined: -token-file"
       echo; echo "NAME:"; echo "   launcher - launch a build"; echo; echo "USAGE:"
       echo "   launch [global options] command [command options] [arguments...]"
       exit 0 ;;
  esac
done
echo "launching build $*"
exit 0
"#;

/// Upstream-style `launcher_entrypoint.sh`: runs its one argument string with a shell.
pub const TEST_ENTRYPOINT: &str = "#!/bin/sh\nexec /bin/sh -c \"$1\"\n";

/// Upstream-style `run.sh "<token>" "<api>" "<store>" "<timeout>" "<buildId>" "<ui>"`.
pub const TEST_RUN_SH: &str = "#!/bin/sh\nSD_TOKEN=\"$1\" exec /opt/sd/launch --api-uri \"$2\" --store-uri \"$3\" --build-timeout \"$4\" --ui-uri \"$6\" \"$5\"\n";

/// Busybox applets linked in the test images.
pub const APPLETS: &[&str] = &[
    "sh",
    "sleep",
    "head",
    "tail",
    "cat",
    "true",
    "false",
    "sha256sum",
    "printf",
    "ls",
    "echo",
    "env",
    "id",
];

/// The socket the tests use: `DOCKER_HOST` when it is `unix://…`, else [`SOCKET`].
pub fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| SOCKET.to_string())
}

/// [`socket_path`] as an endpoint (`unix:///…`), for `DockerExecutorBuilder::with_host`.
pub fn docker_host() -> String {
    format!("unix://{}", socket_path())
}

/// Whether the Docker socket accepts connections.
pub fn docker_reachable() -> bool {
    std::os::unix::net::UnixStream::connect(socket_path()).is_ok()
}

/// Whether the loopback registry accepts connections.
pub fn registry_reachable() -> bool {
    std::net::TcpStream::connect_timeout(
        &REGISTRY.parse().expect("static address"),
        std::time::Duration::from_millis(500),
    )
    .is_ok()
}

/// A client on the default socket, API version negotiated.
pub async fn docker() -> Docker {
    Docker::connect_with_unix(&socket_path(), 600, bollard::API_DEFAULT_VERSION)
        .expect("docker socket")
        .negotiate_version()
        .await
        .expect("docker version negotiation")
}

/// One file of an image: path (relative, e.g. `opt/sd/launch`), content, mode.
#[derive(Debug, Clone)]
pub struct File {
    /// Path inside the image, without leading `/`.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Unix mode.
    pub mode: u32,
}

impl File {
    /// An executable file.
    pub fn exec(path: &str, data: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.to_string(),
            data: data.into(),
            mode: 0o755,
        }
    }
}

/// A build context (tar) for `FROM scratch` + busybox + `files`, with `extra` Dockerfile
/// lines (e.g. `VOLUME /opt/sd`).
pub fn busybox_context(files: &[File], extra: &str) -> Bytes {
    let busybox =
        std::fs::read(BUSYBOX).unwrap_or_else(|e| panic!("{BUSYBOX} (Debian busybox-static): {e}"));
    let mut b = tar::Builder::new(Vec::new());
    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("tar");
    }
    add(&mut b, "root/bin/busybox", &busybox, 0o755);
    for f in files {
        add(&mut b, &format!("root/{}", f.path), &f.data, f.mode);
    }
    let dockerfile = format!("FROM scratch\nCOPY root /\n{extra}\n");
    add(&mut b, "Dockerfile", dockerfile.as_bytes(), 0o644);
    // Symlinks as tar entries (no RUN step needed in a scratch image).
    for a in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        b.append_link(&mut h, format!("root/bin/{a}"), "busybox")
            .expect("tar link");
    }
    let mut out = b.into_inner().expect("tar");
    out.flush().expect("flush");
    Bytes::from(out)
}

/// Builds `tag` from a context tar; panics with the daemon's output on failure.
pub async fn build_image(docker: &Docker, tag: &str, context: Bytes) {
    let opts = BuildImageOptionsBuilder::new()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut s = docker.build_image(opts, None, Some(bollard::body_full(context)));
    let mut log = String::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info.stream {
                    log.push_str(&line);
                }
            }
            Err(e) => panic!("building {tag} failed: {e}\n{log}"),
        }
    }
}

/// A launcher image: busybox, `launch` at `/opt/sd/launch`, the upstream-style scripts,
/// `VOLUME /opt/sd`.
pub async fn build_launcher_image(docker: &Docker, tag: &str, launch: &[u8]) {
    let files = [
        File::exec("opt/sd/launch", launch),
        File::exec("opt/sd/launcher_entrypoint.sh", TEST_ENTRYPOINT),
        File::exec("opt/sd/run.sh", TEST_RUN_SH),
    ];
    build_image(docker, tag, busybox_context(&files, "VOLUME /opt/sd")).await;
}

/// The images of [`test_images`].
#[derive(Debug, Clone)]
pub struct TestImages {
    /// Launcher repository (`sdx-test/launcher`).
    pub launcher_repo: String,
    /// Launcher tag.
    pub launcher_tag: String,
    /// Build image reference (`sdx-test/build:<tag>`).
    pub build: String,
}

/// Repository of the test launcher image.
pub const LAUNCHER_REPO: &str = "sdx-test/launcher";
/// Tag of the test images (bump when their content changes).
pub const TAG: &str = "5";

/// Builds the test launcher and build images once per process.
pub async fn test_images() -> TestImages {
    static IMAGES: OnceCell<TestImages> = OnceCell::const_new();
    IMAGES
        .get_or_init(|| async {
            let d = docker().await;
            build_launcher_image(
                &d,
                &format!("{LAUNCHER_REPO}:{TAG}"),
                TEST_LAUNCH.as_bytes(),
            )
            .await;
            let build = format!("sdx-test/build:{TAG}");
            build_image(&d, &build, busybox_context(&[], "")).await;
            TestImages {
                launcher_repo: LAUNCHER_REPO.to_string(),
                launcher_tag: TAG.to_string(),
                build,
            }
        })
        .await
        .clone()
}

/// Tags `local` as `<registry>/<repo>:<tag>` and pushes it; returns the remote reference.
pub async fn push(docker: &Docker, local: &str, repo: &str, tag: &str) -> String {
    let remote_repo = format!("{REGISTRY}/{repo}");
    docker
        .tag_image(
            local,
            Some(
                TagImageOptionsBuilder::new()
                    .repo(&remote_repo)
                    .tag(tag)
                    .build(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("tag {local} as {remote_repo}:{tag}: {e}"));
    let remote = format!("{remote_repo}:{tag}");
    let mut s = docker.push_image(
        &remote_repo,
        Some(PushImageOptionsBuilder::new().tag(tag).build()),
        None,
    );
    while let Some(item) = s.next().await {
        if let Err(e) = item {
            panic!("push {remote} failed: {e}");
        }
    }
    remote
}

/// Removes a local image tag (absent is fine).
pub async fn remove_image(docker: &Docker, reference: &str) {
    let opts = RemoveImageOptionsBuilder::new().force(true).build();
    match docker.remove_image(reference, Some(opts), None).await {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => panic!("remove image {reference}: {e}"),
    }
}

/// Names of the containers and volumes carrying label `selector` (`k=v`).
pub async fn labelled(docker: &Docker, selector: &str) -> (Vec<String>, Vec<String>) {
    let filters = HashMap::from([("label".to_string(), vec![selector.to_string()])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    (containers, volumes)
}

/// SHA-256 of `data` in lower-case hex, via the busybox of the host (tests only).
pub fn sha256_hex(data: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new(BUSYBOX)
        .arg("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("busybox sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
