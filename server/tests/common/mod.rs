//! A test client that drives the real `nib` binary over stdio, like an editor does.
//!
//! Every message the server sends must be consumed by the test: `shutdown` fails on unread
//! replies or `window/showMessage`s. Log-like notifications (`window/logMessage`, `nib/status`,
//! `$/progress`) are kept in `self.log` instead, and requests from the server
//! (`workspace/configuration`, `window/workDoneProgress/create`) are answered automatically.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub struct TestServer {
    child: Child,
    stdin: ChildStdin,
    messages: Receiver<Value>,
    next_id: i64,
    /// Messages received but not yet consumed by the test.
    pub unread: VecDeque<Value>,
    /// Log-like notifications, in order.
    pub log: Vec<Value>,
    /// The reply to `workspace/configuration` requests.
    pub settings: Value,
}

pub fn nib_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nib"))
}

/// The repository root (the tests run from `server/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The default model for end-to-end tests (`NIB_TEST_MODEL` overrides). Without it the test is
/// skipped, unless `NIB_REQUIRE_DEFAULT_MODEL` is set (as `make test` does): then it fails.
pub fn default_model() -> Option<PathBuf> {
    let path = std::env::var_os("NIB_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/smollm2-135m-instruct"));
    if path.join("model.onnx").is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("NIB_REQUIRE_DEFAULT_MODEL").is_none(),
        "the default model is missing at {}: run `make setup`",
        path.display()
    );
    eprintln!("skipping: no default model at {} (run `make setup`)", path.display());
    None
}

pub fn fixture_model() -> PathBuf {
    repo_root().join("tests/fixtures/tiny-model")
}

fn read_message(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = value.parse().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).expect("the server sent invalid JSON"))
}

/// A client's capabilities as VS Code declares them (but without `workspace/configuration`):
/// the `encodings` offered, progress, versioned edits with file creation, and resolved edits.
pub fn editor_capabilities(encodings: &[&str]) -> Value {
    json!({
        "general": { "positionEncodings": encodings },
        "window": { "workDoneProgress": true },
        "workspace": {
            "applyEdit": true,
            "workspaceEdit": { "documentChanges": true, "resourceOperations": ["create"] },
        },
        "textDocument": { "codeAction": { "resolveSupport": { "properties": ["edit"] } } },
    })
}

impl TestServer {
    /// Spawns `nib` with the given extra environment, without initializing.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        Self::spawn_with(&[], env, Stdio::inherit())
    }

    /// Spawns `nib` under a wrapper command (`strace ...`, `unshare ...`; empty for none).
    pub fn spawn_wrapped(wrapper: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with(wrapper, env, Stdio::inherit())
    }

    /// `spawn`, with the server's log (stderr) sent to `stderr`, e.g. a file the test reads.
    pub fn spawn_with_stderr(env: &[(&str, &str)], stderr: Stdio) -> Self {
        Self::spawn_with(&[], env, stderr)
    }

    fn spawn_with(wrapper: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(nib_binary());
                command
            }
            None => Command::new(nib_binary()),
        };
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr);
        command.env("NIB_LOG", "nib=debug");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn nib");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Some(message) = read_message(&mut stdout) {
                if sender.send(message).is_err() {
                    return;
                }
            }
        });
        TestServer {
            child,
            stdin,
            messages,
            next_id: 0,
            unread: VecDeque::new(),
            log: Vec::new(),
            settings: Value::Null,
        }
    }

    /// Spawns and initializes with `initializationOptions` and the position encodings offered.
    pub fn start(options: Value, encodings: &[&str]) -> Self {
        let mut server = Self::spawn(&[]);
        let result = server.initialize(options, encodings);
        assert!(result["capabilities"].is_object(), "{result}");
        server
    }

    pub fn initialize(&mut self, options: Value, encodings: &[&str]) -> Value {
        self.initialize_at(&repo_root(), options, encodings)
    }

    /// `initialize` with `root` as the workspace folder, declaring what VS Code declares.
    pub fn initialize_at(&mut self, root: &Path, options: Value, encodings: &[&str]) -> Value {
        let mut capabilities = editor_capabilities(encodings);
        capabilities["workspace"]["configuration"] = json!(true);
        self.initialize_with(root, options, capabilities)
    }

    /// `initialize` with `root` as the workspace folder and the client `capabilities` given.
    pub fn initialize_with(&mut self, root: &Path, options: Value, capabilities: Value) -> Value {
        let result = self
            .request(
                "initialize",
                json!({
                    "processId": std::process::id(),
                    "rootUri": format!("file://{}", root.display()),
                    "capabilities": capabilities,
                    "initializationOptions": options,
                }),
            )
            .expect("initialize succeeds");
        self.notify("initialized", json!({}));
        result
    }

    /// The process id of the spawned command (the wrapper's, when there is one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn send(&mut self, message: &Value) {
        self.send_raw(&frame(&serde_json::to_vec(message).unwrap()));
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// A fresh request id, for requests written by hand with `send_raw`.
    pub fn allocate_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a request without waiting; returns its id.
    pub fn send_request(&mut self, method: &str, params: Value) -> i64 {
        let id = self.allocate_id();
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        id
    }

    /// Receives the next message, handling log notifications and server requests on the way.
    fn receive(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => return None,
            };
            let method = message["method"].as_str().unwrap_or("");
            if message.get("id").is_some() && !method.is_empty() {
                // A request from the server.
                let result = match method {
                    "workspace/configuration" => json!([self.settings.clone()]),
                    _ => Value::Null,
                };
                let id = message["id"].clone();
                // After `exit` the server is gone: a request it sent before (progress for the
                // model load) is read while draining and cannot be answered any more.
                let body = serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "result": result })).unwrap();
                if self.stdin.write_all(&frame(&body)).and_then(|()| self.stdin.flush()).is_err() {
                    let exited = wait_with_timeout(&mut self.child, TIMEOUT).is_some();
                    assert!(exited, "cannot write to a running server");
                }
                self.log.push(message);
                continue;
            }
            if matches!(method, "window/logMessage" | "nib/status" | "$/progress" | "telemetry/event") {
                self.log.push(message);
                continue;
            }
            return Some(message);
        }
    }

    /// Waits for the message matching `predicate`, keeping the others unread.
    pub fn wait_for(&mut self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        if let Some(index) = self.unread.iter().position(&predicate) {
            return self.unread.remove(index).unwrap();
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.receive(deadline) {
                Some(message) if predicate(&message) => return message,
                Some(message) => self.unread.push_back(message),
                None => panic!("timed out waiting for {what}; unread: {:?}", self.unread),
            }
        }
    }

    pub fn response(&mut self, id: i64) -> Result<Value, Value> {
        let message =
            self.wait_for(&format!("the reply to request {id}"), |m| m["id"] == json!(id) && m.get("method").is_none());
        match message.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(message["result"].clone()),
        }
    }

    pub fn request(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send_request(method, params);
        self.response(id)
    }

    /// Waits until a `nib/status` notification satisfying `predicate` has arrived.
    pub fn wait_for_status(&mut self, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = 0;
        loop {
            if let Some(found) =
                self.log[seen..].iter().find(|m| m["method"] == "nib/status" && predicate(&m["params"]))
            {
                return found["params"].clone();
            }
            seen = self.log.len();
            match self.receive(deadline.min(Instant::now() + Duration::from_millis(200))) {
                Some(message) => self.unread.push_back(message),
                None if Instant::now() >= deadline => {
                    panic!("timed out waiting for a status; log: {:?}", self.log)
                }
                None => {}
            }
        }
    }

    /// Waits until the backend is ready, and fails at once, showing the status, if it reports
    /// an error instead. For a server that just started: an earlier status counts too.
    pub fn wait_ready(&mut self) -> Value {
        let status = self.wait_for_status(|s| s["state"] == "ready" || s["state"] == "error");
        assert_eq!(status["state"], "ready", "{status}");
        status
    }

    /// A server with `root` as its folder and `options` as its settings, once it is ready.
    pub fn ready_at(root: &Path, options: Value) -> Self {
        let mut server = Self::spawn(&[]);
        server.initialize_at(root, options, &["utf-16"]);
        server.wait_ready();
        server
    }

    pub fn open(&mut self, uri: &str, language_id: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": language_id, "version": 1, "text": text } }),
        );
    }

    pub fn inspect(&mut self, uri: &str, position: Option<(u32, u32)>) -> Value {
        let mut params = json!({ "textDocument": { "uri": uri } });
        if let Some((line, character)) = position {
            params["position"] = json!({ "line": line, "character": character });
        }
        self.request("nib/inspect", params).expect("nib/inspect succeeds")
    }

    /// The code actions listed at (`line`, `character`) of `uri`.
    pub fn code_actions(&mut self, uri: &str, line: u32, character: u32) -> Vec<Value> {
        let at = json!({ "line": line, "character": character });
        let actions = self
            .request(
                "textDocument/codeAction",
                json!({ "textDocument": { "uri": uri }, "range": { "start": at, "end": at }, "context": { "diagnostics": [] } }),
            )
            .expect("textDocument/codeAction succeeds");
        actions.as_array().expect("a list of code actions").clone()
    }

    /// Sends `textDocument/inlineCompletion` at a position (trigger kind 1: invoked, 2: automatic)
    /// without waiting; returns its id.
    pub fn inline(&mut self, uri: &str, line: u32, character: u32, trigger_kind: u32) -> i64 {
        self.send_request(
            "textDocument/inlineCompletion",
            json!({
                "textDocument": { "uri": uri },
                "position": { "line": line, "character": character },
                "context": { "triggerKind": trigger_kind },
            }),
        )
    }

    /// `shutdown` + `exit`; asserts exit code 0 and that the test read every message.
    pub fn shutdown(mut self) {
        let result = self.request("shutdown", Value::Null);
        assert_eq!(result, Ok(Value::Null));
        self.notify("exit", Value::Null);
        let status = wait_with_timeout(&mut self.child, TIMEOUT).expect("nib exits after `exit`");
        assert!(status.success(), "nib exited with {status}");
        // Drain what was sent before exiting.
        while let Some(message) = self.receive(Instant::now() + Duration::from_millis(100)) {
            self.unread.push_back(message);
        }
        assert!(self.unread.is_empty(), "unread messages at shutdown: {:?}", self.unread);
        // The main loop survives a panic in a handler (`Server::guarded`) and logs it; no test
        // may cause one.
        let panics: Vec<&Value> = self
            .log
            .iter()
            .filter(|m| m["method"] == "window/logMessage")
            .filter(|m| {
                m["params"]["message"].as_str().is_some_and(|text| text.starts_with("internal error while handling"))
            })
            .collect();
        assert!(panics.is_empty(), "the main loop panicked: {panics:?}");
    }

    pub fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        drop(std::mem::replace(&mut self.stdin, spawn_dummy_stdin()));
        wait_with_timeout(&mut self.child, TIMEOUT)
    }
}

fn spawn_dummy_stdin() -> ChildStdin {
    let mut child = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let _ = child.wait();
    stdin
}

/// The first item's text of an inline-completion reply ("" for none).
/// `body` with its `Content-Length` header: one LSP frame.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    frame.extend_from_slice(body);
    frame
}

pub fn ghost_text(result: &Value) -> String {
    result["items"][0]["insertText"].as_str().unwrap_or_default().to_string()
}

/// A scratch workspace with a copy of `examples/shop`'s modules, removed when dropped.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    pub fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("nib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for file in ["pricing.py", "cart.py"] {
            std::fs::copy(repo_root().join("examples/shop").join(file), root.join(file)).unwrap();
        }
        Workspace { root }
    }

    pub fn uri(&self, name: &str) -> String {
        format!("file://{}", self.root.join(name).display())
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(name)).unwrap()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh folder under the temporary directory, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch folder");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny deterministic random source for property tests (xorshift64*).
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
