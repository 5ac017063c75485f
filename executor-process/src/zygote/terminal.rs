//! The zygote's terminal, needed for a moment: a shell turns job control on (`set -m`)
//! only with a controlling terminal, and job control is what gives each build's subshell
//! a process group of its own and leaves SIGINT and SIGQUIT at their defaults (without
//! it, a shell's background commands share its group, ignore both for good, and its job
//! table only grows).
//!
//! Once job control is on, the executor closes the master: the terminal hangs up, the
//! session loses it, and builds start with no controlling terminal, as they do under a
//! shell of their own started by a server without one (`/dev/tty` cannot be opened, a
//! build's own `set -m` is refused). The zygote ignores the hang-up's SIGHUP; each
//! supervisor sets its own trap, so `launch` starts with SIGHUP at its default.

use std::io;

use nix::fcntl::OFlag;
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};

/// A pseudo-terminal's master side, and the path of its slave.
pub(super) struct Terminal {
    /// Held until job control is on; dropping it hangs the terminal up.
    _master: PtyMaster,
    /// `/dev/pts/<n>`, opened by the zygote.
    pub slave: String,
}

impl Terminal {
    /// Opens a new pseudo-terminal (its master not inherited by children).
    pub(super) fn open() -> io::Result<Self> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let slave = ptsname_r(&master)?;
        Ok(Self {
            _master: master,
            slave,
        })
    }
}
