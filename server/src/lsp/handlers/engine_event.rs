//! Events from the engine thread (model loading progress, ready, failed; inference problems),
//! turned into `$/progress`, `window/showMessage` and nib's own `nib/status` notification.

use ls_types::MessageType;
use serde_json::json;

use crate::engine::{EngineEvent, ModelState};
use crate::lsp::server::{PendingReply, Server};

const PROGRESS_TOKEN: &str = "nib/model-load";

pub fn handle(server: &mut Server, event: EngineEvent) {
    let state = match event {
        EngineEvent::State(state) => state,
        EngineEvent::Problem(message) => return server.show(MessageType::WARNING, message),
    };
    server.notify("nib/status", state.to_json());
    match &state {
        ModelState::Loading { model } => {
            server.log(MessageType::INFO, format!("loading model {model}"));
            if server.client.work_done_progress {
                server.request_client(
                    "window/workDoneProgress/create",
                    json!({ "token": PROGRESS_TOKEN }),
                    PendingReply::Ignore,
                );
                server.notify(
                    "$/progress",
                    json!({ "token": PROGRESS_TOKEN, "value": {
                        "kind": "begin", "title": "nib: loading model", "cancellable": false,
                        "message": model,
                    }}),
                );
            }
        }
        ModelState::Ready { model, load_ms, .. } => {
            server.log(MessageType::INFO, format!("model {model} ready in {load_ms} ms"));
            end_progress(server, "ready");
        }
        ModelState::Failed { message } => {
            server.show(MessageType::ERROR, message.clone());
            end_progress(server, "failed");
        }
        ModelState::Unloaded => {}
    }
}

fn end_progress(server: &Server, message: &str) {
    if server.client.work_done_progress {
        server.notify("$/progress", json!({ "token": PROGRESS_TOKEN, "value": { "kind": "end", "message": message } }));
    }
}
