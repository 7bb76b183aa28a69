//! Apply figures, run by hand (the simulator is not an API server: these
//! count requests, time round trips and requests in flight, nothing else):
//! `cargo test --release --test tests measure_apply -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use kdeploy::apply::Options;
use kdeploy::config::Filter;

use crate::apply::{deploy, fast, state};
use crate::k8s_sim::Sim;
use crate::util::Repo;

/// Writes in flight, measured in turn: one at a time first, the ratios
/// against it; 8, the default before it was 16; the default.
const IN_FLIGHT: [usize; 3] = [1, 8, kdeploy::apply::DEFAULT_CONCURRENCY];

/// 200 lean apps in one environment: 1,000 resources.
fn repo() -> Repo {
    let repo = Repo::new();
    for (path, text) in kdeploy::bench::synthetic_files(200, 1, true) {
        repo.write(&path, &text);
    }
    repo.commit("200 apps");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
async fn measure_apply_of_1000_resources_with_2ms_latency() {
    measure(Duration::from_millis(2), true).await;
}

/// A cluster tens of milliseconds away, as a real one is from a runner:
/// round trips and requests in flight decide the time. `KDEPLOY_MEASURE_LATENCY_MS`
/// sets the latency (20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
async fn measure_apply_of_1000_resources_with_20ms_latency() {
    let ms = std::env::var("KDEPLOY_MEASURE_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    measure(Duration::from_millis(ms), false).await;
}

/// First deploys with each of [`IN_FLIGHT`] writes in flight, their ratios
/// against one at a time and, for the default, requests in flight per
/// 100 ms; then (with `one_app`) the requests of a one-app change.
async fn measure(latency: Duration, one_app: bool) {
    let repo = repo();
    let head = state(&repo, "HEAD");
    let resources = head.resource_count();
    let all = Filter::default();
    let mut first = Vec::new();
    for concurrency in IN_FLIGHT {
        let sim = Sim::start().await;
        let client = sim.client().await;
        sim.set_latency(latency);
        let opts = Options {
            concurrency,
            ..fast()
        };
        let start = Instant::now();
        let (reports, out) = deploy(&client, &head, None, &all, &opts).await;
        let took = start.elapsed();
        assert!(
            reports.iter().all(kdeploy::apply::Report::succeeded),
            "{out}"
        );
        let (timeline, peak) = sim.in_flight(Duration::from_millis(100));
        println!(
            "first deploy of {resources} resources, {} ms latency, {concurrency} write(s) in flight: {:.0} ms, {} requests, at most {peak} in flight",
            latency.as_millis(),
            took.as_secs_f64() * 1000.0,
            sim.requests().len()
        );
        if concurrency == kdeploy::apply::DEFAULT_CONCURRENCY {
            let line: Vec<String> = timeline.iter().map(usize::to_string).collect();
            println!("  most in flight per 100 ms: {}", line.join(" "));
        }
        first.push(took);
        if one_app && concurrency == kdeploy::apply::DEFAULT_CONCURRENCY {
            // One app's config changes.
            repo.write("services/app-0007/staging/config.yaml", "replicas: 3\n");
            repo.commit("one app");
            let next = state(&repo, "HEAD");
            sim.clear_requests();
            let start = Instant::now();
            let (reports, out) = deploy(&client, &next, Some(&head), &all, &opts).await;
            assert!(
                reports.iter().all(kdeploy::apply::Report::succeeded),
                "{out}"
            );
            let requests = sim.requests();
            println!(
                "one-app change in an environment of {resources} resources: {:.0} ms, {} requests:",
                start.elapsed().as_secs_f64() * 1000.0,
                requests.len()
            );
            for r in &requests {
                println!("  {} {}", r.method, r.path);
            }
        }
    }
    for (took, n) in first.iter().zip(IN_FLIGHT).skip(1) {
        println!(
            "first deploy, {n} in flight vs one at a time: {:.1}x",
            first[0].as_secs_f64() / took.as_secs_f64()
        );
    }
}
