//! `sandbox audit verify FILE`: checks an audit log's hash chain; and where
//! `sandbox run` keeps its log.
//!
//! Exit status of `verify`: 0 with a one-line summary when every entry
//! chains to the one before, 1 naming the first broken line otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use sandbox_core::security::{AuditLog, GENESIS_HASH};
use sandbox_core::Config;

/// Options of `sandbox audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// What `sandbox audit` does.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check that every entry of the log FILE chains to the one before
    /// (an edited, inserted, reordered or removed line breaks the chain).
    Verify {
        /// The audit log (`sandbox run` keeps `<cache folder>/audit.log`).
        file: PathBuf,
    },
}

/// The log `sandbox run` appends to: `--audit-log FILE`, else `audit.log`
/// in the cache folder (next to the shared target dir and build cache).
pub fn log_path(flag: Option<&PathBuf>, config: &Config) -> PathBuf {
    match flag {
        Some(file) => file.clone(),
        None => config
            .cache_dir
            .parent()
            .unwrap_or(&config.cache_dir)
            .join("audit.log"),
    }
}

pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify { file } => Ok(verify(&file)),
    }
}

fn verify(file: &PathBuf) -> ExitCode {
    match AuditLog::entries(file) {
        Ok(entries) => {
            let head = entries.last().map_or(GENESIS_HASH, |e| e.hash.as_str());
            println!(
                "ok: {}: {} entr{}, chain intact, head {}",
                file.display(),
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                &head[..head.len().min(16)]
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
