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
use serde_json::Value;

use super::jsonrpc::{RequestId, ResponseError, code};
use super::server::{PendingReply, Responder, Server, parse_params};

pub fn request(server: &mut Server, responder: Responder, method: &str, params: Value) {
    match method {
        "textDocument/inlineCompletion" => match parse_params(params) {
            Ok(params) => inline_completion::handle(server, responder, params),
            Err(error) => responder.respond(Err(error)),
        },
        "textDocument/completion" => match parse_params(params) {
            Ok(params) => completion::handle(server, responder, params),
            Err(error) => responder.respond(Err(error)),
        },
        "textDocument/codeAction" => {
            responder.respond(parse_params(params).and_then(|params| code_action::handle(server, params)))
        }
        "codeAction/resolve" => code_action_resolve::handle(server, responder, params),
        "workspace/executeCommand" => match parse_params(params) {
            Ok(params) => execute_command::handle(server, responder, params),
            Err(error) => responder.respond(Err(error)),
        },
        "nib/inspect" => responder.respond(parse_params(params).and_then(|params| inspect::handle(server, params))),
        _ => responder.respond(Err(ResponseError::new(code::METHOD_NOT_FOUND, format!("unknown method `{method}`")))),
    }
}

pub fn notification(server: &mut Server, method: &str, params: Value) {
    let outcome = match method {
        "initialized" => {
            did_change_watched_files::register(server);
            Ok(())
        }
        "textDocument/didOpen" => parse_params(params).map(|params| did_open::handle(server, params)),
        "textDocument/didChange" => parse_params(params).map(|params| did_change::handle(server, params)),
        "textDocument/didClose" => parse_params(params).map(|params| did_close::handle(server, params)),
        "textDocument/didSave" => parse_params(params).map(|params| did_save::handle(server, params)),
        "workspace/didChangeWatchedFiles" => {
            parse_params(params).map(|params| did_change_watched_files::handle(server, params))
        }
        "workspace/didChangeConfiguration" => {
            parse_params(params).map(|params| did_change_configuration::handle(server, params))
        }
        "$/cancelRequest" => parse_params(params).map(|params: ls_types::CancelParams| {
            let id = match params.id {
                ls_types::NumberOrString::Number(n) => RequestId::Number(n.into()),
                ls_types::NumberOrString::String(s) => RequestId::String(s),
            };
            if let Some(token) = server.in_flight.get(&id) {
                token.cancel();
            }
        }),
        "window/workDoneProgress/cancel" => {
            parse_params(params).map(|params: ls_types::WorkDoneProgressCancelParams| {
                let token = match params.token {
                    ls_types::NumberOrString::Number(n) => n.to_string(),
                    ls_types::NumberOrString::String(s) => s,
                };
                code_action_resolve::cancel_progress(server, &token);
            })
        }
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
