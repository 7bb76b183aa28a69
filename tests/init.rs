//! `kdeploy init`: a new config repo that renders and whose workflows pass
//! actionlint; adopting manifests that the written kdeploy.yaml reproduces;
//! never overwriting, never leaving half a config behind.

use crate::util::{Repo, kdeploy, project_root, tree};

#[test]
fn init_starts_a_repo_that_renders_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let run = kdeploy(&project_root(), &["init", "--repo", repo]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("checked: 2 releases"), "{}", run.stdout);
    let render = kdeploy(dir.path(), &["render", "--stdout"]);
    assert_eq!(render.code, 0, "{}", render.stderr);
    assert!(
        render.stdout.contains("image: ghcr.io/example/hello:1.0.0"),
        "{}",
        render.stdout
    );

    // The workflows it writes load in GitHub: actionlint, when installed.
    let workflows = dir.path().join(".github/workflows");
    let actionlint = std::process::Command::new("actionlint")
        .arg("-no-color")
        .arg(workflows.join("kdeploy-plan.yml"))
        .arg(workflows.join("kdeploy-deploy.yml"))
        .output();
    match actionlint {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => eprintln!("skipped: actionlint is not installed (.ci/run installs it)"),
    }

    std::fs::write(dir.path().join("services/hello/version"), "2.0.0\n").unwrap();
    let before = tree(dir.path());
    let again = kdeploy(&project_root(), &["init", "--repo", repo]);
    assert_eq!(again.code, 2);
    assert!(
        again
            .stderr
            .contains("never overwrites files, and these exist: kdeploy.yaml"),
        "{}",
        again.stderr
    );
    assert_eq!(tree(dir.path()), before, "nothing written");
}

#[test]
fn init_from_raw_adopts_a_committed_gen_tree_and_checks_it() {
    // A `_gen` tree as `kdeploy render` (or `helm template`) writes it.
    let source = Repo::with_app();
    source.commit("chart");
    let state = crate::apply::state(&source, "HEAD");
    let repo = Repo::new();
    for (path, text) in kdeploy::output::files(&state) {
        repo.write(&format!("_gen/{}", path.display()), &text);
    }
    let run = repo.kdeploy(&["init", "--from-raw", "_gen/{env}/{app}"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("the same objects as the manifests"),
        "{}",
        run.stdout
    );
    let settings = std::fs::read_to_string(repo.path().join("kdeploy.yaml")).unwrap();
    assert!(settings.contains("services: null"), "{settings}");
    assert!(
        settings.contains("raw: [\"_gen/{env}/{app}\"]"),
        "{settings}"
    );
    repo.commit("adopt");
    let adopted = crate::apply::state(&repo, "HEAD");
    let ids = |s: &kdeploy::render::State| -> Vec<(String, serde_json::Value)> {
        s.releases
            .iter()
            .flat_map(|r| {
                r.resources
                    .iter()
                    .map(|x| (x.id.to_string(), x.object.clone()))
            })
            .collect()
    };
    assert_eq!(ids(&adopted), ids(&state));
}

#[test]
fn init_from_raw_that_misses_manifests_writes_nothing() {
    let repo = Repo::new();
    repo.write(
        "_gen/prod/shop/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .write(
        "_gen/prod/stray.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
    );
    let run = repo.kdeploy(&["init", "--from-raw", "_gen/{env}/{app}"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("kdeploy init wrote nothing"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("_gen/prod/stray.yaml"),
        "{}",
        run.stderr
    );
    assert!(!repo.path().join("kdeploy.yaml").exists());

    let bad = repo.kdeploy(&["init", "--from-raw", "_gen/{env}"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("must contain {env} and {app}"),
        "{}",
        bad.stderr
    );
}
