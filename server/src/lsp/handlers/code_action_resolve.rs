//! `codeAction/resolve` (and the `workspace/executeCommand` fallback): runs a docstring or
//! unit-test generation on the engine thread with cancellable `$/progress`, and answers with a
//! versioned workspace edit. Nothing is written when the document changed meanwhile, when the
//! result fails its checks, or when a file lies outside the workspace; an existing test file is
//! only ever appended to.

use std::path::Path;
use std::sync::Arc;

use ls_types::MessageType;
use ropey::Rope;
use serde_json::{Value, json};

use super::code_action::{ActionData, ActionKind};
use crate::actions::{ActionError, Target, docstring, unit_tests};
use crate::document::path_to_file_uri;
use crate::engine::{CancelToken, EngineError};
use crate::lsp::convert;
use crate::lsp::jsonrpc::{self, ResponseError, code};
use crate::lsp::server::{PendingReply, Responder, Server};
use crate::position::PositionEncoding;
use crate::syntax::scopes;

/// How the result reaches the client.
pub(crate) enum Delivery {
    /// The resolved code action, with its `edit`.
    Resolve(Value),
    /// `workspace/applyEdit`, then a `null` reply to `workspace/executeCommand`.
    ApplyEdit,
}

pub(crate) fn handle(server: &mut Server, responder: Responder, action: Value) {
    let data = match action.get("data").cloned().map(serde_json::from_value::<ActionData>) {
        Some(Ok(data)) => data,
        _ => {
            return responder.respond(Err(ResponseError::invalid_params("this code action has no nib data")));
        }
    };
    run(server, responder, data, Delivery::Resolve(action));
}

/// Starts the generation for `data`; `responder` is answered when it ends.
pub(crate) fn run(server: &mut Server, responder: Responder, data: ActionData, delivery: Delivery) {
    let target = match target(server, &data) {
        Ok(target) => target,
        Err(error) => return responder.respond(Err(error)),
    };
    let cancel = CancelToken::default();
    server.track(responder.id(), &cancel);
    let progress = Progress::begin(server, &cancel, actions_title(data.action, &target));
    let plan = match data.action {
        ActionKind::Docstring => None,
        ActionKind::Tests => {
            let open: Vec<(std::path::PathBuf, String)> =
                server.documents.values().filter_map(|d| d.path.clone().map(|p| (p, d.text()))).collect();
            let read = move |path: &Path| {
                open.iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, text)| text.clone())
                    .or_else(|| std::fs::read_to_string(path).ok())
            };
            match unit_tests::plan(&target, &server.workspace_folders, &read) {
                Ok(plan) => Some(plan),
                Err(error) => {
                    progress.end(&server.output, "not possible");
                    return responder.respond(Err(ResponseError::request_failed(error.to_string())));
                }
            }
        }
    };
    let open_versions: Vec<(String, i32)> = server.documents.values().map(|d| (d.uri.clone(), d.version)).collect();
    let versions = Arc::clone(&server.versions);
    let encoding = server.encoding;
    let style = server.config.docstring_style;
    let output = server.output.clone();
    server.engine.run(Box::new(move |model| {
        let result: Result<Value, ActionError> = model.map_err(ActionError::from).and_then(|model| match &plan {
            None => docstring::generate(model, &target, style, cancel.clone()).map(|insertion| {
                let rope = &target.rope;
                let at = convert::to_position(rope, insertion.offset, encoding);
                json!({ "documentChanges": [{
                    "textDocument": { "uri": target.uri, "version": target.version },
                    "edits": [{ "range": { "start": at, "end": at }, "newText": insertion.text }],
                }]})
            }),
            Some(plan) => unit_tests::generate(model, &target, plan, cancel.clone())
                .map(|edit| test_edit_json(&edit, &target, &open_versions, encoding, plan.existing.as_deref())),
        });
        cancel.finish();
        let still_current =
            versions.lock().unwrap_or_else(|e| e.into_inner()).get(&target.uri) == Some(&target.version);
        match result {
            Ok(_) if !still_current => {
                progress.end(&output, "the document changed");
                responder.respond(Err(ResponseError::new(
                    code::CONTENT_MODIFIED,
                    "the document changed while nib was generating; nothing was applied — run the action again",
                )));
            }
            Ok(edit) => {
                progress.end(&output, "done");
                match delivery {
                    Delivery::Resolve(mut action) => {
                        action["edit"] = edit;
                        responder.respond(Ok(action));
                    }
                    Delivery::ApplyEdit => {
                        let id = jsonrpc::RequestId::String(format!("nib-apply-{}", responder.id()));
                        let _ = output.send(jsonrpc::request(
                            &id,
                            "workspace/applyEdit",
                            json!({ "label": "nib", "edit": edit }),
                        ));
                        responder.respond(Ok(Value::Null));
                    }
                }
            }
            Err(ActionError::Engine(EngineError::Cancelled)) => {
                progress.end(&output, "cancelled");
                responder.respond(Err(ResponseError::cancelled()));
            }
            Err(error) => {
                progress.end(&output, "failed");
                let message = error.to_string();
                let _ = output.send(jsonrpc::notification(
                    "window/showMessage",
                    json!({ "type": MessageType::ERROR, "message": format!("nib: {message}") }),
                ));
                responder.respond(Err(ResponseError::request_failed(message)));
            }
        }
    }));
}

fn actions_title(kind: ActionKind, target: &Target) -> String {
    match kind {
        ActionKind::Docstring => format!("nib: documenting `{}`", target.scope.name),
        ActionKind::Tests => format!("nib: writing tests for `{}`", target.scope.name),
    }
}

/// The function, method or class the action was listed for, as the document is now.
fn target(server: &Server, data: &ActionData) -> Result<Target, ResponseError> {
    let document = server
        .documents
        .get(&data.uri)
        .ok_or_else(|| ResponseError::invalid_params(format!("document {} is not open", data.uri)))?;
    if document.version != data.version {
        return Err(ResponseError::new(
            code::CONTENT_MODIFIED,
            "the document changed since the action was offered; nothing was applied — run it again",
        ));
    }
    let (Some(language), Some(tree)) = (document.language, document.tree.clone()) else {
        return Err(ResponseError::request_failed("nib has no grammar for this language"));
    };
    let byte = convert::request_byte(&document.rope, data.position, server.encoding)?;
    let scope = scopes::scope_at(language, &tree, &document.rope, byte)
        .ok_or_else(|| ResponseError::request_failed("there is no function, method or class here any more"))?;
    Ok(Target {
        uri: document.uri.clone(),
        path: document.path.clone(),
        version: document.version,
        language,
        rope: document.rope.clone(),
        tree,
        scope,
    })
}

/// The workspace edit for generated tests: create the file if needed (never overwriting), then
/// insert at its end (or into the source file's test module).
fn test_edit_json(
    edit: &unit_tests::TestEdit,
    target: &Target,
    open_versions: &[(String, i32)],
    encoding: PositionEncoding,
    existing: Option<&str>,
) -> Value {
    let uri = if Some(edit.file.as_path()) == target.path.as_deref() {
        target.uri.clone()
    } else {
        path_to_file_uri(&edit.file)
    };
    let rope = Rope::from_str(existing.unwrap_or(""));
    let at = convert::to_position(&rope, edit.insertion.offset, encoding);
    let version = open_versions.iter().find(|(open, _)| *open == uri).map(|(_, version)| *version);
    let mut changes = Vec::new();
    if edit.create {
        changes
            .push(json!({ "kind": "create", "uri": uri, "options": { "ignoreIfExists": true, "overwrite": false } }));
    }
    changes.push(json!({
        "textDocument": { "uri": uri, "version": version },
        "edits": [{ "range": { "start": at, "end": at }, "newText": edit.insertion.text }],
    }));
    json!({ "documentChanges": changes })
}

/// Work-done progress for one action, cancellable from the client.
pub(crate) struct Progress {
    token: Option<String>,
}

impl Progress {
    fn begin(server: &mut Server, cancel: &CancelToken, title: String) -> Progress {
        if !server.client.work_done_progress {
            return Progress { token: None };
        }
        let token = format!("nib/action/{}", server.next_progress_id());
        server.request_client("window/workDoneProgress/create", json!({ "token": token }), PendingReply::Ignore);
        server.notify(
            "$/progress",
            json!({ "token": token, "value": { "kind": "begin", "title": title, "cancellable": true } }),
        );
        server.progress_tokens.retain(|(_, cancel)| !cancel.is_finished());
        server.progress_tokens.push((token.clone(), cancel.clone()));
        Progress { token: Some(token) }
    }

    fn end(&self, output: &crossbeam_channel::Sender<Value>, message: &str) {
        if let Some(token) = &self.token {
            let _ = output.send(jsonrpc::notification(
                "$/progress",
                json!({ "token": token, "value": { "kind": "end", "message": message } }),
            ));
        }
    }
}

/// `window/workDoneProgress/cancel`: the user pressed cancel on a progress notification.
pub(crate) fn cancel_progress(server: &Server, token: &str) {
    for (_, cancel) in server.progress_tokens.iter().filter(|(t, _)| t == token) {
        cancel.cancel();
    }
}
