//! `start`: claims the build's directory (see `claim`), then starts `launch` under its
//! supervisor, forked by the zygote or a shell of its own, in its own process group (and
//! cgroup, where the machine allows) with its output going to `build.log`.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use chrono::Utc;
use executor_base::launch::{TOKEN_ENV, expose_token};
use executor_base::{
    BuildStatus, Error, ErrorKind, FailureReason, LaunchSpec, StartConfig, TOKEN_BUFFER_MINUTES,
    TokenDelivery,
};
use tokio::process::Command;

use crate::SCHEME;
use crate::claim::{Claim, Prepared, prepare_and_claim, remove_dir};
use crate::error;
use crate::executor::Inner;
use crate::oom::OomProbe;
use crate::os;
use crate::reaper::{self, reap};
use crate::record::{Build, BuildPaths, Record, StartGuard, StopReason};
use crate::supervisor;
use crate::tree::{MARK_ENV, kill_blocking};
use crate::zygote;

/// Where `launch` spools the reports it could not deliver (read by `sd_launch`).
pub const SPOOL_ENV: &str = "SD_SPOOL_FILE";
/// The executor's stop grace in milliseconds, which `launch` divides between stopping its
/// step and reporting (read by `sd_launch`).
pub const STOP_GRACE_ENV: &str = "SD_STOP_GRACE_MS";

pub(crate) fn already_exists(id: executor_base::BuildId, why: &str) -> Error {
    Error::new(ErrorKind::AlreadyExists, format!("build {id} {why}"))
        .with_executor(SCHEME)
        .with_operation("start")
}

impl Inner {
    /// Starts `cfg`'s build.
    pub(crate) async fn start(self: &Arc<Self>, cfg: &StartConfig) -> Result<(), Error> {
        let launch = self.settings.launch();
        check_executable(&launch)?;
        let id = cfg.build_id;
        let existing = self.builds.lock().get(&id).cloned();
        if let Some(old) = &existing {
            self.refresh(old).await;
            if !old.is_finished() {
                return Err(already_exists(id, "is already running"));
            }
        }
        let timeout_minutes = self.settings.timeout.minutes(&cfg.annotations);
        let now = Utc::now();
        let minutes = |m: u32| chrono::Duration::minutes(i64::from(m));
        let grace = chrono::Duration::from_std(self.settings.timeout_grace).unwrap_or_default();
        let record = Record {
            build_id: id,
            pid: None,
            proc_start: None,
            started_at: now,
            timeout_minutes,
            kill_at: now + minutes(timeout_minutes) + grace,
            expires_at: now + minutes(timeout_minutes + TOKEN_BUFFER_MINUTES),
            stop: None,
            status: None,
            cgroup: self.cgroups.path_for(id),
            memory_peak: None,
            finished_at: None,
            owner: executor_base::Owner::current().map(|o| o.to_label()),
        };
        let paths = BuildPaths::new(&self.settings.builds_dir, id);
        let build = Arc::new(Build::new(paths, record, true));
        {
            let mut map = self.builds.lock();
            let current = map.get(&id);
            let unchanged = match (current, &existing) {
                (None, _) => true,
                (Some(c), Some(old)) => Arc::ptr_eq(c, old),
                (Some(_), None) => false,
            };
            if !unchanged {
                return Err(already_exists(id, "is being started"));
            }
            map.insert(id, build.clone());
        }
        // However this start ends (a failure, or a cancellation half-way), the build stops
        // counting as starting, so nothing waits for its spawn forever.
        let _starting = StartGuard(build.clone());
        match self.spawn(&build, cfg, timeout_minutes).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut map = self.builds.lock();
                if map.get(&id).is_some_and(|b| Arc::ptr_eq(b, &build)) {
                    map.remove(&id);
                }
                drop(map);
                build.abandon(BuildStatus::failed(
                    FailureReason::StartRefused,
                    e.message(),
                    None,
                ));
                Err(e)
            }
        }
    }

    /// Claims the directory, spawns, and removes the directory again on failure (the
    /// directory work runs on a blocking thread).
    async fn spawn(
        self: &Arc<Self>,
        build: &Arc<Build>,
        cfg: &StartConfig,
        timeout_minutes: u32,
    ) -> Result<(), Error> {
        let paths = build.paths.clone();
        let id = build.id;
        let token = (!self.settings.token_env).then(|| expose_token(&cfg.token).to_string());
        let builds_dir = self.settings.builds_dir.clone();
        let record = build.snapshot();
        let cgroup = self.cgroups.path_for(id);
        let prepared = tokio::task::spawn_blocking(move || {
            let claim = Claim {
                builds_dir: &builds_dir,
                paths: &paths,
                id,
                cgroup,
            };
            prepare_and_claim(&claim, token.as_deref(), &record)
        })
        .await
        .map_err(|e| {
            error::io(
                "start",
                "cannot prepare the build directory",
                &build.paths.dir,
                std::io::Error::other(e),
            )
        })??;
        // Test hook (`SDX_TEST_PAUSE=process-claimed=<ms>`): the directory is claimed,
        // `launch` not yet spawned; a restart test kills the server here.
        crate::pause::pause(crate::pause::CLAIMED).await;
        // The id is ours now: a cgroup left by an earlier build with this id is emptied.
        let cgroup = if self.cgroups.enabled() {
            let cgroups = self.cgroups.clone();
            tokio::task::spawn_blocking(move || cgroups.create(id))
                .await
                .unwrap_or_default()
        } else {
            None
        };
        let result = self
            .spawn_in_dir(build, cfg, timeout_minutes, prepared, cgroup.clone())
            .await;
        if result.is_err() {
            let paths = build.paths.clone();
            let _ = tokio::task::spawn_blocking(move || {
                remove_dir(&paths.dir);
                if let Some(cg) = cgroup {
                    crate::tree::remove_cgroup(&cg);
                }
            })
            .await;
        }
        result
    }

    async fn spawn_in_dir(
        self: &Arc<Self>,
        build: &Arc<Build>,
        cfg: &StartConfig,
        timeout_minutes: u32,
        prepared: Prepared,
        cgroup: Option<PathBuf>,
    ) -> Result<(), Error> {
        let s = &self.settings;
        let paths = &build.paths;
        let delivery = if s.token_env {
            TokenDelivery::EnvFromSecret
        } else {
            TokenDelivery::File(paths.token().to_string_lossy().into_owned())
        };
        let job_tools = s
            .job_tools
            .to_str()
            .expect("validated as UTF-8 by the builder");
        let spec = LaunchSpec::new(cfg, job_tools, &s.ecosystem, timeout_minutes);
        let launch = spec.native(&delivery);
        let cgroup_procs = cgroup.as_ref().map(|c| c.join("cgroup.procs"));
        let env = self.build_env(paths, cfg, &launch.env);
        tracing::debug!(build_id = %build.id, command = ?launch, "spawning launch");
        // Through the zygote where the build has a cgroup (see `zygote`), else (or when
        // the zygote cannot take it) under a shell of its own.
        let via_zygote = match &cgroup_procs {
            Some(procs) if s.zygote => {
                let job = zygote::Job {
                    key: &build.id.to_string(),
                    log: &paths.log(),
                    exit: &paths.exit(),
                    work: &paths.work(),
                    cgroup_procs: procs,
                    program: std::ffi::OsStr::new(&launch.entrypoint),
                    args: &launch.args.iter().map(OsString::from).collect::<Vec<_>>(),
                    env: &env,
                };
                match self.zygote.start(&job).await {
                    Ok(started) => Some(started),
                    Err(zygote::NotStarted::UseOwnShell) => None,
                    Err(zygote::NotStarted::NoReport) => {
                        // A subshell may still come up: empty the cgroup before anything.
                        kill_blocking(None, cgroup.clone(), paths.mark()).await;
                        return Err(error::spawn(
                            std::path::Path::new(supervisor::SHELL),
                            std::io::Error::other(
                                "the zygote did not report the build's supervisor",
                            ),
                        ));
                    }
                }
            }
            _ => None,
        };
        let (pid, proc_start, exit): (u32, _, reaper::Exit) = match via_zygote {
            Some(started) => {
                drop(prepared);
                let start = os::proc_start_time(started.pid);
                let exit = zygote::wait(started.exit, started.pid, start, paths.exit());
                (started.pid, start, Box::pin(exit))
            }
            None => {
                let mut child = own_shell(
                    paths,
                    &launch,
                    cgroup_procs.unwrap_or_default(),
                    &env,
                    prepared,
                )
                .spawn()
                .map_err(|e| error::spawn(std::path::Path::new(supervisor::SHELL), e))?;
                let pid = child.id().expect("a just spawned child has a pid");
                let start = os::proc_start_time(pid);
                (pid, start, Box::pin(async move { child.wait().await }))
            }
        };
        let oom = match &cgroup {
            Some(cg) if self.cgroups.has_memory() => OomProbe::for_cgroup(cg),
            _ => OomProbe::for_pid(pid),
        };
        if let Err(e) = build.set_spawned(pid, proc_start, cgroup.clone()).await {
            // Without a state file a restart could neither find nor stop the build.
            kill_blocking(Some(pid), cgroup, paths.mark()).await;
            tokio::spawn(exit);
            return Err(error::io(
                "start",
                "cannot write the state file",
                &paths.state(),
                e,
            ));
        }
        tracing::info!(build_id = %build.id, pid, cgroup = ?build.snapshot().cgroup, "build started");
        self.counter.started();
        tokio::spawn(reap(self.clone(), build.clone(), exit, oom));
        let kill_at = build.snapshot().kill_at;
        self.arm_deadline(build, kill_at, StopReason::TimedOut);
        Ok(())
    }
}

impl Inner {
    /// The whole environment of a build's `launch`, in order (a later value of a name
    /// wins): the passed-through variables of the executor's own, the `env` option,
    /// launch's own, and last, so nothing overrides them, the marker every process of the
    /// build inherits, where launch spools reports, the handshake file and launch's share
    /// of the stop grace (and the token, in `tokenEnv` mode).
    fn build_env(
        &self,
        paths: &BuildPaths,
        cfg: &StartConfig,
        launch_env: &[(String, String)],
    ) -> Vec<(OsString, OsString)> {
        let s = &self.settings;
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        for name in &s.pass_env {
            if let Some(value) = std::env::var_os(name) {
                env.push((name.into(), value));
            }
        }
        let pairs = s.env.iter().chain(launch_env);
        env.extend(pairs.map(|(k, v)| (k.into(), v.into())));
        env.push((MARK_ENV.into(), paths.mark().into()));
        env.push((SPOOL_ENV.into(), paths.spool().into()));
        env.push((
            crate::handshake::RESULT_FILE_ENV.into(),
            paths.result().into(),
        ));
        env.push((
            STOP_GRACE_ENV.into(),
            s.stop_grace.as_millis().to_string().into(),
        ));
        if s.token_env {
            env.push((TOKEN_ENV.into(), expose_token(&cfg.token).into()));
        }
        env
    }
}

/// `launch` under a supervisor shell of its own, which joins the build's cgroup and
/// records launch's exit code in the build's directory for a later instance (see
/// `supervisor`); in a process group of its own, so `stop` signals the whole tree and a
/// Ctrl-C aimed at the server's terminal group does not reach builds.
fn own_shell(
    paths: &BuildPaths,
    launch: &executor_base::LaunchCommand,
    cgroup_procs: PathBuf,
    env: &[(OsString, OsString)],
    prepared: Prepared,
) -> Command {
    let mut command = Command::new(supervisor::SHELL);
    command
        .args(["-c", supervisor::SCRIPT, supervisor::ARG0])
        .arg(paths.exit())
        .arg(cgroup_procs)
        .arg(&launch.entrypoint)
        .args(&launch.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(paths.work())
        .stdin(Stdio::null())
        .stdout(Stdio::from(prepared.log))
        .stderr(Stdio::from(prepared.log_err))
        .process_group(0)
        .kill_on_drop(false);
    command
}

/// `launch` must be an executable regular file, and so must its interpreter when it is a
/// `#!` script: the supervisor shell execs it after `start` returned, so a missing
/// interpreter is caught here, not as a failed build.
fn check_executable(path: &std::path::Path) -> Result<(), Error> {
    let Some(problem) = not_executable(path).or_else(|| interpreter_problem(path)) else {
        return Ok(());
    };
    Err(error::config_invalid(
        "start",
        "jobTools",
        format!(
            "{} {problem}; point jobTools (or EXECUTOR_PROCESS_JOB_TOOLS) at a directory holding the launch program",
            path.display()
        ),
    ))
}

/// Why `path` cannot be executed, if it cannot.
fn not_executable(path: &std::path::Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Some("is not a regular file".to_string()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("is not executable".to_string()),
        Ok(_) => None,
        Err(e) => Some(format!("cannot be read: {e}")),
    }
}

/// For a `#!` script: what is wrong with its interpreter, if anything.
fn interpreter_problem(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let interpreter = std::str::from_utf8(line).ok()?.split_whitespace().next()?;
    not_executable(std::path::Path::new(interpreter))
        .map(|problem| format!("names the interpreter {interpreter}, which {problem}"))
}
