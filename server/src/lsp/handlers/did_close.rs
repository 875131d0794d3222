//! `textDocument/didClose`: forget a buffer and everything derived from it.

use ls_types::DidCloseTextDocumentParams;

use crate::lsp::server::Server;

pub fn handle(server: &mut Server, params: DidCloseTextDocumentParams) {
    let uri = params.text_document.uri.as_str();
    if server.documents.remove(uri).is_none() {
        tracing::warn!(uri, "close of a document that was not open");
    }
}
