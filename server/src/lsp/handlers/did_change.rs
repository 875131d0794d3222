//! `textDocument/didChange`: full or incremental edits, applied atomically and version-checked.

use ls_types::{DidChangeTextDocumentParams, MessageType};

use crate::document::TextChange;
use crate::lsp::convert::{self, line_column};
use crate::lsp::server::Server;

pub fn handle(server: &mut Server, params: DidChangeTextDocumentParams) {
    let uri = params.text_document.uri.as_str();
    let encoding = server.encoding;
    let Some(document) = server.documents.get_mut(uri) else {
        server.log(MessageType::WARNING, format!("ignoring a change to {uri}, which is not open"));
        return;
    };
    // Where the last change ends: the workspace index records the region as recently edited
    // and prepares the context for the scope there.
    let edited_at =
        params.content_changes.last().and_then(|change| change.range.map(|range| (range.start, change.text.len())));
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
        return;
    }
    let cursor = edited_at.map_or(0, |(start, length)| convert::to_byte(&document.rope, start, encoding) + length);
    super::inline_completion::buffer_edited(server, uri, cursor);
}
