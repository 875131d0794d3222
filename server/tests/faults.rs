//! Faults around the model: a missing or broken model directory is a clear message and an
//! error reply, the server keeps serving, and completions come back once the configuration
//! points at a working model.

mod common;

use common::{TestServer, fixture_model};
use serde_json::{Value, json};

fn invoked_completion(server: &mut TestServer, uri: &str) -> Result<Value, Value> {
    server.request(
        "textDocument/inlineCompletion",
        json!({
            "textDocument": { "uri": uri },
            "position": { "line": 1, "character": 4 },
            "context": { "triggerKind": 1 },
        }),
    )
}

#[test]
fn a_broken_model_is_reported_and_fixing_the_configuration_brings_completions_back() {
    let broken = std::env::temp_dir().join(format!("nib-broken-model-{}", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    for file in ["tokenizer.json", "config.json", "nib.json"] {
        std::fs::copy(fixture_model().join(file), broken.join(file)).unwrap();
    }
    let onnx = std::fs::read(fixture_model().join("model.onnx")).unwrap();
    std::fs::write(broken.join("model.onnx"), &onnx[..onnx.len() / 3]).unwrap();

    let mut server = TestServer::spawn(&[]);
    server.initialize(json!({ "modelPath": broken }), &["utf-16"]);
    let shown = server.wait_for("an error message", |m| m["method"] == "window/showMessage");
    assert_eq!(shown["params"]["type"], 1);
    assert!(shown["params"]["message"].as_str().unwrap().contains("cannot load"), "{shown}");
    let status = server.wait_for_status(|s| s["state"] == "error");
    assert!(status["message"].as_str().unwrap().contains(&broken.display().to_string()));

    let uri = "file:///w/f.py";
    server.open(uri, "python", "def f(x):\n    \n");
    // Invoked: an error that says why. Automatic: quietly nothing.
    let error = invoked_completion(&mut server, uri).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("no model"), "{error}");
    let automatic = server
        .request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": 1, "character": 4 }, "context": { "triggerKind": 2 } }),
        )
        .unwrap();
    assert_eq!(automatic, json!({ "items": [] }));
    // Everything that needs no model still works.
    assert_eq!(server.inspect(uri, Some((1, 4)))["scope"]["name"], "f");

    // The user fixes the setting: the model loads and completions come back.
    server
        .notify("workspace/didChangeConfiguration", json!({ "settings": { "nib": { "modelPath": fixture_model() } } }));
    server.wait_for_status(|s| s["state"] == "ready");
    let result = invoked_completion(&mut server, uri).expect("a completion once the model works");
    assert!(result["items"].is_array(), "{result}");
    server.shutdown();
    std::fs::remove_dir_all(&broken).unwrap();
}

#[test]
fn a_missing_onnx_runtime_library_is_reported_with_the_fix() {
    let mut server = TestServer::spawn(&[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")]);
    server.initialize(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    let shown = server.wait_for("an error message", |m| m["method"] == "window/showMessage");
    let message = shown["params"]["message"].as_str().unwrap();
    assert!(message.contains("onnxruntime") && message.contains("make setup"), "{message}");
    server.open("file:///w/g.py", "python", "x = 1\n");
    assert_eq!(server.inspect("file:///w/g.py", None)["text"], "x = 1\n");
    server.shutdown();
}
