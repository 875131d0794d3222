//! Code actions never lose text: no edit lands outside the workspace folder (not through `..`
//! in a URI, not through a symbolic link), and an edit made while the model is generating
//! turns the result into `ContentModified` with no edit. (Stale versions before generation and
//! append-only test files are covered in `code_actions_e2e.rs`.)

mod common;

use std::path::{Path, PathBuf};

use common::{ScratchDir, TestServer, default_model, fixture_model};
use serde_json::{Value, json};

/// A scratch folder holding a workspace `ws/` and a sibling `outside/`.
fn scratch(name: &str) -> ScratchDir {
    let scratch = ScratchDir::new(&format!("lost-{name}"));
    std::fs::create_dir_all(scratch.0.join("ws")).unwrap();
    std::fs::create_dir_all(scratch.0.join("outside")).unwrap();
    scratch
}

const SOURCE: &str = "def total(items):\n    return sum(items)\n";

fn action(server: &mut TestServer, uri: &str, kind: &str) -> Value {
    let actions = server.code_actions(uri, 1, 8);
    actions.iter().find(|a| a["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind} in {actions:?}"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    files
}

#[test]
fn tests_are_never_planned_outside_the_workspace_folder() {
    let scratch = scratch("outside");
    std::fs::write(scratch.0.join("outside/m.py"), SOURCE).unwrap();
    std::os::unix::fs::symlink(scratch.0.join("outside"), scratch.0.join("ws").join("linked")).unwrap();
    let mut server = TestServer::spawn(&[]);
    server.initialize_at(&scratch.0.join("ws"), json!({ "modelPath": fixture_model() }), &["utf-16"]);
    server.wait_ready();
    for (uri, why) in [
        // `..` in the URI: lexically inside `ws/`, really beside it.
        (format!("file://{}/ws/../outside/m.py", scratch.0.display()), "outside the workspace"),
        (format!("file://{}/ws/%2E%2E/outside/m.py", scratch.0.display()), "outside the workspace"),
        // A symbolic link inside the workspace that leads out of it.
        (format!("file://{}/ws/linked/m.py", scratch.0.display()), "symbolic link"),
    ] {
        server.open(&uri, "python", SOURCE);
        let tests = action(&mut server, &uri, "refactor.nib.tests");
        let error = server.request("codeAction/resolve", tests).unwrap_err();
        assert!(error["message"].as_str().unwrap().contains(why), "{uri}: {error}");
        server.notify("textDocument/didClose", json!({ "textDocument": { "uri": uri } }));
    }
    assert_eq!(files_under(&scratch.0.join("outside")), vec![scratch.0.join("outside/m.py")]);
    server.shutdown();
}

#[test]
fn an_edit_during_generation_means_no_edit() {
    // The default model takes seconds for a docstring: the edit lands while it generates.
    let Some(model) = default_model() else { return };
    let scratch = scratch("during");
    let path = scratch.0.join("ws").join("m.py");
    std::fs::write(&path, SOURCE).unwrap();
    let mut server = TestServer::spawn(&[]);
    server.initialize_at(&scratch.0.join("ws"), json!({ "modelPath": model, "threads": 2 }), &["utf-16"]);
    server.wait_ready();
    let uri = format!("file://{}", path.display());
    server.open(&uri, "python", SOURCE);
    let docstring = action(&mut server, &uri, "refactor.rewrite.nib.docstring");
    let id = server.send_request("codeAction/resolve", docstring);
    server.notify(
        "textDocument/didChange",
        json!({
            "textDocument": { "uri": uri, "version": 2 },
            "contentChanges": [{ "range": { "start": { "line": 2, "character": 0 }, "end": { "line": 2, "character": 0 } }, "text": "x = 1\n" }],
        }),
    );
    let error = server.response(id).unwrap_err();
    assert_eq!(error["code"], -32801, "{error}");
    assert!(error["message"].as_str().unwrap().contains("nothing was applied"), "{error}");
    assert_eq!(server.inspect(&uri, None)["text"], format!("{SOURCE}x = 1\n"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), SOURCE, "nib never writes files itself");
    server.shutdown();
}
