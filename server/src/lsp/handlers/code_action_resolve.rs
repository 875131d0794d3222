//! `codeAction/resolve` (and the `workspace/executeCommand` fallback): runs a docstring
//! generation on the engine thread, or a unit-test generation on the worker pool (which also
//! runs the tests: `actions::verify`), with cancellable `$/progress`, and answers with a
//! versioned workspace edit. Nothing is written when the document changed meanwhile, when the
//! result fails its checks, or when a file lies outside the workspace; an existing test file is
//! only ever appended to.

use ls_types::notification::ShowMessage;
use ls_types::{
    MessageType, ShowMessageParams, WorkDoneProgress, WorkDoneProgressBegin, WorkDoneProgressEnd,
    WorkDoneProgressReport,
};
use ropey::Rope;
use serde_json::{Value, json};

use crate::actions::project_files::ProjectFiles;
use crate::actions::{self, ActionError, Target, docstring, unit_tests, verify};
use crate::engine::{CancelToken, EngineError};
use crate::lsp::code_actions::{self, ActionData, CodeAction};
use crate::lsp::convert;
use crate::lsp::jsonrpc::{self, ResponseError, code};
use crate::lsp::server::{Responder, Server};
use crate::lsp::{model_wait, workspace_edit, workspace_guard};
use crate::pool::Outcome;
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
    match code_actions::by_name(&data.action) {
        Ok(registered) => resolve_when_ready(server, responder, registered, data, Delivery::Resolve(action)),
        Err(error) => responder.respond(Err(error)),
    }
}

/// Resolves `data` with `action` once the model is ready: an action asked for while the model
/// loads waits for it (bounded and cancellable: `model_wait`).
pub fn resolve_when_ready(
    server: &mut Server,
    responder: Responder,
    action: &'static dyn CodeAction,
    data: ActionData,
    delivery: Delivery,
) {
    if model_wait::model_is_loading(server) {
        return model_wait::park(server, responder, move |server, responder| {
            resolve_when_ready(server, responder, action, data, delivery)
        });
    }
    action.resolve(server, responder, &data, delivery);
}

/// What one resolution does, with everything it needs captured from the main loop.
enum Work {
    Docstring(Box<Target>),
    AllDocstrings(Vec<Target>),
}

impl Work {
    fn title(&self) -> String {
        match self {
            Work::Docstring(target) => format!("nib: documenting `{}`", target.scope.name),
            Work::AllDocstrings(targets) => format!("nib: documenting {} items", targets.len()),
        }
    }

    /// The document the edit is computed for: (uri, version).
    fn source(&self) -> (String, i32) {
        match self {
            Work::Docstring(target) => (target.uri.clone(), target.version),
            Work::AllDocstrings(targets) => targets.first().map_or((String::new(), 0), |t| (t.uri.clone(), t.version)),
        }
    }
}

/// Every undocumented function, method and class of the document of `data`.
fn undocumented_targets(server: &Server, data: &ActionData) -> Result<Vec<Target>, ResponseError> {
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
    Ok(targets)
}

/// Generate unit tests, on the worker pool: the plan (project files are read there), then
/// `verify::write_tests` (candidates, sandboxed runs, repairs; each model round is queued on
/// the engine and waited for on the pool thread). Progress and the reply are made on the main
/// loop from the messages it posts.
pub fn write_tests(server: &mut Server, responder: Responder, data: &ActionData, delivery: Delivery) {
    let target = match target(server, data) {
        Ok(target) => target,
        Err(error) => return responder.respond(Err(error)),
    };
    let PoolAction { files, open_versions, folders, cancel, progress } =
        PoolAction::start(server, &responder, format!("nib: writing tests for `{}`", target.scope.name));
    let job = verify::Job {
        target: target.clone(),
        folders: folders.clone(),
        files,
        verify: server.config.verify_tests,
        python_interpreter: server.config.python_interpreter.clone(),
        queue: server.engine.task_queue(),
        cancel: cancel.clone(),
        budget: verify::budget::Budget::new(server.config.tests_time_budget),
        calls_from_code: true,
    };
    let main_loop = server.main_loop.clone();
    let (notes, reporter) = (main_loop.clone(), progress.clone());
    server.pool.submit(
        cancel.clone(),
        move |_| {
            let plan = unit_tests::plan(&job.target, &job.folders, &job.files)
                .map_err(|error| ResponseError::request_failed(error.to_string()))?;
            workspace_guard::check(&plan.file, &folders).map_err(ResponseError::request_failed)?;
            let note = |message: &str| {
                let (progress, message) = (reporter.clone(), message.to_string());
                notes.post(move |server| progress.note(server, &message));
            };
            Ok(verify::write_tests(&job, plan, &note).and_then(|written| {
                // The file system may have changed while the tests were written and run.
                workspace_guard::check(&written.edit.file, &folders).map_err(ActionError::Rejected)?;
                Ok(written)
            }))
        },
        move |outcome| {
            cancel.finish();
            main_loop.post(move |server| {
                tests_written(server, outcome, &target, &open_versions, &progress, responder, delivery)
            });
        },
    );
}

/// On the main loop once writing tests ended: the edit, when the document is still the version
/// the tests were written for, and the summary once the editor has the edit.
fn tests_written(
    server: &mut Server,
    outcome: Outcome<Result<Result<verify::Written, ActionError>, ResponseError>>,
    target: &Target,
    open_versions: &[(String, i32)],
    progress: &Progress,
    responder: Responder,
    delivery: Delivery,
) {
    let result = match outcome {
        Outcome::Done(Ok(result)) => result,
        // The plan failed (outside the workspace, a link, no module path): no run.
        Outcome::Done(Err(error)) => {
            progress.end(server, "failed");
            return responder.respond(Err(error));
        }
        Outcome::Cancelled => Err(ActionError::Engine(EngineError::Cancelled)),
        Outcome::Panicked(why) => Err(panicked("writing tests", &why)),
    };
    let still_current = still_current(server, target);
    let mut summary = None;
    let edit = result.map(|written| {
        let typ = if written.verified { MessageType::INFO } else { MessageType::WARNING };
        summary = Some(ShowMessageParams { typ, message: format!("nib: {}", written.message) });
        let output = Output::Tests(written.edit, written.existing);
        edit_json(output, open_versions, server.encoding)
    });
    // The summary says what was written: only when the edit went to the editor.
    if deliver(server, edit, still_current, progress, responder, delivery)
        && let Some(summary) = summary
    {
        server.notify_typed::<ShowMessage>(summary);
    }
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

/// Add docstring: documents the function, method or class of `data`; a Python function gets
/// examples checked by doctest when verification is on (`verify::doc_examples`, on the pool).
pub fn document_one(server: &mut Server, responder: Responder, data: &ActionData, delivery: Delivery) {
    match target(server, data) {
        Ok(target) if verify::doc_examples::wanted(&target, server.config.verify_tests) => {
            document_with_examples(server, responder, target, delivery)
        }
        work => start_now(server, responder, work.map(|target| Work::Docstring(Box::new(target))), delivery),
    }
}

fn document_with_examples(server: &mut Server, responder: Responder, target: Target, delivery: Delivery) {
    let PoolAction { files, open_versions, folders, cancel, progress } =
        PoolAction::start(server, &responder, format!("nib: documenting `{}`", target.scope.name));
    let job = verify::doc_examples::Job {
        target: target.clone(),
        style: server.config.docstring_style,
        configured_interpreter: server.config.python_interpreter.clone(),
        files,
        folders,
        queue: server.engine.task_queue(),
        cancel: cancel.clone(),
    };
    let main_loop = server.main_loop.clone();
    let (notes, reporter) = (main_loop.clone(), progress.clone());
    server.pool.submit(
        cancel.clone(),
        move |_| {
            let note = |message: &str| {
                let (progress, message) = (reporter.clone(), message.to_string());
                notes.post(move |server| progress.note(server, &message));
            };
            verify::doc_examples::document(&job, &note)
        },
        move |outcome| {
            cancel.finish();
            main_loop.post(move |server| {
                documented(server, outcome, target, &open_versions, &progress, responder, delivery)
            });
        },
    );
}

/// What an action that runs on the pool takes from the main loop when it starts.
struct PoolAction {
    /// The workspace's files, open buffers first.
    files: ProjectFiles,
    open_versions: Vec<(String, i32)>,
    folders: Vec<std::path::PathBuf>,
    cancel: CancelToken,
    progress: Progress,
}

impl PoolAction {
    /// Cancellable (by the request's id) and with progress titled `title`.
    fn start(server: &mut Server, responder: &Responder, title: String) -> PoolAction {
        let open: Vec<(std::path::PathBuf, String)> =
            server.documents.values().filter_map(|d| d.path.clone().map(|p| (p, d.text()))).collect();
        let folders = server.workspace_folders.clone();
        let cancel = CancelToken::default();
        server.track(responder.id(), &cancel);
        let progress = Progress::begin(server, &cancel, title);
        PoolAction {
            files: ProjectFiles::new(folders.clone(), open),
            open_versions: open_versions(server),
            folders,
            cancel,
            progress,
        }
    }
}

/// A pool job that panicked, as the action's error (the panic goes to the log).
fn panicked(doing: &str, why: &str) -> ActionError {
    tracing::error!("{doing} panicked: {why}");
    ActionError::Rejected(format!("internal error while {doing}"))
}

/// Whether the document is still the version `target` was read from.
fn still_current(server: &Server, target: &Target) -> bool {
    server.documents.get(&target.uri).filter(|document| !document.out_of_sync).map(|document| document.version)
        == Some(target.version)
}

/// On the main loop once a docstring with examples is written: the edit, when the document is
/// still the version it was written for, and the summary once the editor has it.
fn documented(
    server: &mut Server,
    outcome: Outcome<Result<verify::doc_examples::Documented, ActionError>>,
    target: Target,
    open_versions: &[(String, i32)],
    progress: &Progress,
    responder: Responder,
    delivery: Delivery,
) {
    let result = match outcome {
        Outcome::Done(result) => result,
        Outcome::Cancelled => Err(ActionError::Engine(EngineError::Cancelled)),
        Outcome::Panicked(why) => Err(panicked("writing the docstring", &why)),
    };
    let still_current = still_current(server, &target);
    let mut summary = None;
    let edit = result.map(|documented| {
        summary = (!documented.message.is_empty())
            .then(|| ShowMessageParams { typ: MessageType::INFO, message: format!("nib: {}", documented.message) });
        edit_json(Output::Insertions(target, vec![documented.insertion]), open_versions, server.encoding)
    });
    if deliver(server, edit, still_current, progress, responder, delivery)
        && let Some(summary) = summary
    {
        server.notify_typed::<ShowMessage>(summary);
    }
}

/// Add docstrings to all functions: documents every undocumented item of the file of `data`.
pub fn document_all(server: &mut Server, responder: Responder, data: &ActionData, delivery: Delivery) {
    let work = undocumented_targets(server, data).map(Work::AllDocstrings);
    start_now(server, responder, work, delivery);
}

/// Starts work whose inputs the main loop already has.
fn start_now(server: &mut Server, responder: Responder, work: Result<Work, ResponseError>, delivery: Delivery) {
    let work = match work {
        Ok(work) => work,
        Err(error) => return responder.respond(Err(error)),
    };
    let cancel = CancelToken::default();
    server.track(responder.id(), &cancel);
    let open_versions = open_versions(server);
    start(server, responder, work, delivery, cancel, open_versions);
}

fn open_versions(server: &Server) -> Vec<(String, i32)> {
    server.documents.values().map(|d| (d.uri.clone(), d.version)).collect()
}

/// Runs `work` on the engine with cancellable progress; answers `responder` when it ends.
/// The engine thread only generates: progress, the version check, the edit and the reply are
/// made on the main loop from the messages it posts.
/// `open_versions` are the open documents' versions when the action read them.
fn start(
    server: &mut Server,
    responder: Responder,
    work: Work,
    delivery: Delivery,
    cancel: CancelToken,
    open_versions: Vec<(String, i32)>,
) {
    let progress = Progress::begin(server, &cancel, work.title());
    let style = server.config.docstring_style;
    let main_loop = server.main_loop.clone();
    let reporter = progress.clone();
    let folders = server.workspace_folders.clone();
    let open_at_start = open_versions.clone();
    server.engine.run(Box::new(move |model| {
        let report = |message: String, percentage: usize| {
            let progress = reporter.clone();
            main_loop.post(move |server| progress.report(server, &message, percentage));
        };
        let result = model
            .map_err(ActionError::from)
            .and_then(|model| generate(model, &work, style, &cancel, &report))
            .and_then(|output| still_inside(output, &folders, &open_at_start));
        cancel.finish();
        main_loop.post(move |server| {
            let (uri, version) = work.source();
            let still_current =
                server.documents.get(&uri).filter(|document| !document.out_of_sync).map(|document| document.version)
                    == Some(version);
            let edit = result.map(|output| edit_json(output, &open_versions, server.encoding));
            deliver(server, edit, still_current, &progress, responder, delivery);
        });
    }));
}

/// What an action generated, with what its workspace edit is computed against.
enum Output {
    Insertions(Target, Vec<actions::Insertion>),
    /// The edit into the test file whose text was `existing`.
    Tests(unit_tests::TestEdit, Option<String>),
}

/// Runs the action's generations (on the engine thread); `report` tells the user each step.
fn generate(
    model: &mut dyn crate::engine::Backend,
    work: &Work,
    style: crate::config::DocstringStyle,
    cancel: &CancelToken,
    report: &dyn Fn(String, usize),
) -> Result<Output, ActionError> {
    match work {
        Work::Docstring(target) => docstring::generate(model, target, style, None, cancel.clone())
            .map(|written| Output::Insertions((**target).clone(), vec![written.insertion])),
        Work::AllDocstrings(targets) => {
            let total = targets.len();
            let mut write = |target: &Target, facts: &docstring::Facts, index: usize| {
                report(format!("{} of {total}: `{}`", index + 1, target.scope.name), index * 100 / total);
                docstring::write_prose(model, target, facts, cancel.clone())
            };
            let insertions = docstring::document_all(targets, style, &mut write)?;
            Ok(Output::Insertions(targets[0].clone(), insertions))
        }
    }
}

/// `output`, if its test file still passes the workspace check and, when it is not open, still
/// holds what the edit was computed from: the file system may have changed while the model
/// wrote (a few `lstat`s and one read, made here rather than on the main loop).
fn still_inside(output: Output, folders: &[std::path::PathBuf], open: &[(String, i32)]) -> Result<Output, ActionError> {
    if let Output::Tests(edit, existing) = &output {
        workspace_guard::check(&edit.file, folders).map_err(ActionError::Rejected)?;
        let open_file = workspace_edit::address(&edit.file, open).1.is_some();
        if !open_file && !workspace_edit::file_unchanged(&edit.file, existing.as_deref()) {
            return Err(ActionError::Rejected(format!(
                "{} changed while nib was generating; nothing was applied — run the action again",
                edit.file.display()
            )));
        }
    }
    Ok(output)
}

/// The workspace edit for an action's output.
fn edit_json(output: Output, open_versions: &[(String, i32)], encoding: PositionEncoding) -> Value {
    match output {
        Output::Insertions(target, insertions) => {
            insertions_json(&target.uri, target.version, &target.rope, &insertions, encoding)
        }
        Output::Tests(edit, existing) => test_edit_json(&edit, open_versions, encoding, existing.as_deref()),
    }
}

/// Answers the request with the edit, or says why there is none; true when the edit was delivered.
fn deliver(
    server: &Server,
    result: Result<Value, ActionError>,
    still_current: bool,
    progress: &Progress,
    responder: Responder,
    delivery: Delivery,
) -> bool {
    // Every document the edit names must be as it was, and the edit in a form the client takes.
    let still_current = still_current
        && result.as_ref().map_or(true, |edit| workspace_edit::documents_unchanged(edit, &server.documents));
    let result =
        result.and_then(|edit| workspace_edit::fit_client(edit, server.client.edit).map_err(ActionError::Rejected));
    match result {
        Ok(_) if server.shutting_down() => {
            progress.end(server, "cancelled");
            responder.respond(Err(ResponseError::new(
                code::REQUEST_CANCELLED,
                "the server is shutting down; nothing was applied",
            )));
            false
        }
        Ok(_) if !still_current => {
            progress.end(server, "the document changed");
            responder.respond(Err(ResponseError::new(
                code::CONTENT_MODIFIED,
                "the document changed while nib was generating; nothing was applied — run the action again",
            )));
            false
        }
        Ok(edit) => {
            progress.end(server, "done");
            match delivery {
                Delivery::Resolve(mut action) => {
                    action["edit"] = edit;
                    responder.respond(Ok(action));
                }
                Delivery::ApplyEdit => {
                    let id = jsonrpc::RequestId::String(format!("nib-apply-{}", responder.id()));
                    server.send(jsonrpc::request(&id, "workspace/applyEdit", json!({ "label": "nib", "edit": edit })));
                    responder.respond(Ok(Value::Null));
                }
            }
            true
        }
        Err(ActionError::Engine(EngineError::Cancelled)) => {
            progress.end(server, "cancelled");
            responder.respond(Err(ResponseError::cancelled()));
            false
        }
        Err(error) => {
            progress.end(server, "failed");
            let message = error.to_string();
            let shown = ShowMessageParams { typ: MessageType::ERROR, message: format!("nib: {message}") };
            server.notify_typed::<ShowMessage>(shown);
            responder.respond(Err(ResponseError::request_failed(message)));
            false
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
    if document.out_of_sync {
        return Err(super::did_change::out_of_sync_error(&data.uri));
    }
    if document.version != data.version {
        return Err(ResponseError::new(
            code::CONTENT_MODIFIED,
            "the document changed since the action was offered; nothing was applied — run it again",
        ));
    }
    match (document.language, document.tree().cloned()) {
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
    open_versions: &[(String, i32)],
    encoding: PositionEncoding,
    existing: Option<&str>,
) -> Value {
    // An open test file (or the source file itself) is addressed as the client spelled it, with
    // its version; a file that is not open was checked against the disk just before.
    let (uri, version) = workspace_edit::address(&edit.file, open_versions);
    let rope = Rope::from_str(existing.unwrap_or(""));
    let at = convert::to_position(&rope, edit.insertion.offset, encoding);
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
#[derive(Clone)]
pub struct Progress {
    token: Option<String>,
}

impl Progress {
    fn begin(server: &mut Server, cancel: &CancelToken, title: String) -> Progress {
        if !server.client.work_done_progress {
            return Progress { token: None };
        }
        let token = format!("nib/action/{}", server.next_progress_id());
        server.create_progress(&token);
        let begin = WorkDoneProgressBegin { title, cancellable: Some(true), message: None, percentage: None };
        server.progress(&token, WorkDoneProgress::Begin(begin));
        server.progress_tokens.retain(|(_, cancel)| !cancel.is_finished());
        server.progress_tokens.push((token.clone(), cancel.clone()));
        Progress { token: Some(token) }
    }

    fn report(&self, server: &Server, message: &str, percentage: usize) {
        if let Some(token) = &self.token {
            let report = WorkDoneProgressReport {
                cancellable: None,
                message: Some(message.to_string()),
                percentage: Some(percentage as u32),
            };
            server.progress(token, WorkDoneProgress::Report(report));
        }
    }

    /// A step without a percentage ("running 6 candidate tests").
    fn note(&self, server: &Server, message: &str) {
        if let Some(token) = &self.token {
            let report =
                WorkDoneProgressReport { cancellable: None, message: Some(message.to_string()), percentage: None };
            server.progress(token, WorkDoneProgress::Report(report));
        }
    }

    fn end(&self, server: &Server, message: &str) {
        if let Some(token) = &self.token {
            server.progress(token, WorkDoneProgress::End(WorkDoneProgressEnd { message: Some(message.to_string()) }));
        }
    }
}

/// `window/workDoneProgress/cancel`: the user pressed cancel on a progress notification.
pub fn cancel_progress(server: &Server, token: &str) {
    for (_, cancel) in server.progress_tokens.iter().filter(|(t, _)| t == token) {
        cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::actions::scripted_tests::Scripted;
    use crate::config::DocstringStyle;
    use crate::document::Document;
    use crate::engine::EngineHandle;
    use crate::sandbox::PrivateDir;

    /// Generate unit tests as the client asks for it, on a scripted model: `codeAction/resolve`
    /// goes through the registry to the tests action, the plan and the model's rounds run off
    /// the main loop and post back to it, and the reply is the resolved action with an edit that
    /// creates the test file next to the module, followed by the summary.
    #[test]
    fn generate_unit_tests_resolves_to_an_edit_that_creates_the_test_file() {
        let folder = PrivateDir::new("nib-resolve").unwrap();
        let source = "def double(x):\n    return x * 2\n";
        let module = folder.path().join("calc.py");
        std::fs::write(&module, source).unwrap();
        let model = Scripted::new(&[
            ("def test_double_", &["of_two(", "of_zero(", "of_negative("]),
            ("def test_double_of_two():\n    assert double(", &["2) == 4\n"]),
            ("def test_double_of_zero():\n    assert double(", &["0) == 0\n"]),
            ("def test_double_of_negative():\n    assert double(", &["-3) == -6\n"]),
        ]);
        let engine = EngineHandle::scripted(Box::new(model));
        let (mut server, written, posted) = Server::for_tests(engine, vec![folder.path().to_path_buf()]);
        server.config.verify_tests = false;
        let uri = format!("file://{}", module.display());
        server.documents.insert(uri.clone(), Document::new(uri.clone(), "python".into(), 1, source));
        let action = json!({
            "title": "Generate unit tests for `double` (unverified) (nib)",
            "kind": "refactor.nib.tests",
            "data": { "action": "tests", "uri": uri, "version": 1, "position": { "line": 1, "character": 4 } },
        });
        server.request_for_tests(7, "codeAction/resolve", action.clone());

        // The main loop's part: run what the pool and the engine post until the answer is out.
        let mut sent = Vec::new();
        while !sent.iter().any(|message: &Value| message["id"] == 7) {
            crossbeam_channel::select! {
                recv(written) -> message => sent.push(message.unwrap()),
                recv(posted) -> message => (message.unwrap())(&mut server),
                default(Duration::from_secs(60)) => panic!("no answer; the server wrote {sent:?}"),
            }
        }
        sent.extend(written.try_iter());
        let answer = sent.iter().find(|message| message["id"] == 7).unwrap();
        assert!(answer.get("error").is_none(), "{answer}");
        let mut expected = action;
        let test_uri = format!("file://{}", folder.path().join("test_calc.py").display());
        let test_file = "import unittest\nfrom calc import double\n\n\nclass TestDouble(unittest.TestCase):\n    def test_double_of_two(self):\n        assert double(2) == 4\n\n    def test_double_of_zero(self):\n        assert double(0) == 0\n\n    def test_double_of_negative(self):\n        assert double(-3) == -6\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";
        let start = json!({ "line": 0, "character": 0 });
        expected["edit"] = json!({ "documentChanges": [
            { "kind": "create", "uri": test_uri, "options": { "ignoreIfExists": true, "overwrite": false } },
            {
                "textDocument": { "uri": test_uri, "version": null },
                "edits": [{ "range": { "start": start, "end": start }, "newText": test_file }],
            },
        ]});
        assert_eq!(answer["result"], expected);
        let methods: Vec<&str> = sent.iter().filter_map(|message| message["method"].as_str()).collect();
        assert_eq!(
            methods,
            ["window/workDoneProgress/create", "$/progress", "$/progress", "$/progress", "window/showMessage"]
        );
        let progress: Vec<&Value> =
            sent.iter().filter(|m| m["method"] == "$/progress").map(|m| &m["params"]["value"]).collect();
        assert_eq!(
            progress,
            [
                &json!({ "kind": "begin", "title": "nib: writing tests for `double`", "cancellable": true }),
                &json!({ "kind": "report", "message": "writing tests" }),
                &json!({ "kind": "end", "message": "done" }),
            ]
        );
        let summary = json!({ "type": 2, "message": "nib: 3 tests written (unverified: nib.tests.verify is off)" });
        assert_eq!(sent.last().unwrap()["params"], summary);
    }

    /// Add docstrings to all functions on a scripted model: a progress report per item, every
    /// undocumented item documented, one insertion each against the file's text.
    #[test]
    fn all_docstrings_report_each_item_and_document_every_one() {
        let source =
            "def one(a):\n    return a\n\n\ndef two():\n    \"\"\"Documented.\"\"\"\n\n\ndef three():\n    pass\n";
        let targets = crate::actions::undocumented_test_targets("/w/m.py", "python", source);
        let mut model = Scripted::new(&[
            ("# Summary of one: ", &["Return its argument.\n"]),
            ("# Parameter a of one: ", &["The value.\n"]),
            ("# one returns: ", &["The same value.\n"]),
            ("# Summary of three: ", &["Do nothing.\n"]),
        ]);
        let reports = Mutex::new(Vec::new());
        let report = |message: String, percent: usize| reports.lock().unwrap().push(format!("{percent}% {message}"));
        let work = Work::AllDocstrings(targets);
        let output = generate(&mut model, &work, DocstringStyle::Google, &CancelToken::default(), &report).unwrap();
        let Output::Insertions(target, insertions) = output else { panic!("docstrings are insertions") };
        assert_eq!(target.uri, "file:///w/m.py");
        assert_eq!(reports.into_inner().unwrap(), ["0% 1 of 2: `one`", "50% 2 of 2: `three`"]);
        let text = crate::actions::with_insertions(source, &insertions);
        expect_test::expect![[r#"
            def one(a):
                """Return its argument.

                Args:
                    a: The value.

                Returns:
                    The same value.
                """
                return a


            def two():
                """Documented."""


            def three():
                """Do nothing."""
                pass
        "#]]
        .assert_eq(&text);
    }
}
