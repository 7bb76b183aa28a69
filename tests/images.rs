//! Image automation against the real registry of tests/lock.rs: policies
//! with Flux's semantics choose among pushed tags (more than one page of
//! them), and `kdeploy images update` / `set-version` write version files.

use std::process::Command;

use crate::lock::Registry;
use crate::util::Repo;

fn kdeploy(repo: &Repo, args: &[&str]) -> crate::util::Run {
    let home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(args)
        .current_dir(repo.path())
        .env("HOME", home.path())
        .env_remove("DOCKER_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("kdeploy runs")
        .into()
}

const WEB_PATTERN: &str = r"^v1_(?P<sha>[a-f0-9]{7})_(?P<ts>.*)Z$";

fn policies(host: &str, web_pattern: &str) -> String {
    format!(
        "images:\n  insecureRegistries: [\"{host}\"]\n  api:\n    repository: {host}/example/api\n    environments: [staging]\n    policy: {{semver: {{range: \">=1.0.0 <2\"}}}}\n  web:\n    repository: {host}/example/web\n    environments: [staging, production]\n    filterTags: {{pattern: '{web_pattern}', extract: '$ts'}}\n    policy: {{alphabetical: {{order: asc}}}}\n"
    )
}

pub fn config_repo(host: &str) -> Repo {
    let repo = Repo::new();
    repo.write("kdeploy.yaml", &policies(host, WEB_PATTERN))
        .write(
            "services/api/config.yaml",
            &format!("image: {host}/example/api\n"),
        )
        .write("services/api/version", "1.0.0\n")
        .write("services/api/staging/config.yaml", "")
        .write("services/api/production/config.yaml", "")
        .write(
            "services/web/config.yaml",
            &format!("image: {host}/example/web\n"),
        )
        .write("services/web/version", "v1_0000000_2025-01-01T00.00.00Z\n")
        .write("services/web/staging/config.yaml", "")
        .write("services/web/production/config.yaml", "");
    repo.commit("apps");
    repo
}

#[test]
fn images_update_writes_what_the_policies_choose_and_is_idempotent() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = registry.host.clone();
    for tag in ["1.0.0", "1.2.0", "v1.10.1", "2.0.0", "1.11.0-rc.1"] {
        registry.push("example/api", tag, "api", false);
    }
    // More than a page (100) of tags no policy wants (Debian's registry,
    // Distribution 2.8, sends them all at once: the listing must neither
    // loop nor repeat them).
    for i in 0..110 {
        registry.push("example/api", &format!("build-{i:03}"), "api", false);
    }
    for tag in [
        "v1_abc1234_2026-01-02T10.00.00Z",
        "v1_def5678_2026-03-01T09.00.00Z",
        "v2_fff0000_2027-01-01T00.00.00Z",
        "latest",
    ] {
        registry.push("example/web", tag, "web", false);
    }
    let repo = config_repo(&host);

    let dry = kdeploy(&repo, &["images", "update", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains(&format!(
            "would set api staging 1.0.0 → v1.10.1 (semver >=1.0.0 <2, newest of 115 tags of {host}/example/api)"
        )),
        "{}{}",
        dry.stdout,
        dry.stderr
    );
    assert!(!repo.path().join("services/api/staging/version").exists());

    let run = kdeploy(&repo, &["images", "update"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(repo.read("services/api/staging/version"), "v1.10.1\n");
    assert!(!repo.path().join("services/api/production/version").exists());
    for env in ["staging", "production"] {
        assert_eq!(
            repo.read(&format!("services/web/{env}/version")),
            "v1_def5678_2026-03-01T09.00.00Z\n"
        );
    }
    // The rendered staging Deployment now runs the chosen tag.
    let render = kdeploy(
        &repo,
        &["render", "--stdout", "--env", "staging", "--app", "api"],
    );
    assert!(
        render
            .stdout
            .contains(&format!("image: {host}/example/api:v1.10.1")),
        "{}",
        render.stdout
    );

    let again = kdeploy(&repo, &["images", "update"]);
    assert!(
        again.stdout.contains("no version changes"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("api staging: v1.10.1 is current"),
        "{}",
        again.stdout
    );
}

#[test]
fn bad_policies_and_registries_are_named_and_nothing_is_written() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = registry.host.clone();
    registry.push("example/api", "1.0.0", "api", false);
    registry.push("example/web", "latest", "web", false);
    let repo = config_repo(&host);

    // A pattern that matches nothing: a notice, no change.
    let run = kdeploy(&repo, &["images", "update", "--app", "web"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "web staging: none of the 1 tags of {host}/example/web qualifies under alphabetical asc; unchanged"
        )),
        "{}",
        run.stdout
    );

    // An invalid regular expression: the kdeploy.yaml line of the policy.
    repo.write("kdeploy.yaml", &policies(&host, "^v1_(?P<sha"));
    let run = kdeploy(&repo, &["images", "update"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("kdeploy.yaml:7:3: image policy of `web`: `filterTags.pattern` is not a valid regular expression"),
        "{}",
        run.stderr
    );
    repo.write("kdeploy.yaml", &policies(&host, WEB_PATTERN));

    // A repository the registry does not have; then the registry down.
    repo.write(
        "kdeploy.yaml",
        &policies(&host, WEB_PATTERN).replace("example/api", "example/nope"),
    );
    let run = kdeploy(&repo, &["images", "update"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("cannot list tags; no version file was changed")
            && run.stderr.contains(&format!("{host}/example/nope")),
        "{}",
        run.stderr
    );
    drop(registry);
    repo.write("kdeploy.yaml", &policies(&host, WEB_PATTERN));
    let run = kdeploy(&repo, &["images", "update"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);
    assert!(!repo.path().join("services/api/staging/version").exists());

    // set-version: checked against the tag grammar and the policy pattern.
    let run = kdeploy(
        &repo,
        &[
            "set-version",
            "web",
            "staging",
            "v1_1234abc_2026-05-05T05.05.05Z",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        repo.read("services/web/staging/version"),
        "v1_1234abc_2026-05-05T05.05.05Z\n"
    );
    let run = kdeploy(
        &repo,
        &[
            "set-version",
            "web",
            "staging",
            "v2_1234abc_2026-05-05T05.05.05Z",
        ],
    );
    assert!(
        run.stderr
            .contains("does not match the image policy of `web`"),
        "{}",
        run.stderr
    );
    let run = kdeploy(&repo, &["set-version", "api", "staging", "1.0:bad"]);
    assert!(
        run.stderr.contains("is not a valid image tag"),
        "{}",
        run.stderr
    );
    let run = kdeploy(&repo, &["set-version", "api", "qa", "1.0.1"]);
    assert!(
        run.stderr.contains("there is no release api/qa"),
        "{}",
        run.stderr
    );
}

#[test]
fn promote_copies_versions_and_shows_the_plan_it_causes() {
    let repo = Repo::with_app();
    repo.write("services/api/staging/version", "1.1.0\n");
    repo.commit("staging runs 1.1.0");
    let run = kdeploy(
        &repo,
        &[
            "promote",
            "--from",
            "staging",
            "--to",
            "production",
            "--dry-run",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("would set api production 1.0.0 → 1.1.0 (promoted from staging)"),
        "{}",
        run.stdout
    );
    assert!(!repo.path().join("services/api/production/version").exists());

    let run = kdeploy(
        &repo,
        &["promote", "--from", "staging", "--to", "production"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(repo.read("services/api/production/version"), "1.1.0\n");
    assert!(
        run.stdout
            .contains("~ apps/Deployment api-production/api [api] image api: 1.0.0 → 1.1.0"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("== staging =="), "{}", run.stdout);

    let again = kdeploy(
        &repo,
        &["promote", "--from", "staging", "--to", "production"],
    );
    assert!(
        again
            .stdout
            .contains("production already runs what staging runs"),
        "{}",
        again.stdout
    );
    let same = kdeploy(&repo, &["promote", "--from", "staging", "--to", "staging"]);
    assert_eq!(same.code, 2);
    let unknown = kdeploy(&repo, &["promote", "--from", "staging", "--to", "prod"]);
    assert!(
        unknown.stderr.contains(
            "no selected app has an environment `prod`; environments: production, staging"
        ),
        "{}",
        unknown.stderr
    );
}

/// `kdeploy images update --dry-run` for 1,000 apps whose policies all read
/// one repository of 1,000 tags on loopback (listed once, evaluated 1,000
/// times). Run by hand:
/// `cargo test --release --test tests measure_policies -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
fn measure_policies_for_1000_apps_against_1000_tags() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = registry.host.clone();
    for i in 0..1000 {
        registry.push(
            "example/app",
            &format!("1.{}.{}", i / 100, i % 100),
            "m",
            false,
        );
    }
    let repo = Repo::new();
    let mut settings = format!("images:\n  insecureRegistries: [\"{host}\"]\n");
    for i in 0..1000 {
        settings.push_str(&format!(
            "  app{i}:\n    repository: {host}/example/app\n    environments: [production]\n    filterTags: {{pattern: '^1\\.(?P<minor>\\d+)\\.\\d+$'}}\n    policy: {{semver: {{range: '>=1.0.0 <2'}}}}\n"
        ));
        repo.write(
            &format!("services/app{i}/config.yaml"),
            &format!("image: {host}/example/app\n"),
        )
        .write(&format!("services/app{i}/version"), "1.0.0\n")
        .write(&format!("services/app{i}/production/config.yaml"), "");
    }
    repo.write("kdeploy.yaml", &settings);
    repo.commit("apps");
    let started = std::time::Instant::now();
    let run = kdeploy(&repo, &["images", "update", "--dry-run"]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.matches("would set").count(),
        1000,
        "{}",
        run.stdout
    );
    println!("images update --dry-run: 1,000 policies over 1,000 tags in {took:?} (whole process)");
}

#[test]
fn a_repo_that_locks_images_gets_the_bumped_image_locked_too() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = registry.host.clone();
    registry.push("example/api", "1.0.0", "one", false);
    let bumped = registry.push("example/api", "1.2.0", "two", false);
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        &format!(
            "images:\n  insecureRegistries: [\"{host}\"]\n  requireLock: true\n  api:\n    repository: {host}/example/api\n    environments: [staging]\n    policy: {{semver: {{range: '^1'}}}}\n"
        ),
    )
    .write("services/api/config.yaml", &format!("image: {host}/example/api\n"))
    .write("services/api/version", "1.0.0\n")
    .write("services/api/staging/config.yaml", "")
    .write("services/api/production/config.yaml", "");
    assert_eq!(kdeploy(&repo, &["lock"]).code, 0);
    repo.commit("locked");

    let run = kdeploy(&repo, &["images", "update"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(repo.read("services/api/staging/version"), "1.2.0\n");
    assert!(
        repo.read("images.lock.yaml")
            .contains(&format!("\"{host}/example/api:1.2.0\": {bumped}")),
        "{}",
        repo.read("images.lock.yaml")
    );
    assert!(run.stdout.contains("(new)"), "{}", run.stdout);
    // Production still runs 1.0.0: its entry stays, and the lock is complete.
    assert_eq!(kdeploy(&repo, &["lock", "--check"]).code, 0);
    let render = kdeploy(&repo, &["render", "--stdout", "--env", "staging"]);
    assert!(
        render
            .stdout
            .contains(&format!("example/api:1.2.0@{bumped}")),
        "{}",
        render.stdout
    );
}

#[test]
fn version_files_are_read_inside_the_repo_only() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("version");
    std::fs::write(&secret, "OUTSIDE-CANARY-7d1\n").unwrap();
    let repo = Repo::with_app();
    std::os::unix::fs::symlink(&secret, repo.path().join("services/api/staging/version")).unwrap();
    for args in [
        &[
            "promote",
            "--from",
            "staging",
            "--to",
            "production",
            "--dry-run",
        ][..],
        &["set-version", "api", "staging", "1.2.3"][..],
    ] {
        let run = kdeploy(&repo, args);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains("OUTSIDE-CANARY"), "{args:?}: {all}");
        assert_ne!(run.code, 0, "{args:?}: {all}");
    }
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "OUTSIDE-CANARY-7d1\n"
    );
}
