//! `workspace/executeCommand`: the code actions' commands (`nib.docstring`, `nib.tests`,
//! `nib.docstrings`, and their earlier names), the fallback for clients without
//! `codeAction/resolve`; the edit arrives as `workspace/applyEdit`.

use ls_types::ExecuteCommandParams;

use super::code_action_resolve::{Delivery, resolve_when_ready};
use crate::lsp::code_actions::{self, ActionData};
use crate::lsp::jsonrpc::{ResponseError, code};
use crate::lsp::server::{Responder, Server};

pub fn handle(server: &mut Server, responder: Responder, params: ExecuteCommandParams) {
    let Some(action) = code_actions::by_command(&params.command) else {
        let message = format!("unknown command `{}`", params.command);
        return responder.respond(Err(ResponseError::new(code::INVALID_PARAMS, message)));
    };
    if !server.client.apply_edit {
        let message =
            "this client cannot apply workspace edits (workspace.applyEdit), so nib cannot deliver the result";
        return responder.respond(Err(ResponseError::request_failed(message)));
    }
    let data = params.arguments.into_iter().next().map(serde_json::from_value::<ActionData>);
    match data {
        // The command decides the action, whatever the arguments say.
        Some(Ok(data)) => {
            let data = ActionData { action: action.name().into(), ..data };
            resolve_when_ready(server, responder, action, data, Delivery::ApplyEdit)
        }
        _ => responder
            .respond(Err(ResponseError::invalid_params(format!("`{}` needs the code action's data", params.command)))),
    }
}
