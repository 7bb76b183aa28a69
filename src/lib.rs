//! kdeploy: deploy Kubernetes applications from a git config repository.
//!
//! The crate is one linear pipeline; each stage is a module with a small
//! typed interface and data flows one way. Every module, in that order:
//!
//! - [`event`]: the GitHub event and the two commits it compares.
//! - [`source`]: read the config repo at a commit (git objects) or the work tree.
//! - [`config`]: `kdeploy.yaml` (its runner policy in [`config::policy`]),
//!   releases (`services/<app>/<env>/`) and their merged values.
//! - [`secrets`]: SOPS files decrypted in memory; placeholders while planning.
//! - [`render`]: releases rendered with their charts (handlebars, Helm,
//!   Kustomize, raw) into [`resource::Resource`]s.
//! - [`lock`]: the image lock file (`images.lock.yaml`), which rendering pins by.
//! - [`order`]: change groups, the order beyond kinds.
//! - [`validate`]: schema checks of rendered resources before planning.
//! - [`emit`]: rendering for output (`render`, `validate`), release by release.
//! - [`output`]: write rendered manifests to `_gen/`.
//! - [`plan`]: per-resource changes between two revisions, Secrets redacted;
//!   [`policy`]: the built-in checks each planned resource gets.
//! - [`report`]: a plan as terminal text, markdown (in comment-sized parts) or JSON.
//! - [`pipeline`]: the plan and deploy flows, written once for both faces.
//! - [`cluster`]: kubeconfig and clients; [`apply`]: server-side apply,
//!   prune, deploy records; [`hooks`]: pre- and post-deploy Jobs;
//!   [`wait`]: readiness of what was applied.
//! - [`review`]: at merge, what a push deploys against the plan its pull
//!   request showed (reviewed = applied).
//! - [`feedback`]: check runs and GitHub deployments for a deploy.
//! - [`github`]: the REST client (redirects, retries); [`comment`]: the
//!   sticky PR comment.
//! - [`drift`]: the cluster against the deploy record; [`preview`]: a pull
//!   request's own environment.
//! - [`images`]: registries and image policies; [`publish`]: changes pushed
//!   or proposed through GitHub; [`promote`]: versions from one environment
//!   to the next.
//! - [`edit`]: kdeploy's edits of the work tree (`kdeploy lock`, image
//!   tags and versions), which render and so sit above [`render`].
//! - [`init`]: start or adopt a config repo.
//!
//! Around them: [`resource`] (the values every stage shares), [`yaml`],
//! [`diag`] (problems in user input), [`repo_write`] (files written into the
//! repo through no link), [`process_time`] (the run's budget for child
//! processes), [`workflow`] (nothing printed forges a workflow
//! command), [`term`] (colour). The faces: [`cli`] parses flags and
//! dispatches; [`action`] is the container Action's entry point; [`mod@bench`]
//! measures the pipeline on generated repos.
#![deny(missing_docs)]

pub mod action;
pub mod apply;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod comment;
pub mod config;
pub mod diag;
pub mod drift;
pub mod edit;
pub mod emit;
pub mod event;
pub mod feedback;
pub mod github;
pub mod hooks;
pub mod images;
pub mod init;
pub mod live_check;
pub mod lock;
pub mod order;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod preview;
pub mod process_time;
pub mod promote;
pub mod publish;
pub mod render;
pub mod repo_write;
pub mod report;
pub mod resource;
pub mod review;
pub mod secrets;
pub mod source;
pub mod term;
pub mod validate;
pub mod wait;
pub mod workflow;
pub mod yaml;
