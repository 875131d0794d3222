//! `textDocument/codeAction`: offers **Add docstring** (when the function, method or class at
//! the cursor has none) and **Generate unit tests**. Listing is instant; the work happens in
//! `codeAction/resolve`, or in `workspace/executeCommand` for clients without resolve support.

use ls_types::{CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams, Command};

use crate::actions::verify;
use crate::lsp::code_actions::{self, ACTIONS, ActionData, Place};
use crate::lsp::convert;
use crate::lsp::jsonrpc::ResponseError;
use crate::lsp::server::Server;
use crate::syntax::scopes;

/// Whether tests for this document would be written without running them (verification off,
/// or no toolchain found; a few `stat` calls, no reads).
fn tests_unverified(server: &Server, document: &crate::document::Document, language: crate::syntax::Language) -> bool {
    let root = document
        .path
        .as_deref()
        .and_then(|path| server.workspace_folders.iter().find(|folder| path.starts_with(folder)))
        .cloned()
        .unwrap_or_default();
    let (verify, interpreter) = (server.config.verify_tests, server.config.python_interpreter.as_deref());
    verify::unverified_reason(language, verify, interpreter, &root, document.path.as_deref()).is_some()
}

pub fn handle(server: &mut Server, params: CodeActionParams) -> Result<Vec<CodeActionOrCommand>, ResponseError> {
    let uri = params.text_document.uri.as_str();
    let Some(document) = server.documents.get(uri) else {
        return Err(ResponseError::invalid_params(format!("document {uri} is not open")));
    };
    if document.out_of_sync {
        return Err(super::did_change::out_of_sync_error(uri));
    }
    let (Some(language), Some(tree)) = (document.language, document.tree()) else {
        return Ok(Vec::new());
    };
    let byte = convert::request_byte(&document.rope, params.range.start, server.encoding)?;
    let wanted = |kind: &str| {
        params.context.only.as_ref().is_none_or(|only| {
            only.iter().any(|prefix| kind == prefix.as_str() || kind.starts_with(&format!("{}.", prefix.as_str())))
        })
    };
    let scope = scopes::scope_at(language, tree, &document.rope, byte);
    let undocumented = scopes::all_scopes(language, tree, &document.rope).iter().filter(|s| s.doc.is_none()).count();
    let tests_unverified = tests_unverified(server, document, language);
    let place = Place { language, scope: scope.as_ref(), undocumented, tests_unverified };
    let mut listed = Vec::new();
    for action in ACTIONS {
        let kind = code_actions::kind(*action);
        let Some(title) = action.title(&place).filter(|_| wanted(&kind)) else { continue };
        let data = ActionData {
            action: action.name().to_string(),
            uri: uri.to_string(),
            version: document.version,
            position: params.range.start,
        };
        let data = serde_json::to_value(data).expect("action data serializes");
        let command = (!server.client.code_action_resolve).then(|| Command {
            title: title.clone(),
            command: code_actions::command(*action),
            arguments: Some(vec![data.clone()]),
        });
        listed.push(CodeActionOrCommand::CodeAction(CodeAction {
            title,
            kind: Some(CodeActionKind::from(kind)),
            command,
            data: Some(data),
            ..CodeAction::default()
        }));
    }
    Ok(listed)
}
