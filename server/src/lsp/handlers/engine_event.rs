//! Events from the engine (model loading progress, ready, failed; inference problems;
//! statistics and the remote server's health), recorded in `server.engine` and turned into
//! `$/progress`, `window/showMessage` and nib's own `nib/status` notification, which also says
//! what generated tests would run with (`verification`).

use ls_types::{MessageType, WorkDoneProgress, WorkDoneProgressBegin, WorkDoneProgressEnd};
use serde_json::{Value, json};

use crate::engine::{EngineEvent, EngineStatus, ModelState};
use crate::lsp::model_wait;
use crate::lsp::server::Server;

const PROGRESS_TOKEN: &str = "nib/model-load";

pub fn handle(server: &mut Server, event: EngineEvent) {
    server.engine.observe(&event);
    let state = match event {
        EngineEvent::State(state) => state,
        EngineEvent::Problem(message) => return server.show(MessageType::WARNING, message),
        EngineEvent::Stats { .. } | EngineEvent::Fallback(_) | EngineEvent::RemoteFailing(_) => return,
    };
    server.notify("nib/status", status_payload(server, &state));
    match &state {
        ModelState::Loading { model } => {
            server.log(MessageType::INFO, format!("loading model {model}"));
            if server.client.work_done_progress {
                server.create_progress(PROGRESS_TOKEN);
                let begin = WorkDoneProgressBegin {
                    title: "nib: loading model".into(),
                    cancellable: Some(false),
                    message: Some(model.clone()),
                    percentage: None,
                };
                server.progress(PROGRESS_TOKEN, WorkDoneProgress::Begin(begin));
            }
        }
        ModelState::Ready { model, load_ms, .. } => {
            server.log(MessageType::INFO, format!("model {model} ready in {load_ms} ms"));
            end_progress(server, "ready");
            model_wait::resume_all(server);
        }
        ModelState::Failed { message } => {
            server.show(MessageType::ERROR, message.clone());
            end_progress(server, "failed");
            model_wait::resume_all(server);
        }
        ModelState::Unloaded => {}
    }
}

fn end_progress(server: &Server, message: &str) {
    if server.client.work_done_progress {
        server.progress(PROGRESS_TOKEN, WorkDoneProgress::End(WorkDoneProgressEnd { message: Some(message.into()) }));
    }
}

/// The `nib/status` payload: the model's state and, once found, the verification toolchains.
fn status_payload(server: &Server, state: &ModelState) -> Value {
    let mut payload = state_json(state);
    if !server.verification.is_null() {
        payload["verification"] = server.verification.clone();
    }
    payload
}

/// Finds on the pool (it reads file metadata) what **Generate unit tests** would run tests
/// with under the current settings, then sends `nib/status` again with it. Called when the
/// settings arrive or change.
pub fn refresh_verification(server: &mut Server) {
    let interpreter = server.config.python_interpreter.clone();
    // The `.venv` of the first workspace folder; without one only the setting, $VIRTUAL_ENV and PATH.
    let root = server.workspace_folders.first().cloned().unwrap_or_else(|| "/nonexistent".into());
    let (interpreter_then, enabled, budget) =
        (interpreter.clone(), server.config.verify_tests, server.config.tests_time_budget);
    let settings = json!({ "enabled": enabled, "timeBudgetSeconds": budget.as_secs() });
    let main_loop = server.main_loop.clone();
    server.pool.submit(
        crate::engine::CancelToken::default(),
        move |_| crate::actions::verify::toolchain::summary(interpreter.as_deref(), &root),
        move |outcome| {
            main_loop.post(move |server| {
                let crate::pool::Outcome::Done(mut found) = outcome else { return };
                // Settings changed meanwhile: the refresh they started reports instead.
                let current =
                    (&server.config.python_interpreter, server.config.verify_tests, server.config.tests_time_budget);
                if current != (&interpreter_then, enabled, budget) {
                    return;
                }
                if let (Value::Object(found), Value::Object(settings)) = (&mut found, settings) {
                    found.extend(settings);
                }
                server.verification = found;
                let state = server.engine.status().state;
                server.notify("nib/status", status_payload(server, &state));
            })
        },
    );
}

/// The `nib/status` payload's model part (docs/lsp-extensions.md).
pub fn state_json(state: &ModelState) -> Value {
    match state {
        ModelState::Unloaded => json!({ "state": "unloaded" }),
        ModelState::Loading { model } => json!({ "state": "loading", "model": model }),
        ModelState::Ready { model, info, load_ms } => json!({
            "state": "ready", "model": model, "name": info.name, "loadMs": load_ms,
            "contextLength": info.context_length,
            "backend": if info.markers_are_text { "remote" } else { "local" },
        }),
        ModelState::Failed { message } => json!({ "state": "error", "message": message }),
    }
}

/// The engine as `nib/inspect` shows it: the status payload with statistics.
pub fn status_json(status: &EngineStatus) -> Value {
    let mut value = state_json(&status.state);
    value["stats"] = serde_json::to_value(&status.stats).unwrap_or(Value::Null);
    value["cachedTokens"] = json!(status.cached_tokens);
    value
}
