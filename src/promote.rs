//! Promotion between environments (`kdeploy promote --from staging --to
//! production`): each selected app's effective version in the source
//! environment is written into the target environment's version file, in
//! the work tree; the caller shows the plan that causes.

use std::path::Path;

use crate::config::Filter;
use crate::edit::images::{self as update, Change};

/// One promotion from `from` to `to`, as the CLI and the action ask it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The config repo's work tree.
    pub repo: &'a Path,
    /// The source environment.
    pub from: &'a str,
    /// The target environment.
    pub to: &'a str,
    /// Apps to promote (a glob), all when `None`.
    pub apps: Option<&'a str>,
    /// Values files' keys to copy besides versions (`image.tag`).
    pub keys: &'a [String],
    /// Compute only: leave the work tree as it is (a dry run, or changes
    /// that are published through GitHub instead).
    pub dry_run: bool,
}

/// What a promotion is: a branch to move, or files changed in the work tree.
#[derive(Debug)]
pub enum Promotion {
    /// Both environments deploy from branches: the target's branch moves
    /// to the source's commit ([`branches`]).
    Branches(Branches),
    /// Version files (and keys) copied into the target.
    Files {
        /// The changes, written unless `dry_run`.
        changes: Vec<Change>,
        /// Keys that could not be copied, and why.
        notices: Vec<String>,
    },
}

/// Decides and (unless `dry_run`) writes a promotion: the one flow behind
/// `kdeploy promote` and the action's `mode: promote`.
///
/// # Errors
/// Unknown environments, keys between branch-bound environments, an
/// unreadable layout, unwritable files.
pub fn promotion(req: &Request<'_>) -> anyhow::Result<Promotion> {
    if req.from != req.to
        && let Some(b) = bound_branches(req.repo, req.from, req.to)?
    {
        if !req.keys.is_empty() {
            return Err(Error::Request(format!(
                "keys (`--keys`, the input `promote-keys`) do not apply between environments bound to branches ({} and {}): the whole branch is promoted",
                b.from, b.to
            ))
            .into());
        }
        return Ok(Promotion::Branches(b));
    }
    let filter = Filter::new(None, req.apps)?;
    let mut changes = versions(req.repo, req.from, req.to, &filter, req.dry_run)?;
    let mut notices = Vec::new();
    if !req.keys.is_empty() {
        let (keys, n) = keys(req.repo, req.from, req.to, &filter, req.keys, req.dry_run)?;
        changes.extend(keys);
        notices = n;
    }
    Ok(Promotion::Files { changes, notices })
}

/// A promotion that does not fit the config repo or its branches; the
/// action reports it as `error: input`, or `conflict` for branches that
/// cannot fast-forward.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names environments, keys or branches that do not fit.
    #[error("{0}")]
    Request(String),
    /// The target branch has commits the source lacks: nothing changed.
    #[error("{0}")]
    Diverged(String),
}

/// Copies versions from `from` to `to` for the apps `filter` selects that
/// have both environments. Returns what changed (or would, with `dry_run`).
///
/// # Errors
/// Unknown environments, unreadable layout, unwritable files.
pub fn versions(
    repo: &Path,
    from: &str,
    to: &str,
    filter: &Filter,
    dry_run: bool,
) -> anyhow::Result<Vec<Change>> {
    if from == to {
        return Err(Error::Request(format!(
            "--from and --to are both `{from}`: nothing to promote"
        ))
        .into());
    }
    let tree = update::WorkTree::open(repo, filter)?;
    let layout = &tree.layout;
    for env in [from, to] {
        if !layout.releases.iter().any(|s| s.env == env) {
            let mut known: Vec<&str> = layout.releases.iter().map(|s| s.env.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            return Err(Error::Request(format!(
                "no selected app has an environment `{env}`; environments: {}",
                known.join(", ")
            ))
            .into());
        }
    }
    let mut changes = Vec::new();
    for source in layout.releases.iter().filter(|s| s.env == from) {
        let Some(target) = layout
            .releases
            .iter()
            .find(|s| s.env == to && s.app == source.app)
        else {
            continue;
        };
        let Some(version) = tree.version(source) else {
            continue;
        };
        let current = tree.version(target);
        if current.as_deref() == Some(version.as_str()) {
            continue;
        }
        let file = update::env_version_file(target);
        if !dry_run {
            update::write_version(repo, &file, &version)?;
        }
        changes.push(Change {
            app: source.app.clone(),
            env: Some(to.to_string()),
            file,
            from: current,
            to: version,
            why: format!("promoted from {from}"),
            edit: None,
        });
    }
    Ok(changes)
}

/// Copies config keys (`image.tag`, dotted) from `from`'s effective config
/// (app config merged with env config) into `to`'s env `config.yaml`, where
/// they differ, keeping the file's comments and layout. Returns the changes
/// (each carrying the file's new text) and notices for keys `from` lacks.
///
/// # Errors
/// Unreadable or unparsable configs, keys that are not scalars, files that
/// cannot be edited safely, unwritable files.
pub fn keys(
    repo: &Path,
    from: &str,
    to: &str,
    filter: &Filter,
    keys: &[String],
    dry_run: bool,
) -> anyhow::Result<(Vec<Change>, Vec<String>)> {
    use serde_json::Value;
    let tree = update::WorkTree::open(repo, filter)?;
    let parse = |node: &crate::source::Node| -> anyhow::Result<serde_json::Map<String, Value>> {
        let text = tree.read(node)?;
        match serde_norway::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(Value::Null) => Ok(serde_json::Map::new()),
            Ok(_) => Err(Error::Request(format!("{} is not a mapping", node.path)).into()),
            Err(e) => Err(Error::Request(format!("{}: {e}", node.path)).into()),
        }
    };
    let get = |map: &serde_json::Map<String, Value>, key: &[String]| -> Option<Value> {
        let mut at = map.get(key.first()?)?;
        for k in &key[1..] {
            at = at.get(k)?;
        }
        Some(at.clone())
    };
    let paths: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let path: Vec<String> = k.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(Error::Request(format!(
                    "--keys: `{k}` is not a dotted key like image.tag"
                ))
                .into());
            }
            Ok(path)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut changes = Vec::new();
    let mut notices = Vec::new();
    for source in tree.layout.releases.iter().filter(|s| s.env == from) {
        let Some(target) = tree
            .layout
            .releases
            .iter()
            .find(|s| s.env == to && s.app == source.app)
        else {
            continue;
        };
        let app = parse(&source.app_config)?;
        let effective =
            |env: &crate::source::Node| -> anyhow::Result<serde_json::Map<String, Value>> {
                let mut merged = app.clone();
                crate::config::merge_into(&mut merged, parse(env)?);
                Ok(merged)
            };
        let (src, dst) = (
            effective(&source.env_config)?,
            effective(&target.env_config)?,
        );
        let file = target.env_config.path.clone();
        let mut text = tree.read(&target.env_config)?;
        let before = changes.len();
        for (key, path) in keys.iter().zip(&paths) {
            let Some(value) = get(&src, path) else {
                notices.push(format!(
                    "{} {from}: `{key}` is not set; {to} keeps its own",
                    source.app
                ));
                continue;
            };
            if value.is_object() || value.is_array() {
                return Err(Error::Request(format!(
                    "`{key}` of {} {from} is a map or list ({} over {}); --keys copies single values: name the keys below it (`{key}.NAME`)",
                    source.app,
                    source.env_config.path,
                    source.app_config.path
                )).into());
            }
            let current = get(&dst, path);
            if current.as_ref() == Some(&value) {
                continue;
            }
            text = crate::config::edit::set_scalar(&text, path, &value, &file)?;
            let show = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            changes.push(Change {
                app: source.app.clone(),
                env: Some(to.to_string()),
                file: file.clone(),
                from: current.as_ref().map(show),
                to: show(&value),
                why: format!("{key} promoted from {from}"),
                edit: Some(text.clone()),
            });
        }
        if !dry_run && changes.len() > before {
            update::write_file(repo, &file, &text)?;
        }
    }
    Ok((changes, notices))
}

/// The branches of two environments bound to branches
/// (`environments.<env>.branch`): promoting between them moves a branch
/// instead of copying version files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branches {
    /// The source environment's branch.
    pub from: String,
    /// The target environment's branch.
    pub to: String,
}

/// The branches `from` and `to` deploy from, when both are bound to
/// different branches; `None` when neither is (or both share one).
///
/// # Errors
/// Only one of them bound: a promotion could not mean one thing.
pub fn bound_branches(repo: &Path, from: &str, to: &str) -> anyhow::Result<Option<Branches>> {
    let snapshot = crate::source::Snapshot::open(repo, &crate::source::Revision::parse(None))?;
    let settings = crate::config::head_settings(&snapshot);
    match (settings.branch_of(from), settings.branch_of(to)) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) if a == b => Ok(None),
        (Some(a), Some(b)) => Ok(Some(Branches {
            from: a.to_string(),
            to: b.to_string(),
        })),
        (a, b) => {
            let (bound, env, free) = match (a, b) {
                (Some(a), _) => (a, from, to),
                (_, Some(b)) => (b, to, from),
                _ => unreachable!("one of them is bound"),
            };
            Err(Error::Request(format!(
                "{env} deploys from branch {bound} (environments.{env}.branch) but {free} is bound to no branch: bind both, and promotion fast-forwards one branch to the other, or neither, and it copies version files"
            )).into())
        }
    }
}

/// What a promotion between branches found and did.
pub struct BranchPromotion {
    /// The branches.
    pub branches: Branches,
    /// The source branch's commit.
    pub from_sha: String,
    /// The target branch's commit before.
    pub to_sha: String,
    /// The target environment's plan, target branch → source branch.
    pub plan: crate::plan::Plan,
    /// What was done (nothing for a dry run or an up-to-date target).
    pub outcome: Option<BranchOutcome>,
}

/// A branch promotion's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchOutcome {
    /// The target branch now points at the source commit.
    FastForwarded,
    /// A pull request between the branches.
    PullRequest(crate::publish::Outcome),
}

/// Promotes `to_env` by moving its branch to `from`'s commit: a
/// fast-forward through the API (refused, with the reason, when the target
/// has commits the source lacks), or with `pr` a pull request between the
/// branches whose body is the plan. `dry_run` only plans.
///
/// # Errors
/// Missing branches, unfetchable commits, render errors, refusals.
#[allow(clippy::too_many_arguments)]
pub async fn branches(
    gh: &crate::github::GitHub,
    repo: &Path,
    branches: Branches,
    to_env: &str,
    apps: Option<&str>,
    pr: bool,
    dry_run: bool,
    auth: Option<&crate::event::FetchAuth>,
) -> anyhow::Result<BranchPromotion> {
    let tip = |name: String| async move {
        gh.branch(&name).await?.ok_or_else(|| {
            anyhow::Error::from(Error::Request(format!(
                "there is no branch {name} in {}",
                gh.repo()
            )))
        })
    };
    let from_sha = tip(branches.from.clone()).await?;
    let to_sha = tip(branches.to.clone()).await?;
    let open = |sha: &str| -> anyhow::Result<crate::source::Snapshot> {
        let id = crate::event::ensure_commit(repo, sha, auth)?;
        Ok(crate::source::Snapshot::at_commit(
            crate::source::discover(repo)?,
            repo,
            id,
            sha,
        )?)
    };
    let (base, head) = (open(&to_sha)?, open(&from_sha)?);
    let filter = Filter::new(Some(to_env), apps)?;
    let plan =
        crate::pipeline::plan::plan(crate::pipeline::PlanRequest::new(&base, &head, &filter))?.plan;
    let mut promotion = BranchPromotion {
        branches,
        from_sha,
        to_sha,
        plan,
        outcome: None,
    };
    if dry_run || promotion.from_sha == promotion.to_sha {
        return Ok(promotion);
    }
    let (from, to) = (&promotion.branches.from, &promotion.branches.to);
    promotion.outcome = Some(if pr {
        let title = format!("Promote {from} to {to}");
        let marker = format!("<!-- kdeploy:promote/{from}-to-{to} -->");
        let body = format!(
            "Fast-forwards `{to}` to `{from}` ({}): what {to_env} deploys once merged.\n\n{}",
            &promotion.from_sha[..promotion.from_sha.len().min(12)],
            crate::report::markdown(&promotion.plan, &marker, 60_000)
        );
        let outcome = crate::publish::open_or_update(gh, from, to, &title, &body, false).await?;
        BranchOutcome::PullRequest(outcome)
    } else {
        match gh.update_branch(to, &promotion.from_sha, false).await {
            Ok(()) => BranchOutcome::FastForwarded,
            Err(e) if e.status() == Some(422) => return Err(Error::Diverged(format!(
                "cannot fast-forward {to} to {from}: {to} has commits that {from} does not ({e}); nothing was changed: merge {to} into {from} first, or open a pull request with --pr"
            )).into()),
            Err(e) => {
                return Err(crate::publish::Error::refused(
                    &e,
                    &format!("cannot move branch {to}"),
                    "contents: write",
                )
                .into());
            }
        }
    });
    Ok(promotion)
}
