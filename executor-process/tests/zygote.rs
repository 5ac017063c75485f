//! The zygote, the default way a build with a cgroup starts: its supervisor is a subshell
//! forked by one long-lived shell per executor instead of a shell of its own. A build
//! must not be able to tell the two apart, and killing the zygote must cost no build.

mod common;

use std::path::Path;

use common::{alive, build, file, finished, job_tools, wait_dead, wait_file};
use executor_base::{BuildId, Executor, Phase};
use executor_process::ProcessExecutor;

/// Records what a build's `launch` can observe of how it was started, then waits for
/// `$OUT/go-<build id>` and exits with the code in it.
const OBSERVING_LAUNCH: &str = r#"
d="$OUT/$SD_BUILD_ID"; mkdir -p "$d"
env | grep -v '^SD_STOP_GRACE_MS=' | sort > "$d/env"
pwd > "$d/pwd"
for f in /proc/$$/fd/*; do echo "${f##*/}"; done > "$d/fds"
# Read with builtins only: while the shell starts a command it blocks every signal for a
# moment, and holds a pipeline's pipe, which an `ls` or a `grep` of it would see.
while IFS= read -r l; do
  case "$l" in SigIgn*|SigBlk*) echo "$l" ;; esac
done < /proc/$$/status > "$d/signals"
set -- $(sed 's/^.*) //' /proc/$$/stat)
echo "tty=$5" > "$d/terminal"
(exec 3</dev/tty) 2>/dev/null && echo "opens /dev/tty" >> "$d/terminal"
echo "$$" > "$d/pid.tmp"; mv "$d/pid.tmp" "$d/pid"
while [ ! -f "$OUT/go-$SD_BUILD_ID" ]; do sleep 0.05; done
exit "$(cat "$OUT/go-$SD_BUILD_ID")"
"#;

async fn executor(tools: &Path, state: &Path, out: &Path, zygote: bool) -> ProcessExecutor {
    common::builder(tools, state, out)
        .with_zygote(zygote)
        .build()
        .await
        .unwrap()
}

/// `/proc/<pid>/stat`'s fields after the command name: state is [0], ppid [1], pgid [2].
fn stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn no_cgroups(exec: &ProcessExecutor) -> bool {
    if exec.uses_cgroups() {
        return false;
    }
    eprintln!("skipped: this machine gives no writable cgroup v2 hierarchy");
    true
}

/// What launch observed in build `id`, with the per-build paths made comparable.
fn observed(out: &Path, state: &Path, id: u64) -> Vec<(String, String)> {
    ["env", "pwd", "signals", "terminal", "fds"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(out.join(id.to_string()).join(name)).unwrap();
            let text = text
                .replace(&state.display().to_string(), "<state>")
                .replace(&format!("builds/{id}/"), "builds/<id>/")
                .replace(&format!("builds/{id}\n"), "builds/<id>\n")
                .replace(&format!("SD_BUILD_ID={id}"), "SD_BUILD_ID=<id>");
            (name.to_string(), text)
        })
        .collect()
}

#[tokio::test]
async fn a_build_sees_the_same_start_through_the_zygote_as_under_a_shell_of_its_own() {
    let tools = job_tools(OBSERVING_LAUNCH);
    let out = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for (zygote, id) in [(true, 901), (false, 902)] {
        let state = tempfile::tempdir().unwrap();
        let exec = executor(tools.path(), state.path(), out.path(), zygote).await;
        if no_cgroups(&exec) {
            return;
        }
        let b = build(id, "tok");
        exec.start(&b).await.unwrap();
        let launch: u32 = wait_file(&out.path().join(id.to_string()).join("pid"))
            .await
            .parse()
            .unwrap();
        let supervisor = exec.pid(BuildId::new(id).unwrap()).unwrap();
        // Either way the supervisor leads the build's process group, and launch is its
        // child in that group.
        assert_eq!(
            stat(supervisor)[2],
            supervisor.to_string(),
            "zygote {zygote}"
        );
        assert_eq!(stat(launch)[1], supervisor.to_string(), "zygote {zygote}");
        assert_eq!(stat(launch)[2], supervisor.to_string(), "zygote {zygote}");
        let shell = cmdline(supervisor);
        if zygote {
            assert_eq!(shell, ["/bin/sh", "-s", "sd-zygote"]);
        } else {
            assert_eq!(shell[..2], ["/bin/sh", "-c"]);
            assert_eq!(shell[3], "sd-supervise");
        }
        std::fs::write(file(out.path(), &format!("go-{id}")), "0").unwrap();
        let s = finished(&exec, &b.to_stop()).await;
        assert_eq!(s.phase, Phase::Succeeded, "zygote {zygote}: {s}");
        seen.push(observed(out.path(), state.path(), id));
    }
    // The same environment (no variable of the zygote's own), working directory,
    // signal dispositions (SIGINT and SIGQUIT not ignored), no controlling terminal, and
    // the same open files: none of the zygote's pipes.
    assert_eq!(seen[0], seen[1]);
    let terminal = &seen[0][3].1;
    assert_eq!(terminal.trim(), "tty=0", "{terminal}");
    let fds: Vec<&str> = seen[0][4].1.lines().collect();
    assert!(["0", "1", "2"].iter().all(|fd| fds.contains(fd)), "{fds:?}");
}

#[tokio::test]
async fn values_with_quotes_newlines_and_substitutions_reach_the_build_unchanged() {
    let tools = job_tools(r#"printf '%s' "$TRICKY" > "$OUT/tricky""#);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let pwned = out.path().join("pwned");
    let tricky = format!(
        "it's \"quoted\"\n$(touch {0}) `touch {0}` ${{HOME}} \\ '\\'' ) & exit 3\n",
        pwned.display()
    );
    let exec = common::builder(tools.path(), state.path(), out.path())
        .with_env("TRICKY", &tricky)
        .build()
        .await
        .unwrap();
    let b = build(903, "tok");
    exec.start(&b).await.unwrap();
    let s = finished(&exec, &b.to_stop()).await;
    assert_eq!(s.phase, Phase::Succeeded, "{s}");
    assert_eq!(
        std::fs::read_to_string(file(out.path(), "tricky")).unwrap(),
        tricky
    );
    assert!(!pwned.exists(), "a value was run as a command");
}

#[tokio::test]
async fn killing_the_zygote_costs_no_build_and_the_next_start_makes_another() {
    let tools = job_tools(OBSERVING_LAUNCH);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path(), true).await;
    if no_cgroups(&exec) {
        return;
    }
    let (ending, running, stopped) = (build(911, "tok"), build(912, "tok"), build(913, "tok"));
    for b in [&ending, &running, &stopped] {
        exec.start(b).await.unwrap();
        wait_file(&out.path().join(b.build_id.to_string()).join("pid")).await;
    }
    let zygote: u32 = stat(exec.pid(BuildId::new(911).unwrap()).unwrap())[1]
        .parse()
        .unwrap();
    assert_eq!(cmdline(zygote), ["/bin/sh", "-s", "sd-zygote"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_dead(zygote).await;
    // A build that ends after its zygote died is reported with its own exit code.
    std::fs::write(file(out.path(), "go-911"), "5").unwrap();
    let s = finished(&exec, &ending.to_stop()).await;
    assert_eq!(s.phase, Phase::Failed, "{s}");
    assert_eq!(s.exit_code, Some(5), "{s}");
    // One that is still running can be stopped.
    assert!(alive(exec.pid(BuildId::new(913).unwrap()).unwrap()));
    exec.stop(&stopped.to_stop()).await.unwrap();
    let s = finished(&exec, &stopped.to_stop()).await;
    assert_eq!(s.phase, Phase::Canceled, "{s}");
    // The next build starts through a new zygote.
    let next = build(914, "tok");
    exec.start(&next).await.unwrap();
    wait_file(&out.path().join("914").join("pid")).await;
    let second: u32 = stat(exec.pid(BuildId::new(914).unwrap()).unwrap())[1]
        .parse()
        .unwrap();
    assert_ne!(second, zygote);
    assert_eq!(cmdline(second), ["/bin/sh", "-s", "sd-zygote"]);
    for (b, code) in [(&running, "0"), (&next, "0")] {
        std::fs::write(file(out.path(), &format!("go-{}", b.build_id)), code).unwrap();
        let s = finished(&exec, &b.to_stop()).await;
        assert_eq!(s.phase, Phase::Succeeded, "{s}");
    }
}

/// What a crash between the zygote's fork and the state file's update leaves: no pid, no
/// cgroup (both are recorded together), no owner that can be checked, and a directory
/// older than a start in progress would be.
fn forget_the_spawn(state: &Path, id: u64) {
    let state_file = state.join(format!("builds/{id}/state.json"));
    let mut record: serde_json::Value = serde_json::from_slice(
        &executor_base::record_file::read(&state_file)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    for field in ["pid", "procStart", "cgroup", "owner"] {
        record[field] = serde_json::Value::Null;
    }
    std::fs::write(&state_file, record.to_string()).unwrap();
    let dir = state.join(format!("builds/{id}"));
    let touched = std::process::Command::new("touch")
        .args(["-d", "1 minute ago"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(touched.success());
}

#[tokio::test]
async fn a_supervisor_whose_pid_was_never_recorded_is_found_and_never_started_twice() {
    let tools = job_tools("echo run >> \"$OUT/runs-$SD_BUILD_ID\"; exec sleep 3600");
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // An instance sharing the state directory, open before the build existed.
    let other = executor(tools.path(), state.path(), out.path(), true).await;
    let first = executor(tools.path(), state.path(), out.path(), true).await;
    if no_cgroups(&first) {
        return;
    }
    let b = build(921, "tok");
    first.start(&b).await.unwrap();
    let supervisor = first.pid(b.build_id).unwrap();
    wait_file(&file(out.path(), "runs-921")).await;
    drop(first);
    forget_the_spawn(state.path(), 921);
    // The instance that did not know the build refuses to start it again.
    let e = other.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), executor_base::ErrorKind::AlreadyExists, "{e}");
    // A restarted instance finds the supervisor among the build's cgroup members.
    let restarted = executor(tools.path(), state.path(), out.path(), true).await;
    assert_eq!(
        restarted.status(&b.to_stop()).await.unwrap().phase,
        Phase::Running
    );
    assert_eq!(restarted.pid(b.build_id), Some(supervisor));
    restarted.stop(&b.to_stop()).await.unwrap();
    wait_dead(supervisor).await;
    assert_eq!(
        restarted.status(&b.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
    assert_eq!(
        std::fs::read_to_string(file(out.path(), "runs-921")).unwrap(),
        "run\n",
        "the build ran twice"
    );
}
