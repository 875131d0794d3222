//! `textDocument/didClose`: forget a buffer and everything derived from it.

use ls_types::DidCloseTextDocumentParams;

use crate::lsp::server::Server;

pub fn handle(server: &mut Server, params: DidCloseTextDocumentParams) {
    let uri = params.text_document.uri.as_str();
    match server.documents.remove(uri) {
        // The workspace index goes back to the file on disk.
        Some(document) => document.path.iter().for_each(|path| server.index.closed(path)),
        None => tracing::warn!(uri, "close of a document that was not open"),
    }
}
