//! Integration tests: one binary, a module per pipeline stage.

mod util;

mod example;
mod plan;
mod render;
