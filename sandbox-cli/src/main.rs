//! The `sandbox` command.
//!
//! - `sandbox run DIR` hosts one sandbox built from DIR and speaks JSON lines
//!   on stdin/stdout (see `protocol.rs` and the README).
//! - `sandbox demo` is a scripted tour on the built-in counter example.
//! - `sandbox new DIR` scaffolds a plugin crate that builds and loads as is.
//! - `sandbox check DIR [--profile P]` prints the source scan's findings
//!   like cargo diagnostics and fails when the profile refuses one.
//! - `sandbox audit verify FILE` checks an audit log's hash chain.
//! - `sandbox serve` runs the HTTP service (`sandbox-serve`), keeping
//!   sandboxes and their state in a data dir across restarts.
//! - `sandbox ls | create | call | reload | versions | rollback | restart |
//!   rm | events` are a client of a running `sandbox serve` (`client.rs`).

// A command's output is its job; libraries never print (workspace lint).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod audit;
mod check;
mod client;
mod demo;
mod protocol;
mod run;
mod scaffold;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sandbox_core::isolate::IsolationKind;
use sandbox_core::security::Profile;

#[derive(Debug, Parser)]
#[command(
    name = "sandbox",
    version,
    about = "Run plugin modules compiled from Rust source in sandboxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Host one sandbox built from DIR and serve JSON-lines requests on stdin.
    Run(RunArgs),
    /// A scripted tour: create, call, edit, hot swap, a broken edit, rollback.
    Demo(DemoArgs),
    /// Scaffold a plugin crate in DIR that builds and loads with no edits.
    New(NewArgs),
    /// Scan DIR as cargo reads it and print what the source uses, and
    /// whether the profile allows it (advice: the jail is the guarantee).
    Check(check::CheckArgs),
    /// Audit log tools: `sandbox audit verify FILE`.
    Audit(audit::AuditArgs),
    /// Serve sandboxes over HTTP/JSON, keeping them and their state in a
    /// data dir across restarts (see the README's `sandbox serve` section).
    Serve(serve::ServeArgs),
    /// `ls`, `create`, `call`, `reload`, `versions`, `rollback`, `restart`, `rm`, `events`: a client of `sandbox serve`.
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Options of `sandbox run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The plugin crate or workspace.
    dir: PathBuf,
    /// Sandbox id (default: the folder's name).
    #[arg(long)]
    id: Option<String>,
    /// Where modules run: `process` (a jailed worker) or `in-process` (only
    /// with `--profile trusted`). Default: `in-process` for trusted source,
    /// `process` for anything else.
    #[arg(long)]
    isolation: Option<IsolationKind>,
    /// How far the source is trusted: `high` or `medium` (untrusted: built
    /// and run only inside a jail) or `trusted` (your own code: built and
    /// run with your rights). Default: medium.
    #[arg(long, default_value = "medium")]
    profile: Profile,
    /// Rebuild and hot-swap on every save.
    #[arg(long)]
    watch: bool,
    /// Build without network access.
    #[arg(long)]
    offline: bool,
    /// Versions kept per module for rollback.
    #[arg(long, default_value_t = 10)]
    history: usize,
    /// Folder for the shared cargo target dir and the build cache
    /// (default: $SANDBOX_CACHE_DIR, else ~/.cache/sandbox).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Audit log that every create, build, reload, rollback, restart,
    /// crash and destroy is appended to (hash-chained; check it with
    /// `sandbox audit verify`). Default: audit.log in the cache folder.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Process isolation: pre-started empty workers kept ready.
    #[arg(long, default_value_t = 0)]
    warm_pool: usize,
    /// Process isolation: replace the worker (state carried) after this
    /// many swaps, giving back the memory of old versions; 0 never.
    #[arg(long, default_value_t = 50)]
    recycle_after: u32,
    /// Process isolation: crashes tolerated within a minute before the
    /// sandbox is left in `error`.
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
    /// Process isolation: when module state is saved, and so what a crash
    /// of the worker loses: `call` (after every call, before its reply: no
    /// answered call) or `interval` / `interval=MS` (every 2 s / MS
    /// milliseconds: the calls answered since the last save).
    #[arg(long, default_value = "interval")]
    durability: sandbox_core::Durability,
}

impl RunArgs {
    /// The isolation asked for, or the one the profile implies: source
    /// declared trusted runs in-process, anything else in a jailed worker.
    fn isolation(&self) -> IsolationKind {
        self.isolation
            .clone()
            .unwrap_or(if self.profile == Profile::Trusted {
                IsolationKind::IN_PROCESS
            } else {
                IsolationKind::PROCESS
            })
    }
}

/// Options of `sandbox demo`.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Keep the demo's copy of the example instead of deleting it.
    #[arg(long)]
    keep: bool,
}

/// Options of `sandbox new`.
#[derive(Debug, clap::Args)]
struct NewArgs {
    /// Folder to create (must not exist or be empty).
    dir: PathBuf,
    /// Module name (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Path of the `sandbox-plugin` crate to depend on (default: the one
    /// this binary was built with).
    #[arg(long)]
    api: Option<PathBuf>,
}

/// The hidden subcommand that turns this binary into a sandbox worker
/// process (see `sandbox_isolate::worker`); handled before anything else
/// starts, so a worker runs no async runtime and no logger of its own.
pub const WORKER_SUBCOMMAND: &str = "__worker";

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == WORKER_SUBCOMMAND)
    {
        return sandbox_core::isolate::worker::worker_main();
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::New(args) => scaffold::new(args),
            Command::Check(args) => check::check(args),
            Command::Audit(args) => audit::audit(args),
            Command::Serve(args) => serve::serve(args).await,
            Command::Client(command) => client::run(command),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
