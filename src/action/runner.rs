//! The runner's side of the action: its log (with workflow commands kept
//! kdeploy's own), job summary, step outputs and annotations, masking, and
//! how a failed run is reported. Plumbing only: no stage is run here.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use crate::diag::Diagnostics;
use crate::plan::Plan;
use crate::report;

use super::ActionEnv;

/// Everything written to `log` passes [`crate::workflow::Guard`]: repository
/// text cannot start a workflow command; kdeploy's own go through
/// [`Runner::command`].
pub(super) struct Runner<'a> {
    pub(super) env: &'a ActionEnv,
    pub(super) log: crate::workflow::Guard<&'a mut dyn Write>,
}

impl<'a> Runner<'a> {
    /// Credentials for fetching commits the checkout lacks: a checkout with
    /// `persist-credentials: false` cannot fetch from a private repository;
    /// the action's token can. Built here once for every flow.
    pub(super) fn fetch_auth(&self, token: Option<&String>) -> Option<crate::event::FetchAuth> {
        Some(crate::event::FetchAuth {
            server_url: self.env.var("GITHUB_SERVER_URL")?.to_string(),
            token: token?.clone(),
        })
    }

    pub(super) fn new(env: &'a ActionEnv, log: &'a mut dyn Write) -> Self {
        Runner {
            env,
            log: crate::workflow::Guard::new(log),
        }
    }

    /// Text for the log; a line of it that looks like a workflow command is
    /// neutralized.
    pub(super) fn line(&mut self, s: &str) -> std::io::Result<()> {
        writeln!(self.log, "{s}")
    }

    /// One of kdeploy's own workflow commands (data already escaped).
    pub(super) fn command(&mut self, s: &str) -> std::io::Result<()> {
        self.log.command(s)
    }

    pub(super) fn group(&mut self, title: &str) -> std::io::Result<()> {
        self.command(&format!("::group::{}", escape(title)))
    }

    pub(super) fn end_group(&mut self) -> std::io::Result<()> {
        self.command("::endgroup::")
    }

    pub(super) fn notice(&mut self, s: &str) -> std::io::Result<()> {
        self.command(&format!("::notice::{}", escape(s)))
    }

    pub(super) fn warning(&mut self, s: &str) -> std::io::Result<()> {
        self.command(&format!("::warning::{}", escape(s)))
    }

    /// The link to this workflow run, when the runner says which it is.
    pub(super) fn run_url(&self) -> Option<String> {
        match (
            self.env.var("GITHUB_SERVER_URL"),
            self.env.var("GITHUB_REPOSITORY"),
            self.env.var("GITHUB_RUN_ID"),
        ) {
            (Some(server), Some(repo), Some(id)) => {
                Some(format!("{server}/{repo}/actions/runs/{id}"))
            }
            _ => None,
        }
    }

    /// Appends to `$GITHUB_STEP_SUMMARY`, if the runner gave one.
    pub(super) fn summary(&mut self, markdown: &str) -> anyhow::Result<()> {
        if let Some(path) = self.env.var("GITHUB_STEP_SUMMARY") {
            append(Path::new(path), &crate::secrets::mask::redact(markdown))
                .context("cannot write the job summary")?;
        }
        Ok(())
    }

    /// Sets step outputs in `$GITHUB_OUTPUT` with the multi-line syntax.
    pub(super) fn outputs(&mut self, outputs: &[(&str, String)]) -> anyhow::Result<()> {
        let Some(path) = self.env.var("GITHUB_OUTPUT") else {
            return Ok(());
        };
        let mut text = String::new();
        for (name, value) in outputs {
            let mut delimiter = format!("ghadelimiter_{:016x}", fastrand::u64(..));
            while value.contains(&delimiter) {
                delimiter = format!("ghadelimiter_{:016x}", fastrand::u64(..));
            }
            text.push_str(&format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"));
        }
        append(Path::new(path), &crate::secrets::mask::redact(&text))
            .context("cannot write step outputs")
    }
}

pub(super) fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// What kind of failure stopped a run, for the `error` output.
pub(super) fn error_class(e: &anyhow::Error) -> &'static str {
    use crate::{promote, publish};
    // Problems in files are `input` whatever stage wraps them.
    for cause in e.chain() {
        if cause.is::<crate::event::Error>() || cause.is::<crate::source::Error>() {
            return "event";
        }
        if cause.is::<Diagnostics>() {
            return "input";
        }
    }
    for cause in e.chain() {
        if let Some(p) = cause.downcast_ref::<publish::Error>() {
            return match p {
                publish::Error::Refused { .. } => "permission",
                publish::Error::Moved(_) => "conflict",
                publish::Error::Setup(_) => "input",
            };
        }
        if let Some(p) = cause.downcast_ref::<promote::Error>() {
            return match p {
                promote::Error::Request(_) => "input",
                promote::Error::Diverged(_) => "conflict",
            };
        }
        if cause.is::<crate::images::registry::Error>() {
            return "registry";
        }
        if cause.is::<crate::render::Error>() {
            return "render";
        }
        if cause.is::<crate::github::Error>() {
            return "github";
        }
    }
    crate::apply::error_step(e)
}

/// A run that stopped with an error says so where a person looks: an
/// annotation (problems with a file already have theirs), a section of the
/// job summary, and outputs later steps can branch on.
pub(super) fn report_failure(
    env: &ActionEnv,
    log: &mut dyn Write,
    e: &anyhow::Error,
) -> anyhow::Result<()> {
    let class = error_class(e);
    let message = format!("{e:#}");
    let mut runner = Runner::new(env, log);
    if !e.chain().any(|c| c.is::<Diagnostics>()) {
        runner.command(&format!(
            "::error title=kdeploy ({class})::{}",
            escape(&message)
        ))?;
    }
    let help = match class {
        "connect" => {
            "check the `kubeconfig` input (or secret) and the `context`; the runner must reach the API server"
        }
        "lease" => {
            "another run holds the environment's lease: it is released when that run ends, or expires 15 s after it was killed"
        }
        "preflight" => {
            "nothing was applied: create what is missing (CRDs, namespaces) or fix the kinds in the config"
        }
        "ownership" => {
            "nothing was applied: give each environment its own namespaces; to hand objects from one environment to another on purpose, run `kdeploy apply --adopt-from ENV` once (the action has no input for it, deliberately)"
        }
        "record" => {
            "the deploy record could not be read or written: check the permissions on the record namespace"
        }
        "event" => "check the workflow's trigger and checkout (the revisions must be fetchable)",
        "permission" => {
            "GitHub refused the write: grant the permission named above in the job's `permissions:` (or the repository setting named)"
        }
        "conflict" => {
            "nothing was written: the branch moved on since the run started; run again on the new head"
        }
        "registry" => {
            "an image registry could not be read: check the reference, the registry's reachability and its credentials"
        }
        "render" => "the config did not render: fix the file named above",
        "github" => "the GitHub API failed: see the message (a re-run retries it)",
        "input" => "fix the `with:` inputs of the kdeploy step",
        _ => "see the log of this step",
    };
    runner.summary(&format!(
        "### kdeploy failed ({class})\n\n```\n{message}\n```\n\n{help}.\n"
    ))?;
    runner.outputs(&[
        ("deployed", "false".to_string()),
        ("error", class.to_string()),
    ])
}

/// Values of these kubeconfig keys are secrets the runner must mask.
const KUBECONFIG_SECRETS: &[&str] = &[
    "token:",
    "client-key-data:",
    "client-certificate-data:",
    "password:",
    "id-token:",
    "refresh-token:",
];

/// Masks the secret values of kubeconfig content (not a path).
pub(super) fn mask_kubeconfig(runner: &mut Runner<'_>, kubeconfig: &str) -> std::io::Result<()> {
    for line in kubeconfig.lines() {
        let t = line.trim().trim_start_matches("- ");
        if let Some(key) = KUBECONFIG_SECRETS.iter().find(|k| t.starts_with(**k)) {
            let value = t[key.len()..].trim().trim_matches('"').trim_matches('\'');
            if !value.is_empty() {
                runner.command(&format!("::add-mask::{value}"))?;
            }
        }
    }
    Ok(())
}

/// Annotation for a problem, with the path relative to the repository root
/// (the config repo may be a subdirectory).
pub(super) fn prefixed_annotation(d: &crate::diag::Diagnostic, working_directory: &Path) -> String {
    prefixed_command(d, working_directory, "error")
}

/// [`prefixed_annotation`] at `level` (`warning`, `notice`).
pub(super) fn prefixed_command(
    d: &crate::diag::Diagnostic,
    working_directory: &Path,
    level: &str,
) -> String {
    let mut d = d.clone();
    if let Some(loc) = d.location.as_mut()
        && working_directory != Path::new(".")
    {
        loc.path = working_directory.join(&loc.path).display().to_string();
    }
    d.to_github_command(level)
}

/// The comment body when rendering failed: the problems instead of a diff.
pub(super) fn error_markdown(marker: &str, head: &str, problems: &Diagnostics) -> String {
    let mut body = format!(
        "{marker}\n<!-- part:1 -->\n### kdeploy plan\n\n:x: **Rendering failed** at `{head}`; nothing can be planned until this is fixed:\n\n"
    );
    for p in &problems.0 {
        let loc = p
            .location
            .as_ref()
            .map(|l| format!("`{l}`: "))
            .unwrap_or_default();
        body.push_str(&format!("- {loc}{}", p.message.replace('\n', " ")));
        if let Some(h) = &p.help {
            body.push_str(&format!(" _({h})_"));
        }
        body.push('\n');
    }
    body
}

/// Says which environments the branch leaves in or out, when any is bound.
pub(super) fn describe_scope(
    runner: &mut Runner<'_>,
    scope: &crate::config::BranchScope,
    branch: Option<&str>,
) -> std::io::Result<()> {
    use crate::config::BranchScope;
    let branch = branch.unwrap_or("(no branch)");
    let list = |envs: &std::collections::BTreeSet<String>| {
        envs.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    match scope {
        BranchScope::Any => Ok(()),
        BranchScope::Only(envs) => runner.line(&format!(
            "branch {branch} deploys only {} (environments.<env>.branch in kdeploy.yaml)",
            list(envs)
        )),
        BranchScope::Except(envs) => runner.line(&format!(
            "left out: {} (bound to other branches by environments.<env>.branch; {branch} is not theirs)",
            list(envs)
        )),
    }
}

pub(super) fn summarize(runner: &mut Runner<'_>, plan: &Plan) -> std::io::Result<()> {
    runner.line(&format!("kdeploy plan: {}", report::summary_line(plan)))
}

#[cfg(test)]
mod tests {
    use super::error_class;
    use crate::diag::{Diagnostic, Diagnostics, Location};

    #[test]
    fn wave_two_failures_have_their_own_classes() {
        let class = |e: anyhow::Error| error_class(&e.context("publishing"));
        assert_eq!(
            class(crate::publish::Error::Moved("moved".into()).into()),
            "conflict"
        );
        assert_eq!(
            class(
                crate::publish::Error::Refused {
                    message: "no".into(),
                    status: Some(403)
                }
                .into()
            ),
            "permission"
        );
        assert_eq!(
            class(crate::promote::Error::Request("--from and --to".into()).into()),
            "input"
        );
        assert_eq!(
            class(
                crate::images::registry::Error::NotFound {
                    reference: "r".into(),
                    registry: "g".into()
                }
                .into()
            ),
            "registry"
        );
        // A problem in a file is input whatever wraps it.
        let file = Diagnostics::from(Diagnostic::new(Location::file("kdeploy.yaml"), "bad"));
        assert_eq!(class(file.into()), "input");
        assert_eq!(class(anyhow::anyhow!("something else")), "other");
    }
}
