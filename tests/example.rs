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

/// `action.yml`'s inputs are exactly the table the action reads and
/// `kdeploy action --help` prints: names, defaults and descriptions.
#[test]
fn action_yml_inputs_match_the_table_the_code_reads() {
    let text = std::fs::read_to_string(project_root().join("action.yml")).expect("action.yml");
    let yml = kdeploy::yaml::parse(&text).expect("action.yml parses");
    let inputs = yml["inputs"].as_object().expect("inputs");
    let table = kdeploy::action::INPUTS;
    let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = table.iter().map(|i| i.name).collect();
    expected.sort_unstable();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, expected,
        "action.yml inputs vs kdeploy::action::INPUTS"
    );
    for i in table {
        let v = &inputs[i.name];
        assert_eq!(v["description"].as_str(), Some(i.description), "{}", i.name);
        assert_eq!(v["default"].as_str().unwrap_or(""), i.default, "{}", i.name);
    }
    let help = kdeploy(&project_root(), &["action", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    for i in table {
        assert!(
            help.stdout.contains(i.name),
            "{} missing from --help",
            i.name
        );
    }
    assert!(help.stdout.contains("GITHUB_EVENT_PATH"));
}

/// `--version` names the commit and the Kubernetes API kdeploy knows (the
/// version plan warnings default to); completions are valid shell.
#[test]
fn version_and_completions() {
    let v = kdeploy(&project_root(), &["--version"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    let newest = kdeploy::plan::warnings::NEWEST.to_string();
    assert!(
        v.stdout.contains(&format!("Kubernetes API {newest})")),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("(commit "), "{}", v.stdout);
    assert!(!v.stdout.contains("commit )"), "{}", v.stdout);

    let bash = kdeploy(&project_root(), &["completions", "bash"]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    for sub in ["plan", "apply", "environments", "completions"] {
        assert!(bash.stdout.contains(sub), "{sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kdeploy.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n rejects the completion script");
    let nu = kdeploy(&project_root(), &["completions", "nushell"]);
    assert_eq!(nu.code, 2);
    assert!(nu.stderr.contains("possible values: bash"), "{}", nu.stderr);
}
