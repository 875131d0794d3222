//! End-to-end workspace context through the real binary: the workspace index built in the
//! background after `initialize` gives a completion the definitions of names defined in files
//! that are not open, and takes files created outside the editor from
//! `workspace/didChangeWatchedFiles`, and offers a missing import line without the model. The prompt is what is checked (through `nib/inspect`), on
//! the default model, whose context is large enough for cross-file context (the fixture's is
//! not). Needs the default model (`make setup`); `make test` requires it.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, Workspace, default_model};
use serde_json::{Value, json};

/// `nib/inspect`'s prompt at `line`/`character`, asked until `ready` holds for it (the index
/// answers asynchronously: the first request in a scope asks, a later one finds the answer).
fn prompt_when(server: &mut TestServer, uri: &str, line: u32, character: u32, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = server
            .request(
                "nib/inspect",
                json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character }, "prompt": true }),
            )
            .unwrap();
        if ready(&state["prompt"]) || Instant::now() > deadline {
            return state["prompt"].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has_source(prompt: &Value, prefix: &str) -> bool {
    prompt["sources"]
        .as_array()
        .is_some_and(|sources| sources.iter().any(|s| s.as_str().unwrap_or("").starts_with(prefix)))
}

#[test]
fn definitions_come_from_files_that_are_not_open() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("context-e2e");
    let mut server = TestServer::ready_at(&workspace.root, json!({ "modelPath": model, "threads": 1 }));
    let uri = workspace.uri("cart.py");
    let text = workspace.read("cart.py");
    server.open(&uri, "python", &text);
    // The empty body of `count_items`, a few lines below the uses of `apply_discount` and `with_tax`.
    let line = text.lines().position(|l| l.contains("def count_items")).unwrap() as u32 + 1;

    // `pricing.py` is not open: its definitions come from the workspace index.
    let prompt = prompt_when(&mut server, &uri, line, 8, |p| has_source(p, "definition:pricing.py"));
    let text_of = |p: &Value| p["text"].as_str().unwrap_or_default().to_string();
    assert!(has_source(&prompt, "definition:pricing.py:13-"), "{prompt}");
    assert!(text_of(&prompt).starts_with("# from pricing.py:\n"), "{}", text_of(&prompt));
    assert!(text_of(&prompt).contains("\n\n# cart.py\n"), "the file's path line follows the other files' code");
    assert!(text_of(&prompt).contains("def with_tax(price, rate=TAX_RATE):"), "{}", text_of(&prompt));

    // Typing in the same scope keeps the retrieved head of the prompt byte-identical.
    let head = text_of(&prompt)[..text_of(&prompt).find("\"\"\"A shopping cart").unwrap()].to_string();
    server.notify(
        "textDocument/didChange",
        json!({
            "textDocument": { "uri": uri, "version": 2 },
            "contentChanges": [{ "range": { "start": { "line": line, "character": 8 }, "end": { "line": line, "character": 8 } }, "text": "ret" }],
        }),
    );
    let typed = prompt_when(&mut server, &uri, line, 11, |_| true);
    assert!(text_of(&typed).starts_with(&head), "{}", text_of(&typed));

    // A file created outside the editor, announced by the client's file watcher.
    std::fs::write(workspace.root.join("shipping.py"), "def shipping_cost(weight_kg):\n    return 4.5 + weight_kg\n")
        .unwrap();
    server.notify(
        "workspace/didChangeWatchedFiles",
        json!({ "changes": [{ "uri": workspace.uri("shipping.py"), "type": 1 }] }),
    );
    let edited = format!("{text}\n\ndef delivery(weight):\n    return shipping_cost(weight)\n");
    server.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 3 }, "contentChanges": [{ "text": edited }] }),
    );
    let last = edited.lines().count() as u32 - 1;
    let prompt = prompt_when(&mut server, &uri, last, 32, |p| has_source(p, "definition:shipping.py"));
    assert!(has_source(&prompt, "definition:shipping.py:1-"), "{prompt}");
    let state = server.inspect(&uri, None);
    assert_eq!(state["workspaceIndex"]["state"], "ready", "{state}");
    assert!(state["workspaceIndex"]["files"].as_u64().unwrap() >= 3, "{state}");
    server.shutdown();
}

#[test]
fn a_missing_import_line_is_offered_from_the_index_without_the_model() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("context-e2e-import");
    let mut server = TestServer::ready_at(&workspace.root, json!({ "modelPath": model, "threads": 1 }));
    // `with_tax` is used below but no longer imported; the cursor is on the empty line after
    // the imports.
    let uri = workspace.uri("cart.py");
    let text = workspace
        .read("cart.py")
        .replace("from pricing import apply_discount, with_tax\n", "from pricing import apply_discount\n\n");
    server.open(&uri, "python", &text);
    let line = text.lines().position(|l| l.starts_with("from pricing")).unwrap() as u32 + 1;
    let prompt = prompt_when(&mut server, &uri, line, 0, |p| has_source(p, "import:pricing.py"));
    assert_eq!(prompt["grounded"]["text"], "from pricing import with_tax", "{prompt}");
    let generated = |server: &mut TestServer| server.inspect(&uri, None)["engine"]["stats"]["generatedTokens"].clone();
    let before = generated(&mut server);
    let result = server
        .request(
            "textDocument/inlineCompletion",
            json!({
                "textDocument": { "uri": uri },
                "position": { "line": line, "character": 0 },
                "context": { "triggerKind": 1 },
            }),
        )
        .unwrap();
    assert_eq!(result["items"][0]["insertText"], "from pricing import with_tax", "{result}");
    assert_eq!(generated(&mut server), before, "no model run for the import line");
    server.shutdown();
}
