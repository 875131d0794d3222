//! In local mode nib opens no network connection and runs no program: completions and both
//! code actions on the fixture model, checked three ways —
//! - always: the server's open file descriptors, sampled while it works, include no socket;
//! - where `strace` works: not one network system call (`socket`, `connect`, ...) and no
//!   `execve` other than nib's own start, in any of its threads;
//! - where `unshare -rn` works: the same session runs in a network namespace without any
//!   interface but a downed loopback.
//!
//! (`nib.python.interpreter`, off by default, is the one setting that runs a program: docs/reliability.md.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{ScratchDir, TestServer, fixture_model};
use serde_json::json;

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

/// Sockets among the open file descriptors of `pid` (and its threads, which share them).
fn sockets(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
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
fn session(server: &mut TestServer, root: &Path, probe: &mut dyn FnMut(&TestServer)) -> usize {
    server.initialize_at(root, json!({ "modelPath": fixture_model(), "threads": 1 }), &["utf-16"]);
    let status = server.wait_for_status(|s| s["state"] == "ready" || s["state"] == "error");
    assert_eq!(status["state"], "ready", "{status}");
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

#[test]
fn no_socket_is_ever_open() {
    let workspace = workspace("fd");
    let mut server = TestServer::spawn(&[]);
    let mut samples = 0;
    let mut seen = Vec::new();
    let answered = session(&mut server, &workspace.0, &mut |server| {
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
    session(&mut server, &workspace.0, &mut |_| {});
    server.shutdown();
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text.lines().filter(|line| !line.contains("+++") && !line.contains("---")).collect();
    let execs: Vec<&&str> = calls.iter().filter(|line| line.contains("execve")).collect();
    assert_eq!(execs.len(), 1, "nib ran programs: {execs:?}");
    assert!(execs[0].contains(common::nib_binary().to_str().unwrap()), "{execs:?}");
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
    let answered = session(&mut server, &workspace.0, &mut |_| {});
    assert!(answered >= 20);
    server.shutdown();
}
