//! The `nib` library: everything the `nib` binary runs, exposed so that benchmarks and tests
//! can drive the pieces directly. `ARCHITECTURE.md` maps the modules.

pub mod actions;
pub mod cli;
pub mod completion;
pub mod config;
pub mod document;
pub mod engine;
pub mod index;
pub mod lsp;
pub mod paths;
pub mod pool;
pub mod position;
pub mod sandbox;
pub mod syntax;
