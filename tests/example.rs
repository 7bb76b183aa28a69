//! The bundled example config repo (`services/`, `charts/`) and its `_gen/`.

use crate::util::{kdeploy, project_root};

#[test]
fn committed_gen_is_up_to_date() {
    let run = kdeploy(&project_root(), &["render", "--check"]);
    assert_eq!(
        run.code, 0,
        "_gen/ is stale; run `cargo run -- render` and commit it:\n{}{}",
        run.stdout, run.stderr
    );
}

#[test]
fn example_exercises_inheritance_ingress_autoscaling_and_monitoring() {
    let run = kdeploy(&project_root(), &["render", "--stdout", "--app", "api"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // staging inherits the app version, production pins its own
    assert!(run.stdout.contains("image: ghcr.io/example/shop-api:1.4.2"));
    assert!(run.stdout.contains("image: ghcr.io/example/shop-api:1.4.1"));
    for kind in [
        "kind: Ingress",
        "kind: HorizontalPodAutoscaler",
        "kind: ServiceMonitor",
    ] {
        assert!(run.stdout.contains(kind), "missing {kind}");
    }
}

/// GitHub loads `action.yml`, the workflows and what users copy from the
/// README with a strict YAML parser; a plain value holding `: ` makes it
/// refuse the whole file. kdeploy's own reader is as strict.
#[test]
fn action_workflows_and_readme_yaml_parse() {
    let root = project_root();
    let mut files = vec![root.join("action.yml")];
    for entry in std::fs::read_dir(root.join(".github/workflows")).expect("workflows") {
        files.push(entry.expect("entry").path());
    }
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        if let Err(e) = kdeploy::yaml::parse(&text) {
            panic!("{}:{:?}: {}", file.display(), e.line, e.message);
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut blocks = 0;
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let text = block.split("```").next().unwrap_or("");
        if let Err(e) = kdeploy::yaml::parse(text) {
            panic!(
                "README yaml block {}: line {:?}: {}\n{text}",
                i + 1,
                e.line,
                e.message
            );
        }
        blocks += 1;
    }
    assert!(blocks >= 5, "found {blocks} yaml blocks");
}
