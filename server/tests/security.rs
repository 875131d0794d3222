//! In local mode nib opens no network connection and runs no program: completions and both
//! code actions on the fixture model, checked three ways —
//! - always: the server's open file descriptors, sampled while it works, include no socket
//!   (but the unnamed Unix pair the standard library opens while it starts a sandboxed run);
//! - where `strace` works: not one network system call (`socket`, `connect`, ...) and no
//!   `execve` other than nib's own start (and its one restart with huge pages), in any of its
//!   threads;
//! - where `unshare -rn` works: the same session runs in a network namespace without any
//!   interface but a downed loopback.
//!
//! (**Generate unit tests** and **Add docstring**'s examples run the user's code in a sandbox,
//! docs/reliability.md, on that explicit action and only with `nib.tests.verify` `"auto"`: the
//! `strace` session turns it off, as an untrusted workspace does, and then no program runs.)
//!
//! Then the trust boundaries of docs/security.md, one test per threat: a hostile or broken
//! completions server (`common/http_stub.rs` plays it: redirects, endless keep-alives and
//! pieces, huge error bodies, slow answers), settings that carry credentials, and the
//! lifecycle edges (`shutdown`/`exit` while a code action runs, requests while the model loads).

mod common;
#[path = "common/http_stub.rs"]
mod http_stub;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ScratchDir, TestServer, fixture_model};
use http_stub::HttpStub;
use serde_json::{Value, json};

/// Whether `wrapper` can run a program here (ptrace or user namespaces may be forbidden).
fn usable(wrapper: &[&str]) -> bool {
    let (program, args) = wrapper.split_first().unwrap();
    Command::new(program)
        .args(args)
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Sockets among the open file descriptors of `pid` (and its threads, which share them), but
/// for unnamed Unix ones: the standard library opens an unnamed Unix socket pair for a moment
/// whenever it starts a program with a `pre_exec` hook (the sandboxed test runs), to hear of a
/// failed `exec`. The kernel's table of Unix sockets is read before and after the descriptors,
/// so a pair that lives across the listing is found in one of them.
fn sockets(pid: u32) -> Vec<String> {
    let before = unnamed_unix_sockets(pid);
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let open: Vec<String> = entries
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
        .collect();
    let after = unnamed_unix_sockets(pid);
    open.into_iter().filter(|socket| !before.contains(socket) && !after.contains(socket)).collect()
}

/// The unnamed Unix sockets in the network namespace of `pid`, as `/proc/PID/fd` names them
/// (`socket:[INODE]`): the rows of `/proc/PID/net/unix` without a path.
fn unnamed_unix_sockets(pid: u32) -> Vec<String> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .map(|row| row.split_whitespace().collect::<Vec<_>>())
        .filter(|columns| columns.len() == 7)
        .map(|columns| format!("socket:[{}]", columns[6]))
        .collect()
}

/// A scratch workspace with one Python module on disk.
fn workspace(name: &str) -> ScratchDir {
    let scratch = ScratchDir::new(&format!("security-{name}"));
    std::fs::write(scratch.0.join("cart.py"), "def total(items, rate):\n    return sum(items) * rate\n").unwrap();
    scratch
}

/// Completions, a docstring and tests on the fixture model; calls `probe` while requests run.
/// Returns how many requests were answered.
fn session(server: &mut TestServer, root: &Path, verify: &str, probe: &mut dyn FnMut(&TestServer)) -> usize {
    let options = json!({ "modelPath": fixture_model(), "threads": 1, "tests": { "verify": verify } });
    server.initialize_at(root, options, &["utf-16"]);
    server.wait_ready();
    let uri = format!("file://{}", root.join("cart.py").display());
    server.open(&uri, "python", &std::fs::read_to_string(root.join("cart.py")).unwrap());
    let mut answered = 0;
    for round in 0..20 {
        let id = server.send_request(
            "textDocument/inlineCompletion",
            json!({
                "textDocument": { "uri": uri },
                "position": { "line": 1, "character": 4 + round % 10 },
                "context": { "triggerKind": 1 },
            }),
        );
        probe(server);
        let reply = server.response(id).unwrap_or_else(|e| e);
        assert!(reply["items"].is_array() || reply["code"] == -32800, "{reply}");
        answered += 1;
    }
    let actions = server.code_actions(&uri, 1, 8);
    for action in actions {
        let id = server.send_request("codeAction/resolve", action);
        probe(server);
        // The tiny model's prose may be refused; either way the model ran.
        let _ = server.response(id);
        answered += 1;
    }
    probe(server);
    server.unread.retain(|m| m["method"] != "window/showMessage");
    answered
}

/// The probe itself, on this process (whose other tests open sockets of their own): a TCP
/// listener and a Unix socket bound to a path count, an unnamed Unix pair does not.
#[test]
fn the_socket_probe_sees_network_and_named_sockets_but_not_an_unnamed_pair() {
    use std::os::fd::AsRawFd;
    let me = std::process::id();
    let name = |fd: &dyn AsRawFd| {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().to_string_lossy().into_owned()
    };
    let (one, other) = std::os::unix::net::UnixStream::pair().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scratch = ScratchDir::new("security-probe");
    let named = std::os::unix::net::UnixListener::bind(scratch.0.join("probe.sock")).unwrap();
    let seen = sockets(me);
    assert!(seen.contains(&name(&listener)), "the TCP listener: {seen:?}");
    assert!(seen.contains(&name(&named)), "the Unix socket with a path: {seen:?}");
    assert!(!seen.contains(&name(&one)) && !seen.contains(&name(&other)), "the unnamed pair: {seen:?}");
}

#[test]
fn no_socket_is_ever_open() {
    let workspace = workspace("fd");
    let mut server = TestServer::spawn(&[]);
    let mut samples = 0;
    let mut seen = Vec::new();
    let answered = session(&mut server, &workspace.0, "auto", &mut |server| {
        samples += 1;
        seen.extend(sockets(server.pid()));
    });
    assert!(answered >= 20 && samples >= 20, "{answered} requests, {samples} samples");
    assert!(seen.is_empty(), "nib had sockets open: {seen:?}");
    server.shutdown();
}

#[test]
fn no_network_system_call_and_no_program_run_under_strace() {
    let wrapper = ["strace", "-f", "-qq", "-e", "trace=%network,execve,execveat"];
    if !usable(&wrapper[..]) {
        eprintln!("skipping: strace cannot trace here");
        return;
    }
    let workspace = workspace("strace");
    let trace = workspace.0.join("strace.txt");
    let trace_arg = trace.to_string_lossy().into_owned();
    let mut full: Vec<&str> = wrapper.to_vec();
    full.extend(["-o", trace_arg.as_str()]);
    let mut server = TestServer::spawn_wrapped(&full, &[]);
    session(&mut server, &workspace.0, "off", &mut |_| {});
    server.shutdown();
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text.lines().filter(|line| !line.contains("+++") && !line.contains("---")).collect();
    let execs: Vec<&&str> = calls.iter().filter(|line| line.contains("execve")).collect();
    // nib's start, and its one restart with huge pages (`allocator::restart_with_huge_pages`).
    let nib = [common::nib_binary(), common::nib_binary().canonicalize().unwrap()];
    let is_nib = |line: &&&str| nib.iter().any(|path| line.contains(path.to_str().unwrap()));
    assert!((1..=2).contains(&execs.len()) && execs.iter().all(is_nib), "nib ran programs: {execs:?}");
    let network: Vec<&&str> = calls.iter().filter(|line| !line.contains("execve")).collect();
    assert!(network.is_empty(), "network system calls: {network:?}");
}

#[test]
fn a_session_works_without_any_network() {
    let wrapper = ["unshare", "--user", "--map-root-user", "--net"];
    if !usable(&wrapper[..]) {
        eprintln!("skipping: no user and network namespaces here");
        return;
    }
    let workspace = workspace("netns");
    let mut server = TestServer::spawn_wrapped(&wrapper, &[]);
    let answered = session(&mut server, &workspace.0, "auto", &mut |_| {});
    assert!(answered >= 20);
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------
// A hostile or broken completions server.

const STUB_MODEL: &str = "stub-model";

/// nib on the remote backend at `url`, with `remote` merged into `nib.remote` and `top` into
/// `nib`, in a scratch workspace holding `cart.py`; returns once the backend is ready.
fn remote_nib(name: &str, url: &str, remote: Value, top: Value, env: &[(&str, &str)]) -> (TestServer, ScratchDir) {
    let workspace = workspace(name);
    let mut settings = json!({ "backend": "remote", "remote": { "url": url, "model": STUB_MODEL } });
    for (key, value) in remote.as_object().unwrap() {
        settings["remote"][key] = value.clone();
    }
    for (key, value) in top.as_object().unwrap() {
        settings[key] = value.clone();
    }
    let mut server = TestServer::spawn(env);
    server.initialize_at(&workspace.0, settings, &["utf-16"]);
    (server, workspace)
}

fn open_cart(server: &mut TestServer, workspace: &ScratchDir) -> String {
    let uri = format!("file://{}", workspace.0.join("cart.py").display());
    server.open(&uri, "python", &std::fs::read_to_string(workspace.0.join("cart.py")).unwrap());
    uri
}

/// Opens a module whose function body is still empty; completions are asked at (1, 4).
fn open_spot(server: &mut TestServer, workspace: &ScratchDir) -> String {
    let uri = format!("file://{}", workspace.0.join("spot.py").display());
    server.open(&uri, "python", "def total(items, rate):\n    \n");
    uri
}

fn posts(stub: &HttpStub) -> usize {
    stub.requests().iter().filter(|r| r.method == "POST").count()
}

fn shown(server: &mut TestServer, contains: &str) -> String {
    let message = server.wait_for(&format!("a message containing {contains:?}"), |m| {
        m["method"] == "window/showMessage" && m["params"]["message"].as_str().unwrap_or("").contains(contains)
    });
    message["params"]["message"].as_str().unwrap().to_string()
}

/// Waits until the stub has received a request for `path`.
fn wait_for_request(stub: &HttpStub, path: &str) {
    let deadline = Instant::now() + common::TIMEOUT;
    while !stub.requests().iter().any(|r| r.path.ends_with(path)) {
        assert!(Instant::now() < deadline, "nib never requested {path}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn docstring_action(server: &mut TestServer, uri: &str) -> Value {
    let actions = server.code_actions(uri, 0, 6);
    actions.into_iter().find(|a| a["kind"] == "refactor.rewrite.nib.docstring").expect("Add docstring is offered")
}

#[test]
fn a_redirect_is_reported_with_its_location_and_never_followed() {
    // Where the redirect points: whatever reaches it (the prompt, the key) has leaked.
    let elsewhere = HttpStub::start(|_, stream| http_stub::respond(stream, "200 OK", "", "{}"));
    let location = format!("{}/completions", elsewhere.url());
    let redirect_to = location.clone();
    let stub = HttpStub::start(move |request, stream| match request.path.as_str() {
        "/v1/models" => http_stub::models(stream, STUB_MODEL),
        _ => http_stub::respond(stream, "307 Temporary Redirect", &format!("Location: {redirect_to}\r\n"), ""),
    });
    let env = [("NIB_API_KEY", "sk-do-not-leak")];
    let (mut server, workspace) =
        remote_nib("redirect", &stub.url(), json!({ "apiKeyEnv": "NIB_API_KEY" }), json!({}), &env);
    server.wait_ready();
    let uri = open_spot(&mut server, &workspace);
    let id = server.inline(&uri, 1, 4, 1);
    let error = server.response(id).expect_err("a redirect is an error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("HTTP 307") && message.contains(&location), "{message}");
    shown(&mut server, "does not follow redirects");
    assert!(elsewhere.requests().is_empty(), "the redirect was followed: {:?}", elsewhere.requests());
    let posted: Vec<_> = stub.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posted.len(), 1, "one request, not retried elsewhere");
    assert_eq!(posted[0].header("authorization"), Some("Bearer sk-do-not-leak"), "the key went only to the server");
    server.shutdown();
}

#[test]
fn keep_alive_lines_cannot_hold_a_code_action_past_its_deadline() {
    let stub = HttpStub::start(|request, stream| match request.path.as_str() {
        "/v1/models" => http_stub::models(stream, STUB_MODEL),
        _ => http_stub::keep_alive_forever(stream, Duration::from_secs(150)),
    });
    // An idle timeout longer than the test: only the generation's deadline can end it.
    let (mut server, workspace) =
        remote_nib("keepalive", &stub.url(), json!({ "timeoutMs": 600000 }), json!({ "requestTimeoutMs": 1000 }), &[]);
    server.wait_ready();
    let uri = open_cart(&mut server, &workspace);
    let action = server.code_actions(&uri, 0, 6).into_iter().find(|a| a["kind"] == "refactor.rewrite.nib.docstring");
    let id = server.send_request("codeAction/resolve", action.expect("Add docstring is offered"));
    let error = server.response(id).expect_err("the generation runs out of time");
    assert!(error["message"].as_str().unwrap().contains("nib.requestTimeoutMs"), "{error}");
    server.unread.retain(|m| m["method"] != "window/showMessage");
    server.shutdown();
}

#[test]
fn a_server_that_never_stops_sending_is_cut_off_at_the_token_and_byte_limits() {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let stub = HttpStub::start(move |request, stream| {
        if request.path == "/v1/models" {
            return http_stub::models(stream, STUB_MODEL);
        }
        // First request: tiny pieces forever. Then: 1 MB pieces forever.
        let piece = if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            "x+".to_string()
        } else {
            "y".repeat(1 << 20)
        };
        http_stub::start_events(stream);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(150) && http_stub::event(stream, &http_stub::piece(&piece, None))
        {
        }
    });
    let top = json!({ "requestTimeoutMs": 600000, "completion": { "maxTokens": 16 } });
    let (mut server, workspace) = remote_nib("endless", &stub.url(), json!({}), top, &[]);
    server.wait_ready();
    let uri = open_spot(&mut server, &workspace);
    for round in 0..2 {
        // Different positions, so the second is not answered from the first's suggestion.
        let id = server.inline(&uri, 1, 4 - round, 1);
        let result = server.response(id).expect("an answer cut at the limits, not an error");
        let text = common::ghost_text(&result);
        assert!(text.len() <= 16 * 64, "round {round}: {} bytes", text.len());
        assert_eq!(posts(&stub), round as usize + 1, "the server was asked");
    }
    server.shutdown();
}

#[test]
fn server_text_is_cut_short_and_credentials_in_the_url_are_refused_unrepeated() {
    let huge = "E".repeat(100_000);
    let stub = HttpStub::start(move |request, stream| match request.path.as_str() {
        "/v1/models" => http_stub::models(stream, STUB_MODEL),
        _ => http_stub::respond(
            stream,
            "500 Internal Server Error",
            "",
            &json!({ "error": { "message": huge } }).to_string(),
        ),
    });
    let with_password = stub.url().replace("http://", "http://alice:hunter2@");
    let (mut server, workspace) = remote_nib("credentials", &with_password, json!({}), json!({}), &[]);
    let warning = shown(&mut server, "carries credentials");
    assert!(warning.contains("***@127.0.0.1") && !warning.contains("hunter2"), "{warning}");
    shown(&mut server, "nib.remote.url is not set");
    server.wait_for_status(|s| s["state"] == "error");

    server.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "nib": {
        "backend": "remote", "remote": { "url": stub.url(), "model": STUB_MODEL } } } }),
    );
    server.wait_for_status(|s| s["state"] == "ready");
    let uri = open_spot(&mut server, &workspace);
    let id = server.inline(&uri, 1, 4, 1);
    let error = server.response(id).expect_err("HTTP 500");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("HTTP 500") && message.len() < 600,
        "{} bytes: {}",
        message.len(),
        &message[..200.min(message.len())]
    );
    let shown_message = shown(&mut server, "HTTP 500");
    assert!(shown_message.len() < 700, "{} bytes", shown_message.len());
    let said = serde_json::to_string(&server.log).unwrap();
    assert!(!said.contains("hunter2"), "the password reached the editor");
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------
// An untrusted repository.

#[test]
fn a_test_file_that_links_out_of_the_workspace_is_never_targeted_even_dangling() {
    let workspace = workspace("dangling-link");
    let outside = ScratchDir::new("security-outside");
    // Checked in by someone else: a link to a file that does not exist yet, outside.
    let stolen = outside.0.join("stolen.py");
    std::os::unix::fs::symlink(&stolen, workspace.0.join("test_cart.py")).unwrap();
    let mut server = TestServer::spawn(&[]);
    server.initialize_at(&workspace.0, json!({ "modelPath": fixture_model(), "threads": 1 }), &["utf-16"]);
    server.wait_ready();
    let uri = open_cart(&mut server, &workspace);
    let tests = server.code_actions(&uri, 0, 6).into_iter().find(|a| a["kind"] == "refactor.nib.tests");
    let error = server.request("codeAction/resolve", tests.expect("Generate unit tests is offered")).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("is a symbolic link"), "{error}");
    assert!(!stolen.exists(), "nothing was written outside the workspace");
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Lifecycle edges.

#[test]
fn exit_during_a_code_action_ends_the_server_at_once() {
    let stub = HttpStub::start(|request, stream| match request.path.as_str() {
        "/v1/models" => http_stub::models(stream, STUB_MODEL),
        _ => http_stub::keep_alive_forever(stream, Duration::from_secs(150)),
    });
    // Nothing but `shutdown` can end this generation: every limit is ten minutes.
    let (mut server, workspace) =
        remote_nib("exit", &stub.url(), json!({ "timeoutMs": 600000 }), json!({ "requestTimeoutMs": 600000 }), &[]);
    server.wait_ready();
    let uri = open_cart(&mut server, &workspace);
    let action = docstring_action(&mut server, &uri);
    let id = server.send_request("codeAction/resolve", action);
    wait_for_request(&stub, "/completions");
    assert_eq!(server.request("shutdown", Value::Null), Ok(Value::Null));
    server.notify("exit", Value::Null);
    let status = server.wait_exit().expect("nib exits while the action's server is still streaming");
    assert!(status.success(), "{status}");
    let error = server.response(id).expect_err("the action was cancelled, not completed");
    assert!([-32800, -32603].contains(&error["code"].as_i64().unwrap()), "{error}");
}

#[test]
fn no_edit_is_applied_after_shutdown() {
    // The server answers after a pause, so the answer arrives after `shutdown`.
    let stub = HttpStub::start(|request, stream| match request.path.as_str() {
        "/v1/models" => http_stub::models(stream, STUB_MODEL),
        _ => {
            std::thread::sleep(Duration::from_millis(1500));
            http_stub::complete_stream(stream, "Total of the items at the given rate.");
        }
    });
    let (mut server, workspace) = remote_nib("after-shutdown", &stub.url(), json!({}), json!({}), &[]);
    server.wait_ready();
    let uri = open_cart(&mut server, &workspace);
    let data = docstring_action(&mut server, &uri)["data"].clone();
    // The executeCommand path: the edit would come as a `workspace/applyEdit` request.
    let id =
        server.send_request("workspace/executeCommand", json!({ "command": "nib.addDocstring", "arguments": [data] }));
    wait_for_request(&stub, "/completions");
    assert_eq!(server.request("shutdown", Value::Null), Ok(Value::Null));
    let after_shutdown = server.log.len();
    std::thread::sleep(Duration::from_millis(2500)); // The answer arrives meanwhile.
    server.notify("exit", Value::Null);
    assert!(server.wait_exit().is_some_and(|status| status.success()));
    let _ = server.response(id).expect_err("the command was cancelled");
    let applied: Vec<&Value> =
        server.log[after_shutdown..].iter().filter(|m| m["method"] == "workspace/applyEdit").collect();
    assert!(applied.is_empty(), "an edit was sent after shutdown: {applied:?}");
}

/// A server whose `GET /models` (nib's first contact, while the status is "loading") takes
/// `delay`; completions are answered at once.
fn slow_to_start(delay: Duration) -> HttpStub {
    HttpStub::start(move |request, stream| match request.path.as_str() {
        "/v1/models" => {
            std::thread::sleep(delay);
            http_stub::models(stream, STUB_MODEL);
        }
        _ => http_stub::complete_stream(stream, "Total of the items at the given rate."),
    })
}

#[test]
fn explicit_requests_wait_for_a_loading_model_and_automatic_ones_do_not() {
    let stub = slow_to_start(Duration::from_millis(1500));
    let (mut server, workspace) = remote_nib("load-wait", &stub.url(), json!({}), json!({}), &[]);
    let spot = open_spot(&mut server, &workspace);
    let uri = open_cart(&mut server, &workspace);
    let action = docstring_action(&mut server, &uri); // Listing needs no model.
    let invoked = server.inline(&spot, 1, 4, 1);
    let automatic = server.inline(&spot, 1, 4, 2);
    let cancelled = server.inline(&spot, 1, 3, 1);
    let resolve = server.send_request("codeAction/resolve", action);
    server.notify("$/cancelRequest", json!({ "id": cancelled }));
    assert_eq!(server.response(automatic), Ok(json!({ "items": [] })), "automatic requests do not wait");
    assert_eq!(server.response(cancelled).unwrap_err()["code"], -32800, "a waiting request can be cancelled");
    assert!(stub.requests().iter().all(|r| r.method == "GET"), "nothing was generated before the model was ready");
    let completion = server.response(invoked).expect("the invoked completion waited for the model");
    assert!(completion["items"].is_array(), "{completion}");
    let resolved = server.response(resolve).expect("the code action waited for the model");
    assert!(resolved["edit"]["documentChanges"].is_array(), "{resolved}");
    let said = server.wait_for("the docstring's summary", |m| m["method"] == "window/showMessage");
    assert!(said["params"]["message"].as_str().unwrap_or_default().starts_with("nib: docstring written"), "{said}");
    server.shutdown();
}

#[test]
fn the_wait_for_a_loading_model_is_bounded() {
    let stub = slow_to_start(Duration::from_millis(3000));
    let (mut server, workspace) =
        remote_nib("load-bound", &stub.url(), json!({}), json!({ "requestTimeoutMs": 300 }), &[]);
    let spot = open_spot(&mut server, &workspace);
    let invoked = server.inline(&spot, 1, 4, 1);
    let error = server.response(invoked).expect_err("the model took longer than the request timeout");
    assert!(
        error["message"].as_str().unwrap().contains("still loading after 300 ms (nib.requestTimeoutMs)"),
        "{error}"
    );
    server.wait_for_status(|s| s["state"] == "ready");
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Edits to test files.

/// A completions server that writes one test: a name when asked for one, then a body.
fn test_writing_server() -> HttpStub {
    HttpStub::start(|request, stream| match request.path.as_str() {
        "/v1/models" => http_stub::models(stream, STUB_MODEL),
        _ => {
            let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
            let prompt = body["prompt"].as_str().unwrap_or_default();
            let text = if prompt.ends_with("assert total(") { "[1, 2], 2) == 6\n" } else { "sums_items" };
            http_stub::complete_stream(stream, text);
        }
    })
}

#[test]
fn test_edits_address_open_files_as_the_editor_spells_them_and_honour_its_capabilities() {
    let stub = test_writing_server();
    let workspace = ScratchDir::new("security-edits(1)");
    let root = &workspace.0;
    std::fs::write(root.join("cart.py"), "def total(items, rate):\n    return sum(items) * rate\n").unwrap();
    let existing = "from cart import total\n\n\ndef test_one():\n    assert total([1], 1) == 1\n";
    std::fs::write(root.join("test_cart.py"), existing).unwrap();
    // A client like Neovim: URIs not percent-encoded, versioned changes, but no file creation.
    let mut server = TestServer::spawn(&[]);
    let settings = json!({ "backend": "remote", "remote": { "url": stub.url(), "model": STUB_MODEL } });
    let capabilities = json!({
        "workspace": { "applyEdit": true, "workspaceEdit": { "documentChanges": true } },
        "textDocument": { "codeAction": { "resolveSupport": { "properties": ["edit"] } } },
    });
    server.initialize_with(root, settings, capabilities);
    server.wait_ready();
    let uri = format!("file://{}", root.join("cart.py").display());
    let test_uri = format!("file://{}", root.join("test_cart.py").display());
    assert!(uri.contains("edits(1)"), "{uri}");
    server.open(&uri, "python", &std::fs::read_to_string(root.join("cart.py")).unwrap());
    server.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": test_uri, "languageId": "python", "version": 4, "text": existing } }),
    );
    let tests = |server: &mut TestServer| {
        let actions = server.code_actions(&uri, 0, 6);
        actions.into_iter().find(|a| a["kind"] == "refactor.nib.tests").expect("Generate unit tests is offered")
    };
    let action = tests(&mut server);
    let resolved = server.request("codeAction/resolve", action).expect("tests into the open test file");
    let changes = resolved["edit"]["documentChanges"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "the file exists: no create: {changes:?}");
    assert_eq!(changes[0]["textDocument"], json!({ "uri": test_uri, "version": 4 }), "the open document, as spelled");
    shown(&mut server, "written");

    // The test file is gone and the client cannot create files: refused, saying what to do.
    server.notify("textDocument/didClose", json!({ "textDocument": { "uri": test_uri } }));
    std::fs::remove_file(root.join("test_cart.py")).unwrap();
    let action = tests(&mut server);
    let error = server.request("codeAction/resolve", action).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("cannot create files"), "{error}");
    shown(&mut server, "cannot create files");
    server.shutdown();
}
