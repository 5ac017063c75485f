//! The `launch` entry point: arguments, signal handling, exit code.

use crate::args::{self, Args, USAGE};
use crate::run::{Launcher, Outcome};
use crate::signals;

/// Writes a line to stdout, ignoring a closed stdout (never a panic).
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Runs `launch` with these arguments (the first one is the program name) and returns
/// the process exit code.
///
/// Installs the signal handling (SIGTERM, SIGINT and SIGHUP stop the running step and
/// abort the build): call it before the process starts other threads, as the `launch`
/// binary and `sdx` (when invoked as `launch`) do.
pub fn main_with_args<I, S>(args: I) -> i32
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    let argv: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    if argv.get(1).is_some_and(|a| a == "install") {
        return crate::install::main(&argv[2..]);
    }
    let args = match Args::parse(argv.into_iter().skip(1)) {
        Ok(args::Parsed::Run(a)) => a,
        Ok(args::Parsed::Help) => {
            say(USAGE);
            return 0;
        }
        Ok(args::Parsed::Version) => {
            say(concat!("launch ", env!("CARGO_PKG_VERSION")));
            return 0;
        }
        Err(e) => {
            eprintln!("launch: {e}\n\n{USAGE}");
            return Outcome::UsageOrApiError.exit_code();
        }
    };
    let abort = signals::install();
    let (build_id, only_token) = (args.build_id, args.only_fetch_token);
    let outcome = Launcher::new(args).with_abort(abort).run();
    // The last line of a build: the launch handshake (see `handshake`); never after
    // `--only-fetch-token`, whose output is the token alone.
    if !only_token {
        let line = crate::handshake::line(build_id, outcome);
        say(&line);
        crate::handshake::write_result_file(&line);
    }
    outcome.exit_code()
}
