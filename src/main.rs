//! The `kdeploy` binary: parse, run, report, exit.
//!
//! Exit codes: 0 success, 1 differences found (`render --check`),
//! 2 bad input, configuration or any other error.

use std::process::ExitCode;

use clap::Parser;
use kdeploy::cli::{self, Cli, Outcome};
use kdeploy::diag::Diagnostics;
use kdeploy::render;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match cli::run(cli, &mut stdout) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Differences) => ExitCode::from(1),
        Err(err) => {
            report(&err);
            ExitCode::from(2)
        }
    }
}

/// Prints the error chain; in GitHub Actions, file problems also become annotations.
fn report(err: &anyhow::Error) {
    let diagnostics = err.chain().find_map(|e| {
        e.downcast_ref::<Diagnostics>()
            .or_else(|| match e.downcast_ref::<render::Error>() {
                Some(render::Error::Invalid(d)) => Some(d),
                _ => None,
            })
    });
    match diagnostics {
        Some(d) => {
            eprintln!("{d}");
            if std::env::var_os("GITHUB_ACTIONS").is_some() {
                for one in &d.0 {
                    println!("{}", one.to_github_annotation());
                }
            }
        }
        None => eprintln!("error: {err:#}"),
    }
}
