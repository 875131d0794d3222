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
use crate::actions::project_files::ProjectFiles;
use crate::actions::{self, ActionError, Target, docstring, unit_tests, verify};
use crate::document::path_to_file_uri;
use crate::engine::{CancelToken, EngineError};
use crate::lsp::convert;
use crate::lsp::jsonrpc::{self, ResponseError, code};
use crate::lsp::server::{PendingReply, Responder, Server};
use crate::position::PositionEncoding;
use crate::syntax::scopes;

/// How the result reaches the client.
pub enum Delivery {
    /// The resolved code action, with its `edit`.
    Resolve(Value),
    /// `workspace/applyEdit`, then a `null` reply to `workspace/executeCommand`.
    ApplyEdit,
}

pub fn handle(server: &mut Server, responder: Responder, action: Value) {
    let data = match action.get("data").cloned().map(serde_json::from_value::<ActionData>) {
        Some(Ok(data)) => data,
        _ => {
            return responder.respond(Err(ResponseError::invalid_params("this code action has no nib data")));
        }
    };
    run(server, responder, data, Delivery::Resolve(action));
}

/// What one resolution does, with everything it needs captured from the main loop.
enum Work {
    Docstring(Target),
    Tests(verify::Job),
    AllDocstrings(Vec<Target>),
}

impl Work {
    fn title(&self) -> String {
        match self {
            Work::Docstring(target) => format!("nib: documenting `{}`", target.scope.name),
            Work::Tests(job) => format!("nib: writing tests for `{}`", job.target.scope.name),
            Work::AllDocstrings(targets) => format!("nib: documenting {} items", targets.len()),
        }
    }

    /// The document the edit is computed for: (uri, version).
    fn source(&self) -> (String, i32) {
        match self {
            Work::Docstring(target) => (target.uri.clone(), target.version),
            Work::Tests(job) => (job.target.uri.clone(), job.target.version),
            Work::AllDocstrings(targets) => targets.first().map_or((String::new(), 0), |t| (t.uri.clone(), t.version)),
        }
    }
}

fn work(server: &Server, data: &ActionData) -> Result<Work, ResponseError> {
    match data.action {
        ActionKind::Docstring => Ok(Work::Docstring(target(server, data)?)),
        ActionKind::Tests => {
            let target = target(server, data)?;
            // The plan reads project files: that happens on the tests' thread (`run_tests`).
            let open: Vec<(std::path::PathBuf, String)> =
                server.documents.values().filter_map(|d| d.path.clone().map(|p| (p, d.text()))).collect();
            Ok(Work::Tests(verify::Job {
                target,
                folders: server.workspace_folders.clone(),
                files: ProjectFiles::new(server.workspace_folders.clone(), open),
                verify: server.config.verify_tests,
                python_interpreter: server.config.python_interpreter.clone(),
                queue: server.engine.task_queue(),
                cancel: CancelToken::default(),
            }))
        }
        ActionKind::AllDocstrings => {
            let (document, language, tree) = current_document(server, data)?;
            let targets: Vec<Target> = scopes::all_scopes(language, &tree, &document.rope)
                .into_iter()
                .filter(|scope| scope.doc.is_none())
                .map(|scope| Target {
                    uri: document.uri.clone(),
                    path: document.path.clone(),
                    version: document.version,
                    language,
                    rope: document.rope.clone(),
                    tree: tree.clone(),
                    scope,
                })
                .collect();
            if targets.is_empty() {
                return Err(ResponseError::request_failed("every function, method and class is documented already"));
            }
            Ok(Work::AllDocstrings(targets))
        }
    }
}

/// Whether `file` (or, before it exists, its folder) really lies in a workspace folder once
/// symbolic links are resolved: a link inside the folder must not lead an edit elsewhere.
fn really_inside(file: &Path, folders: &[std::path::PathBuf]) -> bool {
    let real = match file.canonicalize() {
        Ok(real) => real,
        Err(_) => match file.parent().map(Path::canonicalize) {
            Some(Ok(folder)) => folder,
            _ => return false,
        },
    };
    folders.iter().filter_map(|folder| folder.canonicalize().ok()).any(|folder| real.starts_with(folder))
}

fn insertions_json(
    uri: &str,
    version: i32,
    rope: &Rope,
    insertions: &[actions::Insertion],
    encoding: PositionEncoding,
) -> Value {
    let edits: Vec<Value> = insertions
        .iter()
        .map(|insertion| {
            let at = convert::to_position(rope, insertion.offset, encoding);
            json!({ "range": { "start": at, "end": at }, "newText": insertion.text })
        })
        .collect();
    json!({ "documentChanges": [{ "textDocument": { "uri": uri, "version": version }, "edits": edits }] })
}

/// Starts the generation for `data`; `responder` is answered when it ends.
pub fn run(server: &mut Server, responder: Responder, data: ActionData, delivery: Delivery) {
    let work = match work(server, &data) {
        Ok(work) => work,
        Err(error) => return responder.respond(Err(error)),
    };
    let cancel = match &work {
        Work::Tests(job) => job.cancel.clone(),
        _ => CancelToken::default(),
    };
    server.track(responder.id(), &cancel);
    let progress = Progress::begin(server, &cancel, work.title());
    let open_versions: Vec<(String, i32)> = server.documents.values().map(|d| (d.uri.clone(), d.version)).collect();
    let versions = Arc::clone(&server.versions);
    let encoding = server.encoding;
    let style = server.config.docstring_style;
    let output = server.output.clone();
    if let Work::Tests(job) = work {
        let open_versions: Vec<(String, i32)> = open_versions;
        return run_tests(job, TestsReply { progress, output, versions, encoding, open_versions, responder, delivery });
    }
    server.engine.run(Box::new(move |model| {
        let result: Result<Value, ActionError> = model.map_err(ActionError::from).and_then(|model| match &work {
            Work::Docstring(target) => docstring::generate(model, target, style, cancel.clone())
                .map(|insertion| insertions_json(&target.uri, target.version, &target.rope, &[insertion], encoding)),
            Work::Tests(_) => unreachable!("tests run on their own thread"),
            Work::AllDocstrings(targets) => {
                let total = targets.len();
                let mut write = |target: &Target, facts: &docstring::Facts, index: usize| {
                    progress.report(
                        &output,
                        &format!("{} of {total}: `{}`", index + 1, target.scope.name),
                        index * 100 / total,
                    );
                    docstring::write_prose(model, target, facts, cancel.clone())
                };
                docstring::document_all(targets, style, &mut write).map(|insertions| {
                    let first = &targets[0];
                    insertions_json(&first.uri, first.version, &first.rope, &insertions, encoding)
                })
            }
        });
        cancel.finish();
        let (uri, version) = work.source();
        let still_current = versions.lock().unwrap_or_else(|e| e.into_inner()).get(&uri) == Some(&version);
        deliver(result, still_current, &progress, &output, responder, delivery);
    }));
}

/// What a test generation needs to answer when it ends.
struct TestsReply {
    progress: Progress,
    output: crossbeam_channel::Sender<Value>,
    versions: Arc<std::sync::Mutex<std::collections::HashMap<String, i32>>>,
    encoding: PositionEncoding,
    open_versions: Vec<(String, i32)>,
    responder: Responder,
    delivery: Delivery,
}

/// Writes (and, where it can, runs) the tests on a thread of their own: test runs never
/// happen on the main loop or the engine thread, which only gets the model's rounds.
fn run_tests(job: verify::Job, reply: TestsReply) {
    let spawned = std::thread::Builder::new().name("nib-tests".into()).spawn(move || {
        let TestsReply { progress, output, versions, encoding, open_versions, responder, delivery } = reply;
        let note = |message: &str| progress.note(&output, message);
        let written = verify::write_tests(&job, &note);
        job.cancel.finish();
        let target = &job.target;
        let still_current =
            versions.lock().unwrap_or_else(|e| e.into_inner()).get(&target.uri) == Some(&target.version);
        let result = written.and_then(|written| {
            if !really_inside(&written.edit.file, &job.folders) {
                return Err(ActionError::Rejected(format!(
                    "{} leads outside the workspace folders (through a symbolic link); nothing was written",
                    written.edit.file.display()
                )));
            }
            if still_current {
                let kind = if written.verified { MessageType::INFO } else { MessageType::WARNING };
                let _ = output.send(jsonrpc::notification(
                    "window/showMessage",
                    json!({ "type": kind, "message": format!("nib: {}", written.message) }),
                ));
            }
            Ok(test_edit_json(&written.edit, target, &open_versions, encoding, written.existing.as_deref()))
        });
        deliver(result, still_current, &progress, &output, responder, delivery);
    });
    if let Err(error) = spawned {
        tracing::error!("cannot start a thread for the tests: {error}");
    }
}

/// Answers the request with the edit, or says why there is none.
fn deliver(
    result: Result<Value, ActionError>,
    still_current: bool,
    progress: &Progress,
    output: &crossbeam_channel::Sender<Value>,
    responder: Responder,
    delivery: Delivery,
) {
    match result {
        Ok(_) if !still_current => {
            progress.end(output, "the document changed");
            responder.respond(Err(ResponseError::new(
                code::CONTENT_MODIFIED,
                "the document changed while nib was generating; nothing was applied — run the action again",
            )));
        }
        Ok(edit) => {
            progress.end(output, "done");
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
            progress.end(output, "cancelled");
            responder.respond(Err(ResponseError::cancelled()));
        }
        Err(error) => {
            progress.end(output, "failed");
            let message = error.to_string();
            let _ = output.send(jsonrpc::notification(
                "window/showMessage",
                json!({ "type": MessageType::ERROR, "message": format!("nib: {message}") }),
            ));
            responder.respond(Err(ResponseError::request_failed(message)));
        }
    }
}

/// The open document of `data`, unchanged since the action was listed, with its grammar.
fn current_document<'a>(
    server: &'a Server,
    data: &ActionData,
) -> Result<(&'a crate::document::Document, crate::syntax::Language, tree_sitter::Tree), ResponseError> {
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
    match (document.language, document.tree.clone()) {
        (Some(language), Some(tree)) => Ok((document, language, tree)),
        _ => Err(ResponseError::request_failed("nib has no grammar for this language")),
    }
}

/// The function, method or class the action was listed for, as the document is now.
fn target(server: &Server, data: &ActionData) -> Result<Target, ResponseError> {
    let (document, language, tree) = current_document(server, data)?;
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
pub struct Progress {
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

    fn report(&self, output: &crossbeam_channel::Sender<Value>, message: &str, percentage: usize) {
        if let Some(token) = &self.token {
            let _ = output.send(jsonrpc::notification(
                "$/progress",
                json!({ "token": token, "value": { "kind": "report", "message": message, "percentage": percentage } }),
            ));
        }
    }

    /// A step without a percentage ("running 6 candidate tests").
    fn note(&self, output: &crossbeam_channel::Sender<Value>, message: &str) {
        if let Some(token) = &self.token {
            let _ = output.send(jsonrpc::notification(
                "$/progress",
                json!({ "token": token, "value": { "kind": "report", "message": message } }),
            ));
        }
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
pub fn cancel_progress(server: &Server, token: &str) {
    for (_, cancel) in server.progress_tokens.iter().filter(|(t, _)| t == token) {
        cancel.cancel();
    }
}
