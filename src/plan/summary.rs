//! A change in one line, computed from the objects (not the text): what a
//! reviewer wants to know before reading a diff. `image api: 1.4.2 →
//! 2.4.0`, `replicas 2 → 3`, `env LOG_LEVEL: info → debug`, `annotations
//! only (checksum/env)`. Secret values never appear: only key names.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Action;
use crate::resource::Resource;

/// Leaf values by dotted path (`spec.replicas`, `data.KEY`).
fn leaves<'a>(v: &'a Value, path: &mut String, out: &mut BTreeMap<String, &'a Value>) {
    let parent = path.len();
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                if parent > 0 {
                    path.push('.');
                }
                path.push_str(k);
                leaves(x, path, out);
                path.truncate(parent);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                use std::fmt::Write as _;
                let _ = write!(path, "[{i}]");
                leaves(x, path, out);
                path.truncate(parent);
            }
        }
        _ => {
            out.insert(path.clone(), v);
        }
    }
}

/// Each side's leaf at a path, `None` where that side has none there.
type Sides<'a> = (Option<&'a Value>, Option<&'a Value>);

/// The leaves that differ between `a` and `b`, by dotted path: what
/// [`leaves`] of both sides and a comparison per path give, without
/// flattening the parts that are equal (most of a changed object: this
/// was most of a plan's summary work when a chart change touched every
/// release).
fn differing<'a>(
    a: Option<&'a Value>,
    b: Option<&'a Value>,
    path: &mut String,
    out: &mut BTreeMap<String, Sides<'a>>,
) {
    if a == b {
        return;
    }
    let parent = path.len();
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) if !x.is_empty() && !y.is_empty() => {
            let only_y = y.keys().filter(|k| !x.contains_key(*k));
            for k in x.keys().chain(only_y) {
                if parent > 0 {
                    path.push('.');
                }
                path.push_str(k);
                differing(x.get(k), y.get(k), path, out);
                path.truncate(parent);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if !x.is_empty() && !y.is_empty() => {
            for i in 0..x.len().max(y.len()) {
                use std::fmt::Write as _;
                let _ = write!(path, "[{i}]");
                differing(x.get(i), y.get(i), path, out);
                path.truncate(parent);
            }
        }
        _ => {
            // A leaf against anything else, or a side missing: every leaf
            // of each side (a pair forms only where both are leaves here,
            // and those differ).
            let mut here: BTreeMap<String, Sides<'a>> = BTreeMap::new();
            for (first, v) in [(true, a), (false, b)] {
                let mut at = BTreeMap::new();
                if let Some(v) = v {
                    leaves(v, path, &mut at);
                }
                for (p, v) in at {
                    let entry = here.entry(p).or_insert((None, None));
                    if first {
                        entry.0 = Some(v);
                    } else {
                        entry.1 = Some(v);
                    }
                }
            }
            out.extend(here);
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

/// The pod template's containers, wherever the kind keeps them.
fn containers(o: &Value) -> Vec<&Value> {
    [
        "/spec/template/spec/containers",
        "/spec/jobTemplate/spec/template/spec/containers",
        "/spec/containers",
    ]
    .iter()
    .filter_map(|p| o.pointer(p).and_then(Value::as_array))
    .flatten()
    .collect()
}

fn by_name(list: Vec<&Value>) -> BTreeMap<String, &Value> {
    list.into_iter()
        .map(|c| (c["name"].as_str().unwrap_or("").to_string(), c))
        .collect()
}

/// `ghcr.io/x/api:1.4.2` -> (`ghcr.io/x/api`, `1.4.2`).
fn split_image(image: &str) -> (&str, &str) {
    let name_end = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_end..].find([':', '@']) {
        Some(i) => (&image[..name_end + i], &image[name_end + i + 1..]),
        None => (image, ""),
    }
}

/// `1.4.2@sha256:…` -> (`1.4.2`, digest); a digest alone has no tag.
fn tag_and_digest(t: &str) -> (&str, Option<&str>) {
    match t.split_once('@') {
        Some((tag, digest)) => (tag, Some(digest)),
        None if t.starts_with("sha256:") => ("", Some(t)),
        None => (t, None),
    }
}

fn short_digest(d: &str) -> String {
    format!("{}…", d.chars().take(19).collect::<String>())
}

/// One image change in reviewer's words: a tag bump, a digest that moved
/// under the same tag (an image lock refreshed), or a pin added or dropped.
fn image_change(name: &str, x: &str, y: &str) -> String {
    let ((rx, tx), (ry, ty)) = (split_image(x), split_image(y));
    if rx != ry {
        return format!("image {name}: {x} → {y}");
    }
    let ((tag_x, dx), (tag_y, dy)) = (tag_and_digest(tx), tag_and_digest(ty));
    match (dx, dy) {
        (Some(a), Some(b)) if tag_x == tag_y => format!(
            "image {name}: {tag_y} digest {} → {}",
            short_digest(a),
            short_digest(b)
        ),
        (None, Some(b)) if tag_x == tag_y => {
            format!("image {name}: {tag_y} pinned to {}", short_digest(b))
        }
        (Some(_), None) if tag_x == tag_y => format!("image {name}: {tag_y} no longer pinned"),
        (_, Some(b)) => format!("image {name}: {tag_x} → {tag_y} ({})", short_digest(b)),
        (_, None) => format!("image {name}: {tag_x} → {tag_y}"),
    }
}

fn env_map(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let value = if e.get("valueFrom").is_some() {
                        "(from a reference)".to_string()
                    } else {
                        text(&e["value"])
                    };
                    (e["name"].as_str().unwrap_or("").to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The facts of one object: images, replicas, hosts, ports, keys.
fn facts(r: &Resource) -> Vec<String> {
    let o = &r.object;
    let mut out = Vec::new();
    for c in containers(o) {
        if let Some(i) = c["image"].as_str() {
            out.push(format!("image {i}"));
        }
    }
    if let Some(n) = o.pointer("/spec/replicas").and_then(Value::as_i64) {
        out.push(if n == 1 {
            "1 replica".into()
        } else {
            format!("{n} replicas")
        });
    }
    if let Some(rules) = o.pointer("/spec/rules").and_then(Value::as_array) {
        let hosts: Vec<&str> = rules.iter().filter_map(|x| x["host"].as_str()).collect();
        if !hosts.is_empty() {
            out.push(format!("host {}", hosts.join(", ")));
        }
    }
    if r.id.kind == "Service"
        && let Some(ports) = o.pointer("/spec/ports").and_then(Value::as_array)
    {
        let ports: Vec<String> = ports.iter().map(|p| text(&p["port"])).collect();
        out.push(format!("port {}", ports.join(", ")));
    }
    if matches!(r.id.kind.as_str(), "ConfigMap" | "Secret") && r.id.group.is_empty() {
        let mut keys: Vec<&str> = ["data", "stringData", "binaryData"]
            .iter()
            .filter_map(|f| o[*f].as_object())
            .flat_map(|m| m.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            out.push(format!(
                "{} {}",
                if keys.len() == 1 { "key" } else { "keys" },
                keys.join(", ")
            ));
        }
    }
    out
}

/// The one-line summary of a change.
pub fn describe(action: Action, old: Option<&Resource>, new: Option<&Resource>) -> String {
    match (action, old, new) {
        (Action::Added, _, Some(n)) => {
            let f = facts(n);
            if f.is_empty() {
                "new".into()
            } else {
                format!("new: {}", f.join(", "))
            }
        }
        (Action::Deleted, Some(o), _) => {
            let f = facts(o);
            if f.is_empty() {
                "deleted".into()
            } else {
                format!("deleted: {}", f.join(", "))
            }
        }
        (Action::Changed, Some(o), Some(n)) => changed(o, n),
        _ => String::new(),
    }
}

fn changed(old: &Resource, new: &Resource) -> String {
    let secret = new.id.group.is_empty() && new.id.kind == "Secret";
    let mut diff = BTreeMap::new();
    differing(
        Some(&old.object),
        Some(&new.object),
        &mut String::new(),
        &mut diff,
    );
    let paths: Vec<&String> = diff.keys().collect();
    if paths.is_empty() {
        return "no field changes".into();
    }
    let mut parts: Vec<String> = Vec::new();
    let explained = |p: &str| -> bool {
        p.contains(".containers[")
            && (p.ends_with(".image") || p.contains(".env[") || p.contains(".resources."))
            || p == "spec.replicas"
            || p.starts_with("data.")
            || p.starts_with("stringData.")
            || p.starts_with("binaryData.")
            || (p.starts_with("spec.rules[") && p.ends_with(".host"))
            || (p.starts_with("spec.ports[") && p.ends_with(".port"))
            // The version label follows the image's tag.
            || p.ends_with("labels.app.kubernetes.io/version")
    };

    // Images and env vars, per container.
    let (oc, nc) = (
        by_name(containers(&old.object)),
        by_name(containers(&new.object)),
    );
    for (name, c) in &nc {
        let Some(before) = oc.get(name) else { continue };
        if let (Some(x), Some(y)) = (before["image"].as_str(), c["image"].as_str())
            && x != y
        {
            parts.push(image_change(name, x, y));
        }
        let (ex, ey) = (env_map(before), env_map(c));
        for (k, v) in &ey {
            match ex.get(k) {
                Some(w) if w != v => parts.push(format!("env {k}: {w} → {v}")),
                None => parts.push(format!("env +{k}: {v}")),
                _ => {}
            }
        }
        for k in ex.keys().filter(|k| !ey.contains_key(*k)) {
            parts.push(format!("env -{k}"));
        }
        for side in ["requests", "limits"] {
            let rx = &before["resources"][side];
            let ry = &c["resources"][side];
            let mut keys: Vec<&String> = rx
                .as_object()
                .into_iter()
                .chain(ry.as_object())
                .flat_map(|m| m.keys())
                .collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if rx[k] != ry[k] {
                    parts.push(format!("{side}.{k} {} → {}", text(&rx[k]), text(&ry[k])));
                }
            }
        }
    }
    let shown = |v: Option<&Value>| v.map(text).unwrap_or_else(|| "none".into());
    if let Some((x, y)) = diff.get("spec.replicas") {
        parts.push(format!("replicas {} → {}", shown(*x), shown(*y)));
    }
    // ConfigMap and Secret keys: values for ConfigMaps, names only for Secrets.
    let mut data_changed = Vec::new();
    let mut data_added = Vec::new();
    let mut data_removed = Vec::new();
    for p in &paths {
        for prefix in ["data.", "stringData.", "binaryData."] {
            if let Some(key) = p.strip_prefix(prefix) {
                match diff[*p] {
                    (Some(x), Some(y)) if !secret => {
                        data_changed.push(format!("{key}: {} → {}", text(x), text(y)));
                    }
                    (Some(_), Some(_)) => data_changed.push(key.to_string()),
                    (None, Some(_)) => data_added.push(key.to_string()),
                    (Some(_), None) => data_removed.push(key.to_string()),
                    _ => {}
                }
            }
        }
    }
    if !data_changed.is_empty() {
        parts.push(format!(
            "{} {}",
            if secret { "changed keys" } else { "data" },
            data_changed.join(", ")
        ));
    }
    if !data_added.is_empty() {
        parts.push(format!("added keys {}", data_added.join(", ")));
    }
    if !data_removed.is_empty() {
        parts.push(format!("removed keys {}", data_removed.join(", ")));
    }
    let list = |m: &BTreeMap<String, &Value>, pre: &str, suf: &str| -> Vec<String> {
        m.iter()
            .filter(|(k, _)| k.starts_with(pre) && k.ends_with(suf))
            .map(|(_, v)| text(v))
            .collect()
    };
    // Whole lists, so only when one of their leaves changed.
    let mut all = None;
    for (pre, suf, word) in [
        ("spec.rules[", ".host", "hosts"),
        ("spec.ports[", ".port", "ports"),
    ] {
        if !paths.iter().any(|p| p.starts_with(pre) && p.ends_with(suf)) {
            continue;
        }
        let (a, b) = all.get_or_insert_with(|| {
            let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
            leaves(&old.object, &mut String::new(), &mut a);
            leaves(&new.object, &mut String::new(), &mut b);
            (a, b)
        });
        let (x, y) = (list(a, pre, suf), list(b, pre, suf));
        if x != y {
            parts.push(format!("{word} {} → {}", x.join(", "), y.join(", ")));
        }
    }
    let rest: Vec<&String> = paths.iter().copied().filter(|p| !explained(p)).collect();
    let annotation = |p: &&String| {
        p.starts_with("metadata.annotations.")
            || p.starts_with("spec.template.metadata.annotations.")
    };
    if parts.is_empty() && !rest.is_empty() && rest.iter().all(annotation) {
        let names: Vec<&str> = rest
            .iter()
            .map(|p| p.rsplit_once("annotations.").map_or(p.as_str(), |(_, n)| n))
            .collect();
        return format!("annotations only ({})", names.join(", "));
    }
    let others: Vec<&String> = rest.into_iter().filter(|p| !annotation(p)).collect();
    if !others.is_empty() {
        let shown: Vec<&str> = others.iter().take(3).map(|p| p.as_str()).collect();
        let more = if others.len() > 3 {
            format!(" (+{} more)", others.len() - 3)
        } else {
            String::new()
        };
        parts.push(format!("also {}{more}", shown.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Origin, ResourceId};
    use proptest::prelude::*;
    use serde_json::json;

    /// Small objects from few keys, so that two of them share much.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0i64..3).prop_map(Value::from),
            prop::sample::select(vec!["x", "y", ""]).prop_map(Value::from),
            Just(json!({})),
            Just(json!([])),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec!["a", "b", "c", "data", "spec"]),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// The walk that skips equal parts finds what comparing every leaf
        /// of both sides finds.
        #[test]
        fn differing_leaves_are_those_of_a_full_comparison(a in value(), b in value()) {
            let (mut x, mut y) = (BTreeMap::new(), BTreeMap::new());
            leaves(&a, &mut String::new(), &mut x);
            leaves(&b, &mut String::new(), &mut y);
            let full: BTreeMap<String, Sides<'_>> = x
                .keys()
                .chain(y.keys())
                .filter(|p| x.get(*p) != y.get(*p))
                .map(|p| (p.clone(), (x.get(p).copied(), y.get(p).copied())))
                .collect();
            let mut walked = BTreeMap::new();
            differing(Some(&a), Some(&b), &mut String::new(), &mut walked);
            prop_assert_eq!(walked, full);
        }
    }

    fn res(kind: &str, group: &str, object: Value) -> Resource {
        Resource {
            id: ResourceId {
                group: group.into(),
                kind: kind.into(),
                namespace: Some("ns".into()),
                name: "x".into(),
            },
            api_version: "v1".into(),
            object,
            origin: Origin::default(),
        }
    }

    /// The summary of `a` changing into `b`.
    fn change(a: &Resource, b: &Resource) -> String {
        describe(Action::Changed, Some(a), Some(b))
    }

    #[test]
    fn image_changes_name_tags_digests_and_pins() {
        let d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let at = |t: &str, d: &str| format!("ghcr.io/x/api:{t}@{d}");
        assert_eq!(
            image_change("api", &at("1.0", d1), &at("1.0", d2)),
            "image api: 1.0 digest sha256:111111111111… → sha256:222222222222…"
        );
        assert_eq!(
            image_change("api", "ghcr.io/x/api:1.0", &at("1.0", d1)),
            "image api: 1.0 pinned to sha256:111111111111…"
        );
        assert_eq!(
            image_change("api", &at("1.0", d1), &at("1.1", d2)),
            "image api: 1.0 → 1.1 (sha256:222222222222…)"
        );
        assert_eq!(
            image_change("api", "ghcr.io/x/api:1.0", "ghcr.io/x/api:1.1"),
            "image api: 1.0 → 1.1"
        );
    }

    fn deploy(image: &str, replicas: i64, level: &str, memory: &str, checksum: &str) -> Resource {
        res(
            "Deployment",
            "apps",
            json!({"spec": {"replicas": replicas, "template": {
                "metadata": {"annotations": {"checksum/env": checksum}},
                "spec": {"containers": [{"name": "api", "image": image,
                    "env": [{"name": "LOG_LEVEL", "value": level}],
                    "resources": {"limits": {"memory": memory}}}]}}}}),
        )
    }

    #[test]
    fn workload_changes_in_words() {
        let a = deploy("ghcr.io/x/api:1.4.2", 2, "info", "256Mi", "a");
        let b = deploy("ghcr.io/x/api:2.4.0", 3, "debug", "512Mi", "b");
        assert_eq!(
            change(&a, &b),
            "image api: 1.4.2 → 2.4.0; env LOG_LEVEL: info → debug; limits.memory 256Mi → 512Mi; replicas 2 → 3"
        );
        let c = deploy("ghcr.io/x/api:1.4.2", 2, "info", "256Mi", "b");
        assert_eq!(change(&a, &c), "annotations only (checksum/env)");
        assert_eq!(
            describe(Action::Added, None, Some(&a)),
            "new: image ghcr.io/x/api:1.4.2, 2 replicas"
        );
    }

    #[test]
    fn host_and_port_lists_are_whole_when_one_changes() {
        let ing = |second: &str| {
            res(
                "Ingress",
                "networking.k8s.io",
                json!({"spec": {"rules": [{"host": "a.example.com"}, {"host": second}]}}),
            )
        };
        assert_eq!(
            change(&ing("b.example.com"), &ing("c.example.com")),
            "hosts a.example.com, b.example.com → a.example.com, c.example.com"
        );
        let svc = |port: i64, name: &str| {
            res(
                "Service",
                "",
                json!({"spec": {"ports": [{"name": name, "port": port}]}}),
            )
        };
        assert_eq!(
            change(&svc(80, "http"), &svc(8080, "http")),
            "ports 80 → 8080"
        );
        // A port's name alone: no list, the path instead.
        assert_eq!(
            change(&svc(80, "http"), &svc(80, "web")),
            "also spec.ports[0].name"
        );
    }

    #[test]
    fn secrets_name_keys_never_values() {
        let a = res(
            "Secret",
            "",
            json!({"data": {"password": "c2VjcmV0", "old": "eA=="}}),
        );
        let b = res(
            "Secret",
            "",
            json!({"data": {"password": "bmV3", "token": "eQ=="}}),
        );
        let s = change(&a, &b);
        assert_eq!(
            s,
            "changed keys password; added keys token; removed keys old"
        );
        assert!(!s.contains("c2VjcmV0") && !s.contains("bmV3"));
        let cm_a = res("ConfigMap", "", json!({"data": {"LEVEL": "info"}}));
        let cm_b = res("ConfigMap", "", json!({"data": {"LEVEL": "debug"}}));
        assert_eq!(change(&cm_a, &cm_b), "data LEVEL: info → debug");
    }
}
