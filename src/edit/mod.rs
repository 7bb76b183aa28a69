//! kdeploy's edits of the config repo's work tree: the image lock
//! ([`lock`], `kdeploy lock`) and image tags and versions ([`images`],
//! `kdeploy images update`, `set-version`, promotion). They render the
//! repo, so they sit above [`crate::render`]; the file models they write
//! ([`crate::lock`], [`crate::images`]) sit below it.

pub mod images;
pub mod lock;
