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
