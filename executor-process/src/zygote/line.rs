//! The text the zygote runs for one build: a background subshell that is the build's
//! supervisor. It reports on the zygote's stdout (its fd 3), one line each:
//!
//! * `p <key> <pid>`: it runs, in the build's cgroup and work directory;
//! * `f <key>`: it could not get there (no cgroup join, no work directory); nothing ran;
//! * `x <key> <code>`: `launch` ended with `code`, already in the exit file.
//!
//! Every value is a single-quoted shell word, so any byte but NUL passes unchanged
//! (quotes, `$`, backslashes, newlines, non-UTF-8): the shell reads a quoted newline
//! as part of the word, never as the end of the command.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What one build's supervisor runs, and where.
pub(crate) struct Job<'a> {
    /// Names the build's reports.
    pub key: &'a str,
    pub log: &'a Path,
    pub exit: &'a Path,
    pub work: &'a Path,
    pub cgroup_procs: &'a Path,
    /// `launch` and its arguments.
    pub program: &'a OsStr,
    pub args: &'a [OsString],
    /// The build's whole environment, in order (a later value of a name wins).
    pub env: &'a [(OsString, OsString)],
}

impl Job<'_> {
    /// The shell text, ending in a newline; `None` when the build cannot go through the
    /// zygote (a NUL byte, or an environment name the shell cannot `export`), so it
    /// starts under a shell of its own.
    pub(crate) fn text(&self) -> Option<Vec<u8>> {
        let key = self.key;
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        let mut out = Vec::with_capacity(1024);
        let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| out.extend_from_slice(p));
        put(&[
            b"( exec </dev/null 3>&1 >>",
            &quote(self.log.as_os_str())?,
            b" 2>&1\n",
        ]);
        put(&[b"sd_join ", &quote(self.cgroup_procs.as_os_str())?]);
        put(&[b" && cd -P /proc/self && p=${PWD##*/} && cd -P "]);
        put(&[
            &quote(self.work.as_os_str())?,
            b" || { printf 'f %s\\n' ",
            key.as_bytes(),
        ]);
        put(&[b" >&3; exit 97; }\nunset OLDPWD\n"]);
        put(&[b"printf 'p %s %s\\n' ", key.as_bytes(), b" \"$p\" >&3\n"]);
        for (name, value) in self.env {
            if !is_name(name) {
                return None;
            }
            put(&[b"export ", name.as_bytes(), b"=", &quote(value)?, b"\n"]);
        }
        put(&[
            b"sd_run ",
            &quote(self.exit.as_os_str())?,
            b" ",
            &quote(self.program)?,
        ]);
        for arg in self.args {
            put(&[b" ", &quote(arg)?]);
        }
        put(&[
            b"\nprintf 'x %s %s\\n' ",
            key.as_bytes(),
            b" \"$?\" >&3\n) &\n",
        ]);
        Some(out)
    }
}

/// `s` as one single-quoted shell word (`'` written as `'\''`); `None` for a NUL byte.
fn quote(s: &OsStr) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if bytes.contains(&0) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    Some(out)
}

/// Whether `name` is a name the shell can `export`: letters, digits and `_`, not
/// starting with a digit.
fn is_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;
    use std::process::{Command, Stdio};

    /// Runs `values` through quoting and a real shell: each comes back byte for byte.
    #[test]
    fn quoted_words_reach_the_program_unchanged() {
        let values: Vec<OsString> = [
            &b"plain"[..],
            b"it's",
            b"''",
            b"$(touch /tmp/sd-zygote-pwned) `id` $HOME ${x}",
            b"back\\slash \\' \\n",
            b"two\nlines\n",
            b"\n",
            b"",
            b"tab\there; echo not-a-command & |",
            b"\xff\xfe not utf-8",
        ]
        .iter()
        .map(|b| OsString::from_vec(b.to_vec()))
        .collect();
        let mut script = b"printf '%s\\0'".to_vec();
        for v in &values {
            script.push(b' ');
            script.extend(quote(v).unwrap());
        }
        script.push(b'\n');
        let out = Command::new(crate::supervisor::SHELL)
            .arg("-s")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&script)?;
                c.wait_with_output()
            })
            .unwrap();
        let back: Vec<OsString> = out
            .stdout
            .split(|b| *b == 0)
            .take(values.len())
            .map(|b| OsString::from_vec(b.to_vec()))
            .collect();
        assert_eq!(back, values);
        assert!(!Path::new("/tmp/sd-zygote-pwned").exists());
    }

    #[test]
    fn names_the_shell_cannot_export_and_nul_bytes_are_refused() {
        let job = |env: &[(OsString, OsString)]| {
            Job {
                key: "7",
                log: Path::new("/l"),
                exit: Path::new("/e"),
                work: Path::new("/w"),
                cgroup_procs: Path::new("/c"),
                program: OsStr::new("/launch"),
                args: &[],
                env,
            }
            .text()
        };
        let pair = |k: &[u8], v: &[u8]| {
            (
                OsString::from_vec(k.to_vec()),
                OsString::from_vec(v.to_vec()),
            )
        };
        assert!(job(&[pair(b"GOOD_1", b"x")]).is_some());
        assert!(job(&[pair(b"1BAD", b"x")]).is_none());
        assert!(job(&[pair(b"A-B", b"x")]).is_none());
        assert!(job(&[pair(b"A", b"nul\0byte")]).is_none());
    }
}
