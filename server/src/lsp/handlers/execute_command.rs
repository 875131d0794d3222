//! `workspace/executeCommand`: `nib.addDocstring` and `nib.generateTests`, the code actions'
//! fallback for clients without `codeAction/resolve`; the edit arrives as `workspace/applyEdit`.

use ls_types::ExecuteCommandParams;

use super::code_action::{ALL_DOCSTRINGS_COMMAND, ActionData, DOCSTRING_COMMAND, TESTS_COMMAND};
use super::code_action_resolve::{Delivery, run};
use crate::lsp::jsonrpc::{ResponseError, code};
use crate::lsp::server::{Responder, Server};

pub fn handle(server: &mut Server, responder: Responder, params: ExecuteCommandParams) {
    if ![DOCSTRING_COMMAND, TESTS_COMMAND, ALL_DOCSTRINGS_COMMAND].contains(&params.command.as_str()) {
        let message = format!("unknown command `{}`", params.command);
        return responder.respond(Err(ResponseError::new(code::INVALID_PARAMS, message)));
    }
    if !server.client.apply_edit {
        let message =
            "this client cannot apply workspace edits (workspace.applyEdit), so nib cannot deliver the result";
        return responder.respond(Err(ResponseError::request_failed(message)));
    }
    let data = params.arguments.into_iter().next().map(serde_json::from_value::<ActionData>);
    match data {
        Some(Ok(data)) => run(server, responder, data, Delivery::ApplyEdit),
        _ => responder
            .respond(Err(ResponseError::invalid_params(format!("`{}` needs the code action's data", params.command)))),
    }
}
