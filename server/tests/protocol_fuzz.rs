//! Protocol fuzzing against the real binary (the short version; `NIB_FUZZ_MESSAGES` makes it
//! longer). Random streams of valid and invalid JSON-RPC: the server never exits, and every
//! well-framed request gets exactly one reply.

mod common;

use std::collections::HashMap;

use common::{Random, TestServer, fixture_model};
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
    let pieces = ["a", "é", "😀", "\u{0}", "\u{fffd}", "漢", "\n", "\r\n", "\"", "\\", "def f(x):\n    ", "{", "}"];
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

#[test]
fn random_messages_each_get_exactly_one_reply() {
    let messages: usize = std::env::var("NIB_FUZZ_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(1500);
    let mut server = TestServer::start(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    let uris = ["file:///w/a.py", "file:///w/b.rs", "untitled:1", "file:///w/%E2%9C%93.ts", "not a uri"];
    server.open("file:///w/a.py", "python", "def f(x):\n    return x\n");
    let mut random = Random::new(0xf022);
    let mut expected: HashMap<i64, usize> = HashMap::new();
    for _ in 0..messages {
        match random.below(10) {
            // A request (of any method, with any params, as a number id).
            0..=4 => {
                let method = *random.pick(METHODS);
                let params = random_params(&mut random, &uris);
                let id = server.send_request(method, params);
                expected.insert(id, 0);
            }
            5..=7 => {
                let method = *random.pick(NOTIFICATIONS);
                let params = random_params(&mut random, &uris);
                server.notify(method, params);
            }
            // Well-framed garbage: not JSON, not an object, a batch, a bad id.
            8 => {
                let bodies: [&[u8]; 6] =
                    [b"{", b"[]", b"42", b"{\"id\": {}}", b"\xff\xfe", b"{\"jsonrpc\":\"2.0\",\"method\":7}"];
                let body = *random.pick(&bodies);
                let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
                frame.extend_from_slice(body);
                server.send_raw(&frame);
            }
            // A response to nothing.
            _ => server.send(&json!({ "jsonrpc": "2.0", "id": 999_999, "result": null })),
        }
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
    server.shutdown();
}

#[test]
fn broken_framing_never_ends_the_server() {
    let mut server = TestServer::start(json!({ "modelPath": fixture_model() }), &["utf-16"]);
    let mut random = Random::new(0xbad);
    let frames: [&[u8]; 8] = [
        b"Content-Length: 10\r\n\r\n{\"a\":",
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
