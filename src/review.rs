//! Reviewed = applied: at merge, the plan of what this push deploys is
//! compared, per (environment, app), with the plan the pull request showed
//! (the fingerprints its kdeploy comment carries, [`crate::plan::fingerprint`]).
//!
//! Each section is the same (the deploy applies the reviewed plan), changed
//! since review (with the resources whose planned change differs and the
//! likely cause), new (the pull request's plan had no such section) or
//! gone (reviewed, but nothing to apply now). A push without a pull request
//! is unreviewed. What then happens is runner policy: the `unreviewed`
//! input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::plan::Plan;
use crate::plan::fingerprint::{self, Fingerprint, REVIEW_MARKER, SECTION_MARKER};

/// The plan a pull request's comment showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// The pull request.
    pub number: u64,
    /// kdeploy's version that made the plan.
    pub version: Option<String>,
    /// The plan's base and head revisions.
    pub base: Option<String>,
    /// See `base`.
    pub head: Option<String>,
    /// Each section's fingerprint.
    pub sections: BTreeMap<(String, String), Fingerprint>,
}

/// The JSON of a hidden line `<!-- {word} {json} -->`, wherever it is.
fn hidden<'a>(body: &'a str, word: &str) -> impl Iterator<Item = serde_json::Value> + 'a {
    let open = format!("<!-- {word} ");
    body.lines().filter_map(move |line| {
        let rest = line.trim().strip_prefix(open.as_str())?;
        serde_json::from_str(rest.strip_suffix(" -->")?).ok()
    })
}

impl Reviewed {
    /// Reads the parts of a plan comment; `None` when they carry no plan
    /// marker (a comment of a kdeploy that did not fingerprint).
    pub fn parse(number: u64, parts: &[String]) -> Option<Reviewed> {
        let head = parts.iter().find_map(|p| hidden(p, REVIEW_MARKER).next())?;
        let text = |k: &str| head[k].as_str().map(str::to_string);
        let mut sections = BTreeMap::new();
        for v in parts.iter().flat_map(|p| hidden(p, SECTION_MARKER)) {
            let (Some(env), Some(app)) = (v["env"].as_str(), v["app"].as_str()) else {
                continue;
            };
            if let Ok(f) = serde_json::from_value::<Fingerprint>(v["fingerprint"].clone()) {
                sections.insert((env.to_string(), app.to_string()), f);
            }
        }
        Some(Reviewed {
            number,
            version: text("version"),
            base: text("base"),
            head: text("head"),
            sections,
        })
    }
}

/// One section's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// The deploy applies what was reviewed.
    Same,
    /// The planned change differs: the resources whose change differs
    /// (`ConfigMap ns/a: reviewed +0a1b2c3d, now ~9f8e7d6c`), or empty when
    /// the review kept no per-resource digests (a large section).
    Changed(Vec<String>),
    /// Planned now, not in the reviewed plan.
    New,
    /// Reviewed, but nothing of it is planned now (reverted, or applied
    /// by an earlier push).
    Gone,
}

/// What a push deploys, against what was reviewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The pull request the push came from, when there is one.
    pub pull: Option<u64>,
    /// Its reviewed plan was found (a comment with fingerprints).
    pub found: bool,
    /// Each section planned now or reviewed.
    pub sections: BTreeMap<(String, String), Section>,
    /// Why sections differ, most likely first.
    pub causes: Vec<String>,
    /// The pull request's labels (consent to deletions is one).
    pub labels: Vec<String>,
    /// Where the compared plan was shown, when not the pull request's
    /// comment (`the merge queue's check of 1a2b3c4d5e6f`).
    pub place: Option<String>,
}

impl Verdict {
    /// A push with no pull request: every section is unreviewed.
    pub fn without_review(plan: &Plan, selected: &dyn Fn(&str) -> bool) -> Verdict {
        Verdict {
            pull: None,
            found: false,
            sections: plan
                .fingerprints
                .keys()
                .filter(|(env, _)| selected(env))
                .map(|k| (k.clone(), Section::New))
                .collect(),
            causes: Vec::new(),
            labels: Vec::new(),
            place: None,
        }
    }

    /// True when every section applies the reviewed plan (and something
    /// was reviewed, or nothing changes).
    pub fn is_reviewed(&self) -> bool {
        self.sections.values().all(|s| *s == Section::Same)
            && (self.found || self.sections.is_empty())
    }

    /// The sections that do not apply the reviewed plan.
    pub fn differing(&self) -> Vec<&(String, String)> {
        self.sections
            .iter()
            .filter(|(_, s)| **s != Section::Same && **s != Section::Gone)
            .map(|(k, _)| k)
            .collect()
    }

    /// One line for logs, check runs and outputs.
    pub fn line(&self) -> String {
        match (self.pull, self.found) {
            (None, _) if self.sections.is_empty() => "nothing to deploy".into(),
            (None, _) => "unreviewed: this push came from no pull request".into(),
            (Some(n), false) => format!(
                "unreviewed: pull request #{n} has no kdeploy plan comment with fingerprints"
            ),
            (Some(n), true) if self.is_reviewed() => match &self.place {
                Some(p) => format!("applies the plan checked in {p} (#{n})"),
                None => format!("applies the plan reviewed in #{n}"),
            },
            (Some(n), true) => format!(
                "changed since review in {}: {} of {} sections differ",
                self.place.clone().unwrap_or_else(|| format!("#{n}")),
                self.differing().len(),
                self.sections.len()
            ),
        }
    }

    /// The markdown section of the job summary and check runs.
    pub fn markdown(&self, env: Option<&str>) -> String {
        let mut out = format!("**Review:** {}.\n", self.line());
        let rows: Vec<_> = self
            .sections
            .iter()
            .filter(|((e, _), s)| env.is_none_or(|x| x == e) && **s != Section::Same)
            .collect();
        if rows.is_empty() {
            return out;
        }
        out.push_str("\n| environment / app | since review |\n| --- | --- |\n");
        for ((e, a), s) in rows {
            let what = match s {
                Section::Same => continue,
                Section::New if self.found => "**not in the reviewed plan**".to_string(),
                Section::New => "**unreviewed**".to_string(),
                Section::Gone => "reviewed, nothing to apply now".to_string(),
                Section::Changed(r) if r.is_empty() => {
                    "**changed** (a large section: see the plan)".to_string()
                }
                Section::Changed(r) => format!("**changed**: {}", r.join("; ")),
            };
            let _ = writeln!(out, "| {e} / {a} | {} |", what.replace('|', "\\|"));
        }
        for c in &self.causes {
            let _ = writeln!(out, "\n- likely cause: {c}");
        }
        out
    }
}

/// Compares `plan` (what this push deploys, its sections selected by
/// `selected` environment) with `reviewed`.
pub fn compare(reviewed: &Reviewed, plan: &Plan, selected: &dyn Fn(&str) -> bool) -> Verdict {
    let keys: BTreeSet<&(String, String)> = plan
        .fingerprints
        .keys()
        .chain(reviewed.sections.keys())
        .filter(|(env, _)| selected(env))
        .collect();
    let mut sections = BTreeMap::new();
    for key in keys {
        let section = match (reviewed.sections.get(key), plan.fingerprints.get(key)) {
            (Some(r), Some(n)) if r.id == n.id => Section::Same,
            (Some(r), Some(n)) => Section::Changed(resources(r, n)),
            (None, Some(_)) => Section::New,
            (Some(_), None) => Section::Gone,
            (None, None) => continue,
        };
        sections.insert(key.clone(), section);
    }
    let mut v = Verdict {
        pull: Some(reviewed.number),
        found: true,
        sections,
        causes: Vec::new(),
        labels: Vec::new(),
        place: None,
    };
    if !v.differing().is_empty() {
        v.causes = causes(reviewed, plan);
    }
    v
}

/// The resources whose planned change differs between two fingerprints.
fn resources(reviewed: &Fingerprint, now: &Fingerprint) -> Vec<String> {
    if reviewed.resources.is_empty() || now.resources.is_empty() {
        return Vec::new();
    }
    let ids: BTreeSet<&String> = reviewed
        .resources
        .keys()
        .chain(now.resources.keys())
        .collect();
    ids.into_iter()
        .filter_map(|id| {
            let (r, n) = (reviewed.resources.get(id), now.resources.get(id));
            (r != n).then(|| {
                let show = |d: Option<&String>| d.map_or("no change", |s| s.as_str()).to_string();
                format!("{id}: reviewed {}, now {}", show(r), show(n))
            })
        })
        .collect()
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(12)]
}

/// Why the plans differ, from what the review recorded.
fn causes(reviewed: &Reviewed, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = &reviewed.version
        && v != fingerprint::VERSION
    {
        out.push(format!(
            "kdeploy changed: the plan was made by {v}, this deploy runs {}",
            fingerprint::VERSION
        ));
    }
    if let Some(b) = &reviewed.base
        && b != &plan.base
    {
        out.push(format!(
            "the base moved: the pull request was planned against `{}`, the merge applies onto `{}` (other changes were merged in between)",
            short(b),
            short(&plan.base)
        ));
    }
    if out.is_empty() {
        out.push("something the commits do not pin changed since the plan: a remote chart's version or an image tag resolved again (pin them: `chartVersion`, `kdeploy lock`), or commits were pushed to the branch after its last plan".into());
    }
    out
}

/// What the `unreviewed` input asks when a push does not apply a reviewed
/// plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unreviewed {
    /// Deploy, saying so in the summary and check runs.
    Deploy,
    /// Deploy, with a warning annotation (the default).
    #[default]
    Warn,
    /// Deploy nothing: the job fails before the cluster is touched.
    Fail,
}

impl std::str::FromStr for Unreviewed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "deploy" => Ok(Unreviewed::Deploy),
            "" | "warn" => Ok(Unreviewed::Warn),
            "fail" => Ok(Unreviewed::Fail),
            other => Err(format!("`unreviewed: {other}` is not deploy, warn or fail")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(id: &str, resources: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            id: id.into(),
            resources: resources
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn plan_with(sections: &[(&str, &str, Fingerprint)]) -> Plan {
        Plan {
            base: "b".repeat(40),
            head: "h".repeat(40),
            changes: Vec::new(),
            unchanged: 0,
            unchanged_releases: 0,
            hidden_resources: 0,
            ignored_fields: 0,
            notes: Vec::new(),
            dirs: BTreeMap::new(),
            browse_url: None,
            fingerprints: sections
                .iter()
                .map(|(e, a, f)| ((e.to_string(), a.to_string()), f.clone()))
                .collect(),
            policy_errors: 0,
            live: Default::default(),
        }
    }

    #[test]
    fn sections_compare_and_name_the_resources_and_the_cause() {
        let reviewed_plan = plan_with(&[
            ("prod", "api", fp("1111", &[("ConfigMap a/x", "+aaaa")])),
            ("prod", "web", fp("2222", &[("ConfigMap w/y", "~bbbb")])),
            ("prod", "old", fp("3333", &[])),
        ]);
        let mut parts = vec![format!(
            "{}{}",
            fingerprint::review_marker(&reviewed_plan),
            reviewed_plan
                .fingerprints
                .iter()
                .map(|(k, f)| fingerprint::section_marker(k, f))
                .collect::<String>()
        )];
        parts.push("unrelated".into());
        let reviewed = Reviewed::parse(7, &parts).expect("markers");
        assert_eq!(reviewed.sections.len(), 3);

        let mut now = plan_with(&[
            ("prod", "api", fp("1111", &[("ConfigMap a/x", "+aaaa")])),
            (
                "prod",
                "web",
                fp(
                    "2229",
                    &[("ConfigMap w/y", "~bbbc"), ("Service w/y", "+cccc")],
                ),
            ),
            ("prod", "new", fp("4444", &[])),
            ("stage", "api", fp("5555", &[])),
        ]);
        now.base = "c".repeat(40);
        let v = compare(&reviewed, &now, &|e| e == "prod");
        assert_eq!(v.sections[&("prod".into(), "api".into())], Section::Same);
        assert_eq!(
            v.sections[&("prod".into(), "web".into())],
            Section::Changed(vec![
                "ConfigMap w/y: reviewed ~bbbb, now ~bbbc".into(),
                "Service w/y: reviewed no change, now +cccc".into()
            ])
        );
        assert_eq!(v.sections[&("prod".into(), "new".into())], Section::New);
        assert_eq!(v.sections[&("prod".into(), "old".into())], Section::Gone);
        assert!(!v.sections.contains_key(&("stage".into(), "api".into())));
        assert!(!v.is_reviewed());
        assert!(v.causes[0].contains("the base moved"), "{:?}", v.causes);
        assert!(
            v.line().starts_with("changed since review in #7: 2 of 4"),
            "{}",
            v.line()
        );
        let md = v.markdown(None);
        assert!(
            md.contains("| prod / web | **changed**: ConfigMap w/y"),
            "{md}"
        );

        let same = compare(&reviewed, &reviewed_plan, &|_| true);
        assert!(same.is_reviewed());
        assert_eq!(same.line(), "applies the plan reviewed in #7");
        assert!(Reviewed::parse(1, &["no markers".into()]).is_none());
        assert_eq!("fail".parse::<Unreviewed>(), Ok(Unreviewed::Fail));
        assert!("maybe".parse::<Unreviewed>().is_err());
    }
}
