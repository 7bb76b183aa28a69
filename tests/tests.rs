//! Integration tests: one binary, a module per pipeline stage.

mod fake_github;
mod gfm;
mod k8s_sim;
mod util;

mod action;
mod apply;
mod apply_perf;
mod architecture;
mod bench;
mod drift;
mod e2e;
mod emit;

mod event;
mod example;
mod faults;
mod github_edges;
mod hooks;
mod hostile;
mod hostile_pr;
mod images;
mod init;
mod lint;
mod lock;
mod order;
mod plan;
mod preview;
mod properties;
mod publish;
mod rego;
mod render;
mod render_cache;
mod review;
mod secrets;
mod shared_cluster;
mod sources;
mod three_way;
mod token_auth;
mod wait;
