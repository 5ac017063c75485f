//! Process pre-flight: job-tools' `launch` is an executable file (and, for a script, its
//! `#!` interpreter too), and the state directory is writable. Local file-system checks
//! of a few microseconds, so they are not cached.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use executor_base::preflight::{Finding, Preflight};

/// Runs the checks for `launch` and the builds directory `builds_dir`.
pub(crate) fn run(launch: &Path, builds_dir: &Path) -> Preflight {
    let mut p = Preflight::new(crate::SCHEME);
    p.push(launch_finding(launch));
    p.push(state_finding(builds_dir));
    p
}

fn executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{} is not executable (mode {:o}): chmod +x it",
            path.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// The interpreter of a `#!` script (`None` for a binary): the path, or a program that
/// `/usr/bin/env` looks up in `PATH`.
fn interpreter(launch: &Path) -> Result<Option<PathBuf>, String> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(launch)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("{}: {e}", launch.display()))?;
    let Some(line) = head[..n].strip_prefix(b"#!") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next().unwrap_or_default());
    let mut words = line.split_whitespace();
    let Some(first) = words.next() else {
        return Err(format!("{} has an empty #! line", launch.display()));
    };
    if Path::new(first).file_name().is_some_and(|n| n == "env")
        && let Some(program) = words.find(|w| !w.starts_with('-'))
    {
        let found = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(program))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|c| executable(c).is_ok());
        return found.map(Some).ok_or_else(|| {
            format!(
                "{}'s interpreter {program} (#!{}) is not in PATH",
                launch.display(),
                line.trim()
            )
        });
    }
    Ok(Some(PathBuf::from(first)))
}

fn launch_finding(launch: &Path) -> Finding {
    const CHECK: &str = "process.launch";
    if let Err(e) = executable(launch) {
        return Finding::fail(
            CHECK,
            format!("job-tools launch: {e} (option jobTools: the directory holding `launch`)"),
        );
    }
    match interpreter(launch) {
        Ok(None) => Finding::ok(CHECK, format!("{} is executable", launch.display())),
        Ok(Some(i)) => match executable(&i) {
            Ok(()) => Finding::ok(
                CHECK,
                format!(
                    "{} is executable (interpreter {})",
                    launch.display(),
                    i.display()
                ),
            ),
            Err(e) => Finding::fail(CHECK, format!("{}'s #! interpreter: {e}", launch.display())),
        },
        Err(e) => Finding::fail(CHECK, e),
    }
}

fn state_finding(builds_dir: &Path) -> Finding {
    const CHECK: &str = "process.stateDir";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let probe = builds_dir.join(format!(".preflight-{}-{nanos}", std::process::id()));
    let written = std::fs::create_dir_all(builds_dir).and_then(|()| std::fs::write(&probe, b"ok"));
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => Finding::ok(CHECK, format!("{} is writable", builds_dir.display())),
        Err(e) => Finding::fail(
            CHECK,
            format!(
                "cannot write in {}: {e} (option stateDir)",
                builds_dir.display()
            ),
        ),
    }
}
