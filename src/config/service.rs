//! One service's inputs: its config.yaml values (app level under env
//! level), its version, and a remote chart it names.

use super::*;

/// A service's own values (app level merged under env level) and version.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceValues {
    /// app config.yaml, then env config.yaml merged over it.
    pub values: Map<String, Value>,
    /// (path, text) of the env and app config.yaml and the version file
    /// used, so that a bad rendered value can be traced to the user's line.
    pub inputs: Vec<(String, String)>,
    /// The env `version`, else the app `version`.
    pub version: String,
    /// The namespace when the values set none (the `namespace` template).
    pub default_namespace: String,
    /// The chart to render with (`chart:` value or the default chart).
    pub chart: String,
    /// (path, encrypted text) of the app and env `secrets.sops.yaml`, in
    /// merge order; decrypted by the render stage, not here.
    pub secret_files: Vec<(String, String)>,
    /// A Helm chart from a registry or chart repository, when `chart:` is
    /// `oci://…` or `chartRepository:` is set (`chart` is then its key).
    pub remote_chart: Option<RemoteChart>,
}

/// A Helm chart a service names directly, pulled by helm at a fixed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChart {
    /// `oci://host/path/name`, or the chart's name in `repository`.
    pub reference: String,
    /// The HTTP chart repository (`chartRepository:`), for non-OCI charts.
    pub repository: Option<String>,
    /// `chartVersion:`, required: a remote chart is pinned.
    pub version: String,
}

impl RemoteChart {
    /// The name releases are grouped by: reference, repository and version.
    pub fn key(&self) -> String {
        match &self.repository {
            Some(r) => format!("{r}#{}@{}", self.reference, self.version),
            None => format!("{}@{}", self.reference, self.version),
        }
    }
}

/// Takes `chartVersion` and `chartRepository` out of the values and makes
/// the remote chart they describe with `chart`, if any.
fn remote_chart(
    values: &mut Map<String, Value>,
    chart: &str,
    path: &str,
    problems: &mut Diagnostics,
) -> Option<RemoteChart> {
    let mut take = |key: &str| match values.remove(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            problems.push(Diagnostic::new(
                Location::file(path),
                format!("`{key}` must be a string, found {}", type_name(&other)),
            ));
            None
        }
    };
    let version = take("chartVersion");
    let repository = take("chartRepository");
    let remote = chart.starts_with("oci://") || repository.is_some();
    if !remote {
        if version.is_some() {
            problems.push(
                Diagnostic::new(
                    Location::file(path),
                    format!("`chartVersion` is set, but chart `{chart}` is a chart of this repo"),
                )
                .help("chartVersion pins a remote chart: `chart: oci://…` or `chartRepository: https://…`"),
            );
        }
        return None;
    }
    if let Some(r) = &repository
        && !(r.starts_with("https://") || r.starts_with("http://"))
    {
        problems.push(
            Diagnostic::new(
                Location::file(path),
                format!(
                    "`chartRepository` must be an http(s):// chart repository URL, found `{r}`"
                ),
            )
            .help("for a registry, write the chart as `chart: oci://host/path/name` instead"),
        );
        return None;
    }
    let Some(version) = version.filter(|v| !v.trim().is_empty()) else {
        problems.push(
            Diagnostic::new(
                Location::file(path),
                format!("remote chart `{chart}` needs `chartVersion`"),
            )
            .help("pin the version every render uses, e.g. `chartVersion: 1.2.3`"),
        );
        return None;
    };
    Some(RemoteChart {
        reference: chart.to_string(),
        repository,
        version,
    })
}

/// Reads and merges one release's config and version files.
///
/// # Errors
/// Source errors as `Err(Error::Source)`; input problems as `Err(Error::Invalid)`.
pub fn load_service(
    reader: &Reader<'_>,
    spec: &ReleaseSpec,
    settings: &Settings,
) -> Result<ServiceValues, Error> {
    let mut problems = Diagnostics::default();
    let mut inputs = Vec::with_capacity(3);
    let env_values = read_values(reader, &spec.env_config, &mut problems, &mut inputs)?;
    let app_values = read_values(reader, &spec.app_config, &mut problems, &mut inputs)?;
    let env_version = read_version(reader, spec.env_version.as_ref(), &mut problems)?;
    let app_version = read_version(reader, spec.app_version.as_ref(), &mut problems)?;
    let version = match (env_version, app_version) {
        (Some(v), _) => spec.env_version.as_ref().map(|n| (n, v)),
        (None, Some(v)) => spec.app_version.as_ref().map(|n| (n, v)),
        (None, None) => None,
    }
    .map(|(node, v)| {
        inputs.push((node.path.clone(), v.clone()));
        v
    });
    if version.is_none() && problems.is_empty() {
        let looked = [
            spec.env_dir().to_string() + "/version",
            spec.app_config.path.replace("/config.yaml", "/version"),
        ];
        problems.push(
            Diagnostic::new(
                Location::file(spec.env_dir()),
                format!(
                    "release {}/{} has no version; looked at {} and {}",
                    spec.env, spec.app, looked[0], looked[1]
                ),
            )
            .help("write the image tag (e.g. 1.4.2) into one of those files"),
        );
    }
    let mut secret_files = Vec::new();
    for node in [&spec.app_secrets, &spec.env_secrets].into_iter().flatten() {
        match String::from_utf8(reader.read(node)?) {
            Ok(text) => secret_files.push((node.path.clone(), text)),
            Err(_) => problems.push(Diagnostic::new(
                Location::file(&node.path),
                "file is not UTF-8 text",
            )),
        }
    }
    let mut values = app_values;
    merge_into(&mut values, env_values);
    if let Some(preview) = &spec.preview {
        merge_into(&mut values, preview.values_for(&spec.app));
        values.insert(
            "namespace".into(),
            Value::String(preview.namespace_for(&spec.app)),
        );
    }
    let chart = match values.get("chart") {
        None | Some(Value::Null) => settings.default_chart.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            problems.push(Diagnostic::new(
                Location::file(&spec.env_config.path),
                format!("`chart` must be a chart name (a string), found {other}"),
            ));
            String::new()
        }
    };
    let remote = remote_chart(&mut values, &chart, &spec.env_config.path, &mut problems);
    let chart = remote.as_ref().map_or(chart, RemoteChart::key);
    problems
        .into_result(ServiceValues {
            remote_chart: remote,
            values,
            version: version.unwrap_or_default(),
            chart,
            inputs,
            secret_files,
            default_namespace: match &spec.preview {
                Some(p) => p.namespace_for(&spec.app),
                None => settings.namespace_for(&spec.app, &spec.env),
            },
        })
        .map_err(Error::from)
}

/// Parses a config.yaml that must be a map (an empty file is an empty map).
fn read_values(
    reader: &Reader<'_>,
    node: &Node,
    problems: &mut Diagnostics,
    inputs: &mut Vec<(String, String)>,
) -> Result<Map<String, Value>, source::Error> {
    let text = match String::from_utf8(reader.read(node)?) {
        Ok(t) => t,
        Err(_) => {
            problems.push(Diagnostic::new(
                Location::file(&node.path),
                "file is not UTF-8 text",
            ));
            return Ok(Map::new());
        }
    };
    let parsed = yaml::parse(&text);
    inputs.push((node.path.clone(), text));
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(other) => {
            problems.push(
                Diagnostic::new(
                    Location::at(&node.path, Some(1), Some(1)),
                    format!(
                        "config.yaml must be a map of values, found {}",
                        type_name(&other)
                    ),
                )
                .help("write `key: value` pairs, e.g. `image: ghcr.io/org/app`"),
            );
            Ok(Map::new())
        }
        Err(e) => {
            problems.push(e.diagnostic(&node.path, "invalid YAML"));
            Ok(Map::new())
        }
    }
}

/// Reads a `version` file: one non-empty line.
fn read_version(
    reader: &Reader<'_>,
    node: Option<&Node>,
    problems: &mut Diagnostics,
) -> Result<Option<String>, source::Error> {
    let Some(node) = node else { return Ok(None) };
    let Ok(text) = String::from_utf8(reader.read(node)?) else {
        problems.push(
            Diagnostic::new(Location::file(&node.path), "version file is not UTF-8 text")
                .help("write the version (e.g. 1.4.2) as plain text"),
        );
        return Ok(None);
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if let Some((line, c)) = (1usize..).zip(text.lines()).find_map(|(n, l)| {
        l.chars()
            .find(|c| c.is_control() && *c != '\t' && *c != '\r')
            .map(|c| (n, c))
    }) {
        problems.push(
            Diagnostic::new(
                Location::at(&node.path, Some(line), None),
                format!(
                    "version file holds the control character {}",
                    c.escape_unicode()
                ),
            )
            .help("write the version (e.g. 1.4.2) as plain text"),
        );
        return Ok(None);
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [one] if !one.chars().any(char::is_whitespace) => Ok(Some(one.to_string())),
        [] => {
            problems.push(
                Diagnostic::new(Location::file(&node.path), "version file is empty").help(
                    "write the version (e.g. 1.4.2) on one line, or delete the file to inherit",
                ),
            );
            Ok(None)
        }
        _ => {
            problems.push(
                Diagnostic::new(
                    Location::at(&node.path, Some(2), None),
                    "version file must hold exactly one version on one line",
                )
                .help("keep only the version, e.g. 1.4.2"),
            );
            Ok(None)
        }
    }
}
