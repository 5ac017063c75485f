//! One module per subcommand; [`run()`] dispatches.

mod build;
mod demo;
mod doctor;
mod findings;
mod gc;
#[cfg(feature = "gearman")]
mod gearman;
#[cfg(feature = "docker")]
mod launcher_image;
mod options;
mod run;
mod serve;
mod status;
mod stop;
mod verify;

use crate::cli::{Cli, Command};
use crate::config::{FileConfig, executors};
use crate::error::CliResult;

/// What every command gets: the config file and the backends asked for.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The config file's contents (defaults without a file).
    pub file: FileConfig,
    /// The backends, the default first.
    pub executors: Vec<String>,
    /// Whether `--executor`/`SDX_EXECUTOR`/the file named the backends.
    pub explicit_executors: bool,
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> CliResult<u8> {
    let file = FileConfig::load(cli.config.as_deref(), &cli.opts)?;
    let explicit_executors = cli.executor.is_some() || file.executor.is_some();
    let executors = executors(cli.executor.as_deref(), &file)?;
    let ctx = Ctx {
        file,
        executors,
        explicit_executors,
    };
    match cli.command {
        Command::Options(a) => options::run(a),
        Command::Demo(a) => demo::run(&ctx, a).await,
        Command::Run(a) => run::run(&ctx, a).await,
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Stop(a) => stop::run(&ctx, a).await,
        Command::Verify(a) => verify::run(&ctx, a).await,
        Command::Gc(a) => gc::run(&ctx, a).await,
        Command::Doctor(a) => doctor::run(&ctx, a).await,
        Command::Serve(a) => serve::run(&ctx, a).await,
        #[cfg(feature = "gearman")]
        Command::GearmanWorker(a) => gearman::run(&ctx, a).await,
        #[cfg(feature = "docker")]
        Command::LauncherImage(a) => launcher_image::run(&ctx, a).await,
    }
}
