//! The `kdeploy` binary: parse, run, report, exit.
//!
//! Exit codes: 0 success, 1 differences found (`render --check`) or deploy
//! failed (`apply`), 2 bad input, configuration or any other error. `plan --detailed-exitcode`
//! uses 0 no changes, 2 changes, 1 error.

use std::process::ExitCode;

use kdeploy::cli::{self, Cli, Outcome};
use kdeploy::diag::Diagnostics;
use kdeploy::render;
use kdeploy::secrets::mask::redact;

/// Rendering allocates many small values on several threads; mimalloc keeps
/// that from being a third of the run time as with the system allocator.
/// Built without transparent huge pages (`no_thp`): with them every touched
/// 2 MiB of its arenas is resident, 117 MB instead of 90 MB at the peak of
/// rendering 3,000 releases, for no measurable speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns freed memory to the system a second after it is freed
/// (v3's default), longer than most commands run, so what a render frees
/// still counts in its peak: 88 MB for 3,000 releases, 79 MB with 5 ms.
/// At 0 ms the madvise calls cost a tenth of the run; 5 ms costs nothing
/// measurable.
fn tune_allocator() {
    // `mi_option_purge_delay`: the same index in mimalloc v2 and v3, which
    // libmimalloc-sys exports no constant for.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: stores one option value; no other thread runs yet.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 5) };
}

fn main() -> ExitCode {
    tune_allocator();
    // libyaml-safer's known panics are caught where it is called
    // (`yaml::index`) and become errors naming the file: not printed twice.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = info
            .location()
            .is_some_and(|l| l.file().contains(kdeploy::yaml::LIBYAML_SAFER))
            && info.payload().downcast_ref::<&str>() == Some(&kdeploy::yaml::LIBYAML_SAFER_TODO);
        if caught {
            return;
        }
        default_hook(info);
    }));
    let cli = Cli::parse_args();
    let error_code = cli.error_code();
    // Everything printed passes the mask of decrypted SOPS values.
    let mut stdout = kdeploy::secrets::mask::MaskingWriter::new(std::io::stdout().lock());
    // In a workflow, repository text printed to the log cannot start a
    // workflow command; the action prints its own through its guard.
    let result = if runner_reads(&std::io::stdout()) && !matches!(cli.command, cli::Command::Action)
    {
        let mut guarded = kdeploy::workflow::Guard::new(&mut stdout);
        cli::run(cli, &mut guarded)
    } else {
        cli::run(cli, &mut stdout)
    };
    drop(stdout);
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Differences | Outcome::DeployFailed) => ExitCode::from(1),
        Ok(Outcome::Changes) => ExitCode::from(2),
        Ok(Outcome::Exit(code)) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::from(error_code)
        }
    }
}

/// Whether the GitHub Actions runner reads what is written to `stream` as
/// its log (not redirected to a file, whose bytes must stay exact).
fn runner_reads(stream: &impl std::os::fd::AsFd) -> bool {
    if std::env::var_os("GITHUB_ACTIONS").is_none() {
        return false;
    }
    let regular_file = stream
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.file_type().is_file());
    !regular_file
}

/// `kdeploy plan | head` closes the pipe early; that is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
            eprintln!("{}", for_stderr(&redact(&d.to_string())));
            if std::env::var_os("GITHUB_ACTIONS").is_some() {
                for one in &d.0 {
                    println!("{}", redact(&one.to_github_annotation()));
                }
            }
        }
        None => eprintln!("error: {}", for_stderr(&redact(&chain_text(err)))),
    }
}

/// Error text for stderr, which the runner reads as its log too.
fn for_stderr(text: &str) -> std::borrow::Cow<'_, str> {
    if runner_reads(&std::io::stderr()) {
        kdeploy::workflow::neutralize(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text
/// the message before it already says (gix and io errors often repeat
/// their source in their own message).
fn chain_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
