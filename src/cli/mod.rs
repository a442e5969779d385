//! The command line's subcommands beyond `serve` and `stdio`.

pub mod client;
pub mod out;
pub mod owner;
pub mod prompts;
pub mod render;
pub mod service;
pub mod ui;
