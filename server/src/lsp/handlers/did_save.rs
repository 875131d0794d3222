//! `textDocument/didSave`: the saved file is re-indexed by the workspace index (from the open
//! buffer's live text, which is what was saved).

use ls_types::DidSaveTextDocumentParams;

use crate::document::file_uri_to_path;
use crate::lsp::server::Server;

pub fn handle(server: &mut Server, params: DidSaveTextDocumentParams) {
    if let Some(path) = file_uri_to_path(params.text_document.uri.as_str()) {
        server.index.file_event(&path, false);
    }
}
