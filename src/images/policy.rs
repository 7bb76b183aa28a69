//! Image policies evaluated as Flux's image-reflector does: tags are
//! filtered by `filterTags.pattern`, reduced to the value `extract` names,
//! and ordered by the policy; the winner becomes the version. Semver ranges
//! are written as Flux writes them (Masterminds syntax: `>=1.2.0 <2`,
//! `^1.2`, `1.2.x`, `a || b`, `1.2 - 1.4`) and evaluated with the `semver`
//! crate; tags may carry a `v`.

use regex::Regex;

use crate::config::{ImagePolicy, Order, PolicyChoice};

/// A policy ready to evaluate.
#[derive(Debug)]
pub struct Compiled {
    pattern: Option<Regex>,
    extract: Option<String>,
    choice: Choice,
}

#[derive(Debug)]
enum Choice {
    Alphabetical(Order),
    Numerical(Order),
    Semver(Vec<semver::VersionReq>, String),
}

/// Compiles a policy.
///
/// # Errors
/// What is wrong, in the user's terms: the regex error, an `extract` group
/// the pattern lacks, a range that does not parse.
pub fn compile(p: &ImagePolicy) -> Result<Compiled, String> {
    let (pattern, extract) = match &p.filter_tags {
        Some(f) => {
            let re = Regex::new(&f.pattern).map_err(|e| {
                format!("`filterTags.pattern` is not a valid regular expression: {e}")
            })?;
            if let Some(x) = &f.extract {
                for group in referenced_groups(x) {
                    let known = re.capture_names().flatten().any(|n| n == group)
                        || group.parse::<usize>().is_ok_and(|i| i < re.captures_len());
                    if !known {
                        return Err(format!(
                            "`filterTags.extract` uses `${group}`, which `filterTags.pattern` does not capture"
                        ));
                    }
                }
            }
            (Some(re), f.extract.clone())
        }
        None => (None, None),
    };
    let choice = match &p.policy {
        PolicyChoice::Alphabetical { order } => Choice::Alphabetical(*order),
        PolicyChoice::Numerical { order } => Choice::Numerical(*order),
        PolicyChoice::Semver { range } => Choice::Semver(parse_range(range)?, range.clone()),
    };
    Ok(Compiled {
        pattern,
        extract,
        choice,
    })
}

/// `$name`, `${name}`, `$1` references of an extract template.
fn referenced_groups(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = if let Some(r) = rest.strip_prefix('{') {
            r.split('}').next().unwrap_or_default().to_string()
        } else {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Masterminds range syntax -> `semver` requirements (any of them).
fn parse_range(range: &str) -> Result<Vec<semver::VersionReq>, String> {
    let mut out = Vec::new();
    for alternative in range.split("||") {
        let alt = alternative.trim();
        let text = if let Some((lo, hi)) = alt.split_once(" - ") {
            format!(">={}, <={}", lo.trim(), hi.trim())
        } else {
            alt.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let req = semver::VersionReq::parse(&text)
            .map_err(|e| format!("`policy.semver.range` `{range}` is not a semver range: {e}"))?;
        out.push(req);
    }
    Ok(out)
}

/// A tag as a version: `v` allowed, `1.2` read as `1.2.0`.
fn version_of(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    semver::Version::parse(t)
        .or_else(|_| semver::Version::parse(&format!("{t}.0")))
        .or_else(|_| semver::Version::parse(&format!("{t}.0.0")))
        .ok()
}

impl Compiled {
    /// True when `tag` passes `filterTags.pattern` (every tag without one).
    pub fn admits(&self, tag: &str) -> bool {
        self.pattern.as_ref().is_none_or(|re| re.is_match(tag))
    }

    /// The value a tag is ordered by.
    fn value(&self, tag: &str) -> Option<String> {
        match (&self.pattern, &self.extract) {
            (Some(re), Some(x)) => {
                let caps = re.captures(tag)?;
                let mut out = String::new();
                caps.expand(x, &mut out);
                Some(out)
            }
            (Some(re), None) => re.is_match(tag).then(|| tag.to_string()),
            (None, _) => Some(tag.to_string()),
        }
    }

    /// The winning tag of `tags`, if any qualifies.
    pub fn select<'a>(&self, tags: &'a [String]) -> Option<&'a str> {
        let candidates = tags
            .iter()
            .filter_map(|t| self.value(t).map(|v| (t.as_str(), v)));
        match &self.choice {
            Choice::Alphabetical(order) => {
                let pick = |it: Box<dyn Iterator<Item = (&'a str, String)> + '_>| match order {
                    Order::Asc => it.max_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0))),
                    Order::Desc => it.min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0))),
                };
                pick(Box::new(candidates)).map(|(t, _)| t)
            }
            Choice::Numerical(order) => {
                let numbers = candidates.filter_map(|(t, v)| v.parse::<f64>().ok().map(|n| (t, n)));
                let cmp = |a: &(&str, f64), b: &(&str, f64)| a.1.total_cmp(&b.1).then(a.0.cmp(b.0));
                match order {
                    Order::Asc => numbers.max_by(cmp),
                    Order::Desc => numbers.min_by(cmp),
                }
                .map(|(t, _)| t)
            }
            Choice::Semver(reqs, _) => candidates
                .filter_map(|(t, v)| version_of(&v).map(|ver| (t, ver)))
                .filter(|(_, ver)| reqs.iter().any(|r| r.matches(ver)))
                .max_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)))
                .map(|(t, _)| t),
        }
    }

    /// The policy in words, for reports: `semver >=1.2.0 <2`.
    pub fn describe(&self) -> String {
        match &self.choice {
            Choice::Alphabetical(o) => format!("alphabetical {}", order_word(*o)),
            Choice::Numerical(o) => format!("numerical {}", order_word(*o)),
            Choice::Semver(_, range) => format!("semver {range}"),
        }
    }
}

fn order_word(o: Order) -> &'static str {
    match o {
        Order::Asc => "asc",
        Order::Desc => "desc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterTags;

    fn policy(filter: Option<(&str, Option<&str>)>, choice: PolicyChoice) -> Compiled {
        compile(&ImagePolicy {
            repository: "r".into(),
            environments: vec![],
            filter_tags: filter.map(|(p, x)| FilterTags {
                pattern: p.into(),
                extract: x.map(str::to_string),
            }),
            policy: choice,
        })
        .unwrap()
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flux_examples_pick_what_flux_picks() {
        // Flux docs: timestamped tags of a major line, ordered by the time.
        let p = policy(
            Some(("^v1_(?P<sha>[a-f0-9]{7})_(?P<ts>.*)Z$", Some("$ts"))),
            PolicyChoice::Alphabetical { order: Order::Asc },
        );
        let t = tags(&[
            "v1_abc1234_2026-01-02T10.00.00Z",
            "v1_def5678_2026-03-01T09.00.00Z",
            "v2_fff0000_2027-01-01T00.00.00Z",
            "latest",
        ]);
        assert_eq!(p.select(&t), Some("v1_def5678_2026-03-01T09.00.00Z"));
        let semver = policy(
            None,
            PolicyChoice::Semver {
                range: ">=1.2.0 <2".into(),
            },
        );
        let t = tags(&[
            "1.1.9",
            "v1.4.0",
            "1.10.1",
            "2.0.0",
            "1.11.0-rc.1",
            "latest",
        ]);
        assert_eq!(semver.select(&t), Some("1.10.1"));
        let any = policy(
            None,
            PolicyChoice::Semver {
                range: "~1.1 || ^2".into(),
            },
        );
        assert_eq!(any.select(&t), Some("2.0.0"));
        let numerical = policy(
            Some(("^build-(?P<n>\\d+)$", Some("$n"))),
            PolicyChoice::Numerical { order: Order::Asc },
        );
        assert_eq!(
            numerical.select(&tags(&["build-9", "build-10", "x"])),
            Some("build-10")
        );
        assert_eq!(numerical.select(&tags(&["x"])), None);
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        let bad = |filter: Option<(&str, Option<&str>)>, choice| {
            compile(&ImagePolicy {
                repository: "r".into(),
                environments: vec![],
                filter_tags: filter.map(|(p, x): (&str, Option<&str>)| FilterTags {
                    pattern: p.into(),
                    extract: x.map(str::to_string),
                }),
                policy: choice,
            })
            .unwrap_err()
        };
        let asc = || PolicyChoice::Alphabetical { order: Order::Asc };
        assert!(bad(Some(("(", None)), asc()).contains("not a valid regular expression"));
        assert!(bad(Some(("^(?P<a>.*)$", Some("$ts"))), asc()).contains("uses `$ts`"));
        assert!(
            bad(
                None,
                PolicyChoice::Semver {
                    range: ">=banana".into()
                }
            )
            .contains("not a semver range")
        );
    }
}
