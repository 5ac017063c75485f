//! The command line (clap derive; every option also from an environment variable).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sdx: run, watch, stop and garbage-collect Screwdriver builds on any executor backend.
#[derive(Debug, Parser)]
#[command(name = "sdx", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (sections: api, process, docker, k8s, jenkins, gearman,
    /// gearmanWorker).
    #[arg(long, global = true, env = "SDX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Backend(s): a name (process, docker, k8s, jenkins, gearman) or a comma separated
    /// list whose first entry is the default of the router. `all` means every compiled-in
    /// backend (gc, doctor).
    #[arg(
        long,
        short = 'e',
        global = true,
        env = "SDX_EXECUTOR",
        value_name = "NAME[,NAME...]"
    )]
    pub executor: Option<String>,

    /// Set an option of a backend, the launcher worker or the API, over the config file
    /// and the environment (repeatable): `--opt docker.pullPolicy=never`,
    /// `--opt process.stopGraceMs=2000`, `--opt api.statusPollMs=500`. `sdx options` lists
    /// every key.
    #[arg(long = "opt", global = true, value_name = "SCHEME.KEY=VALUE")]
    pub opts: Vec<String>,
    /// More log output on stderr (-v info, -vv debug); `RUST_LOG` also works.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the reference API on loopback and run a sample three-step build, showing its
    /// progress (exit 0 only if the build succeeded).
    Demo(DemoArgs),
    /// Run a build from flags or a JSON file and follow it to the end (exit 0 only if it
    /// succeeded).
    Run(RunArgs),
    /// Show a build's status (from an API with --api, else from the executor; exit 1
    /// when the build is not found).
    Status(BuildRef),
    /// Stop a build (ABORTED through an API with --api, else on the executor; exit 1
    /// when the build is not found).
    Stop(BuildRef),
    /// Check a build's health on the executor (upstream's verify message).
    Verify(VerifyArgs),
    /// Remove engine resources whose expiry label has passed, and stop the builds of
    /// `sdx run` processes and `sdx gearman-worker`s that were killed (recording their
    /// outcome).
    Gc(GcArgs),
    /// Check each backend: configuration, reachability, version, permissions, and its
    /// pre-flight findings (human table or --json).
    Doctor(DoctorArgs),
    /// Serve the reference API, dispatching builds to the configured backend(s); builds
    /// outlive a restart (SIGINT/SIGTERM leave them running, the next serve adopts them).
    Serve(ServeArgs),
    /// Run a Zuul-style Gearman launcher worker over the configured backend(s).
    #[cfg(feature = "gearman")]
    GearmanWorker(GearmanWorkerArgs),
    /// The sdx launcher image (job-tools for native launch mode).
    #[cfg(feature = "docker")]
    #[command(name = "launcher-image")]
    LauncherImage(LauncherImageArgs),
    /// List the options of the backends, the Gearman launcher worker and the API: key,
    /// environment variable, type, default (precedence: --opt > environment > file >
    /// default).
    Options(OptionsArgs),
}

/// `sdx options`.
#[derive(Debug, Clone, Args)]
pub struct OptionsArgs {
    /// Only these schemes (api, process, docker, k8s, jenkins, gearman, gearmanWorker).
    #[arg(value_name = "SCHEME")]
    pub schemes: Vec<String>,
    /// Print Markdown tables (as in the crates' READMEs).
    #[arg(long)]
    pub markdown: bool,
}

/// Where a remote API is.
#[derive(Debug, Clone, Args)]
pub struct RemoteApi {
    /// A running API (`sdx serve`) to talk to instead of an embedded one / the executor.
    #[arg(long, env = "SDX_API", value_name = "URL")]
    pub api: Option<String>,
    /// The API's administrator token (see `sdx serve --token-file`).
    #[arg(
        long,
        env = "SDX_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,
}

/// `sdx demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Make the last step fail, to see a failed build.
    #[arg(long)]
    pub fail: bool,
    /// Steps to run instead of the sample: a JSON array `[{"name", "command"}]` or a JSON
    /// build body with `steps`.
    #[arg(long, value_name = "FILE", conflicts_with = "fail")]
    pub steps: Option<PathBuf>,
    /// The build's image (for the docker, k8s and jenkins backends).
    #[arg(long, env = "SDX_DEMO_CONTAINER", value_name = "IMAGE")]
    pub container: Option<String>,
}

/// `sdx run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The build as JSON: `{"steps": [{"name", "command"}], "container", "annotations",
    /// "environment", "jobId", ...}`.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A step, in order (repeatable).
    #[arg(long = "step", value_name = "NAME=COMMAND")]
    pub steps: Vec<String>,
    /// The build's image.
    #[arg(long, value_name = "IMAGE")]
    pub container: Option<String>,
    /// An annotation (repeatable), e.g. `screwdriver.cd/cpu=HIGH`.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// An environment variable of the steps (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Build timeout in minutes (`screwdriver.cd/timeout`).
    #[arg(long, value_name = "MINUTES")]
    pub timeout: Option<u32>,
    /// Run the executor's pre-flight checks for this build and show the findings,
    /// without starting it (exit 1 when a check fails).
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the findings as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Remote API.
    #[command(flatten)]
    pub remote: RemoteApi,
}

/// A build id, and where to ask about it.
#[derive(Debug, Clone, Args)]
pub struct BuildRef {
    /// The build id.
    pub build_id: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Remote API.
    #[command(flatten)]
    pub remote: RemoteApi,
}

/// `sdx verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The build id (or give --start-config).
    #[arg(required_unless_present = "start_config")]
    pub build_id: Option<u64>,
    /// The build's image.
    #[arg(long, default_value = "busybox:latest", value_name = "IMAGE")]
    pub container: String,
    /// A start config as JSON (`buildId`, `apiUri`, `container`, `token`, `annotations`).
    #[arg(long, value_name = "FILE", conflicts_with = "build_id")]
    pub start_config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sdx gc`.
#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sdx doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The build image pre-flight checks (default: the sdx launcher image).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

/// `sdx serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "SDX_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: String,
    /// The URL builds use to reach the API (default: http://<listen address>).
    #[arg(long, env = "SDX_PUBLIC_URI", value_name = "URL")]
    pub public_uri: Option<String>,
    /// Where to write the administrator token (mode 0600). Default: a file in the
    /// temporary directory, printed at start. `SDX_API_TOKEN` chooses the token; otherwise
    /// it is generated once and kept in the store.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where builds, steps, logs and the id sequence are kept: `sqlite:PATH`, `memory:`,
    /// or `postgres://user@host:port/db`, which several `sdx serve` instances share
    /// (timers then live there too; lease settings: `[api] leaseTtlMs`, `leaseRenewMs`).
    /// Default: `sqlite:<state dir>/api.db`, or `[api] buildStore`.
    #[arg(long, env = "SDX_STORE", value_name = "URI")]
    pub store: Option<String>,
    /// On SIGINT/SIGTERM, abort every open build and wait for its stop (by default they
    /// keep running and the next `sdx serve` adopts them).
    #[arg(long)]
    pub cancel_on_exit: bool,
    /// Serve the library's metrics in Prometheus' text format at
    /// `http://ADDR/metrics` (off by default; port 0 picks a free port).
    #[arg(long, env = "SDX_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// `sdx gearman-worker`.
#[cfg(feature = "gearman")]
#[derive(Debug, Clone, Args)]
pub struct GearmanWorkerArgs {
    /// gearmand's host:port (default from EXECUTOR_GEARMAN_WORKER_SERVER, else 127.0.0.1:4730).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// A Zuul job name to run (repeatable; registers build:<job>).
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
    /// A node name or class (repeatable; registers build:<job>:<node>).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Builds run at once.
    #[arg(long, value_name = "N")]
    pub max_builds: Option<usize>,
    /// `apiUri` for jobs whose parameters have none.
    #[arg(long, value_name = "URL")]
    pub api_uri: Option<String>,
    /// `container` for jobs whose parameters have none.
    #[arg(long, value_name = "IMAGE")]
    pub container: Option<String>,
}

/// `sdx launcher-image`.
#[cfg(feature = "docker")]
#[derive(Debug, Clone, Args)]
pub struct LauncherImageArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LauncherImageCommand,
}

/// `sdx launcher-image` subcommands.
#[cfg(feature = "docker")]
#[derive(Debug, Clone, Subcommand)]
pub enum LauncherImageCommand {
    /// Build the image FROM scratch with a static launch at /opt/sd/launch, through the
    /// Docker Engine API of the docker backend's daemon, tagged
    /// localhost/sdx-launcher:<version> (the native-mode default) and every --tag.
    Build(LauncherImageBuildArgs),
}

/// `sdx launcher-image build`.
#[cfg(feature = "docker")]
#[derive(Debug, Clone, Args)]
pub struct LauncherImageBuildArgs {
    /// Another name for the image (repeatable), e.g. registry.example.com/sdx/launcher:1.
    #[arg(long = "tag", short = 't', value_name = "REFERENCE")]
    pub tags: Vec<String>,
    /// Push every --tag to its registry (credentials: SDX_REGISTRY_USERNAME and
    /// SDX_REGISTRY_PASSWORD, else those `docker login` stored in the Docker CLI config).
    #[arg(long)]
    pub push: bool,
    /// The static launch to put in the image (default: beside sdx, this sdx when it is
    /// static, or built with cargo in the checkout sdx comes from).
    #[arg(long, env = "SDX_LAUNCH_BINARY", value_name = "FILE")]
    pub launch: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
