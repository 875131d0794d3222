//! One file per LSP method; this module routes method names to them.

pub mod code_action;
pub mod code_action_resolve;
pub mod completion;
pub mod did_change;
pub mod did_change_configuration;
pub mod did_change_watched_files;
pub mod did_close;
pub mod did_open;
pub mod did_save;
pub mod engine_event;
pub mod execute_command;
pub mod initialize;
pub mod inline_completion;
pub mod inspect;

use ls_types::MessageType;
use ls_types::notification::{
    Cancel, DidChangeConfiguration, DidChangeTextDocument, DidChangeWatchedFiles, DidCloseTextDocument,
    DidOpenTextDocument, DidSaveTextDocument, Initialized, Notification, WorkDoneProgressCancel,
};
use ls_types::request::{
    CodeActionRequest, CodeActionResolveRequest, Completion, ExecuteCommand, InlineCompletionRequest, Request,
};
use serde_json::Value;

use super::jsonrpc::{RequestId, ResponseError, code};
use super::server::{PendingReply, Responder, Server, parse_params};

/// The parameters of request `R` as `ls_types` types them, or the `InvalidParams` reply.
fn request_params<R: Request>(params: Value) -> Result<R::Params, ResponseError> {
    parse_params(params)
}

/// The parameters of notification `N` as `ls_types` types them.
fn notification_params<N: Notification>(params: Value) -> Result<N::Params, ResponseError> {
    parse_params(params)
}

pub fn request(server: &mut Server, responder: Responder, method: &str, params: Value) {
    match method {
        InlineCompletionRequest::METHOD => match request_params::<InlineCompletionRequest>(params) {
            Ok(params) => inline_completion::handle(server, responder, params),
            Err(error) => responder.respond(Err(error)),
        },
        Completion::METHOD => match request_params::<Completion>(params) {
            Ok(params) => completion::handle(server, responder, params),
            Err(error) => responder.respond(Err(error)),
        },
        CodeActionRequest::METHOD => responder
            .reply(request_params::<CodeActionRequest>(params).and_then(|params| code_action::handle(server, params))),
        // The action is answered as the client sent it plus its edit, so it stays untyped JSON.
        CodeActionResolveRequest::METHOD => code_action_resolve::handle(server, responder, params),
        ExecuteCommand::METHOD => match request_params::<ExecuteCommand>(params) {
            Ok(params) => execute_command::handle(server, responder, params),
            Err(error) => responder.respond(Err(error)),
        },
        inspect::METHOD => responder.respond(parse_params(params).and_then(|params| inspect::handle(server, params))),
        _ => responder.respond(Err(ResponseError::new(code::METHOD_NOT_FOUND, format!("unknown method `{method}`")))),
    }
}

/// `nib/didFocus`: `{ "textDocument": { "uri": … }, "position"?: Position }`: the document
/// and, when the editor sends it, its cursor (docs/lsp-extensions.md).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FocusParams {
    text_document: ls_types::TextDocumentIdentifier,
    #[serde(default)]
    position: Option<ls_types::Position>,
}

pub fn notification(server: &mut Server, method: &str, params: Value) {
    let outcome = match method {
        Initialized::METHOD => {
            did_change_watched_files::register(server);
            Ok(())
        }
        DidOpenTextDocument::METHOD => {
            notification_params::<DidOpenTextDocument>(params).map(|params| did_open::handle(server, params))
        }
        DidChangeTextDocument::METHOD => {
            notification_params::<DidChangeTextDocument>(params).map(|params| did_change::handle(server, params))
        }
        DidCloseTextDocument::METHOD => {
            notification_params::<DidCloseTextDocument>(params).map(|params| did_close::handle(server, params))
        }
        DidSaveTextDocument::METHOD => {
            notification_params::<DidSaveTextDocument>(params).map(|params| did_save::handle(server, params))
        }
        DidChangeWatchedFiles::METHOD => notification_params::<DidChangeWatchedFiles>(params)
            .map(|params| did_change_watched_files::handle(server, params)),
        // nib reads only its own section, which `ls_types` leaves as JSON anyway.
        DidChangeConfiguration::METHOD => {
            parse_params(params).map(|params| did_change_configuration::handle(server, params))
        }
        Cancel::METHOD => notification_params::<Cancel>(params).map(|params| {
            let id = match params.id {
                ls_types::NumberOrString::Number(n) => RequestId::Number(n.into()),
                ls_types::NumberOrString::String(s) => RequestId::String(s),
            };
            if let Some(token) = server.in_flight.get(&id) {
                token.cancel();
            }
        }),
        WorkDoneProgressCancel::METHOD => notification_params::<WorkDoneProgressCancel>(params).map(|params| {
            let token = match params.token {
                ls_types::NumberOrString::Number(n) => n.to_string(),
                ls_types::NumberOrString::String(s) => s,
            };
            code_action_resolve::cancel_progress(server, &token);
        }),
        // An editor focused a document (nib's extension): warm the cache for it.
        "nib/didFocus" => parse_params::<FocusParams>(params).map(|params| {
            crate::lsp::prewarm::focused(server, params.text_document.uri.as_str(), params.position);
        }),
        // Other notifications (`$/setTrace`, ...) need nothing from nib.
        _ => Ok(()),
    };
    if let Err(error) = outcome {
        server.log(MessageType::WARNING, format!("ignoring `{method}`: {}", error.message));
    }
}

pub fn client_reply(server: &mut Server, pending: PendingReply, result: Result<Value, ResponseError>) {
    match (pending, result) {
        (PendingReply::Configuration, Ok(Value::Array(mut sections))) if !sections.is_empty() => {
            did_change_configuration::apply(server, &sections.swap_remove(0));
        }
        (PendingReply::Configuration, other) => {
            server.log(MessageType::WARNING, format!("unexpected reply to workspace/configuration: {other:?}"));
        }
        (PendingReply::Ignore, _) => {}
    }
}
