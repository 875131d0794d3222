//! Faults around the model and the runtime: a missing or broken model directory, a tokenizer
//! that does not belong to the model, a missing or too old ONNX Runtime, a panic inside
//! inference and inference slower than the request timeout. Each is a clear
//! `window/showMessage` and log line, the request gets an error reply, the server keeps
//! serving, and completions come back once the problem is fixed (a configuration change).

mod common;

use std::path::{Path, PathBuf};

use common::{ScratchDir, TestServer, default_model, fixture_model, repo_root};
use serde_json::{Value, json};

fn invoked_completion(server: &mut TestServer, uri: &str, line: u32, character: u32) -> Result<Value, Value> {
    server.request(
        "textDocument/inlineCompletion",
        json!({
            "textDocument": { "uri": uri },
            "position": { "line": line, "character": character },
            "context": { "triggerKind": 1 },
        }),
    )
}

/// A scratch copy of the fixture model.
fn scratch_model(name: &str) -> ScratchDir {
    let scratch = ScratchDir::new(&format!("fault-{name}"));
    for file in ["model.onnx", "tokenizer.json", "config.json", "nib.json"] {
        std::fs::copy(fixture_model().join(file), scratch.0.join(file)).unwrap();
    }
    scratch
}

/// Waits for the error `window/showMessage` containing `expected` and checks the matching line
/// went to the client's log too.
fn expect_shown(server: &mut TestServer, level: u64, expected: &str) -> String {
    let shown = server.wait_for("an error message", |m| m["method"] == "window/showMessage");
    let message = shown["params"]["message"].as_str().unwrap().to_string();
    assert_eq!(shown["params"]["type"], level, "{shown}");
    assert!(message.contains(expected), "expected {expected:?} in {message:?}");
    let logged = server.log.iter().any(|m| {
        m["method"] == "window/logMessage" && message.ends_with(m["params"]["message"].as_str().unwrap_or("\u{0}"))
    });
    assert!(logged, "no log line for {message:?}");
    message
}

/// Starts on the broken model at `dir`, checks the failure is reported and answered, then
/// points the configuration at the working fixture and expects completions.
fn broken_then_fixed(dir: &Path, expected: &str) {
    let mut server = TestServer::spawn(&[]);
    server.initialize(json!({ "modelPath": dir }), &["utf-16"]);
    let message = expect_shown(&mut server, 1, expected);
    assert!(message.contains(&dir.display().to_string()), "the message names the model: {message}");
    let status = server.wait_for_status(|s| s["state"] == "error");
    assert!(status["message"].as_str().unwrap().contains(expected), "{status}");

    let uri = "file:///w/f.py";
    server.open(uri, "python", "def f(x):\n    \n");
    // Invoked: an error that says why. Automatic: quietly nothing.
    let error = invoked_completion(&mut server, uri, 1, 4).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("no model"), "{error}");
    assert!(error["message"].as_str().unwrap().contains(expected), "{error}");
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
    let result = invoked_completion(&mut server, uri, 1, 4).expect("a completion once the model works");
    assert!(result["items"].is_array(), "{result}");
    server.shutdown();
}

#[test]
fn a_missing_model_directory_is_reported_and_fixing_the_configuration_brings_completions_back() {
    broken_then_fixed(Path::new("/nonexistent/nib-model"), "does not exist");
}

#[test]
fn a_truncated_model_is_reported_and_fixing_the_configuration_brings_completions_back() {
    let scratch = scratch_model("truncated");
    let onnx = std::fs::read(fixture_model().join("model.onnx")).unwrap();
    std::fs::write(scratch.0.join("model.onnx"), &onnx[..onnx.len() / 3]).unwrap();
    broken_then_fixed(&scratch.0, "cannot load");
}

#[test]
fn a_tokenizer_of_another_model_is_refused_before_it_can_index_out_of_bounds() {
    // Token ids past the model's 411-row embedding: what another model's tokenizer produces.
    let scratch = scratch_model("tokenizer");
    let path = scratch.0.join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tokenizer["model"]["vocab"].as_object_mut().unwrap();
    for id in vocab.values_mut().filter(|id| id.as_u64() >= Some(300)) {
        *id = json!(id.as_u64().unwrap() + 5000);
    }
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    broken_then_fixed(&scratch.0, "the tokenizer does not belong to this model");
}

/// `libonnxruntime.so.*` from the project's virtualenv (`make setup`), if installed.
fn venv_onnx_runtime() -> Option<PathBuf> {
    let lib = repo_root().join(".venv/lib");
    std::fs::read_dir(lib).ok()?.flatten().find_map(|python| {
        let capi = python.path().join("site-packages/onnxruntime/capi");
        std::fs::read_dir(capi)
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("libonnxruntime.so.1")))
    })
}

#[test]
fn a_missing_onnx_runtime_library_is_reported_with_the_fix() {
    let mut server = TestServer::spawn(&[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")]);
    server.initialize(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    let message = expect_shown(&mut server, 1, "onnxruntime");
    assert!(message.contains("make setup"), "{message}");
    server.open("file:///w/g.py", "python", "x = 1\n");
    assert_eq!(server.inspect("file:///w/g.py", None)["text"], "x = 1\n");
    server.shutdown();
}

#[test]
fn an_onnx_runtime_of_the_wrong_version_or_a_foreign_library_is_refused_and_the_setting_fixes_it() {
    let Some(real) = venv_onnx_runtime() else {
        eprintln!("skipping: no ONNX Runtime in .venv (run `make setup`)");
        return;
    };
    // A real shared library whose name says 1.16: refused before it is loaded.
    let dir = ScratchDir::new("fault-ort");
    let old = dir.0.join("libonnxruntime.so.1.16.3");
    std::fs::copy(&real, &old).unwrap();
    let mut server = TestServer::spawn(&[("ORT_DYLIB_PATH", old.to_str().unwrap())]);
    server.initialize(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    let message = expect_shown(&mut server, 1, "is onnxruntime 1.16, but nib needs 1.31 or newer");
    assert!(message.contains("make setup"), "{message}");
    let uri = "file:///w/h.py";
    server.open(uri, "python", "def h(x):\n    \n");
    let error = invoked_completion(&mut server, uri, 1, 4).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("1.16"), "{error}");
    // A shared library that is not ONNX Runtime at all, under ONNX Runtime's name.
    let foreign = dir.0.join("libonnxruntime.so.1.31.1");
    std::fs::copy(real.with_file_name("libonnxruntime_providers_shared.so"), &foreign).unwrap();
    server.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "nib": { "modelPath": fixture_model(), "onnxRuntimePath": foreign } } }),
    );
    expect_shown(&mut server, 1, "does not export `OrtGetApiBase`");
    assert!(invoked_completion(&mut server, uri, 1, 4).is_err());
    // The setting wins over ORT_DYLIB_PATH.
    server.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "nib": { "modelPath": fixture_model(), "onnxRuntimePath": real } } }),
    );
    server.wait_for_status(|s| s["state"] == "ready");
    assert!(invoked_completion(&mut server, uri, 1, 4).unwrap()["items"].is_array());
    server.shutdown();
}

#[test]
fn a_panic_inside_inference_is_an_error_reply_and_the_next_completion_works() {
    // `NIB_FAULT=panic-in-generate` makes generations whose prompt contains the marker panic.
    let mut server = TestServer::spawn(&[("NIB_FAULT", "panic-in-generate")]);
    // No workspace index: the server's folder is this repository, whose sources hold the
    // marker (this test, the hook), and a snippet retrieved from them would make the plain
    // file's prompt ask for the panic too.
    server.initialize(json!({ "modelPath": fixture_model(), "context": { "workspace": false } }), &["utf-16"]);
    server.wait_ready();
    let marked = "file:///w/marked.py";
    server.open(marked, "python", "def f(x):\n    # nib-fault:panic\n    \n");
    let error = invoked_completion(&mut server, marked, 2, 4).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("internal error during generation"), "{error}");
    expect_shown(&mut server, 2, "internal error during generation");
    // A second failure of the same kind is answered but not shown again.
    assert!(invoked_completion(&mut server, marked, 2, 4).is_err());
    server.notify("textDocument/didClose", json!({ "textDocument": { "uri": marked } }));

    let plain = "file:///w/plain.py";
    server.open(plain, "python", "def g(y):\n    \n");
    let result = invoked_completion(&mut server, plain, 1, 4).expect("the engine serves after the panic");
    assert!(result["items"].is_array(), "{result}");
    assert_eq!(server.inspect(plain, None)["text"], "def g(y):\n    \n");
    server.shutdown();
}

#[test]
fn inference_slower_than_the_request_timeout_is_an_error_and_a_longer_timeout_fixes_it() {
    let Some(model) = default_model() else { return };
    let mut server = TestServer::spawn(&[]);
    // 100 ms, the smallest accepted: shorter than prefilling this file's prompt on any CPU.
    server.initialize(json!({ "modelPath": model, "threads": 2, "requestTimeoutMs": 100 }), &["utf-16"]);
    server.wait_ready();
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "def price_{i}(items, rate):\n    \"\"\"Price of items at rate {i}.\"\"\"\n    return sum(item * rate for item in items) + {i}\n\n"
        ));
    }
    text.push_str("def total(items):\n    ");
    let last_line = text.lines().count() as u32 - 1;
    let uri = "file:///w/prices.py";
    server.open(uri, "python", &text);
    let error = invoked_completion(&mut server, uri, last_line, 4).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("nib.requestTimeoutMs"), "{error}");
    expect_shown(&mut server, 2, "longer than the request timeout");

    server.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "nib": { "modelPath": model, "threads": 2, "requestTimeoutMs": 60000 } } }),
    );
    let result = invoked_completion(&mut server, uri, last_line, 4).expect("a completion with a longer timeout");
    assert!(result["items"].is_array(), "{result}");
    server.shutdown();
}
