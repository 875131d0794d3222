//! Load: a stream of inline-completion requests with cancellation storms and edits in between,
//! on the tiny fixture model. Every request gets exactly one reply (a completion or
//! `RequestCancelled`), the documents stay in step with a reference, and memory stays bounded.
//!
//! Short by default; `NIB_LOAD_REQUESTS=10000 cargo test --release --test load -- --nocapture`
//! is the long run (`make reliability`), whose figures are in docs/reliability.md.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{Random, TestServer, fixture_model};
use serde_json::{Value, json};

/// Resident and peak memory of a process, in KiB, from /proc.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Doc {
    uri: String,
    lines: Vec<String>,
    version: i32,
}

impl Doc {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

#[test]
fn completion_storms_with_edits_answer_every_request_once_in_bounded_memory() {
    let requests: usize = std::env::var("NIB_LOAD_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(600);
    let mut server = TestServer::spawn(&[]);
    server.initialize(json!({ "modelPath": fixture_model(), "threads": 1 }), &["utf-16"]);
    server.wait_ready();
    let mut docs: Vec<Doc> = ["a", "b", "c"]
        .iter()
        .map(|name| Doc {
            uri: format!("file:///w/load_{name}.py"),
            lines: vec![
                "import os".into(),
                String::new(),
                format!("def {name}(items, rate):"),
                "    total = 0".into(),
                "    for item in items:".into(),
                "        ".into(),
            ],
            version: 1,
        })
        .collect();
    for doc in &docs {
        server.open(&doc.uri, "python", &doc.text());
    }
    let mut random = Random::new(0x10ad);
    let pieces = ["t", "total += item", "\n", "    ", "(", "rate", " * ", "😀", "漢", ")"];
    let mut answered: HashMap<i64, Option<Value>> = HashMap::new();
    let mut invoked: Vec<i64> = Vec::new();
    let mut sent = 0;
    let mut warm: Option<(u64, u64)> = None;
    let started = Instant::now();
    while sent < requests {
        // A storm: several requests back to back (each cancels the one before it), some
        // explicitly cancelled, edits in between; then wait for the last one.
        let storm = 1 + random.below(8);
        let mut last = 0;
        for _ in 0..storm {
            let doc = &mut docs[random.below(3)];
            if random.below(3) == 0 {
                let line = random.below(doc.lines.len());
                let column = doc.lines[line].len();
                let piece = *random.pick(&pieces);
                doc.version += 1;
                server.notify(
                    "textDocument/didChange",
                    json!({
                        "textDocument": { "uri": doc.uri, "version": doc.version },
                        "contentChanges": [{
                            "range": {
                                "start": { "line": line, "character": utf16_len(&doc.lines[line]) },
                                "end": { "line": line, "character": utf16_len(&doc.lines[line]) },
                            },
                            "text": piece,
                        }],
                    }),
                );
                let mut rest: Vec<String> = piece.split('\n').map(str::to_string).collect();
                let head = rest.remove(0);
                doc.lines[line].insert_str(column, &head);
                for (offset, extra) in rest.into_iter().enumerate() {
                    doc.lines.insert(line + 1 + offset, extra);
                }
            }
            let line = random.below(doc.lines.len());
            let character = utf16_len(&doc.lines[line]);
            let trigger = 1 + random.below(2);
            let id = server.send_request(
                "textDocument/inlineCompletion",
                json!({
                    "textDocument": { "uri": doc.uri },
                    "position": { "line": line, "character": character },
                    "context": { "triggerKind": trigger },
                }),
            );
            answered.insert(id, None);
            if trigger == 1 {
                invoked.push(id);
            }
            sent += 1;
            last = id;
            if random.below(4) == 0 {
                let target = id - random.below(3) as i64;
                server.notify("$/cancelRequest", json!({ "id": target }));
            }
        }
        let reply = server.response(last);
        answered.insert(last, Some(reply.unwrap_or_else(|e| e)));
        if warm.is_none() && sent >= requests / 10 {
            warm = Some(memory_kib(server.pid()));
        }
    }
    // Every request is answered: a completion or a cancellation. The one error allowed is an
    // explicitly invoked request whose prompt outgrew the fixture's 256-token context (the
    // context budget is estimated in bytes; this tokenizer spends a token per byte on emoji
    // and CJK); automatic requests then answer empty.
    let ids: Vec<i64> = answered.keys().copied().collect();
    let (mut completed, mut cancelled, mut too_long) = (0, 0, 0);
    for id in ids {
        let reply = match answered[&id].clone() {
            Some(reply) => reply,
            None => server.response(id).unwrap_or_else(|e| e),
        };
        if reply["items"].is_array() {
            completed += 1;
        } else if invoked.contains(&id)
            && reply["code"] == -32803
            && reply["message"].as_str().is_some_and(|m| m.contains("more than the model's context"))
        {
            too_long += 1;
        } else {
            assert_eq!(reply["code"], -32800, "request {id}: {reply}");
            cancelled += 1;
        }
    }
    let elapsed = started.elapsed();
    let after = memory_kib(server.pid());
    let warm = warm.unwrap_or(after);
    // The documents survived the storm unchanged but for the edits.
    for doc in &docs {
        let state = server.inspect(&doc.uri, None);
        assert_eq!(state["text"].as_str().unwrap(), doc.text(), "{}", doc.uri);
        assert_eq!(state["version"], doc.version);
    }
    eprintln!(
        "load: {} requests in {:.1} s: {completed} completed, {cancelled} cancelled, {too_long} invoked with a \
         prompt over the context; RSS after warm-up {} KiB, after the run {} KiB (peak {} KiB)",
        answered.len(),
        elapsed.as_secs_f64(),
        warm.0,
        after.0,
        after.1
    );
    // Bounded: whatever the run length, memory does not grow by more than a fixed margin.
    assert!(after.0 < warm.0 + 64 * 1024, "RSS grew from {} KiB to {} KiB", warm.0, after.0);
    // No reply is left over: a second reply to any request would be unread here.
    let stray: Vec<&Value> = server.unread.iter().filter(|m| m.get("id").is_some()).collect();
    assert!(stray.is_empty(), "requests answered twice: {stray:?}");
    server.shutdown();
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}
