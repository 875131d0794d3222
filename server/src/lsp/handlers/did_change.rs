//! `textDocument/didChange`: full or incremental edits, applied atomically and version-checked.

use ls_types::{DidChangeTextDocumentParams, MessageType};

use crate::document::TextChange;
use crate::lsp::convert::line_column;
use crate::lsp::server::Server;

pub fn handle(server: &mut Server, params: DidChangeTextDocumentParams) {
    let uri = params.text_document.uri.as_str();
    let encoding = server.encoding;
    let Some(document) = server.documents.get_mut(uri) else {
        server.log(MessageType::WARNING, format!("ignoring a change to {uri}, which is not open"));
        return;
    };
    let changes: Vec<TextChange> = params
        .content_changes
        .into_iter()
        .map(|change| TextChange {
            range: change.range.map(|range| (line_column(range.start), line_column(range.end))),
            text: change.text,
        })
        .collect();
    if let Err(error) = document.apply_changes(&changes, params.text_document.version, encoding) {
        server.log(MessageType::WARNING, format!("ignoring a change to {uri}: {error}"));
    }
}
