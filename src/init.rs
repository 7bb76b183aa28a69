//! `kdeploy init`: start a config repo, or adopt the manifests a repo
//! already has. Nothing is overwritten: when any file to write exists,
//! nothing is written. Adopting checks that the new `kdeploy.yaml` really
//! reproduces the manifests (every manifest file is read by a release and
//! rendered to the same objects); if not, the files written are removed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::Filter;
use crate::render;
use crate::source::{Revision, Snapshot};

/// What to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new config repo: one service, two environments, workflows.
    New,
    /// Plain manifests under a pattern, e.g. `_gen/{env}/{app}`.
    Raw(String),
    /// Kustomize overlays under a pattern, e.g. `apps/{app}/overlays/{env}`.
    Kustomize(String),
}

/// The plan workflow `init` writes: the README's, checked by actionlint.
pub const PLAN_WORKFLOW: &str = r#"# Posts kdeploy's plan of every pull request as a comment.
name: kdeploy plan
on: pull_request
permissions:
  contents: read
  pull-requests: write
jobs:
  plan:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd # v6.0.2
        with:
          ref: ${{ github.event.pull_request.head.sha }}
          persist-credentials: false
      - uses: org/kdeploy-action@v1
"#;

/// The deploy workflow `init` writes.
pub const DEPLOY_WORKFLOW: &str = r#"# Deploys what a push to main changed; KUBECONFIG is a secret.
name: kdeploy deploy
on:
  push:
    branches: [main]
permissions:
  contents: read
  checks: write
  deployments: write
concurrency: kdeploy-deploy
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd # v6.0.2
        with:
          persist-credentials: false
      - uses: org/kdeploy-action@v1
        with:
          kubeconfig: ${{ secrets.KUBECONFIG }}
"#;

fn new_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "kdeploy.yaml",
            "# kdeploy settings; every key is optional (README: kdeploy.yaml).\n\
             # namespace: \"{app}-{env}\"      # one namespace per app and environment\n\
             # environments:\n\
             #   production:\n\
             #     context: prod-cluster      # kubeconfig context\n\
             #     kubernetesVersion: \"1.33\"  # plans warn about removed APIs\n"
                .to_string(),
        ),
        (
            "services/hello/config.yaml",
            "# Values of the built-in chart (`kdeploy schema values`).\n\
             image: ghcr.io/example/hello\nport: 8080\n"
                .to_string(),
        ),
        ("services/hello/version", "1.0.0\n".to_string()),
        (
            "services/hello/staging/config.yaml",
            "replicas: 1\n".to_string(),
        ),
        (
            "services/hello/production/config.yaml",
            "replicas: 3\n".to_string(),
        ),
        (
            ".github/workflows/kdeploy-plan.yml",
            PLAN_WORKFLOW.to_string(),
        ),
        (
            ".github/workflows/kdeploy-deploy.yml",
            DEPLOY_WORKFLOW.to_string(),
        ),
    ]
}

fn adopt_settings(start: &Start, has_services: bool) -> String {
    let services = if has_services {
        ""
    } else {
        "services: null        # releases come from sources only\n"
    };
    match start {
        Start::Raw(p) => format!(
            "# Written by `kdeploy init --from-raw`: the manifests as they are.\n{services}sources:\n  raw: [\"{p}\"]\n"
        ),
        Start::Kustomize(p) => format!(
            "# Written by `kdeploy init --from-kustomize`.\n{services}sources:\n  kustomize: [\"{p}\"]\n"
        ),
        Start::New => String::new(),
    }
}

/// The part of a pattern before its first placeholder: the directory to
/// look for manifests in.
fn static_prefix(pattern: &str) -> &str {
    let cut = pattern.find('{').unwrap_or(pattern.len());
    pattern[..cut].trim_end_matches('/')
}

fn manifest_files(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            manifest_files(&p, root, out);
        } else if p
            .extension()
            .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            && let Ok(rel) = p.strip_prefix(root)
        {
            out.insert(rel.display().to_string());
        }
    }
}

/// Runs `init` in `repo`.
///
/// # Errors
/// Existing files, patterns that match nothing, or a kdeploy.yaml that
/// does not reproduce the manifests (then nothing is left written).
pub fn run(repo: &Path, start: &Start, out: &mut dyn Write) -> anyhow::Result<()> {
    let has_services = repo.join("services").is_dir();
    let files: Vec<(String, String)> = match start {
        Start::New => new_files()
            .into_iter()
            .map(|(p, t)| (p.to_string(), t))
            .collect(),
        Start::Raw(p) | Start::Kustomize(p) => {
            if !p.contains("{env}") || !p.contains("{app}") {
                bail!(
                    "the pattern `{p}` must contain {{env}} and {{app}}, e.g. `_gen/{{env}}/{{app}}`"
                );
            }
            vec![(
                crate::config::SETTINGS_FILE.to_string(),
                adopt_settings(start, has_services),
            )]
        }
    };
    let existing: Vec<&str> = files
        .iter()
        .filter(|(p, _)| repo.join(p).exists())
        .map(|(p, _)| p.as_str())
        .collect();
    if !existing.is_empty() {
        bail!(
            "kdeploy init never overwrites files, and these exist: {}\n  help: move them away, or edit them by hand (README: the config repo)",
            existing.join(", ")
        );
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let remove_all = |written: &[PathBuf]| {
        for p in written {
            let _ = std::fs::remove_file(p);
        }
    };
    for (path, text) in &files {
        let target = repo.join(path);
        let rel = path.as_str();
        if let Err(e) = crate::repo_write::write(repo, rel, text.as_bytes()) {
            remove_all(&written);
            return Err(e).with_context(|| format!("writing {rel}"));
        }
        written.push(target);
    }
    // Whatever it starts from, the repo must render as it is now.
    let check = || -> anyhow::Result<String> {
        let snapshot = Snapshot::open(repo, &Revision::WorkTree)?;
        let state = render::render(&snapshot, &Filter::default())?;
        let (Start::Raw(p) | Start::Kustomize(p)) = start else {
            return Ok(format!(
                "{} releases, {} resources",
                state.releases.len(),
                state.resource_count()
            ));
        };
        if state.releases.is_empty() {
            bail!("the pattern `{p}` matches no directory with manifests");
        }
        if let Start::Raw(_) = start {
            // Every manifest below the pattern is read by some release.
            let mut found = BTreeSet::new();
            manifest_files(&repo.join(static_prefix(p)), repo, &mut found);
            let read: BTreeSet<String> = state
                .releases
                .iter()
                .flat_map(|r| r.resources.iter().map(|x| x.origin.file.clone()))
                .collect();
            let missed: Vec<&String> = found.iter().filter(|f| !read.contains(*f)).collect();
            if !missed.is_empty() {
                bail!(
                    "`{p}` leaves out manifests under {}: {} (a pattern needs one directory level per placeholder)",
                    static_prefix(p),
                    missed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Ok(format!(
            "{} releases ({} environments), {} resources, the same objects as the manifests",
            state.releases.len(),
            state
                .releases
                .iter()
                .map(|r| r.release.env.as_str())
                .collect::<BTreeSet<_>>()
                .len(),
            state.resource_count()
        ))
    };
    match check() {
        Ok(summary) => {
            for (path, _) in &files {
                writeln!(out, "wrote {path}")?;
            }
            writeln!(out, "checked: {summary}")?;
            writeln!(
                out,
                "next: `kdeploy render --stdout` shows the manifests; commit, and the workflows plan pull requests and deploy pushes to main (set the KUBECONFIG secret)"
            )?;
            Ok(())
        }
        Err(e) => {
            remove_all(&written);
            Err(e.context("kdeploy init wrote nothing: the new config does not reproduce the repo"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(static_prefix("_gen/{env}/{app}"), "_gen");
        assert_eq!(static_prefix("apps/{app}/overlays/{env}"), "apps");
    }
}
