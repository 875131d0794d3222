//! `initialize`: negotiate the position encoding, read what the client supports and its
//! settings, start loading the model, and advertise nib's capabilities.

use std::path::PathBuf;

use ls_types::{
    ClientCapabilities, CodeActionKind, CodeActionOptions, CodeActionProviderCapability, CompletionOptions,
    ExecuteCommandOptions, InitializeParams, InitializeResult, InlineCompletionOptions, MessageType, OneOf,
    PositionEncodingKind, ServerCapabilities, ServerInfo, TextDocumentSyncCapability, TextDocumentSyncKind,
    TextDocumentSyncOptions,
};
use serde_json::Value;

use crate::config;
use crate::document::file_uri_to_path;
use crate::lsp::code_actions::{self, ACTIONS};
use crate::lsp::server::{ClientSupport, Server};
use crate::lsp::workspace_edit::EditSupport;
use crate::position::PositionEncoding;

pub fn handle(server: &mut Server, params: InitializeParams) -> InitializeResult {
    let capabilities = &params.capabilities;
    let offered: Vec<String> = capabilities
        .general
        .as_ref()
        .and_then(|general| general.position_encodings.as_ref())
        .map(|kinds| kinds.iter().map(|kind| kind.as_str().to_string()).collect())
        .unwrap_or_default();
    server.encoding = PositionEncoding::negotiate(&offered);
    server.client = client_support(capabilities);
    server.workspace_folders = workspace_folders(&params);

    let (config, warnings) =
        config::parse(&server.config, params.initialization_options.as_ref().unwrap_or(&Value::Null));
    for warning in warnings {
        server.show(MessageType::WARNING, warning);
    }
    server.config = config;
    server.engine.configure(&server.config);
    super::did_change_watched_files::configure_index(server);
    super::engine_event::refresh_verification(server);
    server.log(
        MessageType::INFO,
        format!("nib {} initialized (positions in {})", env!("CARGO_PKG_VERSION"), server.encoding.as_lsp_str()),
    );

    let capabilities = server_capabilities(server);
    InitializeResult {
        capabilities,
        server_info: Some(ServerInfo { name: "nib".into(), version: Some(env!("CARGO_PKG_VERSION").into()) }),
        offset_encoding: None,
    }
}

/// What the client can do that nib adapts to.
fn client_support(capabilities: &ClientCapabilities) -> ClientSupport {
    let text_document = capabilities.text_document.as_ref();
    let workspace = capabilities.workspace.as_ref();
    ClientSupport {
        configuration_request: workspace.and_then(|w| w.configuration).unwrap_or(false),
        work_done_progress: capabilities.window.as_ref().and_then(|w| w.work_done_progress).unwrap_or(false),
        code_action_resolve: text_document
            .and_then(|t| t.code_action.as_ref())
            .and_then(|c| c.resolve_support.as_ref())
            .is_some_and(|r| r.properties.iter().any(|p| p == "edit")),
        apply_edit: workspace.and_then(|w| w.apply_edit).unwrap_or(false),
        inline_completion: text_document.is_some_and(|t| t.inline_completion.is_some()),
        watched_files_registration: workspace
            .and_then(|w| w.did_change_watched_files.as_ref())
            .and_then(|d| d.dynamic_registration)
            .unwrap_or(false),
        edit: edit_support(workspace.and_then(|w| w.workspace_edit.as_ref())),
    }
}

/// What nib offers this client: the negotiated encoding, incremental sync, inline completion
/// (or the completion menu for clients without it), every action's kind, and the commands
/// for clients without `codeAction/resolve`.
fn server_capabilities(server: &Server) -> ServerCapabilities {
    let kinds = ACTIONS.iter().map(|action| CodeActionKind::from(code_actions::kind(*action))).collect();
    ServerCapabilities {
        position_encoding: Some(PositionEncodingKind::from(server.encoding.as_lsp_str().to_string())),
        text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
            open_close: Some(true),
            change: Some(TextDocumentSyncKind::INCREMENTAL),
            // didSave re-indexes the saved file in the workspace index.
            save: Some(ls_types::TextDocumentSyncSaveOptions::Supported(true)),
            ..TextDocumentSyncOptions::default()
        })),
        inline_completion_provider: Some(OneOf::Right(InlineCompletionOptions::default())),
        code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
            code_action_kinds: Some(kinds),
            resolve_provider: Some(true),
            ..CodeActionOptions::default()
        })),
        // Commands are the fallback for clients without resolve (see `lsp::code_actions`).
        execute_command_provider: (!server.client.code_action_resolve).then(|| ExecuteCommandOptions {
            commands: ACTIONS.iter().map(|action| code_actions::command(*action)).collect(),
            ..ExecuteCommandOptions::default()
        }),
        // Clients with inline completion get ghost text only; a completion menu entry on every
        // keystroke would be noise for them.
        completion_provider: (!server.client.inline_completion).then(|| CompletionOptions {
            trigger_characters: Some([".", "(", " "].map(String::from).to_vec()),
            ..CompletionOptions::default()
        }),
        ..ServerCapabilities::default()
    }
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

/// What the client's `workspace.workspaceEdit` says it can apply.
fn edit_support(capabilities: Option<&ls_types::WorkspaceEditClientCapabilities>) -> EditSupport {
    let Some(capabilities) = capabilities else { return EditSupport::default() };
    // Resource operations exist only inside `documentChanges`, so a client that declares them
    // applies `documentChanges` even when it does not say so (Neovim 0.11 declares only
    // `resourceOperations`).
    let declares_operations = capabilities.resource_operations.as_ref().is_some_and(|kinds| !kinds.is_empty());
    EditSupport {
        document_changes: capabilities.document_changes.unwrap_or(false) || declares_operations,
        create_files: capabilities
            .resource_operations
            .as_ref()
            .is_some_and(|kinds| kinds.contains(&ls_types::ResourceOperationKind::Create)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ls_types::{ResourceOperationKind, WorkspaceEditClientCapabilities};

    #[test]
    fn declared_resource_operations_imply_document_changes_as_neovim_sends_them() {
        let neovim = WorkspaceEditClientCapabilities {
            resource_operations: Some(vec![
                ResourceOperationKind::Rename,
                ResourceOperationKind::Create,
                ResourceOperationKind::Delete,
            ]),
            ..Default::default()
        };
        let support = edit_support(Some(&neovim));
        assert!(support.document_changes && support.create_files);
        let plain = WorkspaceEditClientCapabilities::default();
        let support = edit_support(Some(&plain));
        assert!(!support.document_changes && !support.create_files);
    }
}
