//! `kdeploy.yaml`: the settings types and their parser. The stages read
//! these (render, plan, apply); they live here, with the config model, so
//! that the model depends on no stage.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Location};
use crate::yaml;

use super::type_name;

/// The optional `kdeploy.yaml` at the config repo root.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Settings {
    /// Directory holding the charts (default `charts`).
    pub charts: String,
    /// Directory holding `<app>/<env>/` (default `services`); `null` turns
    /// it off (a repo deployed only from `sources:`), stored as "".
    #[serde(deserialize_with = "null_as_empty")]
    pub services: String,
    /// Where `kdeploy render` writes manifests (default `_gen`).
    pub output: String,
    /// Chart used when a service sets no `chart:` (default `service`).
    pub default_chart: String,
    /// The namespace of a release that sets no `namespace:`, with
    /// placeholders `{app}` and `{env}` (default `{app}-{env}`, so that
    /// environments sharing a cluster never share objects).
    pub namespace: String,
    /// Noise control for plans.
    pub plan: PlanSettings,
    /// Per-environment cluster settings.
    pub environments: BTreeMap<String, EnvironmentSettings>,
    /// Raw manifest and Kustomize sources.
    pub sources: SourcesSettings,
    /// How Helm charts are rendered.
    pub helm: HelmSettings,
    /// Bounds on what the config repo can make kdeploy spend.
    pub limits: Limits,
    /// Image digests (`kdeploy lock`).
    pub images: ImagesSettings,
    /// The scope of custom kinds whose CustomResourceDefinition is not in
    /// the repository, by `group/Kind` (`cert-manager.io/ClusterIssuer:
    /// Cluster`): a cluster-scoped kind is never given a namespace.
    pub kinds: BTreeMap<String, KindScope>,
}

/// Where objects of a kind live.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum KindScope {
    /// Outside namespaces (`ClusterIssuer`, `GatewayClass`, `ClusterPolicy`).
    Cluster,
    /// In a namespace (the release's, unless the object names one).
    Namespaced,
}

impl Settings {
    /// The scope declared for `group`/`kind` under `kinds:`.
    pub fn declared_scope(&self, group: &str, kind: &str) -> Option<KindScope> {
        if self.kinds.is_empty() {
            return None;
        }
        let key = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{group}/{kind}")
        };
        self.kinds.get(&key).copied()
    }
}

/// `images:` in kdeploy.yaml: the image lock (kbld's job) and, under an
/// app's name, the image policy that picks its versions (Flux's
/// ImagePolicy). Setting names are camelCase and app names DNS labels, so
/// the two never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagesSettings {
    /// The lock file at the repo root (default `images.lock.yaml`).
    pub lock_file: String,
    /// An image that is neither locked nor pinned by digest is an error.
    pub require_lock: bool,
    /// Registries (`host[:port]`) spoken to over plain HTTP, e.g. a local one.
    pub insecure_registries: Vec<String>,
    /// Pod specs of custom kinds, as JSON pointers (`/spec/template/spec`),
    /// whose containers' images are locked like a Deployment's.
    pub pod_specs: Vec<PodSpecPath>,
    /// Image policies by app.
    pub policies: BTreeMap<String, ImagePolicy>,
}

impl Default for ImagesSettings {
    fn default() -> Self {
        ImagesSettings {
            lock_file: "images.lock.yaml".into(),
            require_lock: false,
            insecure_registries: Vec::new(),
            pod_specs: Vec::new(),
            policies: BTreeMap::new(),
        }
    }
}

/// The fixed keys of `images:`; every other key is an app's policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ImagesFixed {
    lock_file: Option<String>,
    #[serde(default)]
    require_lock: bool,
    #[serde(default)]
    insecure_registries: Vec<String>,
    #[serde(default)]
    pod_specs: Vec<PodSpecPath>,
}

impl<'de> Deserialize<'de> for ImagesSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut map = Map::<String, Value>::deserialize(d)?;
        let app_keys: Vec<String> = map
            .keys()
            .filter(|k| {
                k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && !k.contains(char::is_uppercase)
            })
            .cloned()
            .collect();
        let mut policies = BTreeMap::new();
        for app in app_keys {
            let Some(v) = map.remove(&app) else { continue };
            if !super::is_dns_label(&app) {
                return Err(D::Error::custom(format!(
                    "`{app}` is neither a setting of `images` nor an app name (a DNS-1123 label)"
                )));
            }
            let policy: ImagePolicy = serde_path_to_error::deserialize(v).map_err(|e| {
                let at = e.path().to_string();
                let at = if at == "." {
                    String::new()
                } else {
                    format!(".{at}")
                };
                D::Error::custom(format!("`images.{app}{at}`: {}", e.inner()))
            })?;
            policies.insert(app, policy);
        }
        let fixed: ImagesFixed =
            serde_json::from_value(Value::Object(map)).map_err(D::Error::custom)?;
        Ok(ImagesSettings {
            lock_file: fixed.lock_file.unwrap_or_else(|| "images.lock.yaml".into()),
            require_lock: fixed.require_lock,
            insecure_registries: fixed.insecure_registries,
            pod_specs: fixed.pod_specs,
            policies,
        })
    }
}

/// An app's image policy, with Flux's ImagePolicy semantics: which tags of
/// `repository` qualify (`filterTags`), which of them wins (`policy`), and
/// which environments' version files it may write.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImagePolicy {
    /// `ghcr.io/acme/shop`.
    pub repository: String,
    /// Environments whose version files the policy writes.
    #[serde(default)]
    pub environments: Vec<String>,
    /// A regular expression tags must match, and what to order them by.
    #[serde(default)]
    pub filter_tags: Option<FilterTags>,
    /// How the newest qualifying tag is chosen.
    pub policy: PolicyChoice,
}

/// Flux's `filterTags`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilterTags {
    /// A regular expression (named groups allowed) a tag must match.
    pub pattern: String,
    /// What to order by, from the groups (`$ts`); default the whole tag.
    #[serde(default)]
    pub extract: Option<String>,
}

/// Flux's policies.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum PolicyChoice {
    /// The last tag in alphabetical order (`asc`) or the first (`desc`).
    Alphabetical {
        /// Which end wins.
        #[serde(default)]
        order: Order,
    },
    /// The largest number (`asc`) or the smallest (`desc`).
    Numerical {
        /// Which end wins.
        #[serde(default)]
        order: Order,
    },
    /// The highest version in a range (`>=1.2.0 <2`, `^1.2`, `~1.2`, `1.x`, `||`).
    Semver {
        /// The range.
        range: String,
    },
}

/// Sort order of a policy.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Ascending: the last wins.
    #[default]
    Asc,
    /// Descending: the first wins.
    Desc,
}

/// Where a custom kind keeps a pod spec.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PodSpecPath {
    /// API group (empty for the core group).
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// JSON pointer to the pod spec.
    pub pointer: String,
}

/// Bounds on what a config repo can make kdeploy spend (`limits:` in
/// kdeploy.yaml). A pull request can edit kdeploy.yaml, so each limit can be
/// raised only up to a hard ceiling ([`Limits::CEILINGS`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Limits {
    /// Largest file read from the repo, in bytes.
    pub file_bytes: u64,
    /// Rendered text of one release, in bytes.
    pub release_bytes: u64,
    /// Rendered text of all releases of one revision, in bytes.
    pub total_bytes: u64,
    /// Template work of one release: loop iterations, helper and include calls.
    pub template_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_bytes: crate::source::DEFAULT_FILE_LIMIT,
            release_bytes: 8 << 20,
            total_bytes: 1 << 30,
            template_steps: 1_000_000,
        }
    }
}

impl Limits {
    /// The highest value each limit may be set to, by key.
    /// What a standard runner (7 GB of memory, minutes per job) holds:
    /// rendered objects take about five times their text in memory.
    pub const CEILINGS: [(&'static str, u64); 4] = [
        ("fileBytes", 32 << 20),
        ("releaseBytes", 64 << 20),
        ("totalBytes", 1 << 30),
        ("templateSteps", 50_000_000),
    ];

    fn values(&self) -> [u64; 4] {
        [
            self.file_bytes,
            self.release_bytes,
            self.total_bytes,
            self.template_steps,
        ]
    }

    /// The keys set above their ceiling, or to zero, with what is wrong.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        Limits::CEILINGS
            .iter()
            .zip(self.values())
            .filter(|((_, max), v)| *v == 0 || v > max)
            .map(|((key, max), v)| {
                (
                    *key,
                    format!("`limits.{key}` is {v}; it must be between 1 and {max}"),
                )
            })
            .collect()
    }
}

/// Cluster settings of one environment in `kdeploy.yaml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EnvironmentSettings {
    /// The kubeconfig context of the environment's cluster (overridden by `--context`).
    pub context: Option<String>,
    /// The branch the environment deploys from (`production`): the action
    /// deploys it on a push to that branch only, and plans it on pull
    /// requests into that branch only.
    pub branch: Option<String>,
    /// The Kubernetes version of the environment's cluster (`"1.31"`):
    /// plans warn about API versions it no longer serves. Default: the
    /// newest kdeploy knows.
    pub kubernetes_version: Option<KubeVersion>,
    /// A preview template (`from: staging`): each pull request gets the
    /// releases of that environment in a namespace of its own. See
    /// [`super::preview`].
    pub from: Option<String>,
    /// A preview's namespace, with `{pr}` (required), `{app}` and `{env}`.
    pub namespace: Option<String>,
    /// Values laid over every release of a preview, with the same placeholders.
    pub values: Map<String, Value>,
    /// The address of a preview for the pull request comment (placeholders
    /// as `namespace`); default: the hosts of its Ingresses and HTTPRoutes.
    pub url: Option<String>,
    /// Let a preview deploy cluster-scoped objects (shared with every other
    /// environment of the cluster); refused by default.
    pub cluster_scoped: bool,
}

/// The environments a run on one branch may touch, from
/// `environments.<env>.branch`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BranchScope {
    /// No environment is bound to a branch: any.
    #[default]
    Any,
    /// The environments bound to this branch, and only them.
    Only(BTreeSet<String>),
    /// Every environment but these (bound to other branches).
    Except(BTreeSet<String>),
}

impl BranchScope {
    /// True when `env` may be planned or deployed.
    pub fn allows(&self, env: &str) -> bool {
        match self {
            BranchScope::Any => true,
            BranchScope::Only(envs) => envs.contains(env),
            BranchScope::Except(envs) => !envs.contains(env),
        }
    }
}

impl Settings {
    /// The environments a push to (or pull request into) `branch` deploys:
    /// those bound to it when there are any; otherwise those bound to no
    /// branch. `None` (a tag, a detached run) counts as no bound branch.
    pub fn branch_scope(&self, branch: Option<&str>) -> BranchScope {
        let bound: BTreeMap<&str, &str> = self
            .environments
            .iter()
            .filter_map(|(env, s)| Some((env.as_str(), s.branch.as_deref()?)))
            .collect();
        if bound.is_empty() {
            return BranchScope::Any;
        }
        let here: BTreeSet<String> = bound
            .iter()
            .filter(|(_, b)| Some(**b) == branch)
            .map(|(e, _)| (*e).to_string())
            .collect();
        if here.is_empty() {
            BranchScope::Except(bound.keys().map(|e| (*e).to_string()).collect())
        } else {
            BranchScope::Only(here)
        }
    }

    /// The branch `env` deploys from, if bound.
    pub fn branch_of(&self, env: &str) -> Option<&str> {
        self.environments.get(env)?.branch.as_deref()
    }
}

/// A Kubernetes minor version, `1.31`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    /// Major (1).
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = String;
    /// `1.31`, `v1.31` or `1.31.2` (the patch is ignored).
    fn from_str(s: &str) -> Result<KubeVersion, String> {
        let t = s.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let num = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
        match (
            num(parts.next()),
            num(parts.next()),
            parts.next().map(str::parse::<u32>),
        ) {
            (Some(major), Some(minor), None | Some(Ok(_))) if major >= 1 => {
                Ok(KubeVersion { major, minor })
            }
            _ => Err(format!("`{s}` is not a Kubernetes version like \"1.31\"")),
        }
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KubeVersion, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KubeVersion;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a quoted Kubernetes version like \"1.31\" (unquoted, 1.30 is the number 1.3)",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KubeVersion, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            charts: "charts".into(),
            services: "services".into(),
            output: "_gen".into(),
            default_chart: "service".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            plan: PlanSettings::default(),
            environments: BTreeMap::new(),
            sources: Default::default(),
            helm: Default::default(),
            limits: Limits::default(),
            images: ImagesSettings::default(),
            kinds: BTreeMap::new(),
        }
    }
}

/// `null` as "" (a setting turned off); a string as it is.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// The default `namespace` template: one namespace per app and environment.
pub const DEFAULT_NAMESPACE: &str = "{app}-{env}";

impl Settings {
    /// The namespace of release (env, app) when its values set none.
    pub fn namespace_for(&self, app: &str, env: &str) -> String {
        self.namespace.replace("{app}", app).replace("{env}", env)
    }
}

/// The longest `helm.timeoutSeconds` / `sources.timeoutSeconds`.
pub const MAX_TIMEOUT_SECONDS: u64 = 600;

/// The settings file name at the config repo root.
pub const SETTINGS_FILE: &str = "kdeploy.yaml";

/// Every top-level key of kdeploy.yaml, for help texts.
const SETTINGS_KEYS: &str = "charts, services, output, defaultChart, namespace, plan, environments, sources, helm, limits, images, kinds";

/// Parses kdeploy.yaml, reporting every problem at once in the user's words
/// (keys and YAML types, not Rust types) at the line of the offending key.
/// With problems, the defaults are returned alongside them.
pub fn parse_settings(text: &str, path: &str) -> (Settings, Vec<Diagnostic>) {
    let invalid = |e: yaml::ParseError| {
        let d = e.diagnostic(path, &format!("invalid {SETTINGS_FILE}"));
        (Settings::default(), vec![d])
    };
    let index = match yaml::index(text) {
        Ok(i) => i,
        Err(e) => return invalid(e),
    };
    let mut value = match yaml::parse(text) {
        Ok(Value::Null) => Value::Object(Map::new()),
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => {
            return (
                Settings::default(),
                vec![
                    Diagnostic::new(
                        Location::at(path, Some(1), Some(1)),
                        format!(
                            "{SETTINGS_FILE} must be a map of settings, found {}",
                            type_name(&other)
                        ),
                    )
                    .help(format!("allowed keys: {SETTINGS_KEYS} (see README)")),
                ],
            );
        }
        Err(e) => return invalid(e),
    };
    let mut problems = Vec::new();
    // Each pass finds one problem; the offending key is removed and the
    // rest checked again, so one run lists them all.
    for _ in 0..64 {
        let error = match serde_path_to_error::deserialize::<_, Settings>(value.clone()) {
            Ok(settings) => {
                problems.extend(semantic_problems(&settings, path, &index));
                if problems.is_empty() {
                    return (settings, problems);
                }
                break;
            }
            Err(e) => e,
        };
        let mut keys: Vec<String> = error
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let inner = error.inner().to_string();
        let unknown = inner
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next());
        if let Some(k) = unknown
            && keys.last().map(String::as_str) != Some(k)
        {
            keys.push(k.to_string());
        }
        let at = index
            .iter()
            .find(|l| l.path == keys && l.value.is_none())
            .or_else(|| index.iter().find(|l| l.path == keys));
        let help = if keys.len() <= 1 && unknown.is_some() {
            format!("allowed keys: {SETTINGS_KEYS} (see README)")
        } else {
            "see the kdeploy.yaml table in the README".to_string()
        };
        problems.push(
            Diagnostic::new(
                Location::at(path, at.map(|l| l.line), at.map(|l| l.column)),
                format!("`{}`: {}", keys.join("."), user_words(&inner)),
            )
            .help(help),
        );
        if !remove_at(&mut value, &keys) {
            break;
        }
    }
    (Settings::default(), problems)
}

/// What serde cannot say about valid settings: placeholders, paths,
/// programs, timeouts, kinds and limits, each at its key's line.
fn semantic_problems(settings: &Settings, path: &str, index: &[yaml::Located]) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let bad_placeholder = settings
        .namespace
        .split('{')
        .skip(1)
        .map(|p| p.split('}').next().unwrap_or(p))
        .find(|p| !matches!(*p, "app" | "env"));
    if let Some(p) = bad_placeholder {
        let at = index.iter().find(|l| l.path == ["namespace"]);
        problems.push(
            Diagnostic::new(
                Location::at(path, at.map(|l| l.line), at.map(|l| l.column)),
                format!("`namespace`: unknown placeholder `{{{p}}}`"),
            )
            .help("use {app} and {env}, e.g. \"{app}-{env}\" (the default) or \"{app}\""),
        );
    }
    let lock = &settings.images.lock_file;
    let plain = !lock.is_empty()
        && !lock.starts_with('/')
        && lock
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c != ".git")
        && (lock.ends_with(".yaml") || lock.ends_with(".yml"));
    if !plain {
        let at = index.iter().find(|l| l.path == ["images", "lockFile"]);
        problems.push(
            Diagnostic::new(
                Location::at(path, at.map(|l| l.line), at.map(|l| l.column)),
                format!("`images.lockFile`: `{lock}` is not a YAML file path inside the repo"),
            )
            .help("use a relative path without `..`, e.g. images.lock.yaml (the default)"),
        );
    }
    // The place of a key in kdeploy.yaml, for its problem.
    let located = |keys: &[&str]| {
        let at = index.iter().find(|l| l.path == keys);
        Location::at(path, at.map(|l| l.line), at.map(|l| l.column))
    };
    for (keys, program, kind) in [
        (
            ["helm", "binary"],
            &settings.helm.binary,
            super::policy::Program::Helm,
        ),
        (
            ["sources", "kustomizeCommand"],
            &settings.sources.kustomize_command,
            super::policy::Program::Kustomize,
        ),
    ] {
        let Some(program) = program else { continue };
        if super::policy::is_program_setting(program, kind) {
            continue;
        }
        problems.push(
            Diagnostic::new(
                located(&keys),
                format!(
                    "`{}`: `{program}` is not {}: an executable setting names that program, on the runner's PATH or by an absolute path, never a relative path (it would name a file of the repository)",
                    keys.join("."),
                    match kind {
                        super::policy::Program::Helm => "helm",
                        super::policy::Program::Kustomize => "kubectl or kustomize",
                    }
                ),
            )
            .help("write `helm`, `kubectl` or `kustomize` (or an absolute path to one); a runner that needs another executable sets KDEPLOY_HELM or KDEPLOY_KUSTOMIZE"),
        );
    }
    for (key, template) in &settings.helm.set {
        let at = index
            .iter()
            .find(|l| l.path == ["helm", "set", key.as_str()]);
        let here = Location::at(path, at.map(|l| l.line), at.map(|l| l.column));
        let known = HELM_SET_PLACEHOLDERS;
        for p in unknown_placeholders(template, known) {
            problems.push(
                Diagnostic::new(
                    here.clone(),
                    format!("`helm.set.{key}`: unknown placeholder `{{{p}}}`"),
                )
                .help("use {app}, {env}, {version}, {namespace} and {release}"),
            );
        }
        if key.is_empty() || key.split('.').any(str::is_empty) {
            problems.push(
                Diagnostic::new(
                    here,
                    format!("`helm.set`: `{key}` is not a dotted value path"),
                )
                .help("write the path as Helm's --set does, e.g. `image.tag`"),
            );
        }
    }
    problems.extend(super::preview::problems(settings, path, index));
    for (keys, secs) in [
        (["helm", "timeoutSeconds"], settings.helm.timeout_seconds),
        (
            ["sources", "timeoutSeconds"],
            settings.sources.timeout_seconds,
        ),
    ] {
        let Some(secs) = secs.filter(|s| *s == 0 || *s > MAX_TIMEOUT_SECONDS) else {
            continue;
        };
        problems.push(
            Diagnostic::new(
                located(&keys),
                format!(
                    "`{}` is {secs}; it must be between 1 and {MAX_TIMEOUT_SECONDS}",
                    keys.join(".")
                ),
            )
            .help("one process may run minutes, not hours; the run's total for helm, kustomize and sops is the runner's (KDEPLOY_PROCESS_SECONDS)"),
        );
    }
    for key in settings.kinds.keys() {
        let (group, kind) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        let kind_ok = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && kind.chars().all(|c| c.is_ascii_alphanumeric());
        let group_ok = group.is_empty() || super::is_dns_subdomain(group);
        if kind_ok && group_ok && !group.contains('/') {
            continue;
        }
        problems.push(
            Diagnostic::new(
                located(&["kinds", key.as_str()]),
                format!("`kinds`: `{key}` is not `group/Kind`"),
            )
            .help(
                "write the API group and the kind, e.g. `cert-manager.io/ClusterIssuer: Cluster`",
            ),
        );
    }
    for (key, p) in settings.limits.problems() {
        let at = index.iter().find(|l| l.path == ["limits", key]);
        problems.push(
            Diagnostic::new(
                Location::at(path, at.map(|l| l.line), at.map(|l| l.column)),
                p,
            )
            .help("the ceilings keep a pull request from lifting the limits without bound"),
        );
    }
    problems
}

/// serde's words for types, as a YAML author says them.
fn user_words(message: &str) -> String {
    let mut out = message
        .replace("unknown field", "unknown key")
        .replace("invalid type: sequence", "found a list")
        .replace("invalid type: map", "found a map")
        .replace("invalid type: string", "found the string")
        .replace("invalid type: integer", "found the number")
        .replace("invalid type: floating point", "found the number")
        .replace("invalid type: boolean", "found")
        .replace("invalid type: null", "found nothing")
        .replace("invalid value: integer", "found the number")
        .replace("expected a sequence", "expected a list")
        .replace("expected a borrowed string", "expected a string");
    for int in ["u64", "u32", "u16", "usize", "i64", "i32"] {
        out = out.replace(&format!("expected {int}"), "expected a whole number");
    }
    while let Some(pos) = out.find("expected struct ") {
        let end = out[pos + 16..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(out.len(), |e| pos + 16 + e);
        out.replace_range(pos..end, "expected a map");
    }
    out
}

/// Removes the value at `keys`; false when there is nothing to remove.
fn remove_at(value: &mut Value, keys: &[String]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut v = value;
    for k in parents {
        v = match v {
            Value::Object(m) => match m.get_mut(k) {
                Some(x) => x,
                None => return false,
            },
            Value::Array(a) => match k.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    match v {
        Value::Object(m) => m.remove(last).is_some(),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// `sources:` in kdeploy.yaml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SourcesSettings {
    /// Directories of plain manifests, e.g. `_gen/{env}/{app}`.
    pub raw: Vec<SourcePattern>,
    /// Kustomize overlays, e.g. `apps/{app}/overlays/{env}`.
    pub kustomize: Vec<SourcePattern>,
    /// The command that builds an overlay: `kustomize` (runs `kustomize
    /// build DIR`) or `kubectl` (runs `kubectl kustomize DIR`); found on PATH.
    pub kustomize_command: Option<String>,
    /// Seconds a renderer process may run.
    pub timeout_seconds: Option<u64>,
}

/// One entry of `sources.raw` or `sources.kustomize`: a pattern, or a map
/// that also names the app, the directories a placeholder never takes, and
/// the environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePattern {
    /// `apps/{app}/overlays/{env}`.
    Path(String),
    /// `{path: "overlays/{env}", app: shop, exclude: [base]}`.
    Entry(SourceEntry),
}

/// The map form of a source pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceEntry {
    /// The pattern.
    pub path: String,
    /// The app, for a pattern without `{app}` (else the directory's name).
    #[serde(default)]
    pub app: Option<String>,
    /// Directory names a placeholder never takes (`base`, `components`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Without `{env}`: the environments the one directory deploys to (else
    /// `default`). With `{env}`: only these.
    #[serde(default)]
    pub environments: Vec<String>,
    /// The namespace of objects that name none (else kdeploy.yaml's
    /// `namespace` template), as Argo CD's `destination.namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl<'de> Deserialize<'de> for SourcePattern {
    /// A string, or a map read as [`SourceEntry`] (so an unknown key is
    /// named, not "no variant matched").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(SourcePattern::Path(s)),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(SourcePattern::Entry)
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "a source is a pattern (`apps/{{app}}/overlays/{{env}}`) or a map with `path` (and `app`, `exclude`, `environments`, `namespace`), found {}",
                crate::config::type_name(&other)
            ))),
        }
    }
}

impl SourcePattern {
    /// The pattern.
    pub fn path(&self) -> &str {
        match self {
            SourcePattern::Path(p) => p,
            SourcePattern::Entry(e) => &e.path,
        }
    }

    /// The map form (a bare pattern has no app, exclusions or environments).
    pub fn entry(&self) -> SourceEntry {
        match self {
            SourcePattern::Path(p) => SourceEntry {
                path: p.clone(),
                ..SourceEntry::default()
            },
            SourcePattern::Entry(e) => e.clone(),
        }
    }
}

impl SourcesSettings {
    /// The renderer process timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.unwrap_or(120))
    }
}

/// `helm:` in kdeploy.yaml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HelmSettings {
    /// The helm executable (default `helm` on PATH).
    pub binary: Option<String>,
    /// Dotted value path that receives the release version (default `tag`,
    /// as kahoy did); empty: none.
    pub version_key: Option<String>,
    /// Release name pattern with `{app}` and `{env}` (default `{app}-{env}`).
    pub release_name: Option<String>,
    /// Seconds `helm template` may run (default 120).
    pub timeout_seconds: Option<u64>,
    /// Values set on every release, as `helm --set-string`: dotted value
    /// path to a string with placeholders (see [`HELM_SET_PLACEHOLDERS`]),
    /// e.g. `environmentType: "{env}"`. Applied over the merged values.
    pub set: std::collections::BTreeMap<String, String>,
}

/// The placeholders `helm.set` values may use.
pub const HELM_SET_PLACEHOLDERS: &[&str] = &["app", "env", "version", "namespace", "release"];

/// Placeholders of `text` that are not in `known`.
pub fn unknown_placeholders<'a>(text: &'a str, known: &[&str]) -> Vec<&'a str> {
    text.split('{')
        .skip(1)
        .map(|p| p.split('}').next().unwrap_or(p))
        .filter(|p| !known.contains(p))
        .collect()
}

/// Noise control from `kdeploy.yaml` (`plan:`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PlanSettings {
    /// Resources left out of plans: `group:kind:namespace:name`, `*` matches
    /// anything (e.g. `*:Secret:*:*`, `apps:Deployment:shop:*`). The core
    /// group is written as an empty string (`:ConfigMap:*:*`) or `*`.
    pub ignore_resources: Vec<String>,
    /// Fields removed from both sides before comparing.
    pub ignore_fields: Vec<IgnoreField>,
}

/// A field to ignore, as a JSON Pointer (`/spec/replicas`), optionally
/// only for some kinds.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IgnoreField {
    /// RFC 6901 JSON Pointer, e.g. `/metadata/annotations/checksum~1env`.
    pub path: String,
    /// Kinds it applies to; all when empty.
    #[serde(default)]
    pub kinds: Vec<String>,
}
