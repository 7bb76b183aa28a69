//! `kdeploy bench`: timings of the pipeline on a generated config repo.
//!
//! The generator writes N apps x E environments (with the default chart
//! copied in, as a real repo would have it) straight into a temporary git
//! repository with gitoxide, then commits a one-app change and a chart
//! change. Numbers are medians of several runs; the last line is
//! machine-readable.

mod helm;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gix::ObjectId;

use crate::config::Filter;
use crate::render::{self, chart};
use crate::source::Snapshot;
use crate::{plan, report};

/// `kdeploy bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of apps in the generated repo.
    #[arg(long, default_value_t = 1000)]
    pub apps: usize,
    /// Number of environments per app.
    #[arg(long, default_value_t = 3)]
    pub envs: usize,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Services set only their image (five documents per release) instead of
    /// also using env vars, ingresses, monitoring and autoscaling.
    #[arg(long)]
    pub lean: bool,
    /// Write the generated repository here (a new directory) and keep it,
    /// to measure commands against it (`kdeploy render --repo PATH …`).
    #[arg(long, value_name = "PATH")]
    pub keep: Option<std::path::PathBuf>,
}

/// A generated repository and its commits.
pub struct Synthetic {
    /// Keeps a temporary repository alive (none when kept with `--keep`).
    pub temp: Option<tempfile::TempDir>,
    /// The repository.
    pub path: std::path::PathBuf,
    /// All releases.
    pub initial: ObjectId,
    /// One app's env config changed.
    pub one_app: ObjectId,
    /// The chart changed: every release differs.
    pub chart_change: ObjectId,
    /// True when the objects were packed (as in a clone) rather than loose.
    pub packed: bool,
}

/// The files of a config repo with `apps` apps over `envs` environments.
/// `lean` services set only their image: the chart's five documents per
/// release; otherwise they use env vars, ingresses, monitoring and
/// autoscaling too.
pub fn synthetic_files(apps: usize, envs: usize, lean: bool) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for (path, text) in chart::BUILTIN {
        files.insert(format!("charts/service/{path}"), text.to_string());
    }
    let env_names = ["staging", "production", "canary", "dev", "qa"];
    for a in 0..apps {
        let app = format!("app-{a:04}");
        let mut config = format!(
            "image: ghcr.io/example/{app}\nteam: team-{}\nenv:\n  LOG_LEVEL: info\n  FEATURE_{a}: \"on\"\n",
            a % 17
        );
        if a % 3 == 0 {
            config.push_str("monitoring:\n  enabled: true\n");
        }
        if lean {
            config = format!("image: ghcr.io/example/{app}\n");
        }
        files.insert(format!("services/{app}/config.yaml"), config);
        files.insert(
            format!("services/{app}/version"),
            format!("1.{}.0\n", a % 50),
        );
        for e in 0..envs {
            let env = env_names
                .get(e)
                .map_or_else(|| format!("env-{e}"), |s| s.to_string());
            let mut cfg = format!("replicas: {}\n", 1 + e);
            if lean {
                files.insert(format!("services/{app}/{env}/config.yaml"), cfg);
                continue;
            }
            if a % 2 == 0 {
                cfg.push_str(&format!(
                    "ingress:\n  enabled: true\n  host: {app}.{env}.example.com\n"
                ));
            }
            if e == 1 {
                cfg.push_str("autoscaling:\n  enabled: true\n  maxReplicas: 6\n");
                files.insert(format!("services/{app}/{env}/version"), "1.0.0\n".into());
            }
            files.insert(format!("services/{app}/{env}/config.yaml"), cfg);
        }
    }
    files
}

/// Writes `files` as a commit on HEAD in `repo`.
///
/// # Errors
/// When gitoxide fails to write objects or refs.
pub fn commit_files(
    repo: &gix::Repository,
    files: &BTreeMap<String, String>,
    parent: Option<ObjectId>,
    message: &str,
) -> anyhow::Result<ObjectId> {
    let mut editor = repo.edit_tree(ObjectId::empty_tree(repo.object_hash()))?;
    for (path, text) in files {
        let blob = repo.write_blob(text.as_bytes())?;
        editor.upsert(path.as_str(), gix::object::tree::EntryKind::Blob, blob)?;
    }
    let tree = editor.write()?;
    let sig = gix::actor::SignatureRef {
        name: "kdeploy bench".into(),
        email: "bench@kdeploy.invalid".into(),
        time: "1700000000 +0000",
    };
    let id = repo.commit_as(sig, sig, "HEAD", message, tree, parent)?;
    Ok(id.detach())
}

/// Generates the synthetic repository with its three commits.
///
/// # Errors
/// When the temporary repository cannot be written.
pub fn generate(apps: usize, envs: usize, lean: bool) -> anyhow::Result<Synthetic> {
    generate_in(None, apps, envs, lean)
}

/// [`generate`] into `keep` (a new directory, left in place for measuring
/// commands against it), else into a temporary directory.
///
/// # Errors
/// When the repository cannot be written, or `keep` exists and is not empty.
pub fn generate_in(
    keep: Option<&std::path::Path>,
    apps: usize,
    envs: usize,
    lean: bool,
) -> anyhow::Result<Synthetic> {
    let (temp, path) = match keep {
        Some(p) => {
            if p.read_dir().is_ok_and(|mut d| d.next().is_some()) {
                anyhow::bail!(
                    "{} exists and is not empty; --keep writes a new repository",
                    p.display()
                );
            }
            std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
            (None, p.to_path_buf())
        }
        None => {
            let t = tempfile::tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let repo = gix::init(&path).context("failed to create the benchmark repository")?;
    let mut files = synthetic_files(apps, envs, lean);
    let initial = commit_files(&repo, &files, None, "initial")?;
    let edited = "services/app-0000/staging/config.yaml".to_string();
    if let Some(cfg) = files.get_mut(&edited) {
        cfg.push_str("port: 9090\n");
    }
    let one_app = commit_files(&repo, &files, Some(initial), "one app")?;
    if let Some(tpl) = files.get_mut("charts/service/templates/deployment.yaml") {
        *tpl = tpl.replace("revisionHistoryLimit: 5", "revisionHistoryLimit: 3");
    }
    let chart_change = commit_files(&repo, &files, Some(one_app), "chart")?;
    // A cloned repository has its objects in a pack; pack this one too when
    // git is available, or timings measure loose-object file access instead.
    let packed = std::process::Command::new("git")
        .args(["repack", "-a", "-d", "-q"])
        .current_dir(&path)
        .status()
        .is_ok_and(|s| s.success());
    Ok(Synthetic {
        packed,
        temp,
        path,
        initial,
        one_app,
        chart_change,
    })
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn time<T>(
    iterations: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, T)> {
    let mut samples = Vec::with_capacity(iterations);
    let mut last = None;
    for _ in 0..iterations.max(1) {
        // Free the previous result outside the timed region.
        drop(last.take());
        let start = Instant::now();
        let value = f()?;
        samples.push(start.elapsed());
        last = Some(value);
    }
    let last = last.context("no iteration ran")?;
    Ok((median(samples), last))
}

/// Medians of each of `jobs`, run one after the other in each of
/// `rounds` rounds, so that their ratios are measured under the same load.
/// Each result is freed outside the timed region.
fn time_rounds<const N: usize>(
    rounds: usize,
    jobs: &mut [&mut dyn FnMut() -> anyhow::Result<Box<dyn std::any::Any>>; N],
) -> anyhow::Result<[f64; N]> {
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..rounds {
        for (job, samples) in jobs.iter_mut().zip(&mut samples) {
            let start = Instant::now();
            let value = job()?;
            samples.push(start.elapsed());
            drop(value);
        }
    }
    Ok(samples.map(median))
}

/// Runs the benchmark and prints its figures.
///
/// # Errors
/// When generation or rendering fails.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let start = Instant::now();
    let syn = generate_in(args.keep.as_deref(), args.apps, args.envs, args.lean)?;
    writeln!(
        out,
        "generated {} apps x {} envs in {:.0} ms ({} objects, {} threads)",
        args.apps,
        args.envs,
        start.elapsed().as_secs_f64() * 1000.0,
        if syn.packed {
            "packed"
        } else {
            "loose: git not found"
        },
        rayon::current_num_threads()
    )?;
    let path = syn.path.as_path();
    let filter = Filter::default();
    let open = |id: ObjectId| -> anyhow::Result<Snapshot> {
        let repo = gix::open(path)?;
        Ok(Snapshot::at_commit(repo, path, id, &id.to_string())?)
    };
    let (full_ms, state) = time(args.iterations, || {
        Ok(render::render(&open(syn.initial)?, &filter)?)
    })?;
    drop(state);
    // The command as a user runs it (`kdeploy render --rev HEAD --stdout`),
    // phase by phase, so the benchmark and the command cannot drift apart.
    let phases = command_phases(path, args.iterations)?;
    writeln!(
        out,
        "render command phases: open {:.1} ms, releases {:.1} ms (validating {:.1} ms and serializing {:.1} ms of thread time within), checks across releases {:.1} ms, write {:.1} ms: {:.1} ms",
        phases.open,
        phases.releases,
        phases.validate,
        phases.serialize,
        phases.across,
        phases.write,
        phases.total()
    )?;
    let state = render::render(&open(syn.initial)?, &filter)?;
    let releases = state.releases.len();
    let resources = state.resource_count();
    let bytes: usize = state
        .releases
        .iter()
        .map(|r| crate::output::release_text(r).len())
        .sum();
    writeln!(
        out,
        "full render: {releases} releases, {resources} resources, {:.1} MB canonical YAML: {full_ms:.1} ms",
        bytes as f64 / 1e6
    )?;
    // Helm's loop takes seconds and its time moves by half between single
    // runs on a busy machine: the median of up to three.
    let helm_ms = match helm::side_by_side(&open(syn.initial)?, &state, args.iterations.min(3)) {
        Ok(h) => {
            writeln!(
                out,
                "helm SDK in one process (helm-python-sdk, the built-in chart in Go templates): {} releases, {} of {} objects equal to kdeploy's: {:.1} ms (median of {}), {:.1}x the render command's time and {:.1}x the full render's",
                h.releases,
                h.equal,
                h.objects,
                h.ms,
                h.runs,
                h.ms / phases.total(),
                h.ms / full_ms
            )?;
            Some(h.ms)
        }
        Err(e) => {
            writeln!(out, "helm SDK side by side: not measured: {e:#}")?;
            None
        }
    };
    drop(state);
    let (one_app_ms, cmp) = time(args.iterations, || {
        Ok(render::compare(
            &open(syn.initial)?,
            &open(syn.one_app)?,
            &filter,
        )?)
    })?;
    writeln!(
        out,
        "compare, one app changed: {} releases re-rendered, {} skipped: {one_app_ms:.1} ms",
        cmp.head.releases.len(),
        cmp.unchanged.len()
    )?;
    let (chart_ms, cmp) = time(args.iterations.min(3), || {
        Ok(render::compare(
            &open(syn.one_app)?,
            &open(syn.chart_change)?,
            &filter,
        )?)
    })?;
    writeln!(
        out,
        "compare, chart changed: {} releases re-rendered at both revisions, {} template outputs of the base reused: {chart_ms:.1} ms",
        cmp.head.releases.len(),
        cmp.reused_templates
    )?;
    // As `kdeploy plan` does: the head is validated before it is planned,
    // and the rendered objects are freed after (the command frees them on
    // another thread while it writes the plan).
    let plan_of = |base: ObjectId, head: ObjectId| {
        crate::validate::forget_shapes();
        let (base, head) = (open(base)?, open(head)?);
        Ok(crate::pipeline::plan::plan(
            crate::pipeline::PlanRequest::new(&base, &head, &filter),
        )?)
    };
    let (plan_one_ms, p) = time(args.iterations, || plan_of(syn.initial, syn.one_app))?;
    // The comparison is freed here, not at the end of the bench.
    let p = { p }.plan;
    writeln!(
        out,
        "plan, one app changed: {} ({plan_one_ms:.1} ms)",
        report::summary_line(&p)
    )?;
    let (plan_chart_ms, p) = time(args.iterations.min(3), || {
        plan_of(syn.one_app, syn.chart_change)
    })?;
    // The comparison is freed here, not at the end of the bench.
    let p = { p }.plan;
    writeln!(
        out,
        "plan, chart changed: {} ({plan_chart_ms:.1} ms, {:.1}x the full render)",
        report::summary_line(&p),
        plan_chart_ms / full_ms
    )?;
    // The pull request comment of that plan, as the action posts it.
    let start = Instant::now();
    let parts = report::markdown_parts(&p, "<!-- kdeploy -->", report::COMMENT_LIMIT, 10);
    let widest = parts.iter().map(|t| t.chars().count()).max().unwrap_or(0);
    let releases_changed = p
        .changes
        .iter()
        .map(|c| (&c.env, &c.app))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let first = parts.first().map_or("", String::as_str);
    let all_named = first.contains(&format!("All {releases_changed} changed releases"))
        && !first.contains("… more: the job summary");
    writeln!(
        out,
        "its comment: {} part(s) of at most {widest} characters (GitHub's limit {}); part 1 lists all {releases_changed} changed releases: {}; made in {:.1} ms",
        parts.len(),
        report::COMMENT_LIMIT,
        if all_named { "yes" } else { "no" },
        start.elapsed().as_secs_f64() * 1000.0
    )?;
    drop(parts);
    let cached = cached_plan(&open, &syn, args.iterations.min(3))?;
    let [render_ms, uncached_ms, cached_ms] = cached_lines(out, &cached)?;
    let by_phase = plan_phases(
        &open(syn.one_app)?,
        &open(syn.chart_change)?,
        None,
        args.iterations.min(3),
    )?;
    writeln!(
        out,
        "plan, chart changed, by phase: render both {:.1} ms, validate the head {:.1} ms, compare resources {:.1} ms, built-in policy checks {:.1} ms",
        by_phase[0], by_phase[1], by_phase[2], by_phase[3]
    )?;
    writeln!(
        out,
        "peak memory (VmHWM of this process): {}",
        peak_memory().map_or_else(
            || "unknown".to_string(),
            |kb| format!("{:.0} MB", kb as f64 / 1024.0)
        )
    )?;
    writeln!(
        out,
        "bench releases={releases} resources={resources} full_ms={full_ms:.1} command_ms={:.1} one_app_ms={one_app_ms:.1} chart_ms={chart_ms:.1} plan_one_app_ms={plan_one_ms:.1} plan_chart_ms={plan_chart_ms:.1} plan_chart_cached_ms={:.1} plan_chart_ratio={:.2} plan_chart_cached_ratio={:.2} helm_ms={}",
        phases.total(),
        cached_ms,
        uncached_ms / render_ms,
        cached_ms / render_ms,
        helm_ms.map_or_else(|| "none".to_string(), |ms| format!("{ms:.1}"))
    )?;
    Ok(())
}

/// Prints the render cache's figures; answers the alternating rounds.
fn cached_lines(out: &mut dyn Write, cached: &Cached) -> anyhow::Result<[f64; 3]> {
    writeln!(
        out,
        "render cache: a deploy of the base writes {} entries, {:.1} MB, in {:.1} ms; plan, chart changed, base from the cache: {} of {} base releases read",
        cached.stored.written,
        cached.bytes as f64 / 1e6,
        cached.write_ms,
        cached.summary.hits,
        cached.summary.hits + cached.summary.misses,
    )?;
    let [render_ms, uncached_ms, cached_ms] = cached.rounds;
    writeln!(
        out,
        "plan, chart changed, against a full render of its head in alternating rounds: full render {render_ms:.1} ms, plan {uncached_ms:.1} ms ({:.2}x), plan with the base from the cache {cached_ms:.1} ms ({:.2}x; {:.2}x the plan without it)",
        uncached_ms / render_ms,
        cached_ms / render_ms,
        cached_ms / uncached_ms
    )?;
    writeln!(
        out,
        "plan, chart changed, base from the cache, by phase: render the head and read the base {:.1} ms, validate the head {:.1} ms, compare resources {:.1} ms, built-in policy checks {:.1} ms",
        cached.phases[0], cached.phases[1], cached.phases[2], cached.phases[3]
    )?;
    Ok(cached.rounds)
}

/// A plan after the chart change with the base read from a render cache.
struct Cached {
    /// Medians of the full render of the head, its plan without and with
    /// the cache, timed in alternating rounds.
    rounds: [f64; 3],
    phases: [f64; 4],
    stored: render::cache::Stored,
    bytes: u64,
    write_ms: f64,
    summary: render::cache::Summary,
}

/// Writes the base (`one_app`) to a fresh render cache as a deploy would,
/// then times the plan of the chart change reading it, in rounds with the
/// full render of its head and the plan without the cache.
fn cached_plan(
    open: &dyn Fn(ObjectId) -> anyhow::Result<Snapshot>,
    syn: &Synthetic,
    iterations: usize,
) -> anyhow::Result<Cached> {
    let dir = tempfile::tempdir()?;
    let cache = render::cache::RenderCache::at(dir.path());
    let state = render::render(&open(syn.one_app)?, &Filter::default())?;
    let start = Instant::now();
    let stored = cache.store(&state)?;
    let write_ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(state);
    let bytes = dir_bytes(dir.path());
    let filter = Filter::default();
    let plan = |cache: Option<&render::cache::RenderCache>| -> anyhow::Result<_> {
        crate::validate::forget_shapes();
        let (base, head) = (open(syn.one_app)?, open(syn.chart_change)?);
        Ok(crate::pipeline::plan::plan(crate::pipeline::PlanRequest {
            render_cache: cache,
            ..crate::pipeline::PlanRequest::new(&base, &head, &filter)
        })?)
    };
    // What the cache served; the plan is timed in the rounds below.
    let summary = plan(Some(&cache))?
        .comparison
        .cache
        .context("the plan did not use the render cache")?;
    // The ratios the target is stated in, each round under the same load:
    // separate medians drift apart by more than the cache saves on a busy
    // machine.
    let rounds = time_rounds(
        iterations.max(3),
        &mut [
            &mut || Ok(Box::new(render::render(&open(syn.chart_change)?, &filter)?)),
            &mut || Ok(Box::new(plan(None)?)),
            &mut || Ok(Box::new(plan(Some(&cache))?)),
        ],
    )?;
    let phases = plan_phases(
        &open(syn.one_app)?,
        &open(syn.chart_change)?,
        Some(&cache),
        iterations,
    )?;
    Ok(Cached {
        rounds,
        phases,
        stored,
        bytes,
        write_ms,
        summary,
    })
}

/// Bytes of the files below `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Medians of the plan flow's phases ([`crate::pipeline::plan::plan`]) in
/// ms: render both revisions, validate the head, compare resources, the
/// built-in policy checks.
///
/// # Errors
/// When a revision cannot be rendered.
pub fn plan_phases(
    base: &Snapshot,
    head: &Snapshot,
    cache: Option<&render::cache::RenderCache>,
    iterations: usize,
) -> anyhow::Result<[f64; 4]> {
    let filter = Filter::default();
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for _ in 0..iterations.max(1) {
        crate::validate::forget_shapes();
        let t = Instant::now();
        let cmp = render::compare_with(base, head, &filter, None, render::PolicyFrom::Base, cache)?;
        samples[0].push(t.elapsed());
        let t = Instant::now();
        let stages = crate::order::stages_by_env(&cmp.head);
        crate::validate::check_for_plan(&cmp, &stages).map_err(render::Error::Invalid)?;
        samples[1].push(t.elapsed());
        let t = Instant::now();
        let mut p = plan::plan_staged(&cmp, &stages, &cmp.head.settings.plan, 3);
        drop(stages);
        samples[2].push(t.elapsed());
        let t = Instant::now();
        let severities = crate::policy::severities("").map_err(anyhow::Error::msg)?;
        crate::policy::annotate(&mut p, &cmp.head, &severities);
        samples[3].push(t.elapsed());
        drop((p, cmp));
    }
    Ok(samples.map(median))
}

/// Medians of each phase of `kdeploy render --rev HEAD --stdout`, in ms.
#[derive(Debug, Default)]
pub struct Phases {
    /// Opening the repository and resolving the revision.
    pub open: f64,
    /// Rendering every release, each validated and serialized as it
    /// renders (wall time; see [`crate::emit`]).
    pub releases: f64,
    /// Thread time validating releases, within `releases`.
    pub validate: f64,
    /// Thread time serializing releases, within `releases`.
    pub serialize: f64,
    /// The checks across releases, before anything is printed.
    pub across: f64,
    /// Writing it out (to a discarding writer: the pipe is not measured).
    pub write: f64,
}

impl Phases {
    /// The command's wall time: the phases that follow each other.
    pub fn total(&self) -> f64 {
        self.open + self.releases + self.across + self.write
    }
}

/// Times the render command's phases on the repository at `path`, running
/// the same functions `kdeploy render --stdout` runs.
///
/// # Errors
/// When the repository cannot be read or rendered.
pub fn command_phases(path: &std::path::Path, iterations: usize) -> anyhow::Result<Phases> {
    let mut samples: [Vec<Duration>; 6] = Default::default();
    for _ in 0..iterations.max(1) {
        crate::validate::forget_shapes();
        let t = Instant::now();
        let snapshot = Snapshot::open(path, &crate::source::Revision::parse(Some("HEAD")))?;
        samples[0].push(t.elapsed());
        let emitted = crate::emit::emit(&snapshot, &Filter::default(), crate::emit::Texts::Keep)?;
        samples[1].push(emitted.timings.releases);
        samples[2].push(emitted.timings.validate);
        samples[3].push(emitted.timings.serialize);
        samples[4].push(emitted.timings.across);
        let t = Instant::now();
        let mut sink = std::io::sink();
        for text in &emitted.texts {
            sink.write_all(text.as_bytes())?;
        }
        samples[5].push(t.elapsed());
        drop((emitted, snapshot));
    }
    let [open, releases, validate, serialize, across, write] = samples.map(median);
    Ok(Phases {
        open,
        releases,
        validate,
        serialize,
        across,
        write,
    })
}

/// The peak resident memory of this process in KB (Linux's VmHWM).
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
