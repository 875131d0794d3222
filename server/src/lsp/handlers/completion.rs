//! `textDocument/completion`: the fallback for clients without inline completion. It answers
//! one item holding the same text the inline completion would show.

use ls_types::CompletionParams;

use super::inline_completion::{Shape, complete};
use crate::lsp::server::{Responder, Server};

pub fn handle(server: &mut Server, responder: Responder, params: CompletionParams) {
    let position = params.text_document_position.position;
    let uri = params.text_document_position.text_document.uri.as_str().to_string();
    let invoked =
        params.context.is_some_and(|context| context.trigger_kind == ls_types::CompletionTriggerKind::INVOKED);
    complete(server, responder, &uri, position, invoked, None, Shape::CompletionList);
}
