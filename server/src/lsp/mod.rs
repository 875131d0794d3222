//! The protocol layer: the only part of nib that knows LSP and JSON-RPC. It turns messages into
//! calls on documents, syntax queries and the engine, and their results back into messages.

pub mod code_actions;
pub mod convert;
pub mod handlers;
#[cfg(test)]
mod in_process_tests;
pub mod jsonrpc;
pub mod model_wait;
pub mod prewarm;
pub mod server;
pub mod transport;
pub mod workspace_edit;
pub mod workspace_guard;
