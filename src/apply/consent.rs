//! Deletions that need consent: what holds data (a Namespace and all it
//! holds, a PersistentVolumeClaim or PersistentVolume, a
//! CustomResourceDefinition and every custom resource of it, a StatefulSet
//! whose volume claims may hold data), every deletion of an app or an
//! environment that is gone from the config, and any set of deletions
//! beyond a budget. Without consent they are held: the deploy applies
//! everything else, keeps them in the record (so a later run with consent
//! completes them) and says so.

use std::collections::{BTreeMap, BTreeSet};

use super::record::Entry;

/// The budget when the runner names none: a quarter of an environment.
pub const DEFAULT_BUDGET: u32 = 25;
/// So many deletions never exceed the budget (a small environment's
/// routine change is not a mass deletion).
pub const SMALL: usize = 10;

/// Why a deletion needs consent, if it does (kind alone).
pub fn data_bearing(e: &Entry) -> Option<&'static str> {
    crate::resource::data_bearing(
        crate::resource::split_api_version(&e.api_version).0,
        &e.kind,
    )
}

/// Splits `deletions` into those that go ahead and those held, with why.
/// `previous` is the environment's recorded resources of the apps in
/// scope; `head_apps` the apps the head still has.
pub fn split(
    deletions: Vec<Entry>,
    previous: &[&Entry],
    head_apps: &BTreeSet<&str>,
    budget: u32,
    consent: bool,
) -> (Vec<Entry>, Vec<(Entry, String)>) {
    if consent || deletions.is_empty() {
        return (deletions, Vec::new());
    }
    let mut per_app: BTreeMap<&str, usize> = BTreeMap::new();
    for e in previous.iter().filter(|e| !e.hook) {
        *per_app.entry(e.app.as_str()).or_default() += 1;
    }
    let total = previous.iter().filter(|e| !e.hook).count();
    // The budget counts every deletion, held for another reason or not.
    let n = deletions.len();
    let over_budget = n > SMALL && n * 100 > total * budget.min(100) as usize;
    let everything = head_apps.is_empty();
    let mut go = Vec::new();
    let mut held = Vec::new();
    for e in deletions {
        let why = if everything {
            Some(
                "the environment has nothing left in the config: deleting all it deployed"
                    .to_string(),
            )
        } else if !head_apps.contains(e.app.as_str()) {
            Some(format!(
                "app {} is gone from the config: deleting all {} resources it deployed",
                e.app,
                per_app.get(e.app.as_str()).copied().unwrap_or(0)
            ))
        } else if let Some(why) = crate::resource::data_bearing(&e.id().group, &e.kind) {
            Some(why.to_string())
        } else if over_budget {
            Some(format!(
                "over the deletion budget: {n} of {total} resources, more than {budget}%"
            ))
        } else {
            None
        };
        match why {
            Some(w) => held.push((e, w)),
            None => go.push(e),
        }
    }
    (go, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(app: &str, api: &str, kind: &str, name: &str) -> Entry {
        Entry {
            api_version: api.into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
            app: app.into(),
            hash: String::new(),
            hook: false,
        }
    }

    #[test]
    fn data_gone_apps_and_mass_deletions_are_held() {
        let cm = |app: &str, n: usize| entry(app, "v1", "ConfigMap", &format!("c{n}"));
        let pvc = entry("api", "v1", "PersistentVolumeClaim", "data");
        let crd = entry(
            "api",
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "x",
        );
        let previous: Vec<Entry> = (0..40)
            .map(|n| cm("api", n))
            .chain([pvc.clone(), crd.clone()])
            .collect();
        let refs: Vec<&Entry> = previous.iter().collect();
        let apps: BTreeSet<&str> = ["api"].into();
        // Two ConfigMaps and a PVC: the PVC is held.
        let (go, held) = split(
            vec![cm("api", 1), cm("api", 2), pvc.clone()],
            &refs,
            &apps,
            25,
            false,
        );
        assert_eq!(go.len(), 2);
        assert_eq!(held.len(), 1);
        assert!(held[0].1.contains("PersistentVolumeClaim"));
        // Consent lets everything go.
        let (go, held) = split(vec![pvc.clone(), crd.clone()], &refs, &apps, 25, true);
        assert_eq!((go.len(), held.len()), (2, 0));
        // Twelve of 42 (28%) is over a 25% budget.
        let many: Vec<Entry> = (0..12).map(|n| cm("api", n)).collect();
        let (go, held) = split(many.clone(), &refs, &apps, 25, false);
        assert_eq!(go.len(), 0);
        assert!(
            held[0]
                .1
                .contains("over the deletion budget: 12 of 42 resources, more than 25%"),
            "{}",
            held[0].1
        );
        // Within a 50% budget they go.
        assert_eq!(split(many, &refs, &apps, 50, false).0.len(), 12);
        // An app gone from the config is held whole.
        let (go, held) = split(vec![cm("web", 1)], &refs, &apps, 25, false);
        assert!(go.is_empty());
        assert!(held[0].1.contains("app web is gone from the config"));
        // An environment with nothing left.
        let none = BTreeSet::new();
        let (_, held) = split(vec![cm("api", 1)], &refs, &none, 25, false);
        assert!(held[0].1.contains("nothing left in the config"));
    }
}
