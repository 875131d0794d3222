//! `textDocument/didChange`: full or incremental edits, applied atomically and version-checked.
//!
//! A change that cannot be applied (a stale version, a reversed range) leaves nib's copy
//! behind the editor's, so the document is marked out of sync: completions and code actions
//! are refused for it, with a message saying how to recover, until the editor sends the whole
//! text again (a full-text change, or `didClose` + `didOpen`). A change repeating the current
//! version is a duplicate and is only ignored.

use ls_types::{DidChangeTextDocumentParams, MessageType};

use crate::document::{ChangeError, Document, TextChange};
use crate::lsp::convert::line_column;
use crate::lsp::jsonrpc::ResponseError;
use crate::lsp::server::Server;

pub fn handle(server: &mut Server, params: DidChangeTextDocumentParams) {
    let uri = params.text_document.uri.as_str();
    let version = params.text_document.version;
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
    if document.out_of_sync {
        return resync(server, uri, &changes, version);
    }
    match document.apply_changes(&changes, version, encoding) {
        // Generations started before this edit compare against it when they finish.
        // `cursor`: where the last change's text ends. The workspace index records the region as
        // recently edited and prepares the context for the scope there.
        Ok(cursor) => {
            super::inline_completion::buffer_edited(server, uri, cursor);
            crate::lsp::prewarm::edited(server, uri, cursor);
            server.completions.pause = Some(super::inline_completion::Pause::after_edit(uri, cursor));
        }
        Err(ChangeError::StaleVersion { current, received }) if current == received => {
            server.log(MessageType::INFO, format!("ignoring a repeated change to {uri} (version {received})"));
        }
        Err(error) => {
            // Generations running on the old text deliver nothing (they check when they end).
            document.out_of_sync = true;
            server.show(
                MessageType::WARNING,
                format!(
                    "a change to {uri} could not be applied ({error}); completions and code actions are off for it \
                     until the editor sends its full text again (close and reopen the file)"
                ),
            );
        }
    }
}

/// An out-of-sync document comes back with a full-text change (and what follows it).
fn resync(server: &mut Server, uri: &str, changes: &[TextChange], version: i32) {
    let Some(full) = changes.iter().rposition(|change| change.range.is_none()) else {
        tracing::debug!(uri, version, "ignoring an incremental change to a document out of sync");
        return;
    };
    let Some(old) = server.documents.get(uri) else { return };
    let mut fresh = Document::new(uri.to_string(), old.language_id.clone(), i32::MIN, &changes[full].text);
    match fresh.apply_changes(&changes[full + 1..], version, server.encoding) {
        Ok(_) => {
            server.documents.insert(uri.to_string(), fresh);
            // Offsets kept for the old text mean nothing in the new one: warm it as if opened.
            if server.completions.pause.as_ref().is_some_and(|pause| pause.uri == uri) {
                server.completions.pause = None;
            }
            crate::lsp::prewarm::opened(server, uri);
            server.log(MessageType::INFO, format!("{uri} is in sync again (version {version})"));
        }
        Err(error) => tracing::debug!(uri, "a full-text change to a document out of sync failed too: {error}"),
    }
}

/// The answer to a request on a document that is out of sync.
pub fn out_of_sync_error(uri: &str) -> ResponseError {
    ResponseError::request_failed(format!(
        "nib's copy of {uri} is out of sync with the editor (a change could not be applied); send the full text \
         again (close and reopen the file, or send a full-text change) and try again"
    ))
}
