//! Opening a file pre-warms the KV cache with the stable head of its completion prompts (at
//! background priority), so the first completion in it reuses that head instead of prefilling
//! it; a real request cancels a pre-warm still running.
//!
//! With workspace context on: the head holds the code the index retrieves for the cursor's
//! scope, which arrives after the file opened; its answer warms the cache again
//! (docs/context.md, "Keeping the KV cache hot").

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, Workspace, default_model, frame};
use serde_json::{Value, json};

fn engine_stats(server: &mut TestServer, uri: &str) -> Value {
    server.inspect(uri, None)["engine"].clone()
}

/// Waits until the pre-warm for the place the user is at in `uri` has run, built with the
/// workspace index's answer; returns `nib/inspect`'s state then.
fn wait_until_warm(server: &mut TestServer, uri: &str, line: Option<u32>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = server.inspect(uri, None);
        let prewarm = &state["prewarm"];
        if prewarm["uri"] == uri
            && prewarm["line"] == json!(line)
            && prewarm["warmed"] == true
            && prewarm["running"] == false
            && prewarm["withWorkspaceContext"] == true
        {
            return state;
        }
        assert!(Instant::now() < deadline, "no pre-warm with workspace context ran: {prewarm}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server on a copy of the sample workspace (`name`) with `cart.py` open and its pre-warm,
/// built with the index's answer, run; None without the default model.
struct WarmCart {
    /// Its folder lives as long as this does: bind it (`workspace: _workspace`, not `..`).
    workspace: Workspace,
    server: TestServer,
    uri: String,
    text: String,
    /// `nib/inspect`'s state once warm.
    state: Value,
}

fn open_warm_cart(name: &str) -> Option<WarmCart> {
    let model = default_model()?;
    let workspace = Workspace::new(name);
    let mut server = TestServer::ready_at(&workspace.root, json!({ "modelPath": model, "threads": 2 }));
    let (uri, text) = (workspace.uri("cart.py"), workspace.read("cart.py"));
    server.open(&uri, "python", &text);
    let state = wait_until_warm(&mut server, &uri, None);
    Some(WarmCart { workspace, server, uri, text, state })
}

#[test]
fn the_first_completion_in_an_opened_file_reuses_the_prewarmed_head() {
    // The pre-warm on open cannot have the index's answer yet (it asks for it); the answer,
    // `pricing.py`'s definitions, warms the head again.
    let Some(WarmCart { workspace: _workspace, mut server, uri, text, state }) = open_warm_cart("prewarm-open") else {
        return;
    };
    let warmed = state["engine"].clone();
    assert_eq!(warmed["stats"]["last"]["generatedTokens"], 0, "{warmed}");
    let cached = warmed["cachedTokens"].as_u64().unwrap();
    assert!(cached > 40, "the head holds the retrieved definitions: {warmed}");
    // The empty body of `count_items`, at the end of the file.
    let line = text.lines().position(|l| l.contains("def count_items")).unwrap() as u32 + 1;
    let request = server.inline(&uri, line, 8, 1);
    server.response(request).expect("the completion is answered");
    let engine = engine_stats(&mut server, &uri);
    let last = &engine["stats"]["last"];
    // The whole head is reused, up to the last token or two (the prompt goes on after it,
    // which can join those tokens differently).
    assert!(
        last["reusedTokens"].as_u64().unwrap() + 2 >= cached,
        "the first completion did not reuse the pre-warmed head: {engine}"
    );
    server.shutdown();
}

#[test]
fn a_typing_pause_and_a_focus_prewarm_so_the_next_completion_is_a_cache_hit() {
    let Some(WarmCart { workspace, mut server, uri: cart, text, .. }) = open_warm_cart("prewarm-pause") else {
        return;
    };
    // Type a new function at the end of the file, then pause: the index's answer for its scope
    // and the pause warm the prompt up to the typed line.
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
    let warmed = wait_until_warm(&mut server, &cart, Some(last_line + 2))["engine"].clone();
    assert_eq!(warmed["stats"]["last"]["generatedTokens"], 0, "a pre-warm generates nothing: {warmed}");
    let request = server.inline(&cart, last_line + 2, 11, 1);
    server.response(request).expect("the completion is answered");
    let engine = engine_stats(&mut server, &cart);
    let last = &engine["stats"]["last"];
    // Only the typed line's tokens are prefilled; everything before it was warm.
    assert!(last["prefilledTokens"].as_u64().unwrap() <= 16, "not a cache hit after the pause: {engine}");
    assert_eq!(last["cappedTokens"], 0, "{engine}");

    // Focusing another open file at its cursor warms the prompt up to the cursor's line.
    let pricing = workspace.uri("pricing.py");
    server.open(&pricing, "python", &workspace.read("pricing.py"));
    server
        .notify("nib/didFocus", json!({ "textDocument": { "uri": cart }, "position": { "line": 8, "character": 0 } }));
    let focused = wait_until_warm(&mut server, &cart, Some(8))["engine"].clone();
    assert_eq!(focused["stats"]["last"]["generatedTokens"], 0, "{focused}");
    let request = server.inline(&cart, 8, 0, 1);
    server.response(request).expect("the completion is answered");
    let engine = engine_stats(&mut server, &cart);
    assert!(
        engine["stats"]["last"]["prefilledTokens"].as_u64().unwrap() <= 16,
        "not a cache hit after focus: {engine}"
    );
    server.shutdown();
}

/// A burst of opens (a restored session, many files opened at once) warms the last file only:
/// each open's warm-up waits until the main loop has read the rest of the burst, instead of
/// queuing a warm-up per file that the next open cancels while the main loop falls behind.
#[test]
fn a_burst_of_opens_warms_the_last_file_only() {
    let Some(model) = default_model() else { return };
    let workspace = Workspace::new("prewarm-burst");
    let settings = json!({ "modelPath": model, "threads": 2, "context": { "workspace": false } });
    let mut server = TestServer::ready_at(&workspace.root, settings);
    let text = workspace.read("cart.py");
    let uris: Vec<String> = (0..8).map(|n| workspace.uri(&format!("cart_{n}.py"))).collect();
    let mut burst = Vec::new();
    for uri in &uris {
        let open = json!({ "jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": { "uri": uri, "languageId": "python", "version": 1, "text": text } } });
        burst.extend(frame(&serde_json::to_vec(&open).unwrap()));
    }
    server.send_raw(&burst);
    let last = uris.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let prewarm = loop {
        let prewarm = server.inspect(last, None)["prewarm"].clone();
        if prewarm["uri"] == *last && prewarm["warmed"] == true && prewarm["running"] == false {
            break prewarm;
        }
        assert!(Instant::now() < deadline, "the last file opened was not warmed: {prewarm}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // One warm-up; a second only if the main loop found its queue empty between two frames of
    // the burst (the reader thread had not parsed the next one yet).
    let queued = prewarm["queued"].as_u64().unwrap();
    assert!((1..=2).contains(&queued), "{queued} warm-ups for a burst of {} opens: {prewarm}", uris.len());
    server.shutdown();
}

/// The sources of the cross-file context at the head of the prompt nib would build at
/// (`line`, `character`) of `uri`.
fn context_sources(server: &mut TestServer, uri: &str, line: u32, character: u32) -> Value {
    let params = json!({
        "textDocument": { "uri": uri },
        "position": { "line": line, "character": character },
        "prompt": true,
    });
    let prompt = server.request("nib/inspect", params).expect("nib/inspect succeeds")["prompt"].clone();
    let sources = prompt["sources"].as_array().cloned().unwrap_or_default();
    // The cross-file sources come first, then the file's own ("path", its prefix and suffix).
    sources.into_iter().take_while(|source| source != "path").collect()
}

/// Typing into a scope whose retrieved context differs from the head the KV cache holds: the
/// automatic completion there runs with that head (its warm alternative) instead of prefilling
/// a new one while the user types, and the index's answer for the new scope is not warmed
/// before the typing pause.
#[test]
fn typing_into_a_scope_with_new_context_keeps_the_warm_head() {
    let Some(WarmCart { workspace: _workspace, mut server, uri: cart, text, .. }) = open_warm_cart("prewarm-scope")
    else {
        return;
    };
    let line = text.lines().position(|l| l.contains("def count_items")).unwrap() as u32 + 1;
    let request = server.inline(&cart, line, 8, 2);
    server.response(request).expect("the completion is answered");
    let warm_sources = context_sources(&mut server, &cart, line, 8);

    // A new top-level function, typed key by key (each key restarts the typing pause).
    let mut version = 1;
    let (mut at_line, mut at_character) = (text.lines().count() as u32, 0u32);
    for key in TYPED.chars() {
        version += 1;
        server.notify(
            "textDocument/didChange",
            json!({
                "textDocument": { "uri": cart, "version": version },
                "contentChanges": [{ "range": { "start": { "line": at_line, "character": at_character },
                                                "end": { "line": at_line, "character": at_character } },
                                     "text": key.to_string() }],
            }),
        );
        (at_line, at_character) = if key == '\n' { (at_line + 1, 0) } else { (at_line, at_character + 1) };
        std::thread::sleep(Duration::from_millis(20));
    }
    let new_sources = context_sources(&mut server, &cart, at_line, at_character);
    assert_ne!(new_sources, warm_sources, "the new scope's retrieved context is the same as the warm one's");
    let request = server.inline(&cart, at_line, at_character, 2);
    server.response(request).expect("the completion is answered");
    let engine = engine_stats(&mut server, &cart);
    let last = &engine["stats"]["last"];
    assert_eq!(last["warmAlternative"], true, "the new head ran: {engine}");
    assert_eq!(last["cappedTokens"], 0, "{engine}");
    // A KV-cache hit, as `benches/replay.py` counts them: at least half the prompt reused.
    let (reused, prompt) = (last["reusedTokens"].as_u64().unwrap(), last["promptTokens"].as_u64().unwrap());
    assert!(2 * reused >= prompt, "the warm head was not reused: {engine}");
    server.shutdown();
}

/// What `typing_into_a_scope_with_new_context_keeps_the_warm_head` types at the end of cart.py.
const TYPED: &str =
    "\n\ndef checkout(cart, percent):\n    price = apply_discount(cart.subtotal(), percent)\n    return ";
