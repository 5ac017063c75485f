//! Who owns a build's engine resources, written on them as the [`LABEL_OWNER`] label, so
//! that the garbage collector finds what a crashed process left behind *at once* instead
//! of after the expiry, and `status` calls such an orphan `Lost` instead of `running`.
//!
//! Every backend labels the same way ([`crate::BuildLabels::with_owner`]) and asks the
//! same question ([`Owner::liveness`]):
//!
//! * [`Owner::Process`] (the default for an executor): the process that created the
//!   resources, identified by its pid **and** its start time (so a recycled pid is not
//!   mistaken for it), plus the host, boot and pid namespace it ran in. From the same
//!   host, boot and pid namespace, its liveness is certain (`/proc/<pid>/stat`); from
//!   the same host after a reboot it is certainly [`Liveness::Gone`]; from anywhere else
//!   it is [`Liveness::Unknown`] and only the expiry applies.
//! * [`Owner::Instance`]: a server instance that outlives its processes (it adopts its
//!   builds after a restart, so the death of one process must not orphan them). Its
//!   liveness is [`Liveness::Unknown`] unless something keeps a heartbeat for it; until
//!   then only the expiry applies to its resources.
//!
//! The label value is a valid Kubernetes label value (at most 63 characters of
//! `[A-Za-z0-9._-]`, alphanumeric at both ends) and a valid Docker label value:
//! `p.<host>.<boot>.<pidns>.<pid>.<start ticks>` or `i.<instance id>`.
//!
//! ```
//! use executor_base::owner::{Liveness, Owner};
//! let me = Owner::current().expect("Linux with /proc");
//! assert_eq!(me.liveness(), Liveness::Alive);
//! assert_eq!(Owner::parse(&me.to_label()), Some(me.clone()));
//! let server = Owner::instance("api-7").unwrap();
//! assert_eq!(server.to_label(), "i.api-7");
//! assert_eq!(server.liveness(), Liveness::Unknown);
//! ```

use std::fmt;
use std::sync::OnceLock;

/// The label naming a resource's owner (see the module docs for its value).
pub const LABEL_OWNER: &str = "screwdriver.cd/owner";

/// The longest instance id ([`Owner::instance`]): the label value stays within 63 characters.
pub const MAX_INSTANCE_ID: usize = 61;

/// Who created (and is responsible for) a build's resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A process; see [`ProcessIdentity`].
    Process(ProcessIdentity),
    /// A server instance that adopts its builds across restarts.
    Instance(String),
}

/// A process, identified well enough that a recycled pid or another machine is never
/// mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// 8 hex digits of the machine id (or of the host name where there is none).
    pub host: String,
    /// 8 hex digits of the kernel's boot id.
    pub boot: String,
    /// The inode of the process's pid namespace.
    pub pid_ns: u64,
    /// The pid, in that namespace.
    pub pid: u32,
    /// The process's start time, in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// Whether an owner still exists, as far as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It exists: its resources are not orphans.
    Alive,
    /// It certainly no longer exists: its resources are orphans.
    Gone,
    /// This process cannot tell (another host or pid namespace, a server instance):
    /// only the expiry applies.
    Unknown,
}

impl Owner {
    /// This process, or `None` where its identity cannot be read (no `/proc`).
    pub fn current() -> Option<Owner> {
        static CURRENT: OnceLock<Option<ProcessIdentity>> = OnceLock::new();
        CURRENT
            .get_or_init(ProcessIdentity::current)
            .clone()
            .map(Owner::Process)
    }

    /// A server instance; `id` must be 1 to [`MAX_INSTANCE_ID`] characters of
    /// `[A-Za-z0-9._-]`, alphanumeric at both ends.
    pub fn instance(id: &str) -> Result<Owner, String> {
        let ok_chars = id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let ok_ends = id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id.ends_with(|c: char| c.is_ascii_alphanumeric());
        if id.is_empty() || id.len() > MAX_INSTANCE_ID || !ok_chars || !ok_ends {
            return Err(format!(
                "instance id {id:?}: expected 1 to {MAX_INSTANCE_ID} characters of \
                 [A-Za-z0-9._-], alphanumeric at both ends"
            ));
        }
        Ok(Owner::Instance(id.to_string()))
    }

    /// The instance owner of a deployment whose processes come and go but whose builds
    /// live on, named after what its processes share (`key`: a server's build store, its
    /// path or its database address): `<name>-<16 hex digits of FNV-1a(key)>`, the same
    /// for every process and every restart of the deployment. `sdx serve` labels its
    /// Docker and Kubernetes resources so: a killed instance's builds are adopted by the
    /// next one (or by another instance on the same store), not orphaned.
    ///
    /// ```
    /// use executor_base::owner::{Liveness, Owner};
    /// let a = Owner::deployment("serve", "postgres://db:5432/sdx");
    /// assert_eq!(a, Owner::deployment("serve", "postgres://db:5432/sdx"));
    /// assert_ne!(a, Owner::deployment("serve", "postgres://db:5432/other"));
    /// assert!(a.to_label().starts_with("i.serve-"));
    /// assert_eq!(a.liveness(), Liveness::Unknown);
    /// ```
    pub fn deployment(name: &str, key: &str) -> Owner {
        let hash = crate::fnv::fnv1a(key.bytes());
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(MAX_INSTANCE_ID - 17)
            .collect();
        let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        let id = if name.is_empty() {
            format!("{hash:016x}")
        } else {
            format!("{name}-{hash:016x}")
        };
        Owner::Instance(id)
    }

    /// The [`LABEL_OWNER`] value.
    pub fn to_label(&self) -> String {
        match self {
            Owner::Process(p) => format!(
                "p.{}.{}.{}.{}.{}",
                p.host, p.boot, p.pid_ns, p.pid, p.start_ticks
            ),
            Owner::Instance(id) => format!("i.{id}"),
        }
    }

    /// Reads a [`LABEL_OWNER`] value; `None` when it is not one.
    pub fn parse(value: &str) -> Option<Owner> {
        if let Some(id) = value.strip_prefix("i.") {
            return Owner::instance(id).ok();
        }
        let mut parts = value.strip_prefix("p.")?.split('.');
        let mut next = || parts.next().filter(|s| !s.is_empty());
        let host = hex8(next()?)?;
        let boot = hex8(next()?)?;
        let pid_ns = next()?.parse().ok()?;
        let pid = next()?.parse().ok()?;
        let start_ticks = next()?.parse().ok()?;
        if next().is_some() {
            return None;
        }
        Some(Owner::Process(ProcessIdentity {
            host,
            boot,
            pid_ns,
            pid,
            start_ticks,
        }))
    }

    /// Whether this owner still exists, as seen from this process (see the module docs).
    pub fn liveness(&self) -> Liveness {
        match self {
            Owner::Process(p) => match Owner::current() {
                Some(Owner::Process(me)) => p.liveness_from(&me, read_start_ticks),
                _ => Liveness::Unknown,
            },
            Owner::Instance(_) => Liveness::Unknown,
        }
    }

    /// [`Owner::liveness`] of a [`LABEL_OWNER`] value; a missing or unreadable label is
    /// [`Liveness::Unknown`] (resources of older versions keep their expiry).
    pub fn liveness_of_label(value: Option<&str>) -> Liveness {
        value
            .and_then(Owner::parse)
            .map_or(Liveness::Unknown, |o| o.liveness())
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Process(p) => write!(f, "process {} (started at tick {})", p.pid, p.start_ticks),
            Owner::Instance(id) => write!(f, "instance {id}"),
        }
    }
}

impl ProcessIdentity {
    /// This process's identity, from `/proc`.
    fn current() -> Option<ProcessIdentity> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let pid_ns = pid_ns
            .to_str()?
            .strip_prefix("pid:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        let pid = std::process::id();
        Some(ProcessIdentity {
            host: host_id()?,
            boot: hex8(&boot.trim().replace('-', ""))?,
            pid_ns,
            pid,
            start_ticks: read_start_ticks(pid)?,
        })
    }

    /// Liveness of `self` seen from `me`, reading start times with `start_of`.
    fn liveness_from(
        &self,
        me: &ProcessIdentity,
        start_of: impl Fn(u32) -> Option<u64>,
    ) -> Liveness {
        if self.host != me.host {
            return Liveness::Unknown;
        }
        if self.boot != me.boot {
            // Same machine, another boot: every process of that boot is gone.
            return Liveness::Gone;
        }
        if self.pid_ns != me.pid_ns {
            return Liveness::Unknown;
        }
        match start_of(self.pid) {
            Some(t) if t == self.start_ticks => Liveness::Alive,
            // No such process, or the pid now belongs to a younger one.
            _ => Liveness::Gone,
        }
    }
}

/// 8 lowercase hex digits of `/etc/machine-id`, or a hash of the host name.
fn host_id() -> Option<String> {
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id")
        && let Some(h) = hex8(id.trim())
    {
        return Some(h);
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    // FNV-1a: stable across runs and Rust versions (unlike std's hasher).
    let hash = name.trim().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Some(format!("{hash:08x}"))
}

/// The first 8 characters of `s` when they are hex digits, lowercased.
fn hex8(s: &str) -> Option<String> {
    let head = s.get(..8)?;
    head.chars()
        .all(|c| c.is_ascii_hexdigit())
        .then(|| head.to_ascii_lowercase())
}

/// The start time (clock ticks after boot) of process `pid`, `None` if there is none.
fn read_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (the command) is parenthesised and may contain spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; the start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ProcessIdentity {
        match Owner::current() {
            Some(Owner::Process(p)) => p,
            other => panic!("no identity: {other:?}"),
        }
    }

    #[test]
    fn the_label_round_trips_and_is_a_valid_k8s_label_value() {
        let label = Owner::current().unwrap().to_label();
        assert!(label.len() <= 63, "{label}");
        assert!(
            label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{label}"
        );
        assert_eq!(Owner::parse(&label), Owner::current());
        for bad in [
            "",
            "p.",
            "p.zz.11.1.2.3",
            "p.12345678.12345678.1.2",
            "x.y",
            "i.",
        ] {
            assert_eq!(Owner::parse(bad), None, "{bad:?}");
        }
        assert!(Owner::instance("-x").is_err());
        assert!(Owner::instance(&"a".repeat(62)).is_err());
        assert_eq!(
            Owner::parse(&Owner::instance("a".repeat(61).as_str()).unwrap().to_label())
                .unwrap()
                .to_label()
                .len(),
            63
        );
    }

    #[test]
    fn a_live_process_is_alive_and_a_dead_or_recycled_one_is_gone() {
        let me = me();
        assert_eq!(Owner::Process(me.clone()).liveness(), Liveness::Alive);
        // A child that has exited (and been reaped): gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let ticks = read_start_ticks(pid).unwrap_or(me.start_ticks);
        child.wait().unwrap();
        let dead = ProcessIdentity {
            pid,
            start_ticks: ticks,
            ..me.clone()
        };
        assert_eq!(Owner::Process(dead).liveness(), Liveness::Gone);
        // Our pid with another start time: a recycled pid, gone.
        let recycled = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(Owner::Process(recycled).liveness(), Liveness::Gone);
    }

    #[test]
    fn other_hosts_and_namespaces_are_unknown_and_another_boot_is_gone() {
        let me = me();
        let alive = |_: u32| Some(me.start_ticks);
        let other_host = ProcessIdentity {
            host: "00000000".into(),
            ..me.clone()
        };
        assert_eq!(other_host.liveness_from(&me, alive), Liveness::Unknown);
        let other_ns = ProcessIdentity {
            pid_ns: me.pid_ns + 1,
            ..me.clone()
        };
        assert_eq!(other_ns.liveness_from(&me, alive), Liveness::Unknown);
        let other_boot = ProcessIdentity {
            boot: "00000000".into(),
            ..me.clone()
        };
        assert_eq!(other_boot.liveness_from(&me, alive), Liveness::Gone);
        assert_eq!(Owner::liveness_of_label(None), Liveness::Unknown);
        assert_eq!(Owner::liveness_of_label(Some("junk")), Liveness::Unknown);
        assert_eq!(
            Owner::liveness_of_label(Some("i.server-1")),
            Liveness::Unknown
        );
    }
}
