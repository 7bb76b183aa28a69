//! Integration tests: one binary, a module per pipeline stage.

mod fake_github;
mod util;

mod action;

mod event;
mod example;
mod plan;
mod render;
