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

mod adopt;
mod argocd;
mod flux;
mod helm;
mod kbld;

/// What to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new config repo: one service, two environments, workflows.
    New,
    /// Plain manifests under a pattern, e.g. `_gen/{env}/{app}`.
    Raw(String),
    /// Kustomize overlays under a pattern, e.g. `apps/{app}/overlays/{env}`.
    Kustomize(String),
    /// Argo CD Applications under a directory.
    ArgoCd(String),
    /// A Flux repository's clusters directory (`clusters/`).
    Flux(String),
    /// A Helm chart with a values file per environment (`charts/shop`).
    Helm(String),
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
  pull-requests: read
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
        Start::New | Start::ArgoCd(_) | Start::Flux(_) | Start::Helm(_) => String::new(),
    }
}

/// kdeploy.yaml for Kustomize overlays one per environment and no app in
/// the path (`overlays/{env}`, or `{env}` beside `base/`): the app is named
/// after the directory that holds them (else the repository), and the
/// directories the others use as their base (`resources: [../base]`) are
/// excluded, so `base/` is not an environment.
fn env_only_kustomize(repo: &Path, pattern: &str, has_services: bool) -> String {
    let (parent, _) = pattern.rsplit_once("{env}").unwrap_or(("", ""));
    let parent = parent.trim_end_matches('/');
    let dir = repo.join(parent);
    let named = if parent.is_empty() {
        repo.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    } else {
        let p = Path::new(parent);
        let last = p.file_name().map(|n| n.to_string_lossy().into_owned());
        // `apps/shop/overlays/{env}`: the app is `shop`, not `overlays`.
        match last.as_deref() {
            Some("overlays" | "envs" | "environments") => p
                .parent()
                .and_then(|pp| pp.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
            _ => last,
        }
    };
    let app = adopt::label(named.as_deref().unwrap_or("app"));
    let siblings: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut bases = std::collections::BTreeSet::new();
    for s in &siblings {
        for f in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
            let Ok(text) = std::fs::read_to_string(dir.join(s).join(f)) else {
                continue;
            };
            let doc = crate::yaml::parse(&text).unwrap_or_default();
            for key in ["resources", "bases", "components"] {
                for r in doc[key].as_array().into_iter().flatten() {
                    if let Some(other) = r.as_str().and_then(|r| r.strip_prefix("../")) {
                        let other = other.trim_end_matches('/');
                        if siblings.iter().any(|x| x == other) && other != s {
                            bases.insert(other.to_string());
                        }
                    }
                }
            }
        }
    }
    let services = if has_services {
        ""
    } else {
        "services: null        # releases come from sources only\n"
    };
    let mut out = format!(
        "# Written by `kdeploy init --from-kustomize`: one overlay per environment.\n{services}sources:\n  kustomize:\n    - path: {}\n      app: {app}\n",
        serde_json::Value::String(pattern.to_string())
    );
    if !bases.is_empty() {
        out.push_str(&format!(
            "      exclude: [{}]    # the overlays' bases, not environments\n",
            bases.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    out
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
    if let Start::ArgoCd(dir) | Start::Flux(dir) | Start::Helm(dir) = start {
        return from_tool(repo, start, dir, out);
    }
    let has_services = repo.join("services").is_dir();
    let files: Vec<(String, String)> = match start {
        Start::New => new_files()
            .into_iter()
            .map(|(p, t)| (p.to_string(), t))
            .collect(),
        Start::ArgoCd(_) | Start::Flux(_) | Start::Helm(_) => {
            unreachable!("adopted by from_tool above")
        }
        Start::Kustomize(p) if p.contains("{env}") && !p.contains("{app}") => {
            vec![(
                crate::config::SETTINGS_FILE.to_string(),
                env_only_kustomize(repo, p, has_services),
            )]
        }
        Start::Raw(p) | Start::Kustomize(p) => {
            if !p.contains("{env}") || !p.contains("{app}") {
                bail!(
                    "the pattern `{p}` must contain {{env}} and {{app}}, e.g. `_gen/{{env}}/{{app}}` (a Kustomize pattern may have only {{env}}: `overlays/{{env}}`)"
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

/// Files written so far, removed again when the adoption fails.
#[derive(Default)]
struct Written {
    files: Vec<PathBuf>,
}

impl Written {
    fn write(&mut self, repo: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
        let target = repo.join(rel);
        let existed = target.exists();
        crate::repo_write::write(repo, rel, text.as_bytes())
            .with_context(|| format!("writing {rel}"))?;
        if !existed {
            self.files.push(target);
        }
        Ok(())
    }

    fn remove_all(&self) {
        for p in &self.files {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The work tree rendered, as (env, app, resources) per release.
fn render_work_tree(
    repo: &Path,
) -> anyhow::Result<Vec<(String, String, Vec<crate::resource::Resource>)>> {
    let snapshot = Snapshot::open(repo, &Revision::WorkTree)?;
    let state = render::render(&snapshot, &Filter::default())?;
    Ok(state
        .releases
        .into_iter()
        .map(|r| (r.release.env, r.release.app, r.resources))
        .collect())
}

/// `--from-argocd DIR` and `--from-flux DIR`: map, write, render, check
/// every mapped release rendered; nothing is left written on failure.
fn from_tool(repo: &Path, start: &Start, dir: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    if !repo.join(dir).is_dir() {
        bail!("{dir} is not a directory of {}", repo.display());
    }
    let settings_path = crate::config::SETTINGS_FILE;
    if repo.join(settings_path).exists() {
        bail!(
            "kdeploy init never overwrites files, and {settings_path} exists\n  help: move it away, or add the sources by hand (README: other sources)"
        );
    }
    let has_services = repo.join("services").is_dir();
    let charts_dir = "charts";
    let mut written = Written::default();
    let result = (|| -> anyhow::Result<(Mapping, String)> {
        let (origin, mut m) = match start {
            Start::ArgoCd(_) => (
                format!("--from-argocd {dir}"),
                argocd::map(repo, dir, charts_dir),
            ),
            Start::Helm(_) => (
                format!("--from-helm {dir}"),
                helm::map(repo, dir, charts_dir),
            ),
            _ => {
                let (mut ks, mut m) = flux::read(repo, dir);
                m.kustomize = flux::entries(&ks);
                // First the overlays as Flux builds them, to read its objects.
                for k in &ks {
                    written.write(
                        repo,
                        &format!("{}/kustomization.yaml", k.overlay),
                        &flux::overlay(k, &Default::default()),
                    )?;
                }
                written.write(
                    repo,
                    settings_path,
                    &m.settings("--from-flux", has_services),
                )?;
                if !m.kustomize.is_empty() {
                    let rendered = render_work_tree(repo)?;
                    let groups = flux::helm_releases(&rendered, charts_dir, &mut m);
                    flux::order(&mut ks, &rendered, &mut m);
                    for k in &ks {
                        written.write(
                            repo,
                            &format!("{}/kustomization.yaml", k.overlay),
                            &flux::overlay(k, &groups),
                        )?;
                    }
                }
                (format!("--from-flux {dir}"), m)
            }
        };
        if m.environments().is_empty() {
            bail!(
                "found nothing to map under {dir}{}",
                if m.unmapped.is_empty() {
                    String::new()
                } else {
                    format!(
                        ":\n{}",
                        m.unmapped
                            .iter()
                            .map(|u| format!("  {}: {}: {}", u.file, u.what, u.why))
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                }
            );
        }
        // kbld's locks: the digests it resolved become kdeploy's image lock.
        if !repo.join("images.lock.yaml").exists()
            && let Some((lock, files)) = kbld::image_lock(repo)
        {
            written.write(repo, &lock.path, &lock.to_text())?;
            m.notes.push(format!(
                "{} pinned {} images by digest: written to {} (refresh with `kdeploy lock`)",
                files.join(", "),
                lock.entries.len(),
                lock.path
            ));
        }
        for (path, text) in m.service_files() {
            if repo.join(&path).exists() {
                bail!("kdeploy init never overwrites files, and {path} exists");
            }
            written.write(repo, &path, &text)?;
        }
        written.write(repo, settings_path, &m.settings(&origin, has_services))?;
        let mut rendered = render_work_tree(repo)?;
        // Custom kinds that are cluster-wide where they are defined.
        let cluster: std::collections::BTreeSet<String> = rendered
            .iter()
            .flat_map(|(_, _, rs)| rs.iter())
            .filter(|r| adopt::CLUSTER_SCOPED.contains(&(r.id.group.as_str(), r.id.kind.as_str())))
            .map(|r| format!("{}/{}", r.id.group, r.id.kind))
            .collect();
        if !cluster.is_empty() {
            m.cluster_kinds = cluster;
            written.write(repo, settings_path, &m.settings(&origin, has_services))?;
            rendered = render_work_tree(repo)?;
        }
        let got: std::collections::BTreeSet<(&str, &str)> = rendered
            .iter()
            .map(|(e, a, _)| (e.as_str(), a.as_str()))
            .collect();
        let missing: Vec<String> = m
            .kustomize
            .iter()
            .chain(&m.raw)
            .map(|e| (e.env.as_str(), e.app.as_str()))
            .chain(m.helm.iter().map(|h| (h.env.as_str(), h.app.as_str())))
            .filter(|k| !got.contains(k))
            .map(|(e, a)| format!("{e}/{a}"))
            .collect();
        if !missing.is_empty() {
            bail!("these releases did not render: {}", missing.join(", "));
        }
        let resources: usize = rendered.iter().map(|(_, _, r)| r.len()).sum();
        Ok((
            m,
            format!(
                "{} releases ({} environments), {resources} resources",
                rendered.len(),
                rendered
                    .iter()
                    .map(|(e, _, _)| e.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            ),
        ))
    })();
    match result {
        Ok((m, summary)) => {
            let mut files: Vec<String> = written
                .files
                .iter()
                .filter_map(|p| p.strip_prefix(repo).ok())
                .map(|p| p.display().to_string())
                .collect();
            files.sort();
            for f in files {
                writeln!(out, "wrote {f}")?;
            }
            writeln!(out, "checked: {summary}")?;
            m.report(out)?;
            writeln!(
                out,
                "next: check each environment's `context` in {settings_path}, then `kdeploy render --stdout`; commit, and pull requests plan"
            )?;
            Ok(())
        }
        Err(e) => {
            written.remove_all();
            Err(e.context("kdeploy init wrote nothing: the mapping does not render"))
        }
    }
}

use adopt::Mapping;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(static_prefix("_gen/{env}/{app}"), "_gen");
        assert_eq!(static_prefix("apps/{app}/overlays/{env}"), "apps");
    }
}
