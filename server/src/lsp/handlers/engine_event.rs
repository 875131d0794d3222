//! Events from the engine thread (model loading progress, ready, failed; inference problems),
//! turned into `$/progress`, `window/showMessage` and nib's own `nib/status` notification.

use ls_types::{MessageType, WorkDoneProgress, WorkDoneProgressBegin, WorkDoneProgressEnd};
use serde_json::{Value, json};

use crate::engine::{EngineEvent, EngineStatus, ModelState};
use crate::lsp::model_wait;
use crate::lsp::server::Server;

const PROGRESS_TOKEN: &str = "nib/model-load";

pub fn handle(server: &mut Server, event: EngineEvent) {
    let state = match event {
        EngineEvent::State(state) => state,
        EngineEvent::Problem(message) => return server.show(MessageType::WARNING, message),
    };
    server.notify("nib/status", state_json(&state));
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

/// The `nib/status` payload (docs/lsp-extensions.md).
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
