//! Other manifest sources beside `services/` with the embedded chart:
//! plain manifest directories (`raw`) and Kustomize overlays (`kustomize`),
//! declared in `kdeploy.yaml` with path patterns such as
//! `manifests/{env}/{app}`. Helm charts are charts (see [`super::helm`]).
//!
//! Every source yields the same [`Rendered`] releases, so planning, applying
//! and feedback do not know where a resource came from.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::secrets::{self, Need, Sealed};
use crate::source::{self, Node, Reader};
use crate::yaml;

use crate::config::SourcesSettings;
use crate::config::sources::{Kind, SourceSpec};

use super::{Release, ReleaseKey, Rendered};

/// Every file below `dir`, recursively.
pub fn files(reader: &Reader<'_>, dir: &Node) -> Result<Vec<Node>, source::Error> {
    let mut out = Vec::new();
    for n in reader.list(dir)? {
        if n.is_dir {
            out.extend(files(reader, &n)?);
        } else {
            out.push(n);
        }
    }
    Ok(out)
}

fn release_of(spec: &SourceSpec, chart: &str) -> Release {
    Release {
        env: spec.env.clone(),
        app: spec.app.clone(),
        chart: chart.to_string(),
        version: String::new(),
        namespace: spec.namespace.clone(),
        dir: spec.dir.path.clone(),
    }
}

fn key_of(ids: Vec<Option<gix::ObjectId>>, kind: &str) -> Option<ReleaseKey> {
    if ids.iter().any(Option::is_none) {
        return None;
    }
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    for id in ids.into_iter().flatten() {
        sha2::Digest::update(&mut h, id.as_bytes());
    }
    let digest: String = sha2::Digest::finalize(h)
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(ReleaseKey {
        service: [None; 6],
        settings: None,
        chart: format!("{kind}:{digest}"),
    })
}

/// Expands `List` kinds into their items.
fn expand_lists(
    objects: Vec<(Value, crate::resource::Origin)>,
) -> Vec<(Value, crate::resource::Origin)> {
    let mut out = Vec::new();
    for (v, origin) in objects {
        let is_list =
            v["kind"].as_str().is_some_and(|k| k.ends_with("List")) && v["items"].is_array();
        if is_list {
            for item in v["items"].as_array().cloned().unwrap_or_default() {
                out.push((item, origin.clone()));
            }
        } else {
            out.push((v, origin));
        }
    }
    out
}

/// Turns parsed documents into a rendered release.
fn finish(
    release: Release,
    objects: Vec<(Value, crate::resource::Origin)>,
    key: Option<ReleaseKey>,
    mut problems: Diagnostics,
) -> Result<Rendered, Diagnostics> {
    let objects = expand_lists(objects);
    let resources = super::resources_of(objects, &release.namespace, &mut problems);
    problems.into_result(Rendered {
        release,
        resources,
        key,
        inputs: Vec::new(),
        sealed: Vec::new(),
    })
}

/// A raw manifest directory: every `.yaml`/`.yml`/`.json` file below it.
///
/// # Errors
/// Files that are not Kubernetes YAML, naming the file and line.
pub fn render_raw(
    reader: &Reader<'_>,
    spec: &SourceSpec,
    need: Need,
) -> Result<Result<Rendered, Diagnostics>, source::Error> {
    let release = release_of(spec, "raw");
    let mut problems = Diagnostics::default();
    let mut objects = Vec::new();
    let mut sealed = Vec::new();
    let mut decrypted = false;
    for file in files(reader, &spec.dir)? {
        if !is_manifest(file.name()) {
            continue;
        }
        let mut text = reader.read_text(&file)?;
        match secrets::open_manifests(&file.path, &text, need) {
            Ok(Some((plain, s))) => {
                text = plain;
                decrypted = true;
                sealed.extend(s);
            }
            Ok(None) => {}
            Err(d) => {
                problems.push(d);
                continue;
            }
        }
        for doc in yaml::split_documents(&text) {
            if yaml::is_blank(doc.text) {
                continue;
            }
            let origin = crate::resource::Origin {
                env: spec.env.clone(),
                app: spec.app.clone(),
                file: file.path.clone(),
                document: doc.index,
                line: doc.first_line,
            };
            match yaml::parse(doc.text) {
                Ok(v) => objects.push((v, origin)),
                Err(e) => {
                    let e = yaml::ParseError {
                        line: e.line.map(|l| l + doc.first_line - 1),
                        help: e.help.clone().or_else(|| {
                            Some(
                                "files in a raw source must be Kubernetes manifests (YAML or JSON)"
                                    .into(),
                            )
                        }),
                        ..e
                    };
                    problems.push(e.diagnostic(&file.path, "not valid YAML"));
                }
            }
        }
    }
    // What read a SOPS file holds decrypted values: never cached.
    let key = key_of(vec![spec.dir.id], "raw").filter(|_| !decrypted);
    Ok(finish(release, objects, key, problems).map(|r| Rendered { sealed, ..r }))
}

/// Paths a kustomization refers to, relative to its directory.
fn kustomization_refs(k: &Value) -> Vec<String> {
    let mut refs = Vec::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for field in [
        "resources",
        "bases",
        "components",
        "crds",
        "patchesStrategicMerge",
        "configurations",
        "transformers",
        "generators",
    ] {
        refs.extend(strings(&k[field]));
    }
    // Files kustomize reads that kubectl and kustomize also accept as URLs.
    if let Some(path) = k["openapi"]["path"].as_str() {
        refs.push(path.to_string());
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        for p in k[field].as_array().into_iter().flatten() {
            if let Some(path) = p["path"].as_str() {
                refs.push(path.to_string());
            }
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for g in k[field].as_array().into_iter().flatten() {
            refs.extend(strings(&g["envs"]));
            if let Some(env) = g["env"].as_str() {
                refs.push(env.to_string());
            }
            for f in strings(&g["files"]) {
                // `key=path` form
                refs.push(f.rsplit_once('=').map_or(f.clone(), |(_, p)| p.to_string()));
            }
        }
    }
    refs
}

/// Whether kustomize would take `r` as a remote location and fetch it
/// (`https://…`, `HTTPS://…`, `git::…`, `git@host:…`, `gh:…`,
/// `host.tld/org/repo//path?ref=…`): kustomize tries a reference as a
/// repository URL before it looks for a local directory, so a local
/// directory of the same name does not make it safe. Erring on the side of
/// refusing: a local path never needs a scheme, a `//`, a query, or a dot
/// in its first component.
fn is_remote_reference(r: &str) -> bool {
    let lower = r.trim().to_ascii_lowercase();
    let first = lower.split('/').next().unwrap_or("");
    lower.contains("://")
        || lower.contains("//")
        || lower.contains('?')
        || lower.starts_with("git@")
        || lower.starts_with("git::")
        || lower.starts_with("gh:")
        || first.contains(':')
        || (lower.contains('/') && looks_like_host(first))
}

/// `github.com`, `gitlab.example.org`: a first path component kustomize
/// would read as a host.
fn looks_like_host(first: &str) -> bool {
    let labels: Vec<&str> = first.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
}

fn normalize(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Resolves every directory and file an overlay reads, following
/// kustomization files. Remote references are refused.
fn resolve_kustomize(
    reader: &Reader<'_>,
    root: &Node,
    dir: &str,
    seen: &mut BTreeMap<String, Node>,
    problems: &mut Diagnostics,
) -> Result<(), source::Error> {
    if seen.contains_key(dir) {
        return Ok(());
    }
    let Some(node) = reader.find(root, dir)? else {
        return Ok(());
    };
    seen.insert(dir.to_string(), node.clone());
    if !node.is_dir {
        return Ok(());
    }
    let kfile = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .find_map(|n| {
            reader
                .list(&node)
                .ok()?
                .into_iter()
                .find(|c| c.name() == *n)
        });
    let Some(kfile) = kfile else { return Ok(()) };
    let text = reader.read_text(&kfile)?;
    let k = match yaml::parse(&text) {
        Ok(k) => k,
        Err(e) => {
            problems.push(e.diagnostic(&kfile.path, "invalid kustomization"));
            return Ok(());
        }
    };
    for r in kustomization_refs(&k) {
        if is_remote_reference(&r) {
            problems.push(
                Diagnostic::new(Location::file(&kfile.path), format!("remote kustomize reference `{r}` is not allowed"))
                    .help("rendering never uses the network: vendor the base into the repository and refer to it by path"),
            );
            continue;
        }
        let Some(path) = normalize(dir, &r) else {
            problems.push(Diagnostic::new(
                Location::file(&kfile.path),
                format!("`{r}` points outside the config repo"),
            ));
            continue;
        };
        if reader.find(root, &path)?.is_none() {
            problems.push(
                Diagnostic::new(
                    Location::file(&kfile.path),
                    format!("`{r}` does not exist ({path})"),
                )
                .help("fix the path in the kustomization, or add the file"),
            );
            continue;
        }
        resolve_kustomize(reader, root, &path, seen, problems)?;
    }
    Ok(())
}

/// The files of `nodes` (files, and directories with everything below)
/// with their content, SOPS files decrypted (in memory).
fn gather(
    reader: &Reader<'_>,
    nodes: &BTreeMap<String, Node>,
    need: Need,
    sealed: &mut Vec<Sealed>,
    problems: &mut Diagnostics,
) -> Result<Vec<(String, Vec<u8>, bool)>, source::Error> {
    let mut out = Vec::new();
    for node in nodes.values() {
        let list = if node.is_dir {
            files(reader, node)?
        } else {
            vec![node.clone()]
        };
        for f in list {
            let bytes = reader.read(&f)?;
            let text = std::str::from_utf8(&bytes).ok();
            let opened = match text {
                Some(t) if is_manifest(f.name()) => secrets::open_manifests(&f.path, t, need)
                    .unwrap_or_else(|d| {
                        problems.push(d);
                        None
                    }),
                _ => None,
            };
            match opened {
                Some((plain, s)) => {
                    sealed.extend(s);
                    out.push((f.path.clone(), plain.into_bytes(), true));
                }
                None => out.push((f.path.clone(), bytes, false)),
            }
        }
    }
    Ok(out)
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

/// Writes gathered files into `dest`.
fn materialize(files: &[(String, Vec<u8>, bool)], dest: &Path) -> Result<(), source::Error> {
    for (path, bytes, _) in files {
        let target = dest.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(path, e))?;
        }
        std::fs::write(&target, bytes).map_err(|e| io_err(path, e))?;
    }
    Ok(())
}

/// Where kustomize's copy goes: a private directory, in memory (`/dev/shm`)
/// when it holds decrypted files, so plaintext never reaches a disk.
fn private_dir(decrypted: bool) -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if decrypted
        && shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("kdeploy-").tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir()
}

pub(super) fn io_err(path: &str, e: std::io::Error) -> source::Error {
    source::Error::Read {
        path: path.to_string(),
        rev: "temporary directory".into(),
        source: Box::new(e),
    }
}

/// The most a renderer process may print: the ceiling of `limits.releaseBytes`.
const MAX_RENDERER_OUTPUT: u64 = 64 << 20;

/// Runs a renderer process: the program found on the runner's PATH (never
/// a file of the repository), no inherited secrets (a clean environment
/// with only PATH and a temporary HOME), a timeout within the run's total
/// ([`super::process_time`]), at most `max_output` bytes read (a release's
/// `limits.releaseBytes`), stderr kept for errors. `input` goes to its
/// stdin (Helm's values: never written to a file).
pub fn run_renderer(
    program: &str,
    args: &[&str],
    dir: &Path,
    timeout: Duration,
    max_output: u64,
    input: Option<Vec<u8>>,
) -> Result<String, String> {
    let max_output = max_output.min(MAX_RENDERER_OUTPUT);
    let timeout = crate::process_time::timeout(timeout)?;
    let resolved = crate::config::policy::resolve_program(program).ok_or_else(|| {
        format!("cannot find the program `{program}` on PATH; install it (a runner that keeps it elsewhere sets KDEPLOY_HELM or KDEPLOY_KUSTOMIZE to its absolute path)")
    })?;
    let started = std::time::Instant::now();
    let result = run_resolved(&resolved, program, args, dir, timeout, max_output, input);
    crate::process_time::charge(started.elapsed());
    result
}

fn run_resolved(
    resolved: &Path,
    program: &str,
    args: &[&str],
    dir: &Path,
    timeout: Duration,
    max_output: u64,
    input: Option<Vec<u8>>,
) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut child = std::process::Command::new(resolved)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}; install it"))?;
    // Written from its own thread: a process that prints before it has
    // read all of its input must not block on a full pipe.
    let writer = match (input, child.stdin.take()) {
        (Some(bytes), Some(mut stdin)) => Some(std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })),
        _ => None,
    };
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    // Output is bounded: past the ceiling the renderer is stopped rather
    // than read into memory.
    let too_much = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = too_much.clone();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.take(max_output + 1).read_to_string(&mut s);
        if s.len() as u64 > max_output {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_string(&mut s);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        s
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if too_much.load(std::sync::atomic::Ordering::Relaxed) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program}` wrote more than {max_output} bytes (`limits.releaseBytes`) and was stopped"
                ));
            }
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program}` did not finish within {}s and was stopped",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    if status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`{program} {}` failed ({status}):\n{}",
            args.join(" "),
            err.trim()
        ))
    }
}

/// A Kustomize overlay built with `kustomize build` or `kubectl kustomize`
/// in a temporary copy of exactly the directories it reads.
///
/// # Errors
/// Read failures; bad kustomizations and build failures are diagnostics.
pub fn render_kustomize(
    reader: &Reader<'_>,
    root: &Node,
    spec: &SourceSpec,
    settings: &SourcesSettings,
    max_output: u64,
    need: Need,
) -> Result<Result<Rendered, Diagnostics>, source::Error> {
    let release = release_of(spec, "kustomize");
    let mut problems = Diagnostics::default();
    let mut seen = BTreeMap::new();
    resolve_kustomize(reader, root, &spec.dir.path, &mut seen, &mut problems)?;
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let key = key_of(seen.values().map(|n| n.id).collect(), "kustomize");
    let mut sealed = Vec::new();
    let gathered = gather(reader, &seen, need, &mut sealed, &mut problems)?;
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let decrypted = gathered.iter().any(|(_, _, decrypted)| *decrypted);
    let key = key.filter(|_| !decrypted);
    let tmp = private_dir(decrypted).map_err(|e| io_err(&spec.dir.path, e))?;
    materialize(&gathered, tmp.path())?;
    drop(gathered);
    let runner_choice = std::env::var("KDEPLOY_KUSTOMIZE").ok();
    let command = runner_choice
        .as_deref()
        .or(settings.kustomize_command.as_deref())
        .unwrap_or("kubectl");
    let (program, args): (&str, Vec<&str>) = if Path::new(command)
        .file_name()
        .is_some_and(|n| n == "kustomize")
    {
        (command, vec!["build", "--", &spec.dir.path])
    } else {
        (command, vec!["kustomize", "--", &spec.dir.path])
    };
    let output = match run_renderer(
        program,
        &args,
        tmp.path(),
        settings.timeout(),
        max_output,
        None,
    ) {
        Ok(o) => o,
        Err(e) => {
            problems.push(Diagnostic::new(
                Location::file(&spec.dir.path),
                format!("kustomize build failed for {}/{}: {e}", spec.env, spec.app),
            ));
            return Ok(Err(problems));
        }
    };
    drop(tmp);
    let mut objects = Vec::new();
    super::parse_documents(
        &output,
        &spec.dir.path,
        &release,
        &mut objects,
        &mut problems,
    );
    Ok(finish(release, objects, key, problems).map(|r| Rendered { sealed, ..r }))
}

/// The cache key of a source release: the git ids of everything it reads
/// (`None` in the work tree or when references cannot be resolved).
///
/// # Errors
/// Read failures.
pub fn key(
    reader: &Reader<'_>,
    root: &Node,
    spec: &SourceSpec,
) -> Result<Option<ReleaseKey>, source::Error> {
    Ok(match spec.kind {
        Kind::Raw => key_of(vec![spec.dir.id], "raw"),
        Kind::Kustomize => {
            let mut seen = BTreeMap::new();
            let mut problems = Diagnostics::default();
            resolve_kustomize(reader, root, &spec.dir.path, &mut seen, &mut problems)?;
            if problems.is_empty() {
                key_of(seen.values().map(|n| n.id).collect(), "kustomize")
            } else {
                None
            }
        }
    })
}

/// Renders one source release; a Kustomize build may print `max_output`
/// bytes (the release limit).
///
/// # Errors
/// Read failures; problems with the input are diagnostics.
pub fn render(
    reader: &Reader<'_>,
    root: &Node,
    spec: &SourceSpec,
    settings: &SourcesSettings,
    max_output: u64,
    need: Need,
) -> Result<Result<Rendered, Diagnostics>, source::Error> {
    match spec.kind {
        Kind::Raw => render_raw(reader, spec, need),
        Kind::Kustomize => render_kustomize(reader, root, spec, settings, max_output, need),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kustomization_references() {
        let k: Value = yaml::parse("resources: [../../base, svc.yaml]\npatches:\n- path: patch.yaml\nconfigMapGenerator:\n- name: c\n  files: [app.properties, key=conf/x.txt]\n").unwrap();
        for remote in [
            "https://github.com/x/y",
            "HTTPS://github.com/x/y",
            "GitHub.com/org/repo",
            "git::https://example.com/r",
            "git@github.com:org/repo",
            "gh:org/repo",
            "example.com/org/repo//deploy?ref=v1",
            "../base?ref=main",
        ] {
            assert!(is_remote_reference(remote), "{remote}");
        }
        for local in [
            "../../base",
            "svc.yaml",
            "./patch.yaml",
            "conf/x.txt",
            "..",
            "base",
            "v1.2/x.yaml",
        ] {
            assert!(!is_remote_reference(local), "{local}");
        }
        assert_eq!(
            kustomization_refs(&k),
            [
                "../../base",
                "svc.yaml",
                "patch.yaml",
                "app.properties",
                "conf/x.txt"
            ]
        );
        assert_eq!(
            normalize("apps/x/overlays/prod", "../../base").as_deref(),
            Some("apps/x/base")
        );
        assert_eq!(normalize("a", "../../b"), None);
    }
}
