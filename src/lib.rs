//! kdeploy: deploy Kubernetes applications from a git config repository.
//!
//! The crate is one linear pipeline; each stage is a module with a small
//! typed interface and data flows one way:
//!
//! - [`event`]: the GitHub event and the two commits it compares.
//! - [`source`]: read the config repo at a commit (git objects) or the work tree.
//! - [`config`]: find releases (`services/<app>/<env>/`) and merge their values.
//! - [`render`]: render releases with their charts into [`resource::Resource`]s.
//! - [`output`]: write rendered manifests to `_gen/`.
//! - [`validate`]: schema checks of rendered resources before planning.
//! - [`plan`]: per-resource changes between two revisions, Secrets redacted.
//! - [`report`]: a plan as terminal text, markdown or JSON.
//! - [`apply`]: server-side apply of changed resources, prune, deploy record,
//!   through a client from [`cluster`].
//! - [`wait`]: readiness tracking of what was applied.
//! - [`feedback`]: check runs and GitHub deployments for a deploy.
//! - [`comment`]: the sticky PR comment, through [`github`].
//! - [`action`]: the container Action's entry point tying the stages together.
//!
//! [`diag`] formats problems in user input; [`cli`] parses flags and
//! dispatches; [`bench`] measures the pipeline on generated repos.
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
pub mod emit;
pub mod event;
pub mod feedback;
pub mod github;
pub mod hooks;
pub mod images;
pub mod init;
pub mod lock;
pub mod order;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod preview;
pub mod promote;
pub mod publish;
pub mod render;
pub mod repo_write;
pub mod report;
pub mod resource;
pub mod secrets;
pub mod source;
pub mod validate;
pub mod wait;
pub mod workflow;
pub mod yaml;
