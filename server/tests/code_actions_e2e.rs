//! End-to-end code actions on the real default model, through the real binary, in a scratch
//! workspace: Add docstring and Generate unit tests produce edits that parse, a second run
//! appends instead of overwriting, and a stale document gets no edit.
//!
//! Needs the default model, like `completion_e2e.rs`.

mod common;

use std::path::Path;

use common::{TestServer, Workspace, default_model};
use serde_json::{Value, json};

fn start(model: &Path, workspace: &Workspace) -> TestServer {
    let mut server = TestServer::spawn(&[]);
    let capabilities = common::editor_capabilities(&["utf-16"]);
    let result = server.initialize_with(&workspace.root, json!({ "modelPath": model, "threads": 2 }), capabilities);
    assert_eq!(result["capabilities"]["codeActionProvider"]["resolveProvider"], true);
    server.wait_ready();
    server
}

/// Applies LSP text edits (single-line positions are enough here: inserts only) to `text`.
fn apply_edits(text: &str, edits: &[Value]) -> String {
    let mut result = text.to_string();
    for edit in edits.iter().rev() {
        let start = &edit["range"]["start"];
        let line = start["line"].as_u64().unwrap() as usize;
        let character = start["character"].as_u64().unwrap() as usize;
        let line_start: usize = result.split_inclusive('\n').take(line).map(str::len).sum();
        let offset = line_start + result[line_start..].chars().take(character).map(char::len_utf8).sum::<usize>();
        result.insert_str(offset.min(result.len()), edit["newText"].as_str().unwrap());
    }
    result
}

fn actions_at(server: &mut TestServer, uri: &str, line: u32) -> Vec<Value> {
    let actions = server
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": { "start": { "line": line, "character": 8 }, "end": { "line": line, "character": 8 } },
                "context": { "diagnostics": [] },
            }),
        )
        .unwrap();
    actions.as_array().unwrap().clone()
}

/// The source actions (whole-file) listed for `uri`.
fn source_actions(server: &mut TestServer, uri: &str) -> Vec<Value> {
    let actions = server
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 0, "character": 0 } },
                "context": { "diagnostics": [], "only": ["source"] },
            }),
        )
        .unwrap();
    actions.as_array().unwrap().clone()
}

fn find(actions: &[Value], kind: &str) -> Value {
    actions.iter().find(|a| a["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {actions:?}")).clone()
}

/// Parse errors of `text` according to nib (the file opened as `uri`).
fn parse_errors(server: &mut TestServer, uri: &str, text: &str) -> u64 {
    server.open(uri, "python", text);
    let errors = server.inspect(uri, None)["parseErrorCount"].as_u64().unwrap();
    server.notify("textDocument/didClose", json!({ "textDocument": { "uri": uri } }));
    errors
}

#[test]
fn add_docstring_and_generate_tests_on_the_default_model() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("actions-e2e");
    let mut server = start(&model, &workspace);
    let uri = workspace.uri("pricing.py");
    let text = std::fs::read_to_string(workspace.root.join("pricing.py")).unwrap();
    server.open(&uri, "python", &text);
    let line = text.lines().position(|l| l.starts_with("def with_tax")).unwrap() as u32 + 1;

    // Listing is instant and offers both actions for an undocumented function.
    let actions = actions_at(&mut server, &uri, line);
    let docstring = find(&actions, "refactor.rewrite.nib.docstring");
    find(&actions, "refactor.nib.tests");
    assert!(docstring.get("edit").is_none(), "generation happens in resolve");
    // A documented function offers no docstring action.
    let documented = text.lines().position(|l| l.starts_with("def apply_discount")).unwrap() as u32 + 2;
    assert!(actions_at(&mut server, &uri, documented).iter().all(|a| a["kind"] != "refactor.rewrite.nib.docstring"));

    let resolved = server.request("codeAction/resolve", docstring).expect("a docstring");
    let change = &resolved["edit"]["documentChanges"][0];
    assert_eq!(change["textDocument"]["version"], 1);
    let documented_text = apply_edits(&text, change["edits"].as_array().unwrap());
    let inserted = change["edits"][0]["newText"].as_str().unwrap();
    assert!(inserted.contains("\"\"\"") && inserted.contains("price") && inserted.contains("rate"), "{inserted}");
    assert!(documented_text.contains("def with_tax(price, rate=TAX_RATE):\n    \"\"\""), "{documented_text}");
    assert_eq!(parse_errors(&mut server, &workspace.uri("check_doc.py"), &documented_text), 0);
    // Examples from running the code, checked by doctest before the edit was offered.
    assert!(inserted.contains("Examples:\n        >>> with_tax("), "{inserted}");
    let said = server.wait_for("the docstring's summary", |m| m["method"] == "window/showMessage");
    assert!(said["params"]["message"].as_str().unwrap().contains("; doctest passes on the current code"), "{said}");

    // Generate unit tests: a new test_pricing.py beside the module, created without overwriting.
    let tests = find(&actions_at(&mut server, &uri, line), "refactor.nib.tests");
    let resolved = server.request("codeAction/resolve", tests.clone()).expect("tests");
    let changes = resolved["edit"]["documentChanges"].as_array().unwrap().clone();
    let test_uri = workspace.uri("test_pricing.py");
    assert_eq!(
        changes[0],
        json!({ "kind": "create", "uri": test_uri, "options": { "ignoreIfExists": true, "overwrite": false } })
    );
    let first = apply_edits("", changes[1]["edits"].as_array().unwrap());
    let said = server.wait_for("the summary", |m| m["method"] == "window/showMessage");
    assert!(said["params"]["message"].as_str().unwrap().contains(" on the current code"), "{said}");
    assert!(first.contains("from pricing import with_tax\n"), "{first}");
    assert!(first.contains("def test_"), "{first}");
    assert_eq!(parse_errors(&mut server, &workspace.uri("check_tests.py"), &first), 0, "{first}");
    std::fs::write(workspace.root.join("test_pricing.py"), &first).unwrap();

    // Running it again appends to the file on disk and never replaces what is there.
    let resolved = server.request("codeAction/resolve", tests).expect("more tests");
    let changes = resolved["edit"]["documentChanges"].as_array().unwrap().clone();
    server.wait_for("the summary", |m| m["method"] == "window/showMessage");
    assert!(changes.iter().all(|c| c.get("kind").is_none()), "the file exists: no create: {changes:?}");
    let second = apply_edits(&first, changes[0]["edits"].as_array().unwrap());
    assert!(second.starts_with(&first), "the first tests are kept");
    assert_eq!(second.matches("from pricing import with_tax").count(), 1, "imports are not repeated");
    assert_eq!(parse_errors(&mut server, &workspace.uri("check_tests2.py"), &second), 0, "{second}");
    let names: Vec<&str> = second
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("def "))
        .map(|l| l.split('(').next().unwrap())
        .collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "test names are unique: {names:?}");

    // The tests were run before they were offered: they pass when the user runs the file.
    std::fs::write(workspace.root.join("test_pricing.py"), &second).unwrap();
    assert_tests_pass(&workspace.root, "test_pricing");
    assert!(!workspace.root.join("__pycache__").exists(), "verification wrote nothing into the workspace");

    let progress: Vec<&Value> = server.log.iter().filter(|m| m["method"] == "$/progress").collect();
    assert!(
        progress.iter().any(|m| m["params"]["value"]["kind"] == "begin" && m["params"]["value"]["cancellable"] == true)
    );
    assert!(
        progress.iter().any(|m| m["params"]["value"]["message"].as_str().is_some_and(|t| t.starts_with("running "))),
        "progress names the candidate runs"
    );
    server.shutdown();
}

/// Runs the test module `module` in `root` the way a user would (`python3 -m unittest`, which
/// also runs pytest-style test functions only under pytest, so both are tried).
fn assert_tests_pass(root: &Path, module: &str) {
    let output = std::process::Command::new("python3")
        .args(["-m", "unittest", "-v", module])
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && report.contains(" ok"), "{report}");
}

#[test]
fn the_source_action_documents_every_undocumented_function_in_one_edit() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("actions-all");
    let mut server = start(&model, &workspace);
    let uri = workspace.uri("pricing.py");
    let text = std::fs::read_to_string(workspace.root.join("pricing.py")).unwrap();
    server.open(&uri, "python", &text);
    let actions = source_actions(&mut server, &uri);
    assert_eq!(actions.len(), 1, "only source actions were asked for: {actions:?}");
    assert_eq!(actions[0]["kind"], "source.nib.docstrings");
    let resolved = server.request("codeAction/resolve", actions[0].clone()).expect("docstrings");
    let change = &resolved["edit"]["documentChanges"][0];
    let edits = change["edits"].as_array().unwrap();
    assert_eq!(edits.len(), 1, "one undocumented function (with_tax); apply_discount keeps its docstring");
    let documented = apply_edits(&text, edits);
    assert_eq!(documented.matches("\"\"\"").count(), text.matches("\"\"\"").count() + 2);
    assert_eq!(parse_errors(&mut server, &workspace.uri("check_all.py"), &documented), 0);
    let reports = server.log.iter().filter(|m| m["params"]["value"]["kind"] == "report").count();
    assert!(reports >= 1, "progress reports n of m");
    server.shutdown();
}

#[test]
fn tests_for_an_async_function_patch_its_async_collaborator() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("actions-async");
    std::fs::write(workspace.root.join("app.py"), "async def get_orders_for_customer(customer_id):\n    return []\n")
        .unwrap();
    let source = "import app\n\n\nasync def get_orders(customer_id):\n    orders = await app.get_orders_for_customer(customer_id)\n    return [order for order in orders if order[\"open\"]]\n";
    std::fs::write(workspace.root.join("orders.py"), source).unwrap();
    let mut server = start(&model, &workspace);
    let uri = workspace.uri("orders.py");
    server.open(&uri, "python", source);
    let tests = find(&actions_at(&mut server, &uri, 4), "refactor.nib.tests");
    let resolved = match server.request("codeAction/resolve", tests) {
        Ok(resolved) => resolved,
        Err(error) => {
            // The small model often makes the mock return a value the code cannot use; then no
            // candidate passes, and nib says so instead of writing failing tests.
            let message = error["message"].as_str().unwrap();
            assert!(message.starts_with("none of the ") && message.contains("first error: "), "{error}");
            let said = server.wait_for("the error", |m| m["method"] == "window/showMessage");
            assert_eq!(said["params"]["type"], 1, "{said}");
            assert!(!workspace.root.join("test_orders.py").exists());
            return server.shutdown();
        }
    };
    server.wait_for("the summary", |m| m["method"] == "window/showMessage");
    let changes = resolved["edit"]["documentChanges"].as_array().unwrap().clone();
    let text = apply_edits("", changes.last().unwrap()["edits"].as_array().unwrap());
    std::fs::write(workspace.root.join("test_orders.py"), &text).unwrap();
    assert_tests_pass(&workspace.root, "test_orders");
    assert!(text.contains("from unittest.mock import AsyncMock, patch\n"), "{text}");
    assert!(text.contains("with patch(\"app.get_orders_for_customer\", new_callable=AsyncMock)"), "{text}");
    assert!(text.contains("result = await get_orders("), "{text}");
    assert!(text.contains("assert_called_once"), "{text}");
    assert!(text.contains("unittest.IsolatedAsyncioTestCase"), "no pytest-asyncio in this workspace: {text}");
    assert_eq!(parse_errors(&mut server, &workspace.uri("check_async.py"), &text), 0, "{text}");
    server.shutdown();
}

#[test]
fn stale_documents_get_no_edit() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("actions-stale");
    let mut server = start(&model, &workspace);
    let uri = workspace.uri("cart.py");
    let text = std::fs::read_to_string(workspace.root.join("cart.py")).unwrap();
    server.open(&uri, "python", &text);
    let line = text.lines().position(|l| l.contains("def subtotal")).unwrap() as u32 + 1;
    let docstring = find(&actions_at(&mut server, &uri, line), "refactor.rewrite.nib.docstring");
    server.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 2 }, "contentChanges": [{ "text": format!("{text}\n# edited\n") }] }),
    );
    let error = server.request("codeAction/resolve", docstring).unwrap_err();
    assert_eq!(error["code"], -32801, "{error}");
    // Listed again for the edited document, the action works.
    let docstring = find(&actions_at(&mut server, &uri, line), "refactor.rewrite.nib.docstring");
    assert_eq!(docstring["data"]["version"], 2);
    let resolved = server.request("codeAction/resolve", docstring).expect("a docstring after an edit");
    assert_eq!(resolved["edit"]["documentChanges"][0]["textDocument"]["version"], 2);
    server.shutdown();
}

/// Issue 18: a completion does not wait behind a long code action; the engine runs it between
/// two of the action's generations (ordering only; `benches/responsive.py` measures the time).
#[test]
fn a_completion_is_answered_while_a_long_action_runs() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("actions-responsive");
    let mut server = start(&model, &workspace);
    let uri = workspace.uri("many.py");
    // Two undocumented functions: two steps, so the completion has a turn between them.
    let text =
        "def scale(values, factor):\n    return [v * factor for v in values]\n\n\ndef total(prices):\n    return ";
    server.open(&uri, "python", text);
    let actions = source_actions(&mut server, &uri);
    let resolve = server.send_request("codeAction/resolve", find(&actions, "source.nib.docstrings"));
    let last_line = text.lines().count() as u32 - 1;
    let completion = server.inline(&uri, last_line, 11, 1);
    server.response(completion).expect("the completion is answered");
    assert!(
        !server.unread.iter().any(|m| m["id"] == json!(resolve)),
        "the action ended before the completion was answered: the completion waited behind it"
    );
    // The action itself still completes (the completion only took its turn between two steps).
    let resolved = server.response(resolve).expect("docstrings for every function");
    assert_eq!(resolved["edit"]["documentChanges"][0]["edits"].as_array().unwrap().len(), 2);
    server.shutdown();
}

/// Java through the real server on the default model: Add doc comment writes Javadoc with a
/// tag per parameter, the return value and the thrown exception, the file still parses, and
/// Generate unit tests is not offered (Java has no test layout nib can run without a build
/// tool).
#[test]
fn java_gets_javadoc_and_no_test_action() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("actions-java");
    let text = "package shop;\n\nimport java.util.List;\n\npublic class Cart {\n    public int total(int price, int count) {\n        if (count < 0) {\n            throw new IllegalArgumentException(\"count\");\n        }\n        return price * count;\n    }\n}\n";
    let mut server = start(&model, &workspace);
    let uri = workspace.uri("Cart.java");
    server.open(&uri, "java", text);
    let actions = actions_at(&mut server, &uri, 6);
    assert!(actions.iter().all(|a| a["kind"] != "refactor.nib.tests"), "{actions:?}");
    let docstring = find(&actions, "refactor.rewrite.nib.docstring");
    assert_eq!(docstring["title"], "Add doc comment for `total` (nib)");

    let resolved = server.request("codeAction/resolve", docstring).expect("a doc comment");
    let edits = resolved["edit"]["documentChanges"][0]["edits"].as_array().unwrap();
    let inserted = edits[0]["newText"].as_str().unwrap();
    assert!(inserted.starts_with("    /**\n") && inserted.ends_with("     */\n"), "{inserted}");
    for tag in ["@param price ", "@param count ", "@return ", "@throws IllegalArgumentException "] {
        assert!(inserted.contains(tag), "{tag} missing: {inserted}");
    }
    let documented = apply_edits(text, edits);
    assert!(documented.contains("     */\n    public int total("), "{documented}");
    let check = workspace.uri("Check.java");
    server.open(&check, "java", &documented);
    assert_eq!(server.inspect(&check, None)["parseErrorCount"], 0, "{documented}");
    server.shutdown();
}
