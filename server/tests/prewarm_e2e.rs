//! Opening a file pre-warms the KV cache with the stable head of its completion prompts (at
//! background priority), so the first completion in it reuses that head instead of prefilling
//! it; a real request cancels a pre-warm still running.
//!
//! With workspace context off: with it on, the head holds the code retrieved for the cursor's
//! scope, which a pre-warm on open cannot know (docs/context.md, "Keeping the KV cache hot").

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, default_model, repo_root};
use serde_json::{Value, json};

fn engine_stats(server: &mut TestServer, uri: &str) -> Value {
    server.inspect(uri, None)["engine"].clone()
}

#[test]
fn the_first_completion_in_an_opened_file_reuses_the_prewarmed_head() {
    let Some(model) = default_model() else { return };
    let mut server = TestServer::spawn(&[]);
    server.initialize(json!({ "modelPath": model, "threads": 2, "context": { "workspace": false } }), &["utf-16"]);
    let status = server.wait_for_status(|s| s["state"] == "ready" || s["state"] == "error");
    assert_eq!(status["state"], "ready", "{status}");
    let uri = format!("file://{}/examples/shop/cart.py", repo_root().display());
    let text = std::fs::read_to_string(repo_root().join("examples/shop/cart.py")).unwrap();
    server.open(&uri, "python", &text);
    // The pre-warm is one generation that generates nothing; wait until it has run.
    let deadline = Instant::now() + Duration::from_secs(120);
    let warmed = loop {
        let engine = engine_stats(&mut server, &uri);
        if engine["stats"]["generations"].as_u64() == Some(1) {
            break engine;
        }
        assert!(Instant::now() < deadline, "no pre-warm ran: {engine}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(warmed["stats"]["generatedTokens"], 0, "{warmed}");
    assert!(warmed["cachedTokens"].as_u64().unwrap() > 0, "{warmed}");
    let line = text.lines().position(|l| l.contains("def count_items")).unwrap() as u32 + 1;
    let request = server.inline(&uri, line, 8, 1);
    server.response(request).expect("the completion is answered");
    let engine = engine_stats(&mut server, &uri);
    let last = &engine["stats"]["last"];
    // The head is the same wherever the cursor is, up to the last token or two (the prompt
    // goes on after it, which can join those tokens differently).
    assert!(
        last["reusedTokens"].as_u64().unwrap() * 2 >= warmed["cachedTokens"].as_u64().unwrap(),
        "the first completion did not reuse the pre-warmed head: {engine}"
    );
    server.shutdown();
}

/// Waits until the engine has run `generations` generations in all.
fn wait_for_generations(server: &mut TestServer, uri: &str, generations: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let engine = engine_stats(server, uri);
        if engine["stats"]["generations"].as_u64() >= Some(generations) {
            return engine;
        }
        assert!(Instant::now() < deadline, "expected {generations} generations: {engine}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_typing_pause_and_a_focus_prewarm_so_the_next_completion_is_a_cache_hit() {
    let Some(model) = default_model() else { return };
    let mut server = TestServer::spawn(&[]);
    server.initialize(json!({ "modelPath": model, "threads": 2, "context": { "workspace": false } }), &["utf-16"]);
    let status = server.wait_for_status(|s| s["state"] == "ready" || s["state"] == "error");
    assert_eq!(status["state"], "ready", "{status}");
    let cart = format!("file://{}/examples/shop/cart.py", repo_root().display());
    let text = std::fs::read_to_string(repo_root().join("examples/shop/cart.py")).unwrap();
    server.open(&cart, "python", &text);
    wait_for_generations(&mut server, &cart, 1); // the pre-warm on open
    // Type a new line at the end of the file, then pause: 1 s later nib warms the prompt up to
    // that line.
    let last_line = text.lines().count() as u32;
    server.notify(
        "textDocument/didChange",
        json!({
            "textDocument": { "uri": cart, "version": 2 },
            "contentChanges": [{ "range": { "start": { "line": last_line, "character": 0 },
                                            "end": { "line": last_line, "character": 0 } },
                                 "text": "\ndef total_price(cart):\n    return " }],
        }),
    );
    let warmed = wait_for_generations(&mut server, &cart, 2);
    assert_eq!(warmed["stats"]["last"]["generatedTokens"], 0, "a pre-warm generates nothing: {warmed}");
    let request = server.inline(&cart, last_line + 2, 11, 1);
    server.response(request).expect("the completion is answered");
    let engine = engine_stats(&mut server, &cart);
    let last = &engine["stats"]["last"];
    // Only the typed line's tokens are prefilled; everything before it was warm.
    assert!(last["prefilledTokens"].as_u64().unwrap() <= 16, "not a cache hit after the pause: {engine}");
    assert_eq!(last["cappedTokens"], 0, "{engine}");

    // Focusing another open file warms its head.
    let pricing = format!("file://{}/examples/shop/pricing.py", repo_root().display());
    let pricing_text = std::fs::read_to_string(repo_root().join("examples/shop/pricing.py")).unwrap();
    server.open(&pricing, "python", &pricing_text);
    let opened = wait_for_generations(&mut server, &pricing, 4)["stats"]["generations"].as_u64().unwrap();
    server.notify("nib/didFocus", json!({ "textDocument": { "uri": cart } }));
    let focused = wait_for_generations(&mut server, &cart, opened + 1);
    assert_eq!(focused["stats"]["last"]["generatedTokens"], 0, "{focused}");
    assert!(focused["cachedTokens"].as_u64().unwrap() > 0, "{focused}");
    server.shutdown();
}
