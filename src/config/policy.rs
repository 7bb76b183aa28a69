//! Runner policy: the settings of `kdeploy.yaml` that decide which
//! programs run and with what options and limits, which registries are
//! spoken to in clear, and what a plan hides.
//!
//! The config repo at a pull request's head is data, not instructions: it
//! may change what is deployed, never these. A plan therefore takes them
//! from its base revision (or the runner's own file, `--config`), never its
//! head; a head that changes them is planned with the base's, and the plan
//! says so. A deploy renders the revision it deploys, which was merged, so
//! its own settings are trusted there. Everything else in kdeploy.yaml is
//! repository content, read per revision. The README's security section
//! holds the same table as [`KEYS`].

use super::{IgnoreField, Limits, Settings};

/// Every runner-policy key, as written in kdeploy.yaml.
pub const KEYS: &[&str] = &[
    "helm.binary",
    "helm.timeoutSeconds",
    "sources.kustomizeCommand",
    "sources.timeoutSeconds",
    "limits",
    "images.insecureRegistries",
    "plan.ignoreResources",
    "plan.ignoreFields",
];

/// The runner-policy part of [`Settings`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerPolicy {
    helm_binary: Option<String>,
    helm_timeout_seconds: Option<u64>,
    kustomize_command: Option<String>,
    sources_timeout_seconds: Option<u64>,
    limits: Limits,
    insecure_registries: Vec<String>,
    ignore_resources: Vec<String>,
    ignore_fields: Vec<IgnoreField>,
}

impl RunnerPolicy {
    /// The policy `settings` carry.
    pub fn of(settings: &Settings) -> RunnerPolicy {
        RunnerPolicy {
            helm_binary: settings.helm.binary.clone(),
            helm_timeout_seconds: settings.helm.timeout_seconds,
            kustomize_command: settings.sources.kustomize_command.clone(),
            sources_timeout_seconds: settings.sources.timeout_seconds,
            limits: settings.limits,
            insecure_registries: settings.images.insecure_registries.clone(),
            ignore_resources: settings.plan.ignore_resources.clone(),
            ignore_fields: settings.plan.ignore_fields.clone(),
        }
    }

    /// Replaces the policy in `settings` with this one; returns the keys
    /// (from [`KEYS`]) where `settings` said something else.
    pub fn impose(&self, settings: &mut Settings) -> Vec<&'static str> {
        let own = RunnerPolicy::of(settings);
        let differ = [
            own.helm_binary != self.helm_binary,
            own.helm_timeout_seconds != self.helm_timeout_seconds,
            own.kustomize_command != self.kustomize_command,
            own.sources_timeout_seconds != self.sources_timeout_seconds,
            own.limits != self.limits,
            own.insecure_registries != self.insecure_registries,
            own.ignore_resources != self.ignore_resources,
            own.ignore_fields != self.ignore_fields,
        ];
        settings.helm.binary = self.helm_binary.clone();
        settings.helm.timeout_seconds = self.helm_timeout_seconds;
        settings.sources.kustomize_command = self.kustomize_command.clone();
        settings.sources.timeout_seconds = self.sources_timeout_seconds;
        settings.limits = self.limits;
        settings.images.insecure_registries = self.insecure_registries.clone();
        settings.plan.ignore_resources = self.ignore_resources.clone();
        settings.plan.ignore_fields = self.ignore_fields.clone();
        KEYS.iter()
            .zip(differ)
            .filter_map(|(k, d)| d.then_some(*k))
            .collect()
    }
}

/// Whether `name` is a bare program name (looked up on PATH).
pub fn is_program_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// Which programs an executable setting of kdeploy.yaml may name: helm
/// (`helm`, `helm3`, `helm-4.0`) for `helm.binary`, kubectl or kustomize
/// for `sources.kustomizeCommand`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `helm.binary`.
    Helm,
    /// `sources.kustomizeCommand`.
    Kustomize,
}

/// Whether `value` may stand in kdeploy.yaml for `program`: a bare name on
/// PATH or an absolute path, whose file name is that program's. Never a
/// relative path (it would name a file of the repository) nor another
/// program (`bash` given `kustomize DIR` runs a file of the repository).
pub fn is_program_setting(value: &str, program: Program) -> bool {
    let path = std::path::Path::new(value);
    let plain_path = path.is_absolute()
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
    if !(is_program_name(value) || plain_path) {
        return false;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    is_program_name(&name)
        && match program {
            Program::Helm => name.starts_with("helm"),
            Program::Kustomize => name == "kubectl" || name == "kustomize",
        }
}

/// The program `name` resolves to: a bare name on the runner's `PATH`,
/// skipping relative entries (`.` or an empty entry would find a file of
/// the repository, the working directory of some runs); an absolute path
/// as it is, unless it lies inside the checkout (`GITHUB_WORKSPACE`).
/// Resolved once per program and process: helm runs once per release,
/// and PATH does not change under a run.
pub fn resolve_program(name: &str) -> Option<std::path::PathBuf> {
    type Resolved = std::sync::Mutex<std::collections::HashMap<String, Option<std::path::PathBuf>>>;
    static RESOLVED: std::sync::OnceLock<Resolved> = std::sync::OnceLock::new();
    let memo = RESOLVED.get_or_init(Default::default);
    let mut memo = memo
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    memo.entry(name.to_string())
        .or_insert_with(|| resolve_uncached(name))
        .clone()
}

fn resolve_uncached(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(name);
    if path.is_absolute() {
        let inside_checkout = std::env::var_os("GITHUB_WORKSPACE").is_some_and(|ws| {
            let ws = std::fs::canonicalize(&ws).unwrap_or_else(|_| ws.into());
            std::fs::canonicalize(path).is_ok_and(|p| p.starts_with(&ws))
        });
        return (!inside_checkout).then(|| path.to_path_buf());
    }
    if !is_program_name(name) {
        return None;
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imposing_a_policy_reports_exactly_the_keys_that_differed() {
        let base = Settings::default();
        let mut head = Settings::default();
        head.helm.binary = Some("evil".into());
        head.limits.total_bytes = 1;
        head.plan.ignore_resources = vec!["*:*:*:*".into()];
        let changed = RunnerPolicy::of(&base).impose(&mut head);
        assert_eq!(
            changed,
            ["helm.binary", "limits", "plan.ignoreResources"],
            "{changed:?}"
        );
        assert_eq!(head, base);
    }

    #[test]
    fn executable_settings_name_their_program_never_a_file_of_the_repo() {
        for ok in ["helm", "helm3", "helm-4.0", "/usr/local/bin/helm"] {
            assert!(is_program_setting(ok, Program::Helm), "{ok}");
        }
        for ok in ["kubectl", "kustomize", "/opt/k/kubectl"] {
            assert!(is_program_setting(ok, Program::Kustomize), "{ok}");
        }
        for bad in [
            "./helm",
            "bin/helm",
            "/x/../helm",
            "bash",
            "python3",
            "-helm",
            "",
            "helm x",
            "~/helm",
        ] {
            assert!(!is_program_setting(bad, Program::Helm), "{bad}");
        }
        for bad in ["bash", "sh", "kustomize.sh", "./kubectl", "tools/kustomize"] {
            assert!(!is_program_setting(bad, Program::Kustomize), "{bad}");
        }
    }
}
