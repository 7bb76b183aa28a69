//! Pins rendered images by the image lock ([`crate::lock`]).

use std::collections::BTreeMap;

use crate::config::ImagesSettings;
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::images;
use crate::lock::Lock;
use crate::resource::Origin;

use super::Rendered;

/// Where an image is used: for errors and `kdeploy lock`'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// `production/api`.
    pub release: String,
    /// `apps/Deployment api-production/api containers[0]`.
    pub at: String,
}

/// Calls `f` with every unpinned image of `releases`, with the id and
/// origin of the resource holding it.
fn each_unpinned(
    releases: &mut [Rendered],
    settings: &ImagesSettings,
    mut f: impl FnMut(&str, &Origin, images::ImageField<'_>),
) {
    for r in releases.iter_mut() {
        for res in &mut r.resources {
            let id = res.id.to_string();
            let origin = &res.origin;
            images::for_each_image(
                &mut res.object,
                &res.id.group,
                &res.id.kind,
                &settings.pod_specs,
                |field| {
                    if !images::is_pinned(field.image) {
                        f(&id, origin, field);
                    }
                },
            );
        }
    }
}

/// Every unpinned image reference of `releases`, with where each is used.
pub fn references(
    releases: &mut [Rendered],
    settings: &ImagesSettings,
) -> BTreeMap<String, Vec<Use>> {
    let mut out: BTreeMap<String, Vec<Use>> = BTreeMap::new();
    each_unpinned(releases, settings, |id, origin, f| {
        out.entry(f.image.clone()).or_default().push(Use {
            release: format!("{}/{}", origin.env, origin.app),
            at: format!("{id} {}", f.container),
        });
    });
    out
}

/// Replaces each locked image of `releases` with `reference@digest`; with
/// `images.requireLock`, every image left unpinned is a problem.
///
/// # Errors
/// The unlocked images (each at its template and line), when required.
pub fn pin(
    releases: &mut [Rendered],
    lock: Option<&Lock>,
    settings: &ImagesSettings,
) -> Result<(), Diagnostics> {
    if lock.is_none_or(|l| l.entries.is_empty()) && !settings.require_lock {
        return Ok(()); // nothing to pin: no walk over every resource
    }
    let mut problems = Diagnostics::default();
    let lock_path = lock.map_or(settings.lock_file.as_str(), |l| l.path.as_str());
    each_unpinned(releases, settings, |id, origin, f| {
        if let Some(digest) = lock.and_then(|l| l.entries.get(f.image.as_str())) {
            *f.image = format!("{}@{digest}", f.image);
        } else if settings.require_lock {
            problems.push(
                Diagnostic::new(
                    Location::at(&origin.file, Some(origin.line), None),
                    format!(
                        "image `{}` ({id} {}, release {}/{}) is not in {lock_path}, and `images.requireLock` is set",
                        f.image, f.container, origin.env, origin.app
                    ),
                )
                .help(format!(
                    "run `kdeploy lock` and commit {lock_path} (or pin the image by digest)"
                )),
            );
        }
    });
    problems.into_result(())
}
