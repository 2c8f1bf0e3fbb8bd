//! `sandbox check DIR [--profile P]`: the source scan's findings, printed
//! like cargo's diagnostics, and whether the profile allows them.
//!
//! Exit status: 0 when the profile allows every finding, 1 when it refuses
//! one (or the tree cannot be scanned). The scan is advice for authors and
//! operators; whatever it finds or misses, untrusted source is built and run
//! only inside the jail.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use sandbox_core::security::{Finding, Policy, Profile, SourcePolicy};

/// Options of `sandbox check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The plugin crate or workspace to scan.
    pub dir: PathBuf,
    /// The profile to check against: `high`, `medium` or `trusted`.
    #[arg(long, default_value = "medium")]
    pub profile: Profile,
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let policy = SourcePolicy::new();
    let report = policy
        .scan(&args.dir)
        .with_context(|| format!("scanning {}", args.dir.display()))?;
    let permissions = args.profile.permissions();
    let mut out = String::new();
    let mut refused = 0;
    for finding in &report.findings {
        let allowed = permissions.permits(&finding.capability);
        if !allowed {
            refused += 1;
        }
        render(&mut out, &args.dir, finding, args.profile, allowed);
    }
    let files = report.files_scanned;
    let found = report.findings.len();
    let summary = if refused > 0 {
        format!(
            "error: source refused under profile {}: {refused} of {found} finding{} not allowed ({files} file{} scanned)\n",
            args.profile,
            plural(found),
            plural(files)
        )
    } else {
        format!(
            "ok: {found} finding{}, all allowed under profile {} ({files} file{} scanned)\n",
            plural(found),
            args.profile,
            plural(files)
        )
    };
    out.push_str(&summary);
    out.push_str(
        "note: the scan is advice; untrusted source (every profile but `trusted`) is built and run only inside the jail\n",
    );
    print!("{out}");
    Ok(if refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One finding as cargo prints a diagnostic:
///
/// ```text
/// warning: `std::process` (process creation)
///  --> src/lib.rs:2:5
///   |
/// 2 |     std::process::Command::new("sh");
///   |     ^
///   = note: not allowed under profile high
/// ```
fn render(out: &mut String, root: &Path, finding: &Finding, profile: Profile, allowed: bool) {
    let line_no = finding.line.to_string();
    let pad = " ".repeat(line_no.len());
    let _ = writeln!(
        out,
        "warning: {} ({})",
        finding.detail,
        finding.capability.describe()
    );
    let _ = writeln!(
        out,
        "{pad}--> {}:{}:{}",
        finding.file.display(),
        finding.line,
        finding.column
    );
    let source_line = std::fs::read_to_string(root.join(&finding.file))
        .ok()
        .and_then(|text| {
            let index = usize::try_from(finding.line).ok()?.checked_sub(1)?;
            text.lines().nth(index).map(str::to_owned)
        });
    if let Some(text) = source_line {
        let column = usize::try_from(finding.column).unwrap_or(1).max(1);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line_no} | {text}");
        let _ = writeln!(out, "{pad} | {}^", " ".repeat(column - 1));
    }
    let verdict = if allowed { "allowed" } else { "not allowed" };
    let _ = writeln!(out, "{pad} = note: {verdict} under profile {profile}");
    out.push('\n');
}
