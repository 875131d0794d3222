//! The server in process: [`run`] over in-memory streams, for lifecycle and dispatch. The
//! client's messages are framed up front; the test reads every framed message the server wrote
//! and checks that each request was answered exactly once, as the spec asks.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::code_actions::{self, ACTIONS};
use super::jsonrpc::code;
use super::server::run;

/// What the server writes, kept for the test to read after `run` returns.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl Write for Written {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn request(id: i64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

fn initialize(id: i64, encodings: &[&str]) -> Value {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model");
    request(
        id,
        "initialize",
        json!({
            "processId": null,
            "capabilities": { "general": { "positionEncodings": encodings } },
            "initializationOptions": { "modelPath": model },
        }),
    )
}

/// Runs the server on `messages`; (exit code, every message it wrote).
fn serve(messages: &[Value]) -> (i32, Vec<Value>) {
    let mut input = Vec::new();
    for message in messages {
        let body = serde_json::to_vec(message).unwrap();
        input.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        input.extend_from_slice(&body);
    }
    let written = Written::default();
    let exit_code = run(std::io::Cursor::new(input), written.clone());
    let output = written.0.lock().unwrap().clone();
    (exit_code, frames(&output))
}

fn frames(mut output: &[u8]) -> Vec<Value> {
    let mut messages = Vec::new();
    while !output.is_empty() {
        let header_end = output.windows(4).position(|window| window == b"\r\n\r\n").expect("a header");
        let header = std::str::from_utf8(&output[..header_end]).unwrap();
        let length: usize = header.strip_prefix("Content-Length: ").expect("Content-Length").parse().unwrap();
        let body = &output[header_end + 4..header_end + 4 + length];
        messages.push(serde_json::from_slice(body).unwrap());
        output = &output[header_end + 4 + length..];
    }
    messages
}

/// The server's answers to requests, by id; each id answered exactly once.
fn answers(written: &[Value]) -> std::collections::BTreeMap<i64, Value> {
    let mut answers = std::collections::BTreeMap::new();
    for message in written.iter().filter(|message| message.get("method").is_none()) {
        let id = message["id"].as_i64().expect("a numeric id");
        assert!(answers.insert(id, message.clone()).is_none(), "request {id} answered twice");
    }
    answers
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"].as_i64().unwrap_or_else(|| panic!("not an error: {answer}"))
}

#[test]
fn lifecycle_initialize_once_then_shutdown_then_exit() {
    let (exit_code, written) = serve(&[
        request(1, "textDocument/hover", json!({})),
        notification("textDocument/didClose", json!({ "textDocument": { "uri": "file:///w/a.py" } })),
        initialize(2, &["utf-16", "utf-8"]),
        initialize(3, &[]),
        notification("initialized", json!({})),
        request(4, "shutdown", Value::Null),
        request(5, "textDocument/hover", json!({})),
        notification("exit", Value::Null),
    ]);
    assert_eq!(exit_code, 0);
    let answers = answers(&written);
    assert_eq!(answers.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(error_code(&answers[&1]), i64::from(code::SERVER_NOT_INITIALIZED));
    assert_eq!(answers[&2]["result"]["capabilities"]["positionEncoding"], "utf-8");
    assert_eq!(answers[&2]["result"]["serverInfo"]["name"], "nib");
    assert_eq!(error_code(&answers[&3]), i64::from(code::INVALID_REQUEST));
    assert_eq!(answers[&4]["result"], Value::Null);
    assert_eq!(error_code(&answers[&5]), i64::from(code::INVALID_REQUEST));
}

#[test]
fn exit_without_shutdown_is_code_one_and_a_closed_stream_code_zero() {
    let (exit_code, _) = serve(&[initialize(1, &[]), notification("exit", Value::Null)]);
    assert_eq!(exit_code, 1);
    let (exit_code, written) = serve(&[initialize(1, &[])]);
    assert_eq!(exit_code, 0);
    assert_eq!(answers(&written).len(), 1);
}

#[test]
fn requests_dispatch_to_their_handlers_and_unknown_ones_are_errors() {
    let uri = "file:///nib-in-process/shop.py";
    let (exit_code, written) = serve(&[
        initialize(1, &[]),
        notification("initialized", json!({})),
        notification(
            "textDocument/didOpen",
            json!({ "textDocument": {
                "uri": uri, "languageId": "python", "version": 1,
                "text": "def price(base):\n    return base * 2\n",
            } }),
        ),
        request(
            2,
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": { "start": { "line": 1, "character": 4 }, "end": { "line": 1, "character": 4 } },
                "context": { "diagnostics": [] },
            }),
        ),
        request(3, "nib/unknown", json!({})),
        request(4, "textDocument/codeAction", json!({ "textDocument": 7 })),
        notification("nib/unknownNotification", json!({})),
        notification("$/cancelRequest", json!({ "id": 99 })),
        request(5, "shutdown", Value::Null),
        notification("exit", Value::Null),
    ]);
    assert_eq!(exit_code, 0);
    let answers = answers(&written);
    assert_eq!(answers.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5], "{written:#?}");
    let kinds: Vec<&str> =
        answers[&2]["result"].as_array().unwrap().iter().map(|action| action["kind"].as_str().unwrap()).collect();
    let docstring = code_actions::kind(ACTIONS[0]);
    assert!(kinds.contains(&docstring.as_str()), "{kinds:?}");
    assert_eq!(error_code(&answers[&3]), i64::from(code::METHOD_NOT_FOUND));
    assert_eq!(error_code(&answers[&4]), i64::from(code::INVALID_PARAMS));
}
