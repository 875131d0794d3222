//! `textDocument/didOpen`: start tracking a buffer (re-opening replaces it), pre-warm the KV
//! cache for its completions, and give the workspace index its live text.

use ls_types::DidOpenTextDocumentParams;

use crate::document::Document;
use crate::lsp::server::Server;

pub fn handle(server: &mut Server, params: DidOpenTextDocumentParams) {
    let item = params.text_document;
    let uri = item.uri.as_str().to_string();
    let document = Document::new(uri.clone(), item.language_id, item.version, &item.text);
    tracing::debug!(uri, language = ?document.language, bytes = item.text.len(), "opened");
    if let Some(snapshot) = crate::index::Snapshot::text_only(&document) {
        server.index.buffer(snapshot, 0, false);
    }
    server.documents.insert(uri.clone(), document);
    crate::lsp::prewarm::opened(server, &uri);
}
