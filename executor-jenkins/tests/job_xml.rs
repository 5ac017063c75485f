//! The job's config.xml: XML escaping of hostile values, the script it runs (executed
//! against a fake `docker`), user templates, and the Screwdriver launch mode.

mod common;

use executor_base::launch_protocol::SDX_LAUNCHER_REFERENCE;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use executor_base::{ErrorKind, Executor, LaunchMode, StartConfig};
use executor_jenkins::fake::run_shell_step;
use quick_xml::events::Event;

/// The unescaped text of every `<tag>` element.
fn texts_of(xml: &str, tag: &str) -> Vec<String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut inside = false;
    let mut cur = String::new();
    loop {
        match r.read_event().unwrap() {
            Event::Start(e) if e.name().as_ref() == tag.as_bytes() => {
                inside = true;
                cur.clear();
            }
            Event::End(e) if e.name().as_ref() == tag.as_bytes() => {
                inside = false;
                out.push(cur.clone());
            }
            Event::Text(t) if inside => cur.push_str(&t.xml_content().unwrap()),
            Event::GeneralRef(g) if inside => {
                let name = g.decode().unwrap();
                cur.push_str(match name.as_ref() {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "quot" => "\"",
                    "apos" => "'",
                    other => panic!("unexpected entity {other}"),
                });
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// Quotes, `$(...)` and `&` survive URL parsing in these places.
const HOSTILE_API: &str = "http://127.0.0.1:9/it's/$(id)/api?a=1&b=2";
const HOSTILE_LABEL: &str = "x</assignedNode><disabled>true</disabled><!-- ]]> & \"q\" 'a'";

fn hostile_build(id: u64) -> StartConfig {
    StartConfig::builder(id, HOSTILE_API, "node:22", BUILD_TOKEN)
        .annotation("screwdriver.cd/nodeLabel", HOSTILE_LABEL)
        .annotation("screwdriver.cd/cpu", "MICRO")
        .build()
        .unwrap()
}

#[tokio::test]
async fn hostile_values_stay_data() {
    let (j, e) = setup().await;
    e.start(&hostile_build(42)).await.unwrap();
    let xml = j
        .job_config("SD-42")
        .expect("the fake accepted well-formed XML");
    assert_eq!(
        texts_of(&xml, "assignedNode"),
        [format!("screwdriver-{HOSTILE_LABEL}")]
    );
    assert_eq!(
        texts_of(&xml, "disabled"),
        ["false"],
        "no element was injected"
    );
    let command = &texts_of(&xml, "command")[0];
    assert!(
        command.contains(r"'http://127.0.0.1:9/it'\''s/$(id)/api?a=1&b=2'"),
        "{command}"
    );
    let api_default = &texts_of(&xml, "defaultValue")[1];
    assert_eq!(api_default, HOSTILE_API);
    assert_eq!(j.queue_items("SD-42")[0].params["SD_API"], HOSTILE_API);
    // A label with control characters cannot be carried by XML: refused, naming the field.
    let bad = StartConfig::builder(43, "http://127.0.0.1:9", "node:22", BUILD_TOKEN)
        .annotation("screwdriver.cd/nodeLabel", "a\u{0}b")
        .build()
        .unwrap();
    let err = e.start(&bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        err.field_errors()[0].field,
        "annotations[screwdriver.cd/nodeLabel]"
    );
    assert!(
        !j.job_names().contains(&"SD-43".to_string()),
        "refused before any request"
    );
}

/// A `docker` that logs its arguments (one per line, invocations separated by `--`),
/// keeps what `docker cp -` reads, and exits with `$FAKE_EXIT` on `start`.
const FAKE_DOCKER: &str = r#"#!/bin/sh
log="$FAKE_DOCKER_DIR/calls"
for a in "$@"; do printf '%s\n' "$a" >> "$log"; done
printf -- '--\n' >> "$log"
case "$1" in
  cp) cat > "$FAKE_DOCKER_DIR/copied.tar" ;;
  start) exit "${FAKE_EXIT:-0}" ;;
esac
"#;

/// Runs a job's Shell command as a Jenkins agent does (core `hudson/tasks/Shell.java`:
/// `sh -xe FILE`, or the `#!` interpreter line) with the build's parameters in the
/// environment; its exit code and the `docker` calls. The build token must appear nowhere
/// in what the console log would show (Jenkins does not mask password parameters there).
fn run_script(command: &str, dir: &std::path::Path, exit: &str) -> (i32, Vec<Vec<String>>) {
    let out = run_shell_step(
        command,
        &[
            ("SD_TOKEN", BUILD_TOKEN),
            ("FAKE_DOCKER_DIR", dir.to_str().unwrap()),
            ("FAKE_EXIT", exit),
        ],
    )
    .unwrap();
    let console = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !console.contains(BUILD_TOKEN),
        "the token is in the console log:\n{console}"
    );
    let log = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
    let calls = log
        .split("--\n")
        .filter(|c| !c.is_empty())
        .map(|c| c.lines().map(str::to_string).collect())
        .collect();
    (out.status.code().unwrap(), calls)
}

/// A directory holding the recording `docker`.
fn fake_docker() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("docker");
    std::fs::write(&docker, FAKE_DOCKER).unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = docker.to_str().unwrap().to_string();
    (dir, path)
}

#[tokio::test]
async fn the_job_script_runs_the_build_container_with_job_tools_and_the_token_file() {
    let (dir, docker) = fake_docker();
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_docker_command(&docker)
        .with_docker_network("host")
        .build()
        .await
        .unwrap();
    e.start(&hostile_build(42)).await.unwrap();
    let command = texts_of(&j.job_config("SD-42").unwrap(), "command").remove(0);

    let (code, calls) = run_script(&command, dir.path(), "3");
    assert!(
        command.starts_with("#!/bin/sh -eu\n"),
        "Jenkins then runs it without -x"
    );
    assert_eq!(code, 3, "the build's exit code is the job's");
    let verbs: Vec<&str> = calls.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(
        verbs,
        [
            "rm", "pull", "pull", "create", "create", "cp", "start", "rm"
        ],
        "both images are pulled first, as upstream's `docker-compose pull`"
    );
    assert_eq!(
        calls[0],
        ["rm", "--force", "--volumes", "SD-42-build", "SD-42-init"]
    );
    // Native mode's default launcher: the sdx launcher image.
    assert_eq!(calls[1], ["pull", SDX_LAUNCHER_REFERENCE]);
    assert_eq!(calls[2], ["pull", "node:22"]);
    let calls = &calls[2..];
    let init = &calls[1];
    assert_eq!(&init[..3], ["create", "--name", "SD-42-init"]);
    assert!(init.contains(&"sdbuild=SD-42".to_string()));
    assert!(
        init.iter()
            .any(|a| a.starts_with("screwdriver.cd/expires-at="))
    );
    assert_eq!(
        &init[init.len() - 2..],
        [SDX_LAUNCHER_REFERENCE, "/bin/true"]
    );

    let b = &calls[2];
    let pos = |s: &str| {
        b.iter()
            .position(|a| a == s)
            .unwrap_or_else(|| panic!("{s} missing in {b:?}"))
    };
    assert_eq!(b[pos("--volumes-from") + 1], "SD-42-init:ro");
    assert_eq!(b[pos("--cpus") + 1], "0.5");
    assert_eq!(b[pos("--memory") + 1], (2u64 << 30).to_string());
    assert_eq!(b[pos("--network") + 1], "host");
    assert_eq!(b[pos("--entrypoint") + 1], "/opt/sd/launch");
    let image = pos("node:22");
    assert_eq!(
        b[image + 1..],
        [
            "--api-uri",
            HOSTILE_API,
            "--store-uri",
            "http://localhost:8081/",
            "--ui-uri",
            "http://localhost:4200/",
            "--build-timeout",
            "90",
            "--token-file",
            "/run/sd/token",
            "42"
        ]
    );
    assert_eq!(calls[3], ["cp", "-", "SD-42-build:/"]);
    assert_eq!(calls[4], ["start", "--attach", "SD-42-build"]);
    assert!(
        calls.iter().flatten().all(|a| !a.contains(BUILD_TOKEN)),
        "the token is never an argument"
    );

    // What `docker cp -` received: run/sd/token holding the token.
    let tar = dir.path().join("copied.tar");
    let listing = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("run/sd/token"), "{listing}");
    let content = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("run/sd/token")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&content.stdout), BUILD_TOKEN);
}

#[tokio::test]
async fn screwdriver_mode_keeps_the_token_out_of_the_job() {
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_launch_mode(LaunchMode::Screwdriver)
        .build()
        .await
        .unwrap();
    e.start(&build(42)).await.unwrap();
    let xml = j.job_config("SD-42").unwrap();
    assert!(!xml.contains(BUILD_TOKEN));
    let command = &texts_of(&xml, "command")[0];
    assert!(
        command.contains("--entrypoint '/opt/sd/launcher_entrypoint.sh'"),
        "{command}"
    );
    assert!(
        command.contains(r#"'/opt/sd/run.sh "$SD_TOKEN" "http://127.0.0.1:9/api""#),
        "{command}"
    );
    assert!(command.contains("--env SD_TOKEN \\"), "{command}");
}

/// The built-in template's parameter definitions, for user templates.
fn builtin_properties() -> &'static str {
    let t = executor_jenkins::BUILTIN_TEMPLATE;
    let start = t.find("<properties>").unwrap();
    let end = t.find("</properties>").unwrap() + "</properties>".len();
    &t[start..end]
}

#[tokio::test]
async fn a_user_template_replaces_the_builtin_one_and_its_script_never_shows_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.xml");
    std::fs::write(
        &path,
        format!(
            "<project><description>{{{{description}}}}</description>{}\
             <assignedNode>custom-{{{{ node_label }}}}</assignedNode>\
             <builders><hudson.tasks.Shell><command>echo {{{{build_id}}}} &amp;&amp; {{{{script}}}}</command></hudson.tasks.Shell></builders>\
             </project>",
            builtin_properties()
        ),
    )
    .unwrap();
    let (docker_dir, docker) = fake_docker();
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_template_path(&path)
        .with_docker_command(&docker)
        .build()
        .await
        .unwrap();
    e.start(&build(42)).await.unwrap();
    let xml = j.job_config("SD-42").unwrap();
    assert_eq!(texts_of(&xml, "assignedNode"), ["custom-screwdriver"]);
    let command = texts_of(&xml, "command").remove(0);
    // Not starting with #!, Jenkins runs it with `sh -xe`: the script turns the trace off
    // before it touches the token.
    let (code, calls) = run_script(&command, docker_dir.path(), "0");
    assert!(
        command.starts_with("echo 42 && #!/bin/sh -eu\n"),
        "{command}"
    );
    assert_eq!(j.queue_items("SD-42")[0].params.len(), 7);
    assert_eq!(code, 0);
    assert!(calls.iter().any(|c| c[0] == "cp"), "{calls:?}");

    std::fs::write(&path, "<project>{{token}}</project>").unwrap();
    let err = j
        .executor_builder()
        .with_template_path(&path)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("templatePath:"), "{err}");
    assert!(
        err.to_string().contains("unknown placeholder {{token}}"),
        "{err}"
    );
}

#[tokio::test]
async fn the_screwdriver_mode_script_never_shows_the_token() {
    let (docker_dir, docker) = fake_docker();
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_launch_mode(LaunchMode::Screwdriver)
        .with_docker_command(&docker)
        .build()
        .await
        .unwrap();
    e.start(&build(42)).await.unwrap();
    let command = texts_of(&j.job_config("SD-42").unwrap(), "command").remove(0);
    let (code, calls) = run_script(&command, docker_dir.path(), "0");
    assert_eq!(code, 0);
    let create = calls
        .iter()
        .find(|c| c[0] == "create" && c.contains(&"SD-42-build".to_string()));
    assert!(
        create.unwrap().contains(&"SD_TOKEN".to_string()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn the_pull_policy_decides_what_the_script_pulls() {
    for (policy, expected) in [
        (
            "missing",
            vec!["rm", "create", "create", "cp", "start", "rm"],
        ),
        (
            "never",
            vec![
                "rm", "image", "image", "create", "create", "cp", "start", "rm",
            ],
        ),
    ] {
        let (docker_dir, docker) = fake_docker();
        let (j, _) = setup().await;
        let e = j
            .executor_builder()
            .with_option("pullPolicy", policy)
            .with_docker_command(&docker)
            .build()
            .await
            .unwrap();
        e.start(&build(42)).await.unwrap();
        let command = texts_of(&j.job_config("SD-42").unwrap(), "command").remove(0);
        let (_, calls) = run_script(&command, docker_dir.path(), "0");
        let verbs: Vec<&str> = calls.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(verbs, expected, "{policy}");
        if policy == "never" {
            assert_eq!(calls[1], ["image", "inspect", SDX_LAUNCHER_REFERENCE]);
        }
    }
}
