//! `textDocument/codeAction`: offers **Add docstring** (when the function, method or class at
//! the cursor has none) and **Generate unit tests**. Listing is instant; the work happens in
//! `codeAction/resolve`, or in `workspace/executeCommand` for clients without resolve support.

use ls_types::CodeActionParams;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::actions::verify;
use crate::lsp::convert;
use crate::lsp::jsonrpc::ResponseError;
use crate::lsp::server::Server;
use crate::syntax::Language;
use crate::syntax::scopes;

pub const DOCSTRING_KIND: &str = "refactor.rewrite.nib.docstring";
pub const TESTS_KIND: &str = "refactor.nib.tests";
pub const DOCSTRING_COMMAND: &str = "nib.addDocstring";
pub const TESTS_COMMAND: &str = "nib.generateTests";
pub const ALL_DOCSTRINGS_KIND: &str = "source.addDocstrings";
pub const ALL_DOCSTRINGS_COMMAND: &str = "nib.addDocstrings";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionKind {
    Docstring,
    Tests,
    /// Every undocumented function, method and class of the file.
    AllDocstrings,
}

/// What a listed action carries to its resolution.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionData {
    pub action: ActionKind,
    pub uri: String,
    pub version: i32,
    pub position: ls_types::Position,
}

pub fn title(kind: ActionKind, language: Language) -> &'static str {
    match (kind, language) {
        (ActionKind::Docstring, Language::Python) => "Add docstring",
        (ActionKind::Docstring, _) => "Add doc comment",
        (ActionKind::Tests, _) => "Generate unit tests",
        (ActionKind::AllDocstrings, Language::Python) => "Add docstrings to all functions in file",
        (ActionKind::AllDocstrings, _) => "Add doc comments to all functions in file",
    }
}

/// Whether tests for this document would be written without running them (verification off,
/// or no toolchain found; a few `stat` calls, no reads).
fn tests_unverified(server: &Server, document: &crate::document::Document, language: Language) -> bool {
    let root = document
        .path
        .as_deref()
        .and_then(|path| server.workspace_folders.iter().find(|folder| path.starts_with(folder)))
        .cloned()
        .unwrap_or_default();
    verify::unverified_reason(language, server.config.verify_tests, server.config.python_interpreter.as_deref(), &root)
        .is_some()
}

pub fn handle(server: &mut Server, params: CodeActionParams) -> Result<Value, ResponseError> {
    let uri = params.text_document.uri.as_str();
    let Some(document) = server.documents.get(uri) else {
        return Err(ResponseError::invalid_params(format!("document {uri} is not open")));
    };
    if document.out_of_sync {
        return Err(super::did_change::out_of_sync_error(uri));
    }
    let (Some(language), Some(tree)) = (document.language, document.tree.as_ref()) else {
        return Ok(json!([]));
    };
    let byte = convert::request_byte(&document.rope, params.range.start, server.encoding)?;
    let wanted = |kind: &str| {
        params.context.only.as_ref().is_none_or(|only| {
            only.iter().any(|prefix| kind == prefix.as_str() || kind.starts_with(&format!("{}.", prefix.as_str())))
        })
    };
    let scope = scopes::scope_at(language, tree, &document.rope, byte);
    let undocumented = scopes::all_scopes(language, tree, &document.rope).iter().filter(|s| s.doc.is_none()).count();
    let mut actions = Vec::new();
    let candidates = [
        (ActionKind::Docstring, DOCSTRING_KIND, DOCSTRING_COMMAND, scope.as_ref().is_some_and(|s| s.doc.is_none())),
        (ActionKind::Tests, TESTS_KIND, TESTS_COMMAND, scope.is_some()),
        (ActionKind::AllDocstrings, ALL_DOCSTRINGS_KIND, ALL_DOCSTRINGS_COMMAND, undocumented > 0),
    ];
    for (action, kind, command, applicable) in candidates {
        if !applicable || !wanted(kind) {
            continue;
        }
        let data = ActionData { action, uri: uri.to_string(), version: document.version, position: params.range.start };
        let title = match (&scope, action) {
            (_, ActionKind::AllDocstrings) => format!("{} ({undocumented}) (nib)", title(action, language)),
            (Some(scope), ActionKind::Tests) if tests_unverified(server, document, language) => {
                format!("{} for `{}` (unverified) (nib)", title(action, language), scope.name)
            }
            (Some(scope), _) => format!("{} for `{}` (nib)", title(action, language), scope.name),
            (None, _) => continue,
        };
        let mut entry = json!({ "title": title, "kind": kind, "data": data });
        if !server.client.code_action_resolve {
            entry["command"] = json!({ "title": title, "command": command, "arguments": [data] });
        }
        actions.push(entry);
    }
    Ok(Value::Array(actions))
}
