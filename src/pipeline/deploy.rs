//! The deploy flow: render the head in full and validate every resource
//! (the cluster is never touched before that), render the base for the
//! environments that disappeared, then deploy each selected environment.
//! `kdeploy apply` and the action on a push run exactly this; the action
//! adds its check runs and deployments around [`Deploy::run`].

use std::collections::BTreeSet;

use crate::apply::{Options, Report};
use crate::cluster::Access;
use crate::config::Filter;
use crate::render::{self, State};
use crate::source::Snapshot;

/// What to deploy.
#[derive(Debug, Clone, Copy)]
pub struct DeployRequest<'a> {
    /// The state to deploy.
    pub head: &'a Snapshot,
    /// The state deployed before, when known: environments it has and the
    /// head does not are pruned.
    pub base: Option<&'a Snapshot>,
    /// The releases to deploy.
    pub filter: &'a Filter,
    /// `--env` / the `environments` input, as written (a glob).
    pub environments: Option<&'a str>,
    /// `--app` / the `apps` input.
    pub apps: Option<&'a str>,
    /// The runner's render cache: the head's releases are written there
    /// once valid, for pull requests' plans ([`render::cache`]). A deploy
    /// never reads it.
    pub render_cache: Option<&'a render::cache::RenderCache>,
}

/// A deploy rendered and validated, ready to run.
#[derive(Debug)]
pub struct Deploy {
    /// The head, rendered in full and valid.
    pub head: State,
    /// The base, when it rendered.
    pub base: Option<State>,
    /// The head's commit (or its label in the work tree).
    pub head_commit: String,
    /// Why the base is missing although one was asked for.
    pub base_note: Option<String>,
    /// What was written to the render cache, or why nothing was.
    pub cache_note: Option<String>,
}

impl Deploy {
    /// Renders and validates.
    ///
    /// # Errors
    /// The head's problems, as [`render::Error::Invalid`]; read failures.
    pub fn prepare(req: DeployRequest<'_>) -> Result<Deploy, render::Error> {
        // A full render (not the incremental comparison): every resource of
        // the head is checked, duplicates included.
        let head = render::render(req.head, req.filter)?;
        crate::validate::check(&head).map_err(render::Error::Invalid)?;
        let cache_note = req
            .render_cache
            .map(|cache| cache_note(cache, cache.store(&head)));
        // The base only adds environments to prune: the deploy records say
        // what was deployed, so a base that no longer renders is noted, not
        // fatal.
        let (base, base_note) = match req.base.filter(|b| !b.is_empty()) {
            None => (None, None),
            Some(b) => match render::render(b, req.filter) {
                Ok(s) => (Some(s), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "the base {} does not render ({e}); environments it alone has are not pruned in this run",
                        b.label()
                    )),
                ),
            },
        };
        let head_commit = head
            .commit
            .map_or_else(|| head.label.clone(), |c| c.to_string());
        Ok(Deploy {
            head,
            base,
            head_commit,
            base_note,
            cache_note,
        })
    }

    /// The environments this deploy touches (head and base, selected).
    pub fn environments(&self, filter: &Filter) -> BTreeSet<String> {
        self.head
            .releases
            .iter()
            .chain(self.base.iter().flat_map(|b| b.releases.iter()))
            .map(|r| r.release.env.clone())
            .filter(|e| filter.matches_env(e))
            .collect()
    }

    /// Deploys to the clusters of `access`, recording `repository` (any
    /// form: [`crate::apply::record::identity`] makes it `owner/name`).
    /// Progress goes to `out`; each environment's report to `reports` as it
    /// finishes, whatever happens later.
    ///
    /// # Errors
    /// A cluster that cannot be reached, or an environment that cannot start.
    pub async fn run(
        &self,
        req: DeployRequest<'_>,
        access: &Access,
        repository: &str,
        options: &Options,
        out: &mut dyn std::io::Write,
        reports: &mut Vec<Report>,
    ) -> anyhow::Result<()> {
        for note in self.base_note.iter().chain(&self.cache_note) {
            writeln!(out, "note: {note}")?;
        }
        crate::apply::deploy_environments(
            access,
            &self.head,
            self.base.as_ref(),
            req.environments,
            req.apps,
            &crate::apply::record::identity(repository),
            &self.head_commit,
            options,
            &mut |r| crate::report::deploy::text(r, out),
            reports,
        )
        .await
    }
}

/// One line on what [`render::cache::RenderCache::store`] did. A cache
/// that cannot be written costs later plans time, never this deploy.
fn cache_note(
    cache: &render::cache::RenderCache,
    stored: std::io::Result<render::cache::Stored>,
) -> String {
    let dir = cache.dir().display();
    match stored {
        Ok(s) if s.written + s.kept == 0 && s.unkeyed > 0 => format!(
            "render cache {dir}: nothing written (the work tree has no git ids to key releases by)"
        ),
        Ok(s) => format!(
            "render cache {dir}: {} release(s) written, {} already there, {} never cached (they read SOPS files or render Secrets), {} old entries removed",
            s.written, s.kept, s.secret, s.pruned
        ),
        Err(e) => format!("render cache {dir}: not written ({e}); plans render their base instead"),
    }
}
