//! kbld locks (`kbld.lock.yml`: `overrides` of `image` by `newImage`
//! pinned to a digest, as `kbld --lock-output` writes them) mapped to
//! kdeploy's image lock, so an adopted repo deploys the digests kbld
//! resolved rather than tags.

use std::collections::BTreeMap;
use std::path::Path;

use super::adopt;

/// The lock kdeploy would write for the kbld locks under `repo`, with the
/// files read; `None` when there is none.
pub(crate) fn image_lock(repo: &Path) -> Option<(crate::lock::Lock, Vec<String>)> {
    let mut entries = BTreeMap::new();
    let mut files = Vec::new();
    for (file, doc) in adopt::documents(repo, repo) {
        let Ok(doc) = doc else { continue };
        if !doc["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("kbld.k14s.io/"))
            || doc["kind"] != "Config"
        {
            continue;
        }
        let mut any = false;
        for o in doc["overrides"].as_array().into_iter().flatten() {
            let (Some(image), Some(new)) = (o["image"].as_str(), o["newImage"].as_str()) else {
                continue;
            };
            if let Some((_, digest)) = new.split_once('@')
                && !crate::images::is_pinned(image)
            {
                entries.insert(image.to_string(), digest.to_string());
                any = true;
            }
        }
        if any && !files.contains(&file) {
            files.push(file);
        }
    }
    if entries.is_empty() {
        return None;
    }
    let lock = crate::lock::Lock {
        path: "images.lock.yaml".into(),
        entries,
    };
    // Only what the lock's own reader takes (a digest of sha256 and 64
    // lowercase hex digits) is written.
    let parsed = crate::lock::Lock::parse(&lock.path, &lock.to_text()).ok()?;
    Some((parsed, files))
}
