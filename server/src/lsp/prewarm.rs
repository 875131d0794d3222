//! Pre-warming the KV cache: the engine prefills, at background priority, the prompt the next
//! completion will start with, so that completion reuses it instead of prefilling it. The
//! target is where the user is: the document opened or focused (at the cursor the editor sent,
//! or else just the stable head of its prompts), then the place of the last edit. It is warmed
//! on open (once the main loop has read the messages waiting) and focus, when typing pauses,
//! and again whenever the workspace index answers for the target's document (once typing
//! pauses, if the user is typing there after a completion), because the retrieved code at the
//! head of the prompt may have changed with it. Any real request cancels a pre-warm
//! (`EngineHandle::submit`), keeping the work it did when its prompt extends the pre-warm's.
//!
//! A pause between keys (300 ms) warms within the completion's prefill budget, as a keystroke's
//! completion would run: where a cold prompt was cut to the lines before the cursor, the cache
//! keeps that cut, which the next keystroke reuses. Only a long pause (1.5 s: the user stopped)
//! warms the whole prompt, so the prompt grows back without making each keystroke of a burst
//! prefill its cut again.

use ls_types::Position;
use serde_json::{Value, json};

use super::convert;
use super::handlers::inline_completion::{Pause, prefill_budget, prepare_for};
use super::server::Server;
use crate::engine::{CancelToken, GenerationRequest, Job, Priority, PromptPiece};
use crate::{completion, index};

/// Where the next completion is expected, and what was last warmed for it (main loop only).
pub struct Target {
    pub uri: String,
    /// The cursor, when known: the prompt up to the start of its line is warmed. Unknown (a
    /// `didOpen`, a focus without a position): only the stable head of the file's prompts.
    pub cursor: Option<usize>,
    /// The prompt the last pre-warm for this target prefilled, while nothing else ran since
    /// (a real request forgets it: the cache then holds that request's prompt).
    pub warmed: Option<Vec<PromptPiece>>,
    /// Whether that pre-warm ran within the completion's prefill budget, so the engine may
    /// have cut it: a warm-up of the whole prompt still has work to do.
    pub warmed_within_budget: bool,
    /// Whether `warmed` was built with the index's answer for the target's scope.
    pub with_index: bool,
    /// Whether a real completion ran in the target's document since it became the target: the
    /// cache then holds a prompt the next keystroke's completion reuses.
    pub served: bool,
    /// The last pre-warm's token, until its answer reaches the main loop (`ended`); its flag
    /// tells sooner whether the engine still runs it.
    pub running: Option<CancelToken>,
}

/// A document was opened: the stable head of its prompts is warmed once the main loop has no
/// message waiting (`when_idle`), so a burst of opens (a restored session, many files opened at
/// once) warms the last of them only, instead of queuing and cancelling a warm-up for each
/// while the main loop still has the rest of the burst to read.
pub fn opened(server: &mut Server, uri: &str) {
    retarget(server, uri, None);
    server.completions.warm_when_idle = true;
}

/// The main loop has no message waiting: runs the warm-up an open deferred, if any.
pub fn when_idle(server: &mut Server) {
    if std::mem::take(&mut server.completions.warm_when_idle) {
        warm(server, Extent::Whole);
    }
}

/// A document was focused (`nib/didFocus`), with the cursor when the editor sent it.
pub fn focused(server: &mut Server, uri: &str, position: Option<Position>) {
    let Some(document) = server.documents.get(uri) else { return };
    let cursor = position.map(|position| convert::to_byte(&document.rope, position, server.encoding));
    retarget(server, uri, cursor);
    warm(server, Extent::Whole);
}

/// The user edited `uri` ending at `cursor`: the target follows (it is warmed when typing
/// pauses, or when the index answers for the new place). The first edit in a document whose
/// head is still being warmed (just opened or focused) moves that warm-up to the edited line at
/// once, when the index has answered for that place (else its answer warms it): the prompt
/// then extends the head, so the work in flight is kept and the engine goes on towards the
/// line instead of waiting for the pause.
pub fn edited(server: &mut Server, uri: &str, cursor: usize) {
    let warming_head = server.completions.warm.as_ref().is_some_and(|target| {
        target.uri == uri
            && target.cursor.is_none()
            && target.running.as_ref().is_some_and(|token| !token.is_finished())
    });
    retarget(server, uri, Some(cursor));
    if let Some(target) = &mut server.completions.warm {
        target.warmed = None;
    }
    let answered =
        || !server.config.context.workspace || target_key(server).is_some_and(|key| server.index.has_answer_for(&key));
    if warming_head && answered() {
        warm(server, Extent::Whole);
    }
}

/// After the main loop's typing-pause timer: warms the prompt up to the paused line, within
/// the prefill budget at a short pause (then the long pause is waited for), whole at the long
/// one, unless the target moved since (a focus elsewhere).
pub fn pause_elapsed(server: &mut Server) {
    let Some(pause) = server.completions.pause.take() else { return };
    if !pause.long {
        retarget(server, &pause.uri, Some(pause.cursor));
        warm(server, Extent::WithinBudget);
        server.completions.pause = Some(Pause { long: true, ..pause });
        return;
    }
    let target = server.completions.warm.as_ref();
    if target.is_some_and(|target| target.uri == pause.uri && target.cursor == Some(pause.cursor)) {
        warm(server, Extent::Whole);
    }
}

/// A real completion was submitted at `cursor` of `uri`: the target moves there, and the KV
/// cache will hold that request's prompt, not the last pre-warm's.
pub fn requested(server: &mut Server, uri: &str, cursor: usize) {
    server.completions.warm_when_idle = false;
    retarget(server, uri, Some(cursor));
    if let Some(target) = &mut server.completions.warm {
        target.warmed = None;
        target.served = true;
    }
}

/// The workspace index has a new answer, for `key`: when it is the target's file and scope,
/// warm again (nothing is queued if the prompt came out the same). Answers for other places
/// are left alone, so warming never asks the index for another scope than the user's. While
/// the user types in the document (its typing pause still pending) after a completion there,
/// the answer waits for the pause: a new head warmed now would evict, prefill chunk by prefill
/// chunk, the head the next keystroke's completion reuses (its warm alternative,
/// `inline_completion`). Before any completion there (an edit right after the open) the cache
/// holds nothing that one reuses, and the answer is warmed at once.
pub fn index_answered(server: &mut Server, key: &index::Key) {
    let Some(target) = server.completions.warm.as_ref() else { return };
    let pause = server.completions.pause.as_ref().filter(|pause| pause.uri == key.uri);
    let typing = pause.is_some_and(|pause| !pause.long) && target.served;
    if typing || !target_key(server).is_some_and(|target| target == *key) {
        return;
    }
    // Between the short pause and the long one the user may go on typing: warm as a keystroke
    // would run.
    warm(server, if pause.is_some() { Extent::WithinBudget } else { Extent::Whole });
}

/// The index key of the target's file and scope.
fn target_key(server: &Server) -> Option<index::Key> {
    let target = server.completions.warm.as_ref()?;
    let document = server.documents.get(&target.uri)?;
    let cursor = target.cursor.unwrap_or(document.rope.len_bytes());
    Some(index::Key::at(&document.uri, document.language, &document.rope, document.tree(), cursor))
}

/// The pre-warm state for `nib/inspect`.
pub fn status_json(server: &Server) -> Value {
    let Some(target) = &server.completions.warm else { return Value::Null };
    let line = server
        .documents
        .get(&target.uri)
        .zip(target.cursor)
        .map(|(document, cursor)| document.rope.byte_to_line(cursor.min(document.rope.len_bytes())));
    json!({
        "uri": target.uri,
        "line": line,
        "warmed": target.warmed.is_some(),
        "running": target.running.is_some(),
        "withWorkspaceContext": target.with_index,
        "queued": server.completions.warm_ups_queued,
    })
}

fn retarget(server: &mut Server, uri: &str, cursor: Option<usize>) {
    match &mut server.completions.warm {
        Some(target) if target.uri == uri => target.cursor = cursor,
        _ => {
            server.completions.warm = Some(Target {
                uri: uri.to_string(),
                cursor,
                warmed: None,
                warmed_within_budget: false,
                with_index: false,
                served: false,
                running: None,
            })
        }
    }
}

/// A pre-warm's answer reached the main loop, behind the engine's statistics of its run (the
/// engine sends them first, on the same queue): the target stops reporting it as running. So
/// `nib/inspect` never shows a finished warm-up next to the cache of before it, as it did when
/// it read the token's flag, which the engine thread sets at once.
fn ended(server: &mut Server, token: &CancelToken) {
    let Some(target) = server.completions.warm.as_mut() else { return };
    if target.running.as_ref().is_some_and(|running| running.is(token)) {
        target.running = None;
    }
}

/// How much of the target's prompt a warm-up prefills.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Extent {
    /// All of it.
    Whole,
    /// What the engine would run for an automatic completion there: a cold prompt is cut to the
    /// prefill budget, keeping what the cache holds (`engine::budget::cap`).
    WithinBudget,
}

/// Warms the target's prompt unless the last pre-warm already did (or is doing) it.
fn warm(server: &mut Server, extent: Extent) {
    let Some(target) = &server.completions.warm else { return };
    let (uri, cursor) = (target.uri.clone(), target.cursor);
    // Looked at before the prompt is built, which then uses that answer (or a newer one).
    let with_index =
        server.config.context.workspace && target_key(server).is_some_and(|key| server.index.has_answer_for(&key));
    let Some(ToWarm { prompt, cross_file, budget_ms }) = prompt_to_warm(server, &uri, cursor) else { return };
    let budget_ms = budget_ms.filter(|_| extent == Extent::WithinBudget);
    let done = |target: &Target| {
        target.warmed.as_ref() == Some(&prompt) && (!target.warmed_within_budget || budget_ms.is_some())
    };
    if let Some(target) = server.completions.warm.as_mut().filter(|target| done(target)) {
        // The same prompt: it holds the index's answer if this one does. (The answer can land
        // between the check above and the prompt a warm-up builds, which then holds it while
        // that warm-up records that it does not; its notice then finds the prompt unchanged.)
        target.with_index |= with_index;
        return;
    }
    let running = submit(server, &uri, prompt.clone(), budget_ms);
    if running.is_some() {
        server.completions.cached_context = Some((uri.clone(), cross_file));
    }
    if let Some(target) = &mut server.completions.warm {
        target.warmed = running.is_some().then_some(prompt);
        target.warmed_within_budget = budget_ms.is_some();
        target.with_index = with_index;
        target.running = running;
    }
}

/// A warm-up's prompt, the cross-file context at its head, and the prefill budget an automatic
/// completion there would carry.
struct ToWarm {
    prompt: Vec<PromptPiece>,
    cross_file: completion::context::CrossFile,
    budget_ms: Option<u64>,
}

/// What to warm for a completion at `cursor` of `uri`: the prompt up to the cursor's line
/// when the cursor is known, else the stable head (`completion::warm_prompt`), with the
/// cross-file context at its head.
fn prompt_to_warm(server: &mut Server, uri: &str, cursor: Option<usize>) -> Option<ToWarm> {
    let end = server.documents.get(uri)?.rope.len_bytes();
    let prepared = prepare_for(server, uri, cursor.unwrap_or(end).min(end))?;
    let budget_ms = prefill_budget(&server.config.completion, &prepared, false);
    let prompt = completion::warm_prompt(&prepared, cursor.is_some())?;
    Some(ToWarm { prompt, cross_file: prepared.cross_file, budget_ms })
}

/// Queues a prefill-only job of `prompt` at background priority (local model only,
/// completions on), cut as an automatic completion would be when it carries `budget_ms`; its
/// token, or `None` when nothing was queued.
fn submit(server: &mut Server, uri: &str, prompt: Vec<PromptPiece>, budget_ms: Option<u64>) -> Option<CancelToken> {
    let document = server.documents.get(uri)?;
    let config = &server.config.completion;
    let language_enabled = config.languages.is_empty() || config.languages.contains(&document.language_id);
    let (route, info) = server.engine.serving()?;
    if !config.enabled || !language_enabled || info.markers_are_text {
        return None; // completions are off here, or a remote server keeps its own cache
    }
    tracing::debug!(uri, "pre-warming the KV cache");
    let request = GenerationRequest { prefill_budget_ms: budget_ms, ..GenerationRequest::greedy(prompt, 0) };
    let token = request.cancel.clone();
    let (main_loop, done) = (server.main_loop.clone(), token.clone());
    server.engine.submit(Job {
        request,
        observer: None,
        route,
        priority: Priority::Background,
        on_done: Box::new(move |result| {
            if let Err(error) = result {
                tracing::debug!("pre-warm ended: {error}");
            }
            main_loop.post(move |server| ended(server, &done));
        }),
    });
    server.completions.warm_ups_queued += 1;
    Some(token)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::document::Document;
    use crate::engine::{Backend, EngineError, EngineHandle, FinishReason, Flow, Generation, ModelInfo};
    use crate::lsp::handlers::did_change_watched_files::configure_index;
    use crate::sandbox::PrivateDir;

    /// A model that prefills and says nothing: what a pre-warm asks of it.
    struct Prefiller(ModelInfo);

    impl Backend for Prefiller {
        fn info(&self) -> &ModelInfo {
            &self.0
        }

        fn generate(
            &mut self,
            _: &GenerationRequest,
            _: &mut dyn FnMut(&str) -> Flow,
        ) -> Result<Generation, EngineError> {
            Ok(Generation {
                text: String::new(),
                tokens: Vec::new(),
                finish: FinishReason::Length,
                stats: Default::default(),
            })
        }
    }

    const CART: &str = "from pricing import with_tax\n\n\ndef total(prices):\n    subtotal = sum(prices)\n    \n";

    /// A workspace with `cart.py` (`CART`) focused at its last line, a scripted model, and the
    /// index's answer for that scope in (its key).
    fn cart_focused_with_an_index_answer() -> (PrivateDir, Server, index::Key) {
        let folder = PrivateDir::new("nib-prewarm").unwrap();
        std::fs::write(folder.path().join("pricing.py"), "def with_tax(price):\n    return price * 1.2\n").unwrap();
        let cart = folder.path().join("cart.py");
        std::fs::write(&cart, CART).unwrap();
        let engine =
            EngineHandle::scripted(Box::new(Prefiller(ModelInfo { context_length: 2048, ..Default::default() })));
        let (mut server, _written, _posted) = Server::for_tests(engine, vec![folder.path().to_path_buf()]);
        configure_index(&mut server);
        let uri = format!("file://{}", cart.display());
        server.documents.insert(uri.clone(), Document::new(uri.clone(), "python".into(), 1, CART));
        let cursor = Some(Position { line: 5, character: 4 });
        focused(&mut server, &uri, cursor);
        let key = target_key(&server).expect("the target's scope");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.index.has_answer_for(&key) {
            assert!(Instant::now() < deadline, "the index did not answer: {:?}", server.index.status());
            focused(&mut server, &uri, cursor);
            std::thread::sleep(Duration::from_millis(20));
        }
        (folder, server, key)
    }

    /// A warm-up whose prompt comes out the same as the last one's, now built with the index's
    /// answer, records that the warmed prompt holds it: the state a race between the index
    /// thread and the main loop left (the answer landing between the check and the prompt of
    /// the first warm-up) no longer keeps the target marked as warmed without it for good.
    #[test]
    fn a_warm_up_of_the_same_prompt_records_that_it_holds_the_index_answer() {
        let (_folder, mut server, key) = cart_focused_with_an_index_answer();
        index_answered(&mut server, &key);
        let target = server.completions.warm.as_mut().expect("a target");
        assert!(target.warmed.is_some() && target.with_index, "warmed with the answer");
        target.with_index = false;
        index_answered(&mut server, &key);
        let target = server.completions.warm.as_ref().expect("a target");
        assert!(target.with_index, "the same prompt, built with the answer, holds it");
        assert_eq!(status_json(&server)["withWorkspaceContext"], true);
    }

    /// While the user types in a file (the typing pause pending), an answer of the index for
    /// the target's scope waits for the pause once a completion ran there (the cache holds what
    /// the next keystroke reuses), and is warmed at once before any did (an edit right after
    /// the open).
    #[test]
    fn an_index_answer_while_typing_waits_only_after_a_completion_there() {
        let (_folder, mut server, key) = cart_focused_with_an_index_answer();
        let uri = key.uri.clone();
        let typing = |server: &mut Server, served: bool| {
            server.completions.pause = Some(Pause::after_edit(&uri, CART.len() - 1));
            let target = server.completions.warm.as_mut().expect("a target");
            (target.warmed, target.served) = (None, served);
            index_answered(server, &key);
            server.completions.warm.as_ref().expect("a target").warmed.is_some()
        };
        assert!(typing(&mut server, false), "nothing cached to protect: warmed at once");
        assert!(!typing(&mut server, true), "after a completion the answer waits for the pause");
        requested(&mut server, &uri, CART.len() - 1);
        assert!(server.completions.warm.as_ref().is_some_and(|target| target.served));
    }

    /// A short typing pause warms within the completion's prefill budget (keeping a cut prompt's
    /// lines cached for the next keystroke), then the long pause warms the same prompt whole;
    /// without a budget the short pause's warm-up was already whole and the long one adds none.
    #[test]
    fn a_short_pause_warms_within_the_budget_and_the_long_pause_warms_whole() {
        for budget_ms in [300, 0] {
            let engine = EngineHandle::scripted(Box::new(Prefiller(ModelInfo::default())));
            let (mut server, _written, _posted) = Server::for_tests(engine, Vec::new());
            server.config.completion.prefill_budget_ms = budget_ms;
            let source = "def total(prices):\n    subtotal = sum(prices)\n    return sub";
            let uri = "file:///project/cart.py".to_string();
            server.documents.insert(uri.clone(), Document::new(uri.clone(), "python".into(), 1, source));
            server.completions.pause = Some(Pause::after_edit(&uri, source.len()));
            let pause_at = server.completions.pause.as_ref().unwrap().at();

            pause_elapsed(&mut server);
            let target = server.completions.warm.as_ref().expect("a target");
            assert!(target.warmed.is_some(), "the short pause warms");
            assert_eq!(target.warmed_within_budget, budget_ms > 0);
            let long = server.completions.pause.as_ref().expect("the long pause is waited for");
            assert!(long.long && long.at() > pause_at);
            let queued = server.completions.warm_ups_queued;

            pause_elapsed(&mut server);
            assert!(server.completions.pause.is_none(), "nothing more to wait for");
            let target = server.completions.warm.as_ref().expect("a target");
            assert!(target.warmed.is_some() && !target.warmed_within_budget);
            let expected = if budget_ms > 0 { queued + 1 } else { queued };
            assert_eq!(server.completions.warm_ups_queued, expected, "budget {budget_ms} ms");

            // A focus elsewhere between the two pauses: the long one leaves that target alone.
            server.completions.pause = Some(Pause::after_edit(&uri, source.len()));
            pause_elapsed(&mut server);
            focused(&mut server, &uri, Some(Position { line: 0, character: 0 }));
            let queued = server.completions.warm_ups_queued;
            pause_elapsed(&mut server);
            assert_eq!(server.completions.warm.as_ref().and_then(|target| target.cursor), Some(0));
            assert_eq!(server.completions.warm_ups_queued, queued);
        }
    }

    /// A finished pre-warm is reported as running until its answer reaches the main loop,
    /// where the engine's statistics of the run (the tokens the cache holds) arrive first:
    /// `nib/inspect` read the token's flag, which the engine thread sets at once, and `make
    /// demo` once printed a finished pre-warm next to a cache of 0 tokens. On the tiny fixture
    /// model, its events posted to the main loop as the server posts them.
    #[test]
    fn a_finished_pre_warm_runs_for_inspect_until_the_cache_it_left_is_known() {
        let (mut server, _written, posted) =
            Server::for_tests(EngineHandle::scripted(Box::new(Prefiller(ModelInfo::default()))), Vec::new());
        let main_loop = server.main_loop.clone();
        server.engine = EngineHandle::start(move |event| {
            main_loop.post(move |server| crate::lsp::handlers::engine_event::handle(server, event))
        });
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model");
        server.engine.configure(&crate::config::Config {
            model_path: Some(fixture),
            threads: Some(1),
            ..Default::default()
        });
        let next = |server: &mut Server| posted.recv_timeout(Duration::from_secs(60)).expect("a message")(server);
        while server.engine.serving().is_none() {
            next(&mut server);
        }
        let source = "def total(prices):\n    subtotal = sum(prices)\n    \n";
        let uri = "file:///project/cart.py".to_string();
        server.documents.insert(uri.clone(), Document::new(uri.clone(), "python".into(), 1, source));
        focused(&mut server, &uri, Some(Position { line: 2, character: 4 }));
        let token = server.completions.warm.as_ref().and_then(|target| target.running.clone()).expect("a pre-warm");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !token.is_finished() {
            assert!(Instant::now() < deadline, "the pre-warm did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(status_json(&server)["running"], true, "its answer has not reached the main loop");
        while server.completions.warm.as_ref().is_some_and(|target| target.running.is_some()) {
            next(&mut server);
        }
        assert_eq!(status_json(&server)["warmed"], true);
        assert!(server.engine.status().cached_tokens > 0, "the cache the pre-warm left is known");
    }
}
