//! `launch install DIR`: copies job-tools (the directory holding this `launch`, with
//! everything in it) into `DIR`, without a shell.
//!
//! The Kubernetes backend's init container runs it in native mode: the sdx launcher image
//! is `FROM scratch` (no `/bin/sh`, no `cp`), so the launcher copies itself into the pod's
//! job-tools volume. Regular files keep their permission bits, directories are copied
//! recursively, symbolic links are copied as links; nothing outside `DIR` is touched.

use std::io;
use std::path::{Path, PathBuf};

/// The directory `launch` runs from: job-tools (`/opt/sd` in the sdx launcher image).
pub fn tools_dir() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent().map(Path::to_path_buf).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no parent directory", exe.display()),
        )
    })
}

/// Copies every entry of `from` into `to` (created when missing); returns how many
/// files and links were copied.
///
/// ```
/// let from = std::env::temp_dir().join(format!("sdl-inst-doc-{}", std::process::id()));
/// let to = from.with_extension("out");
/// std::fs::create_dir_all(from.join("bin")).unwrap();
/// std::fs::write(from.join("launch"), b"x").unwrap();
/// std::fs::write(from.join("bin/helper"), b"y").unwrap();
/// assert_eq!(sd_launch::install::copy_tree(&from, &to).unwrap(), 2);
/// assert_eq!(std::fs::read(to.join("bin/helper")).unwrap(), b"y");
/// # std::fs::remove_dir_all(&from).unwrap(); std::fs::remove_dir_all(&to).unwrap();
/// ```
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copied += copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src)?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, &dst)?;
            copied += 1;
        } else {
            // `fs::copy` keeps the permission bits (the executable bit of `launch`).
            std::fs::copy(&src, &dst)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Runs `launch install DIR` (`args` are the words after `install`); returns the exit
/// code: 0 copied, 2 usage or copy error (named on stderr).
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let [dir] = args else {
        eprintln!("launch install: usage: launch install DIR (copies job-tools into DIR)");
        return 2;
    };
    let to = Path::new(dir);
    let result = tools_dir().and_then(|from| {
        copy_tree(&from, to).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("copying {} to {}: {e}", from.display(), to.display()),
            )
        })
    });
    match result {
        Ok(n) => {
            crate::say(&format!(
                "launch install: {n} files copied to {}",
                to.display()
            ));
            0
        }
        Err(e) => {
            eprintln!("launch install: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_files_dirs_links_and_modes() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let launch = from.path().join("launch");
        std::fs::write(&launch, b"#!bin").unwrap();
        std::fs::set_permissions(&launch, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(from.path().join("hab")).unwrap();
        std::fs::write(from.path().join("hab/x"), b"x").unwrap();
        std::os::unix::fs::symlink("launch", from.path().join("run")).unwrap();
        let dst = to.path().join("tools");
        assert_eq!(copy_tree(from.path(), &dst).unwrap(), 3);
        let mode = std::fs::metadata(dst.join("launch"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(std::fs::read(dst.join("hab/x")).unwrap(), b"x");
        assert_eq!(
            std::fs::read_link(dst.join("run")).unwrap(),
            Path::new("launch")
        );
        // Again over the same target: idempotent.
        assert_eq!(copy_tree(from.path(), &dst).unwrap(), 3);
    }

    #[test]
    fn usage_and_errors_are_exit_2() {
        assert_eq!(main(&[]), 2);
        assert_eq!(main(&["a".into(), "b".into()]), 2);
    }
}
