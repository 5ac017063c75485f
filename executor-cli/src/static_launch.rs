//! Finding a static `launch` to put in the sdx launcher image.
//!
//! A `FROM scratch` image has no C library and no loader, so only a statically linked
//! executable runs in it. The first of these that exists is used, and it is checked
//! before it goes into an image: an ELF executable with no program interpreter
//! (`PT_INTERP`), built for the Docker daemon's architecture, that answers `--version`
//! as `launch` does when it can run here.
//!
//! 1. `--launch FILE` (or `SDX_LAUNCH_BINARY`);
//! 2. a static `launch` beside the running `sdx` (how a release archive ships it);
//! 3. the running `sdx` itself when it is static: it is multi-call, and under the name
//!    `launch` it is the reference launcher (a larger image, one binary less to ship);
//! 4. in a source checkout, `sd-launch` built statically with cargo (the command is
//!    printed; the first build takes about a minute, later ones are incremental):
//!    `RUSTFLAGS="-C target-feature=+crt-static" cargo build -p sd-launch --release
//!    --target <arch>-unknown-linux-gnu --target-dir <checkout>/target/static`.
//!
//! Anything else is an error that says which of these to provide.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{CliError, CliResult};

/// Bound on `launch --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the binary came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--launch` or `SDX_LAUNCH_BINARY`.
    Given,
    /// `launch` beside the running `sdx`.
    Beside,
    /// The running `sdx` (multi-call).
    SelfExe,
    /// Built with cargo from the checkout `sdx` was built from.
    Cargo,
}

impl Source {
    /// A few words for the output.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Given => "given",
            Source::Beside => "beside sdx",
            Source::SelfExe => "this sdx, multi-call",
            Source::Cargo => "built with cargo",
        }
    }
}

/// A static `launch`, checked.
#[derive(Debug, Clone)]
pub struct StaticLaunch {
    /// Its path.
    pub path: PathBuf,
    /// Its content.
    pub bytes: Vec<u8>,
    /// What it answered to `--version` (or why it was not asked).
    pub version: String,
    /// Where it came from.
    pub source: Source,
}

/// What an ELF header says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFacts {
    /// The architecture in Go's (and Docker's) terms: `amd64`, `arm64`, ...
    pub arch: String,
    /// Whether it needs no program interpreter (statically linked).
    pub is_static: bool,
}

/// Reads the ELF header and program headers of `data`; `Err` says why it is no usable
/// executable.
pub fn elf_facts(data: &[u8]) -> Result<ElfFacts, String> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    if data[4] != 2 {
        return Err("a 32-bit ELF file; a 64-bit executable is needed".into());
    }
    if data[5] != 1 {
        return Err("a big-endian ELF file; a little-endian executable is needed".into());
    }
    let u16_at = |o: usize| -> Option<u16> {
        Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?))
    };
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?))
    };
    let truncated = || "a truncated ELF file".to_string();
    let kind = u16_at(16).ok_or_else(truncated)?;
    // ET_EXEC (2) or ET_DYN (3, position-independent executables).
    if kind != 2 && kind != 3 {
        return Err("an ELF file that is not an executable".into());
    }
    let arch = match u16_at(18).ok_or_else(truncated)? {
        0x3e => "amd64",
        0xb7 => "arm64",
        0xf3 => "riscv64",
        0x15 => "ppc64le",
        0x16 => "s390x",
        other => return Err(format!("an ELF executable for machine {other:#x}")),
    };
    let phoff = usize::try_from(u64_at(32).ok_or_else(truncated)?).map_err(|_| truncated())?;
    let phentsize = usize::from(u16_at(54).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(56).ok_or_else(truncated)?);
    let mut is_static = true;
    for i in 0..phnum {
        let off = phoff
            .checked_add(i.checked_mul(phentsize).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        // PT_INTERP = 3: the file needs a dynamic loader.
        if u32_at(off).ok_or_else(truncated)? == 3 {
            is_static = false;
        }
    }
    Ok(ElfFacts {
        arch: arch.to_string(),
        is_static,
    })
}

/// The architecture of this process in Go's terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Finds, reads and checks a static `launch` for a daemon of architecture `daemon_arch`.
/// `say` receives progress lines (the cargo command before it runs).
pub fn find(
    given: Option<&Path>,
    daemon_arch: &str,
    say: &mut dyn FnMut(&str),
) -> CliResult<StaticLaunch> {
    if let Some(p) = given {
        return check(p, Source::Given, daemon_arch);
    }
    let me = std::env::current_exe().ok();
    let mut tried = Vec::new();
    if let Some(me) = &me {
        if let Some(dir) = me.parent() {
            let beside = dir.join("launch");
            if beside.is_file() {
                match check(&beside, Source::Beside, daemon_arch) {
                    Ok(l) => return Ok(l),
                    Err(e) => tried.push(e.message),
                }
            }
        }
        match check(me, Source::SelfExe, daemon_arch) {
            Ok(l) => return Ok(l),
            Err(e) => tried.push(e.message),
        }
    }
    if let Some(ws) = checkout() {
        return cargo_build(&ws, daemon_arch, say)
            .and_then(|p| check(&p, Source::Cargo, daemon_arch));
    }
    Err(CliError::usage(format!(
        "no static launch found ({}); build one with `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p sd-launch --release --target {}` (or use a static sdx) and pass it with --launch FILE",
        tried.join("; "),
        rust_target(daemon_arch).unwrap_or("<arch>-unknown-linux-gnu")
    )))
}

/// Reads and checks `path`.
fn check(path: &Path, source: Source, daemon_arch: &str) -> CliResult<StaticLaunch> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::usage(format!("--launch {}: {e}", path.display())))?;
    let facts =
        elf_facts(&bytes).map_err(|why| CliError::usage(format!("{}: {why}", path.display())))?;
    if !facts.is_static {
        return Err(CliError::usage(format!(
            "{} is dynamically linked; a FROM scratch image needs a static executable",
            path.display()
        )));
    }
    if facts.arch != daemon_arch {
        return Err(CliError::usage(format!(
            "{} is built for {}, the Docker daemon runs {daemon_arch}",
            path.display(),
            facts.arch
        )));
    }
    let version = if facts.arch == host_arch() {
        launch_version(path)?
    } else {
        format!("not asked (built for {})", facts.arch)
    };
    Ok(StaticLaunch {
        path: path.to_path_buf(),
        bytes,
        version,
        source,
    })
}

/// Runs `path --version` under the name `launch` and checks the answer.
fn launch_version(path: &Path) -> CliResult<String> {
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new(path)
        .arg0("launch")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CliError::usage(format!("{}: cannot run it: {e}", path.display())))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > VERSION_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CliError::usage(format!(
                    "{}: `launch --version` did not answer within {}s",
                    path.display(),
                    VERSION_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(CliError::failure(format!("{}: {e}", path.display()))),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !text.starts_with("launch ") {
        return Err(CliError::usage(format!(
            "{} does not answer `--version` as launch does (it said {:?})",
            path.display(),
            text
        )));
    }
    Ok(text)
}

/// The source checkout `sdx` was built from, if it is still there.
fn checkout() -> Option<PathBuf> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    ws.join("sd-launch/Cargo.toml").is_file().then_some(ws)
}

/// The Rust target for a static build for `arch`.
fn rust_target(arch: &str) -> Option<&'static str> {
    match arch {
        "amd64" => Some("x86_64-unknown-linux-gnu"),
        "arm64" => Some("aarch64-unknown-linux-gnu"),
        _ => None,
    }
}

/// Builds `sd-launch` statically in checkout `ws`; the path of the binary.
fn cargo_build(ws: &Path, arch: &str, say: &mut dyn FnMut(&str)) -> CliResult<PathBuf> {
    let target = rust_target(arch).ok_or_else(|| {
        CliError::usage(format!(
            "no static launch for a {arch} daemon; build one and pass it with --launch FILE"
        ))
    })?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = ws.join("target/static");
    say(&format!(
        "building a static launch: RUSTFLAGS=\"-C target-feature=+crt-static\" {cargo} build -p sd-launch --release --target {target} --target-dir {} (in {})",
        target_dir.display(),
        ws.display()
    ));
    let status = Command::new(&cargo)
        .current_dir(ws)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--quiet",
            "-p",
            "sd-launch",
            "--release",
            "--target",
            target,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            CliError::usage(format!(
                "cannot run {cargo} to build a static launch ({e}); pass one with --launch FILE"
            ))
        })?;
    if !status.success() {
        return Err(CliError::failure(format!(
            "the static build of sd-launch failed ({status}); see cargo's output above"
        )));
    }
    Ok(target_dir.join(target).join("release/launch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF header with `phdrs` program header types.
    fn elf(machine: u16, phdrs: &[u32]) -> Vec<u8> {
        let mut d = vec![0u8; 64 + 56 * phdrs.len()];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[16..18].copy_from_slice(&2u16.to_le_bytes());
        d[18..20].copy_from_slice(&machine.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, t) in phdrs.iter().enumerate() {
            let o = 64 + 56 * i;
            d[o..o + 4].copy_from_slice(&t.to_le_bytes());
        }
        d
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        let f = elf_facts(&elf(0x3e, &[1, 1, 4])).unwrap();
        assert_eq!(
            f,
            ElfFacts {
                arch: "amd64".into(),
                is_static: true
            }
        );
        let f = elf_facts(&elf(0xb7, &[6, 3, 1])).unwrap();
        assert_eq!(
            f,
            ElfFacts {
                arch: "arm64".into(),
                is_static: false
            }
        );
    }

    #[test]
    fn bad_files_say_why() {
        assert_eq!(
            elf_facts(b"#!/bin/sh\necho hi\n").unwrap_err(),
            "not an ELF executable"
        );
        let mut d = elf(0x3e, &[1]);
        d[4] = 1;
        assert!(elf_facts(&d).unwrap_err().contains("32-bit"));
        let mut d = elf(0x3e, &[1, 1]);
        d.truncate(100);
        assert_eq!(elf_facts(&d).unwrap_err(), "a truncated ELF file");
        let d = elf(0x28, &[1]);
        assert!(elf_facts(&d).unwrap_err().contains("0x28"));
        // A huge program header count over a short file is refused, never a panic.
        let mut d = elf(0x3e, &[]);
        d[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(elf_facts(&d).unwrap_err(), "a truncated ELF file");
    }

    #[test]
    fn this_test_binary_is_read_as_an_executable_of_this_machine() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let f = elf_facts(&me).unwrap();
        assert_eq!(f.arch, host_arch());
    }

    #[test]
    fn a_dynamic_or_foreign_binary_is_refused_with_its_path() {
        let me = std::env::current_exe().unwrap();
        let facts = elf_facts(&std::fs::read(&me).unwrap()).unwrap();
        let err = check(&me, Source::Given, "s390x").unwrap_err();
        assert!(err.message.contains(&me.display().to_string()), "{err}");
        if facts.is_static {
            assert!(err.message.contains("s390x"), "{err}");
        } else {
            assert!(err.message.contains("dynamically linked"), "{err}");
        }
        let err = check(Path::new("/nonexistent/launch"), Source::Given, "amd64").unwrap_err();
        assert!(err.message.contains("/nonexistent/launch"), "{err}");
    }
}
