//! `kdeploy render` and `kdeploy validate` check and serialize each release
//! as it renders (`kdeploy::emit`): the same texts, checks and problems as
//! rendering everything, then validating, then serializing.

use kdeploy::config::Filter;
use kdeploy::emit::{self, Emitted, Texts};
use kdeploy::render::{self, State};
use kdeploy::source::{Revision, Snapshot};

use crate::util::{Repo, project_root};

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\n  annotations: {kdeploy.io/group: crds}\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec:\n              type: object\n              properties:\n                size: {type: integer}\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n  annotations: {kdeploy.io/apply-after: crds}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: shop\n          image: ghcr.io/example/shop:1.0\n";

/// Two releases of one environment: the CRD in one, a Widget of it and a
/// Deployment ordered after the CRD in the other.
fn split_repo(widget_size: &str) -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    )
    .write("manifests/prod/crds/crd.yaml", CRD)
    .write("manifests/prod/shop/deploy.yaml", DEPLOYMENT)
    .write(
        "manifests/prod/shop/widget.yaml",
        &format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  size: {widget_size}\n"),
    );
    repo.commit("split");
    repo
}

fn both(path: &std::path::Path, rev: Option<&str>) -> (State, Result<Emitted, render::Error>) {
    let snapshot = Snapshot::open(path, &Revision::parse(rev)).expect("snapshot");
    let state = render::render(&snapshot, &Filter::default()).expect("renders");
    let emitted = emit::emit(&snapshot, &Filter::default(), Texts::Keep);
    (state, emitted)
}

fn assert_same(state: &State, emitted: &Emitted) {
    let summary = kdeploy::validate::check(state).expect("valid");
    assert_eq!(emitted.texts, kdeploy::output::release_texts(state));
    assert_eq!(emitted.summary.checked, summary.checked);
    assert_eq!(emitted.summary.skipped, summary.skipped);
    let ids = |s: &State| -> Vec<String> {
        s.releases
            .iter()
            .flat_map(|r| {
                r.resources
                    .iter()
                    .map(|x| format!("{} {}", x.id, x.origin.file))
            })
            .collect()
    };
    assert_eq!(ids(&emitted.state), ids(state));
}

#[test]
fn the_example_emits_what_render_validate_and_serialize_give() {
    let (state, emitted) = both(&project_root(), None);
    let emitted = emitted.expect("emits");
    assert!(state.resource_count() > 20, "the example has resources");
    assert_same(&state, &emitted);
}

#[test]
fn custom_kinds_are_checked_against_the_crd_of_another_release() {
    let repo = split_repo("3");
    let (state, emitted) = both(repo.path(), Some("HEAD"));
    let emitted = emitted.expect("emits");
    assert_same(&state, &emitted);
    assert_eq!(emitted.summary.checked, 3, "CRD, Deployment and Widget");
    // What is kept: outlines of built-in kinds (the ordering annotation
    // stays), the CRD and the Widget whole.
    let kept = |kind: &str| {
        emitted
            .state
            .releases
            .iter()
            .flat_map(|r| &r.resources)
            .find(|x| x.id.kind == kind)
            .map(|x| x.object.clone())
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    assert_eq!(
        kept("Deployment"),
        serde_json::json!({"metadata": {"annotations": {"kdeploy.io/apply-after": "crds"}}})
    );
    assert_eq!(kept("Widget")["spec"]["size"], 3);
    assert!(kept("CustomResourceDefinition")["spec"]["versions"].is_array());

    let repo = split_repo("large");
    let snapshot = Snapshot::open(repo.path(), &Revision::parse(Some("HEAD"))).expect("snapshot");
    let err = emit::emit(&snapshot, &Filter::default(), Texts::Keep)
        .expect_err("the widget is invalid")
        .to_string();
    let state = render::render(&snapshot, &Filter::default()).expect("renders");
    let expected = kdeploy::validate::check(&state)
        .expect_err("invalid")
        .to_string();
    assert_eq!(err, expected);
    assert!(
        err.contains(
            "example.com/Widget prod/w in prod/shop is invalid: spec.size: expected integer"
        ) || err.contains(
            "example.com/Widget shop-prod/w in prod/shop is invalid: spec.size: expected integer"
        ),
        "{err}"
    );
}

#[test]
fn problems_of_every_kind_are_reported_together_and_nothing_is_written() {
    let repo = split_repo("3");
    // An ordering group nobody declares, and a Deployment with an unknown field.
    repo.write(
        "manifests/prod/crds/crd.yaml",
        &CRD.replace("kdeploy.io/group: crds", "kdeploy.io/group: definitions"),
    )
    .write(
        "manifests/prod/shop/deploy.yaml",
        &DEPLOYMENT.replace(
            "          image:",
            "          imagePolicy: Always\n          image:",
        ),
    );
    repo.commit("broken");
    let run = repo.kdeploy(&["render"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("spec.template.spec.containers[0].imagePolicy: unknown field"),
        "{}",
        run.stderr
    );
    assert!(!repo.path().join("_gen").exists(), "nothing written");
    // Fixed field, ordering still broken: reported after every release rendered.
    repo.write("manifests/prod/shop/deploy.yaml", DEPLOYMENT);
    let run = repo.kdeploy(&["render"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("waits for group `crds`"),
        "{}",
        run.stderr
    );
    assert!(!repo.path().join("_gen").exists(), "nothing written");
}
