//! Protocol fuzzing against the real binary (the short version; `NIB_FUZZ_MESSAGES` makes it
//! longer: `make reliability`). Random streams of valid and invalid JSON-RPC — wrong param
//! types, unknown methods, out-of-range and negative positions, lone surrogates, binary
//! content, edits to unopened documents, version regressions, requests after `shutdown` — and
//! broken framing: the server never exits, and every well-framed request gets exactly one
//! reply. Fixed cases: requests before `initialize`, 10 MB documents.

mod common;

use std::collections::HashMap;

use common::{Random, TestServer, fixture_model, frame};
use serde_json::{Value, json};

const METHODS: &[&str] = &[
    "nib/inspect",
    "textDocument/inlineCompletion",
    "textDocument/completion",
    "textDocument/codeAction",
    "codeAction/resolve",
    "workspace/executeCommand",
    "textDocument/hover",
    "nib/unknown",
    "",
    "initialize",
];

const NOTIFICATIONS: &[&str] = &[
    "textDocument/didOpen",
    "textDocument/didChange",
    "textDocument/didClose",
    "workspace/didChangeConfiguration",
    "$/cancelRequest",
    "window/workDoneProgress/cancel",
    "$/setTrace",
    "nib/whatever",
];

fn random_string(random: &mut Random) -> String {
    let pieces = [
        "a",
        "é",
        "😀",
        "\u{0}",
        "\u{1b}[2J",
        "\u{7f}\u{ffff}\u{feff}",
        "\u{fffd}",
        "漢",
        "\n",
        "\r\n",
        "\r",
        "\"",
        "\\",
        "def f(x):\n    ",
        "{",
        "}",
    ];
    (0..random.below(12)).map(|_| *random.pick(&pieces)).collect()
}

fn random_position(random: &mut Random) -> Value {
    let numbers =
        [json!(0), json!(1), json!(3), json!(-1), json!(4_000_000_000u64), json!("x"), json!(null), json!(2.5)];
    json!({ "line": random.pick(&numbers), "character": random.pick(&numbers) })
}

fn random_params(random: &mut Random, uris: &[&str]) -> Value {
    let uri = *random.pick(uris);
    match random.below(9) {
        0 => Value::Null,
        1 => json!([1, 2, 3]),
        2 => json!({ "textDocument": 7 }),
        3 => json!({ "textDocument": { "uri": uri }, "position": random_position(random) }),
        4 => json!({
            "textDocument": { "uri": uri, "version": random.below(6) as i64 - 1 },
            "contentChanges": [{
                "range": { "start": random_position(random), "end": random_position(random) },
                "text": random_string(random),
            }],
        }),
        5 => {
            json!({ "textDocument": { "uri": uri, "languageId": "python", "version": 1, "text": random_string(random) } })
        }
        6 => json!({
            "textDocument": { "uri": uri },
            "range": { "start": random_position(random), "end": random_position(random) },
            "context": { "diagnostics": [], "triggerKind": random.below(4) },
        }),
        7 => {
            json!({ "settings": { "nib": { "completion": { "maxTokens": random.pick(&[json!(1), json!("x"), json!(-3)]) } } } })
        }
        _ => json!({ "id": random.below(100), "token": random_string(random), "data": { "uri": uri } }),
    }
}

/// A request whose body carries a lone surrogate escape (as JavaScript clients can send),
/// written by hand because serde never produces one.
fn lone_surrogate_request(random: &mut Random, id: i64) -> Vec<u8> {
    let bodies = [
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"nib/inspect","params":{{"textDocument":{{"uri":"file:///w/a.py"}},"x":"\ud800"}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"nib/inspect","params":{{"textDocument":{{"uri":"file:///w/\udfff.py"}}}}}}"#
        ),
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"textDocument/hover","params":"\ud83d\ud83d"}}"#),
    ];
    let body = random.pick(&bodies);
    frame(body.as_bytes())
}

fn lone_surrogate_change(random: &mut Random, uri: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","method":"textDocument/didChange","params":{{"textDocument":{{"uri":"{uri}","version":{}}},"contentChanges":[{{"range":{{"start":{{"line":0,"character":1}},"end":{{"line":0,"character":1}}}},"text":"\ud83d"}}]}}}}"#,
        random.below(6)
    );
    frame(body.as_bytes())
}

/// Sends `messages` random messages; returns the ids of the requests among them.
fn fuzz(server: &mut TestServer, random: &mut Random, messages: usize, uris: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..messages {
        match random.below(11) {
            // A request (of any method, with any params, as a number id).
            0..=4 => {
                let method = *random.pick(METHODS);
                let params = random_params(random, uris);
                ids.push(server.send_request(method, params));
            }
            5..=7 => {
                let method = *random.pick(NOTIFICATIONS);
                let params = random_params(random, uris);
                server.notify(method, params);
            }
            // Well-framed garbage: not JSON, not an object, a batch, a bad id, not UTF-8.
            8 => {
                let bodies: [&[u8]; 7] = [
                    b"{",
                    b"[]",
                    b"42",
                    b"{\"id\": {}}",
                    b"\xff\xfe",
                    b"{\"jsonrpc\":\"2.0\",\"method\":7}",
                    b"{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"text\":\"\x00\xc3\x28\"}}",
                ];
                let body = *random.pick(&bodies);
                server.send_raw(&frame(body));
            }
            // Lone surrogates in a request (answered under its id) or in an edit.
            9 => {
                if random.below(2) == 0 {
                    let id = server.allocate_id();
                    let frame = lone_surrogate_request(random, id);
                    server.send_raw(&frame);
                    ids.push(id);
                } else {
                    let uri = *random.pick(uris);
                    let frame = lone_surrogate_change(random, uri);
                    server.send_raw(&frame);
                }
            }
            // A response to nothing.
            _ => server.send(&json!({ "jsonrpc": "2.0", "id": 999_999, "result": null })),
        }
    }
    ids
}

#[test]
fn random_messages_each_get_exactly_one_reply() {
    let messages: usize = std::env::var("NIB_FUZZ_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(1500);
    let mut server = TestServer::start(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    let uris = ["file:///w/a.py", "file:///w/b.rs", "untitled:1", "file:///w/%E2%9C%93.ts", "not a uri"];
    server.open("file:///w/a.py", "python", "def f(x):\n    return x\n");
    let mut random = Random::new(0xf022);
    let mut expected: HashMap<i64, usize> = HashMap::new();
    for id in fuzz(&mut server, &mut random, messages, &uris) {
        expected.insert(id, 0);
    }
    // Collect replies until every request has one; no request may have two.
    let ids: Vec<i64> = expected.keys().copied().collect();
    for id in ids {
        let _ = server.response(id);
        *expected.get_mut(&id).unwrap() += 1;
    }
    server.open("file:///w/alive.py", "python", "x = 1\n");
    let state = server.inspect("file:///w/alive.py", None);
    assert_eq!(state["text"], "x = 1\n", "the server still answers");
    // Whatever is left unread must be notifications or parse errors, never a second reply.
    let stray: Vec<&Value> = server
        .unread
        .iter()
        .filter(|m| m.get("id").is_some_and(|id| id.is_number() && expected.contains_key(&id.as_i64().unwrap())))
        .collect();
    assert!(stray.is_empty(), "requests answered twice: {stray:?}");
    server.unread.clear(); // parse errors for the garbage, showMessage warnings for bad settings

    // After `shutdown` every request is an error reply; notifications change nothing.
    assert_eq!(server.request("shutdown", Value::Null), Ok(Value::Null));
    let after = fuzz(&mut server, &mut random, messages / 10, &uris);
    for id in &after {
        let error = server.response(*id).expect_err("requests after shutdown fail");
        assert!(error["code"] == -32600 || error["code"] == -32700, "{error}");
    }
    server.notify("exit", Value::Null);
    assert_eq!(server.wait_exit().map(|status| status.code()), Some(Some(0)));
    eprintln!(
        "fuzz: {messages} messages with {} requests, each answered once; after shutdown {} more messages with {} \
         requests, each refused once; exit code 0",
        expected.len(),
        messages / 10,
        after.len()
    );
}

#[test]
fn requests_before_initialize_are_refused_one_by_one() {
    let mut server = TestServer::spawn(&[]);
    let mut random = Random::new(0xbef0);
    let uris = ["file:///w/a.py", "untitled:1"];
    let ids = fuzz(&mut server, &mut random, 200, &uris);
    for id in ids {
        match server.response(id) {
            Ok(result) => assert!(result["capabilities"].is_object(), "only `initialize` may succeed: {result}"),
            Err(error) => {
                assert!([-32002, -32600, -32602, -32700].contains(&error["code"].as_i64().unwrap()), "{error}")
            }
        }
    }
    server.unread.clear();
    server.request("shutdown", Value::Null).ok();
    server.notify("exit", Value::Null);
    assert!(server.wait_exit().is_some(), "the server exits on `exit`");
}

#[test]
fn ten_megabyte_documents_are_edited_and_completed() {
    let mut server = TestServer::start(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    server.wait_ready();
    let mut text = String::with_capacity(10 << 20);
    let mut i = 0;
    while text.len() < 10 << 20 {
        text.push_str(&format!("def f_{i}(x):\n    return x * {i}  # é😀漢\n\n"));
        i += 1;
    }
    let uri = "file:///w/huge.py";
    server.open(uri, "python", &text);
    let lines = text.lines().count() as u32;
    // Edits at both ends, a completion at the end, the text checked whole.
    server.notify(
        "textDocument/didChange",
        json!({
            "textDocument": { "uri": uri, "version": 2 },
            "contentChanges": [
                { "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 0, "character": 0 } }, "text": "import os\n" },
                { "range": { "start": { "line": lines + 1, "character": 0 }, "end": { "line": lines + 1, "character": 0 } }, "text": "def g(y):\n    return y\n" },
            ],
        }),
    );
    let reply = server.request(
        "textDocument/inlineCompletion",
        json!({
            "textDocument": { "uri": uri },
            "position": { "line": lines + 2, "character": 12 },
            "context": { "triggerKind": 1 },
        }),
    );
    assert!(reply.expect("a completion in a 10 MB document")["items"].is_array());
    let state = server.inspect(uri, Some((lines + 2, 8)));
    let expected = format!("import os\n{text}def g(y):\n    return y\n");
    assert!(state["text"] == expected.as_str(), "the 10 MB text differs after the edits");
    // Past syntax::MAX_PARSE_BYTES (4 MB) a document is text only: no tree, no scope.
    assert_eq!(state["scope"], Value::Null);
    assert_eq!(state["version"], 2);
    // A whole 10 MB replacement in one change.
    server.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 3 }, "contentChanges": [{ "text": text }] }),
    );
    assert_eq!(server.inspect(uri, None)["text"].as_str().unwrap().len(), text.len());
    server.shutdown();
}

#[test]
fn broken_framing_never_ends_the_server() {
    let mut server = TestServer::start(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    let mut random = Random::new(0xbad);
    let frames: [&[u8]; 9] = [
        b"Content-Length: 10\r\n\r\n{\"a\":",
        b"Content-Length: 3\r\n\r\n{\"jsonrpc\":\"2.0\",\"method\":\"$/setTrace\"}\r\n",
        b"garbage without a header\r\n",
        b"Content-Length: -5\r\n\r\n",
        b"Content-Length: 99999999999999999999\r\n\r\n",
        b"Content-Type: application/json\r\n\r\n{}",
        b"\r\n\r\n\r\n",
        b"Content-Length: 2\r\n\r\n{}",
        b"\x00\x01\x02\xff",
    ];
    for _ in 0..300 {
        let frame = *random.pick(&frames);
        server.send_raw(frame);
    }
    // Resynchronise: a few well-formed messages; the later ones are read as messages again.
    for _ in 0..3 {
        server.send_raw(b"\r\n");
        server.notify("$/setTrace", json!({ "value": "off" }));
    }
    let result = server.request("nib/inspect", json!({ "textDocument": { "uri": "file:///nope.py" } }));
    assert_eq!(result.unwrap_err()["code"], -32602, "the server answers after the garbage");
    server.unread.clear(); // parse errors for the garbage
    server.shutdown();
}

/// A field of `/proc/<pid>/status` in KiB (`VmSize`, `VmHWM`, ...).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_is_bounded_by_what_arrives_not_by_what_a_header_claims() {
    // No model (its loading would move the memory figures).
    let mut server = TestServer::start(json!({ "modelPath": "/nonexistent/nib-model" }), &["utf-16"]);
    let pid = server.pid();
    server.request("nib/inspect", json!({ "textDocument": { "uri": "file:///nope.py" } })).unwrap_err();
    let settle = || std::thread::sleep(std::time::Duration::from_millis(300));

    // 64 MiB of a line that never ends: skipped in pieces, never collected.
    let peak_before = memory_kib(pid, "VmHWM");
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..64 {
        server.send_raw(&chunk);
    }
    server.send_raw(b"\r\n");
    let id = server.send_request("nib/inspect", json!({ "textDocument": { "uri": "file:///nope.py" } }));
    assert_eq!(server.response(id).unwrap_err()["code"], -32602, "the server answers after the endless line");
    let grown = memory_kib(pid, "VmHWM").saturating_sub(peak_before);
    assert!(grown < 16 * 1024, "an endless line took {grown} KiB");

    // A body claimed just under the 64 MiB limit that never arrives: no memory is taken for it.
    settle();
    let size_before = memory_kib(pid, "VmSize");
    server.send_raw(format!("Content-Length: {}\r\n\r\n{{", 64 * 1024 * 1024 - 1).as_bytes());
    settle();
    let reserved = memory_kib(pid, "VmSize").saturating_sub(size_before);
    assert!(reserved < 32 * 1024, "a Content-Length header alone reserved {reserved} KiB");
    server.unread.clear(); // parse errors for the skipped line
    assert!(server.wait_exit().is_some(), "the end of input (mid-body) ends the server");
}

#[test]
fn a_rejected_change_puts_the_document_out_of_sync_until_its_full_text_is_sent() {
    let mut server = TestServer::start(json!({ "modelPath": fixture_model(), "threads": 1 }), &["utf-16"]);
    server.wait_ready();
    let uri = "file:///w/sync.py";
    server.open(uri, "python", "def f(x):\n    \n");
    let change = |version: i32, range: Value, text: &str| {
        let mut change = json!({ "text": text });
        if !range.is_null() {
            change["range"] = range;
        }
        json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [change] })
    };
    let at = |line: u32, character: u32| json!({ "line": line, "character": character });
    let range = |start: Value, end: Value| json!({ "start": start, "end": end });

    // A duplicate of the current version is only ignored.
    server.notify("textDocument/didChange", change(2, range(at(1, 4), at(1, 4)), "y"));
    server.notify("textDocument/didChange", change(2, range(at(1, 4), at(1, 4)), "y"));
    assert_eq!(server.inspect(uri, None)["outOfSync"], false);

    // A reversed range cannot be applied: the editor's text has moved on without nib.
    server.notify("textDocument/didChange", change(3, range(at(1, 5), at(1, 1)), "z"));
    let warning = server.wait_for("the warning", |m| m["method"] == "window/showMessage");
    assert!(warning["params"]["message"].as_str().unwrap().contains("close and reopen the file"), "{warning}");
    assert_eq!(server.inspect(uri, None)["outOfSync"], true);
    let invoked = server.inline(uri, 1, 4, 1);
    let error = server.response(invoked).unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("send the full text"), "{error}");
    let automatic = server.inline(uri, 1, 4, 2);
    assert_eq!(server.response(automatic).unwrap(), json!({ "items": [] }), "automatic requests stay quiet");
    let listing = server.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri }, "range": range(at(0, 4), at(0, 4)), "context": { "diagnostics": [] } }),
    );
    assert!(listing.unwrap_err()["message"].as_str().unwrap().contains("out of sync"));
    // Incremental changes cannot bring it back; the full text does.
    server.notify("textDocument/didChange", change(4, range(at(0, 0), at(0, 0)), "# x\n"));
    assert_eq!(server.inspect(uri, None)["outOfSync"], true);
    server.notify("textDocument/didChange", change(5, Value::Null, "def g(y):\n    \n"));
    let state = server.inspect(uri, None);
    assert_eq!(
        (state["outOfSync"].as_bool(), state["text"].as_str(), state["version"].as_i64()),
        (Some(false), Some("def g(y):\n    \n"), Some(5))
    );
    let invoked = server.inline(uri, 1, 4, 1);
    assert!(server.response(invoked).unwrap()["items"].is_array());
    server.shutdown();
}
