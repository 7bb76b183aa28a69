//! `kdeploy bench` end to end on a small generated repo.

use crate::util::kdeploy;

/// The bench runs every measurement; a plan after the chart change reuses
/// the base's output of the templates that did not change; Helm's SDK,
/// when installed, renders every object as kdeploy does, so its figure
/// measures the same work.
#[test]
fn bench_measures_the_same_work_as_helm_and_reuses_unchanged_templates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = kdeploy(
        dir.path(),
        &["bench", "--apps", "6", "--envs", "2", "--iterations", "1"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(out.contains("full render: 12 releases"), "{out}");
    let reused: usize = out
        .split("template outputs of the base reused")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no reuse figure in {out}"));
    // Every template but the Deployment's, for each of the 12 releases.
    assert!(reused >= 12 * 5, "{out}");
    // With the base deployed to a render cache, the plan reads all of it.
    assert!(
        out.contains("render cache: a deploy of the base writes 12 entries")
            && out.contains("base from the cache: 12 of 12 base releases read"),
        "{out}"
    );
    // The ratios of the target, measured in the same rounds: each is a
    // positive number, and the cached plan's is set against the other.
    let rounds = out
        .lines()
        .find(|l| l.contains("against a full render of its head in alternating rounds"))
        .unwrap_or_else(|| panic!("no alternating-rounds line in {out}"));
    let ratios: Vec<f64> = rounds
        .split('(')
        .skip(1)
        .filter_map(|s| s.split('x').next()?.parse().ok())
        .collect();
    assert!(
        ratios.len() == 2 && ratios.iter().all(|r| *r > 0.0),
        "{rounds}"
    );
    assert!(rounds.contains("x the plan without it)"), "{rounds}");
    assert!(
        out.contains("its comment: 1 part(s)") && out.contains("characters (GitHub's limit 65536)"),
        "{out}"
    );
    let helm = out
        .lines()
        .find(|l| l.starts_with("helm SDK"))
        .unwrap_or_else(|| panic!("no Helm line in {out}"));
    if helm.contains("helm-python-sdk is not installed") {
        eprintln!(
            "skipped the Helm comparison: helm-python-sdk is not installed (.ci/run installs it)"
        );
        return;
    }
    let (equal, total) = helm
        .split_once(" objects equal")
        .and_then(|(head, _)| head.rsplit_once(", ").map(|(_, t)| t))
        .and_then(|t| t.split_once(" of "))
        .map(|(e, t)| (e.parse::<usize>().ok(), t.parse::<usize>().ok()))
        .unwrap_or_else(|| panic!("{helm}"));
    assert!(total.is_some_and(|t| t > 12 * 5), "{helm}");
    assert_eq!(equal, total, "{helm}");
}
