//! `initialize`: negotiate the position encoding, read what the client supports and its
//! settings, start loading the model, and advertise nib's capabilities.

use std::path::PathBuf;

use ls_types::{InitializeParams, MessageType};
use serde_json::{Value, json};

use crate::config;
use crate::document::file_uri_to_path;
use crate::lsp::code_actions::{self, ACTIONS};
use crate::lsp::server::{ClientSupport, Server};
use crate::position::PositionEncoding;

pub fn handle(server: &mut Server, params: InitializeParams) -> Value {
    let capabilities = &params.capabilities;
    let offered: Vec<String> = capabilities
        .general
        .as_ref()
        .and_then(|general| general.position_encodings.as_ref())
        .map(|kinds| kinds.iter().map(|kind| kind.as_str().to_string()).collect())
        .unwrap_or_default();
    server.encoding = PositionEncoding::negotiate(&offered);
    let text_document = capabilities.text_document.as_ref();
    server.client = ClientSupport {
        configuration_request: capabilities.workspace.as_ref().and_then(|w| w.configuration).unwrap_or(false),
        work_done_progress: capabilities.window.as_ref().and_then(|w| w.work_done_progress).unwrap_or(false),
        code_action_resolve: text_document
            .and_then(|t| t.code_action.as_ref())
            .and_then(|c| c.resolve_support.as_ref())
            .is_some_and(|r| r.properties.iter().any(|p| p == "edit")),
        apply_edit: capabilities.workspace.as_ref().and_then(|w| w.apply_edit).unwrap_or(false),
        inline_completion: text_document.is_some_and(|t| t.inline_completion.is_some()),
        watched_files_registration: capabilities
            .workspace
            .as_ref()
            .and_then(|w| w.did_change_watched_files.as_ref())
            .and_then(|d| d.dynamic_registration)
            .unwrap_or(false),
    };
    server.workspace_folders = workspace_folders(&params);

    let (config, warnings) =
        config::parse(&server.config, params.initialization_options.as_ref().unwrap_or(&Value::Null));
    for warning in warnings {
        server.show(MessageType::WARNING, warning);
    }
    server.config = config;
    server.engine.configure(&server.config);
    super::did_change_watched_files::configure_index(server);
    server.log(
        MessageType::INFO,
        format!("nib {} initialized (positions in {})", env!("CARGO_PKG_VERSION"), server.encoding.as_lsp_str()),
    );

    let mut capabilities = json!({
        "positionEncoding": server.encoding.as_lsp_str(),
        "textDocumentSync": { "openClose": true, "change": 2, "save": { "includeText": false } },
        "inlineCompletionProvider": {},
        "codeActionProvider": {
            "codeActionKinds": ACTIONS.iter().map(|action| code_actions::kind(*action)).collect::<Vec<_>>(),
            "resolveProvider": true,
        },
    });
    // Commands are the fallback for clients without resolve (see `lsp::code_actions`).
    if !server.client.code_action_resolve {
        let commands: Vec<String> = ACTIONS.iter().map(|action| code_actions::command(*action)).collect();
        capabilities["executeCommandProvider"] = json!({ "commands": commands });
    }
    // Clients with inline completion get ghost text only; a completion menu entry on every
    // keystroke would be noise for them.
    if !server.client.inline_completion {
        capabilities["completionProvider"] = json!({ "triggerCharacters": [".", "(", " "] });
    }
    json!({
        "capabilities": capabilities,
        "serverInfo": { "name": "nib", "version": env!("CARGO_PKG_VERSION") },
    })
}

#[allow(deprecated)] // `root_uri` is what older clients still send.
fn workspace_folders(params: &InitializeParams) -> Vec<PathBuf> {
    let from_folders: Vec<PathBuf> =
        params.workspace_folders.iter().flatten().filter_map(|folder| file_uri_to_path(folder.uri.as_str())).collect();
    if !from_folders.is_empty() {
        return from_folders;
    }
    params.root_uri.iter().filter_map(|uri| file_uri_to_path(uri.as_str())).collect()
}
