//! Runtimes other than the built-in runner (which lives in `tasks`).

pub(crate) mod opencode;
