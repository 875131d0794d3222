//! The protocol layer: the only part of nib that knows LSP and JSON-RPC. It turns messages into
//! calls on documents, syntax queries and the engine, and their results back into messages.

pub(crate) mod convert;
pub(crate) mod handlers;
pub(crate) mod jsonrpc;
pub(crate) mod server;
pub(crate) mod transport;
