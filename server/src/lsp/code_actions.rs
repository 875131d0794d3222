//! The code actions nib offers, as one registry that the `codeAction`, `codeAction/resolve`,
//! `workspace/executeCommand` and `initialize` handlers iterate. Adding an action is one
//! [`CodeAction`] implementation and one entry in [`ACTIONS`].
//!
//! Naming: every identifier derives from the action's name. Its kind is `<base>.nib.<name>`
//! (`refactor.rewrite.nib.docstring`, `refactor.nib.tests`, `source.nib.docstrings`), its
//! command `nib.<name>`. The editors use the same names for their own commands (VS Code's
//! `nib.docstring` runs the action at the cursor), which is why the server advertises its
//! commands only to clients without `codeAction/resolve`: VS Code's client registers every
//! advertised command and would clash with the extension's.

use serde::{Deserialize, Serialize};

use super::handlers::code_action_resolve::{self, Delivery};
use super::jsonrpc::ResponseError;
use super::server::{Responder, Server};
use crate::syntax::Language;
use crate::syntax::languages::DocStyle;
use crate::syntax::scopes::Scope;

/// What a listed action carries to its resolution.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionData {
    /// The action's [`CodeAction::name`].
    pub action: String,
    pub uri: String,
    pub version: i32,
    pub position: ls_types::Position,
}

/// Where actions are listed: the document's language, the scope at the cursor and how many
/// functions, methods and classes of the file have no documentation.
pub struct Place<'a> {
    pub language: Language,
    pub scope: Option<&'a Scope>,
    pub undocumented: usize,
    /// Tests would be written without running them (`nib.tests.verify` off, no toolchain).
    pub tests_unverified: bool,
}

pub trait CodeAction: Sync {
    /// The name the kind and the command derive from.
    fn name(&self) -> &'static str;
    /// The LSP kind the action refines (`refactor.rewrite`, `refactor`, `source`).
    fn base_kind(&self) -> &'static str;
    /// Command names of earlier versions, still accepted by `workspace/executeCommand`.
    fn old_commands(&self) -> &'static [&'static str];
    /// The title offered at `place`, or `None` where the action does not apply.
    fn title(&self, place: &Place) -> Option<String>;
    /// Runs the action for `data`; `responder` is answered when it ends.
    fn resolve(&self, server: &mut Server, responder: Responder, data: &ActionData, delivery: Delivery);
}

/// Every action, in the order they are listed.
pub const ACTIONS: &[&dyn CodeAction] = &[&Docstring, &Tests, &Docstrings];

pub fn kind(action: &dyn CodeAction) -> String {
    format!("{}.nib.{}", action.base_kind(), action.name())
}

pub fn command(action: &dyn CodeAction) -> String {
    format!("nib.{}", action.name())
}

pub fn by_name(name: &str) -> Result<&'static dyn CodeAction, ResponseError> {
    ACTIONS
        .iter()
        .copied()
        .find(|action| action.name() == name)
        .ok_or_else(|| ResponseError::invalid_params(format!("nib has no code action `{name}`")))
}

/// The action a `workspace/executeCommand` command names (current or earlier name).
pub fn by_command(command_name: &str) -> Option<&'static dyn CodeAction> {
    ACTIONS
        .iter()
        .copied()
        .find(|action| command(*action) == command_name || action.old_commands().contains(&command_name))
}

/// "Add docstring" for Python, "Add doc comment" elsewhere.
fn docstring_words(language: Language) -> (&'static str, &'static str) {
    match language.spec().doc {
        DocStyle::Docstring => ("Add docstring", "Add docstrings"),
        DocStyle::RustDoc | DocStyle::JsDoc | DocStyle::GoDoc | DocStyle::Javadoc | DocStyle::Doxygen => {
            ("Add doc comment", "Add doc comments")
        }
    }
}

/// Documents the function, method or class at the cursor.
struct Docstring;

impl CodeAction for Docstring {
    fn name(&self) -> &'static str {
        "docstring"
    }

    fn base_kind(&self) -> &'static str {
        "refactor.rewrite"
    }

    fn old_commands(&self) -> &'static [&'static str] {
        &["nib.addDocstring"]
    }

    fn title(&self, place: &Place) -> Option<String> {
        let scope = place.scope.filter(|scope| scope.doc.is_none())?;
        Some(format!("{} for `{}` (nib)", docstring_words(place.language).0, scope.name))
    }

    fn resolve(&self, server: &mut Server, responder: Responder, data: &ActionData, delivery: Delivery) {
        code_action_resolve::document_one(server, responder, data, delivery);
    }
}

/// Writes unit tests for the function, method or class at the cursor.
struct Tests;

impl CodeAction for Tests {
    fn name(&self) -> &'static str {
        "tests"
    }

    fn base_kind(&self) -> &'static str {
        "refactor"
    }

    fn old_commands(&self) -> &'static [&'static str] {
        &["nib.generateTests"]
    }

    fn title(&self, place: &Place) -> Option<String> {
        place.language.spec().tests?;
        let unverified = if place.tests_unverified { " (unverified)" } else { "" };
        Some(format!("Generate unit tests for `{}`{unverified} (nib)", place.scope?.name))
    }

    fn resolve(&self, server: &mut Server, responder: Responder, data: &ActionData, delivery: Delivery) {
        code_action_resolve::write_tests(server, responder, data, delivery);
    }
}

/// Documents every undocumented function, method and class of the file.
struct Docstrings;

impl CodeAction for Docstrings {
    fn name(&self) -> &'static str {
        "docstrings"
    }

    fn base_kind(&self) -> &'static str {
        "source"
    }

    fn old_commands(&self) -> &'static [&'static str] {
        &["nib.addDocstrings"]
    }

    fn title(&self, place: &Place) -> Option<String> {
        let count = place.undocumented;
        (count > 0).then(|| format!("{} to all functions in file ({count}) (nib)", docstring_words(place.language).1))
    }

    fn resolve(&self, server: &mut Server, responder: Responder, data: &ActionData, delivery: Delivery) {
        code_action_resolve::document_all(server, responder, data, delivery);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_commands_follow_one_scheme() {
        let kinds: Vec<String> = ACTIONS.iter().map(|action| kind(*action)).collect();
        assert_eq!(kinds, ["refactor.rewrite.nib.docstring", "refactor.nib.tests", "source.nib.docstrings"]);
        let commands: Vec<String> = ACTIONS.iter().map(|action| command(*action)).collect();
        assert_eq!(commands, ["nib.docstring", "nib.tests", "nib.docstrings"]);
        for old in ["nib.addDocstring", "nib.generateTests", "nib.addDocstrings"] {
            assert!(by_command(old).is_some(), "{old} still works");
        }
        assert!(by_command("nib.unknown").is_none());
    }

    /// The editors name the same kinds and commands as the server.
    #[test]
    fn the_editors_use_the_servers_names() {
        let editors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../editors");
        let read = |path: &str| std::fs::read_to_string(editors.join(path)).unwrap();
        let (nvim, vscode_logic, vscode_package) =
            (read("nvim/lua/nib/actions.lua"), read("vscode/src/logic.ts"), read("vscode/package.json"));
        for action in [&Docstring as &dyn CodeAction, &Tests] {
            let kind = kind(action);
            assert!(nvim.contains(&format!("\"{kind}\"")), "editors/nvim/lua/nib/actions.lua lacks {kind}");
            assert!(vscode_logic.contains(&format!("'{kind}'")), "editors/vscode/src/logic.ts lacks {kind}");
            let command = command(action);
            assert!(vscode_package.contains(&format!("\"{command}\"")), "editors/vscode/package.json lacks {command}");
        }
    }
}
