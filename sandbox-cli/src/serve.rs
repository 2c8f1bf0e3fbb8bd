//! `sandbox serve`: the HTTP service of `sandbox-serve`, with flags, a
//! token from `--token-file` or `SANDBOX_TOKEN`, and graceful shutdown on
//! SIGTERM and SIGINT (stop accepting, drain, checkpoint, exit 0).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use sandbox_core::isolate::WorkerCommand;
use sandbox_serve::{RateLimit, ServeConfig, Service};

/// Options of `sandbox serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but a loopback address needs a token.
    #[arg(long, default_value = sandbox_serve::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Folder holding what the service must not lose: its store
    /// (serve.redb: sandbox specs, checkpoints, version history) and the
    /// audit log. Default: $XDG_DATA_HOME/sandbox/serve, else
    /// ~/.local/share/sandbox/serve.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// File of accepted bearer tokens, one per line (blank lines and lines
    /// starting with `#` are skipped). Without it, SANDBOX_TOKEN is the
    /// token; with neither, only a loopback address is served, with no
    /// authentication.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Folder for the shared cargo target dir and the build cache
    /// (default: $SANDBOX_CACHE_DIR, else ~/.cache/sandbox). It can be
    /// rebuilt, so it is not in the data dir.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Build without network access.
    #[arg(long)]
    offline: bool,
    /// Requests per second each token may make (bursts of twice that).
    #[arg(long, default_value_t = NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN))]
    rate_limit: NonZeroU32,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds requests in flight may take to finish on SIGTERM.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// Serve sandboxes that declare their source trusted: built and run
    /// with this service's own rights (in-process), so a token is then
    /// worth what this service's user can do. Without it such a create is
    /// refused (403) and every sandbox is built and run in the jail.
    #[arg(long)]
    allow_trusted: bool,
}

/// Reads the tokens: the file's lines, else `SANDBOX_TOKEN`.
fn tokens(args: &ServeArgs) -> anyhow::Result<Vec<String>> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let tokens: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        anyhow::ensure!(
            !tokens.is_empty(),
            "the token file {} holds no token; put one token per line",
            path.display()
        );
        return Ok(tokens);
    }
    Ok(std::env::var("SANDBOX_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .into_iter()
        .collect())
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(sandbox_serve::default_data_dir);
    let base = match &args.cache_dir {
        Some(dir) => sandbox_core::Config::with_cache_root(dir),
        None => sandbox_core::Config::default(),
    };
    let mut config = ServeConfig::new(args.listen, data_dir);
    config.tokens = tokens(&args)?;
    config.manager = sandbox_core::Config {
        offline: args.offline,
        ..base
    };
    config.worker = Some(
        WorkerCommand::current_exe_with([crate::WORKER_SUBCOMMAND])
            .context("finding this executable to run sandbox workers")?,
    );
    config.rate_limit = RateLimit {
        per_second: args.rate_limit,
        burst: args
            .rate_limit
            .saturating_mul(NonZeroU32::MIN.saturating_add(1)),
    };
    config.max_body = args.max_body;
    config.drain_timeout = std::time::Duration::from_secs(args.drain_secs);
    config.allow_trusted = args.allow_trusted;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let mut service = Service::start(config).await?;
    eprintln!(
        "sandbox serve: listening on http://{}",
        service.local_addr()
    );
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::pin!(stop);
    tokio::select! {
        () = service.ready() => {
            eprintln!("sandbox serve: ready ({} sandboxes)", service.manager().list().len());
            stop.await;
        }
        () = &mut stop => {}
    }
    eprintln!("sandbox serve: shutting down");
    let report = service.shutdown().await;
    for (id, why) in &report.failed {
        eprintln!("sandbox serve: the last checkpoint of `{id}` failed: {why}");
    }
    if !report.stopped {
        // A plugin still runs on a thread of this process; returning would
        // wait for it when the async runtime drops. Everything is saved.
        std::process::exit(0);
    }
    Ok(ExitCode::SUCCESS)
}
