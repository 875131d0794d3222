//! `nib/inspect`: what the server believes about a document (its copy of the text, parse
//! state, the scope at a position) and the engine's state. Documented in
//! `docs/lsp-extensions.md`; tests and users read the server's mind through it.

use ls_types::{Position, TextDocumentIdentifier};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{engine_event, inline_completion};
use crate::completion::prompt;
use crate::lsp::convert;
use crate::lsp::jsonrpc::ResponseError;
use crate::lsp::server::Server;
use crate::syntax::{self, scopes};

/// nib's own request (docs/lsp-extensions.md).
pub const METHOD: &str = "nib/inspect";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    text_document: TextDocumentIdentifier,
    position: Option<Position>,
    /// Also compare the incremental syntax tree with a fresh parse (slow on big files).
    #[serde(default)]
    check_tree: bool,
    /// Also return the completion prompt nib would build at `position`.
    #[serde(default)]
    prompt: bool,
}

pub fn handle(server: &mut Server, params: Params) -> Result<Value, ResponseError> {
    let uri = params.text_document.uri.as_str();
    let not_open = || ResponseError::invalid_params(format!("document {uri} is not open"));
    let prompt_at = match (params.prompt, params.position) {
        (true, Some(position)) => {
            let document = server.documents.get(uri).ok_or_else(not_open)?;
            Some(convert::request_byte(&document.rope, position, server.encoding)?)
        }
        _ => None,
    };
    let prompt = prompt_at.and_then(|cursor| inline_completion::prepare_for(server, uri, cursor)).map(|prepared| {
        json!({
            "text": prompt::render(&prepared.prompt),
            "mode": format!("{:?}", prepared.mode),
            "maxTokens": prepared.max_tokens,
            "sources": prepared.context.sources,
            "grounded": prepared.grounded.as_ref().map(|grounded| json!({ "text": grounded.text, "source": grounded.source })),
        })
    });
    let document = server.documents.get(uri).ok_or_else(not_open)?;
    let rope = &document.rope;
    let scope = match (params.position, document.language, document.tree()) {
        (Some(position), Some(language), Some(tree)) => {
            let byte = convert::request_byte(rope, position, server.encoding)?;
            scopes::scope_at(language, tree, rope, byte).map(|scope| {
                json!({
                    "kind": scope.kind.as_str(),
                    "name": scope.name,
                    "range": convert::to_range(rope, scope.range.clone(), server.encoding),
                })
            })
        }
        _ => None,
    };
    let tree_matches_fresh_parse = params.check_tree.then(|| {
        let fresh = document.fresh_tree().map(|tree| tree.root_node().to_sexp());
        fresh == document.tree().map(|tree| tree.root_node().to_sexp())
    });
    Ok(json!({
        "uri": document.uri,
        "treeMatchesFreshParse": tree_matches_fresh_parse,
        "version": document.version,
        "outOfSync": document.out_of_sync,
        "languageId": document.language_id,
        "language": document.language.map(|language| language.name()),
        "text": document.text(),
        "lineCount": rope.len_lines(),
        "parseErrorCount": document.tree().map(syntax::error_count),
        "scope": scope,
        "prompt": prompt,
        "engine": engine_event::status_json(&server.engine.status()),
        "workspaceIndex": index_status_json(&server.index.status()),
        "prewarm": crate::lsp::prewarm::status_json(server),
    }))
}

/// The workspace index's state: `off`, `indexing` or `ready`, and what it holds.
fn index_status_json(status: &crate::index::Status) -> Value {
    json!({
        "state": status.state,
        "files": status.files,
        "chunks": status.chunks,
        "heapBytes": status.heap_bytes,
        "buildMs": status.build_ms,
        "capped": status.capped,
    })
}
