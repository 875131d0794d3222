//! `textDocument/inlineCompletion` (LSP 3.18): ghost text at the cursor. Also drives the
//! `textDocument/completion` fallback, which shows the same text as a single item.
//!
//! Newest wins: a new request cancels the one before it, which is answered `RequestCancelled`.
//! Text typed along a shown suggestion is answered from the typing-through cache at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ls_types::{
    CompletionItem, CompletionItemKind, CompletionList, CompletionTextEdit, InlineCompletionItem, InlineCompletionList,
    InlineCompletionParams, InlineCompletionTriggerKind, Position, Range, TextEdit,
};
use serde_json::Value;

use crate::completion::{self, cache, context};
use crate::document::Document;
use crate::engine::{
    CancelToken, EngineError, GenerationRequest, Job, ModelInfo, ModelState, Priority, Route, Sampling,
};
use crate::index;
use crate::lsp::convert;
use crate::lsp::jsonrpc::ResponseError;
use crate::lsp::model_wait;
use crate::lsp::server::{Responder, Server};

/// How the result is shaped for the client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Inline,
    CompletionList,
}

impl Shape {
    fn render(self, text: &str, range: Range) -> Value {
        let reply = match self {
            Shape::Inline => {
                let items = (!text.is_empty()).then(|| InlineCompletionItem {
                    insert_text: text.to_string(),
                    filter_text: None,
                    range: Some(range),
                    command: None,
                    insert_text_format: None,
                });
                serde_json::to_value(InlineCompletionList { items: items.into_iter().collect() })
            }
            Shape::CompletionList => {
                let first_line = text.trim().lines().next().unwrap_or_default();
                let items = (!text.is_empty()).then(|| CompletionItem {
                    label: first_line.chars().take(60).collect(),
                    kind: Some(CompletionItemKind::TEXT),
                    detail: Some("nib".into()),
                    sort_text: Some("0".into()),
                    filter_text: Some(String::new()),
                    text_edit: Some(CompletionTextEdit::Edit(TextEdit { range, new_text: text.to_string() })),
                    ..CompletionItem::default()
                });
                serde_json::to_value(CompletionList { is_incomplete: true, items: items.into_iter().collect() })
            }
        };
        reply.expect("LSP types serialize")
    }
}

/// What the server keeps between completion requests (on the main loop, like all state).
#[derive(Default)]
pub struct CompletionState {
    /// The last suggestion shown, for typing-through.
    pub suggestion: Option<cache::Suggestion>,
    /// The running request's token: the next request cancels it.
    pub current: Option<CancelToken>,
    /// Cross-file context from open buffers for the last document: (key, context). Used when
    /// the workspace index is off or has no answer for the document yet.
    pub cross_file: Option<(u64, context::CrossFile)>,
    /// Where the user last typed, and the pause after it that comes next (the main loop's timer
    /// then pre-warms the prompt up to that line: `prewarm::pause_elapsed`).
    pub pause: Option<Pause>,
    /// Where the next completion is expected, for pre-warming the KV cache (`lsp::prewarm`).
    pub warm: Option<crate::lsp::prewarm::Target>,
    /// A warm-up of `warm` waits for the main loop to have no message waiting
    /// (`prewarm::when_idle`).
    pub warm_when_idle: bool,
    /// Warm-ups queued since the server started (`nib/inspect`).
    pub warm_ups_queued: u64,
    /// The document and cross-file context of the prompt the KV cache was last filled with:
    /// the last completion's (the prompt it ran, `GenerationStats::warm_alternative`), or the
    /// last pre-warm's once submitted.
    pub cached_context: Option<(String, context::CrossFile)>,
}

/// How long after the last edit typing counts as paused: longer than most gaps between keys,
/// short enough that the pause pre-warm has run before a user who stopped looks for ghost text.
pub const TYPING_PAUSE: Duration = Duration::from_millis(300);

/// How long after the last edit the user counts as stopped, not just between keys: the whole
/// prompt is warmed then, even where it evicts the cut window that keeps typing fast
/// (`prewarm::pause_elapsed`).
pub const LONG_PAUSE: Duration = Duration::from_millis(1500);

/// A typing pause the main loop waits for.
pub struct Pause {
    /// When the last edit was applied.
    pub edited_at: Instant,
    pub uri: String,
    /// Where the last edit's text ends.
    pub cursor: usize,
    /// Whether the short pause has passed and the long one is waited for.
    pub long: bool,
}

impl Pause {
    pub fn after_edit(uri: &str, cursor: usize) -> Pause {
        Pause { edited_at: Instant::now(), uri: uri.to_string(), cursor, long: false }
    }

    /// When the pause counts.
    pub fn at(&self) -> Instant {
        self.edited_at + if self.long { LONG_PAUSE } else { TYPING_PAUSE }
    }
}

pub fn handle(server: &mut Server, responder: Responder, params: InlineCompletionParams) {
    let invoked = params.context.trigger_kind == InlineCompletionTriggerKind::INVOKED;
    let position = params.text_document_position.position;
    let uri = params.text_document_position.text_document.uri.as_str().to_string();
    let selected = params.context.selected_completion_info.map(|info| (info.range, info.text));
    complete(server, responder, &uri, position, invoked, selected, Shape::Inline);
}

/// Cross-file context is recomputed only when the document or another buffer is opened,
/// closed or changed elsewhere, never while typing in this one.
fn cross_file_key(server: &Server, document: &Document) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    document.uri.hash(&mut hasher);
    let mut others: Vec<(&String, i32)> =
        server.documents.values().filter(|d| d.uri != document.uri).map(|d| (&d.uri, d.version)).collect();
    others.sort();
    others.hash(&mut hasher);
    hasher.finish()
}

/// Cross-file context for `document`: from the workspace index when it is on and has an
/// answer for the document; else from open buffers, cached while no other buffer changed (the
/// second value is the context to cache, with its key, when it had to be computed).
fn cross_file_for(
    server: &Server,
    document: &Document,
    cursor: usize,
    info: &ModelInfo,
) -> (context::CrossFile, Option<u64>) {
    let budget = context::cross_file_budget(completion::budget_tokens(&server.config.completion, info));
    if server.config.context.workspace
        && let Some(answer) = ask_index(server, document, cursor, budget)
    {
        return (
            context::render_snippets(&answer.snippets, document.language, budget, &server.workspace_folders),
            None,
        );
    }
    let key = cross_file_key(server, document);
    match &server.completions.cross_file {
        Some((cached_key, cross_file)) if *cached_key == key => (cross_file.clone(), None),
        _ => {
            let others: Vec<&Document> = server.documents.values().filter(|d| d.uri != document.uri).collect();
            (context::cross_file(document, &others, budget, &server.workspace_folders), Some(key))
        }
    }
}

/// The workspace index's answer for the scope at `cursor` (or its latest for the document while
/// that one is computed), for a cross-file budget of `budget` bytes.
fn ask_index(server: &Server, document: &Document, cursor: usize, budget: usize) -> Option<Arc<index::Retrieved>> {
    let key = index::Key::at(&document.uri, document.language, &document.rope, document.tree(), cursor);
    document.language?;
    let snapshot = || index::Snapshot::of(document).expect("checked: the document has a language");
    // Snippets are rendered with a comment line each: keep that overhead inside the budget.
    server.index.retrieved(&key, snapshot, cursor, budget * 85 / 100)
}

/// After an edit ending at `cursor` of `uri`: the index gets the live text and prepares the
/// context of the scope there (parsing on its own thread), so the completion request that
/// follows finds it.
pub fn buffer_edited(server: &Server, uri: &str, cursor: usize) {
    let Some(document) = server.documents.get(uri) else { return };
    if !server.config.context.workspace {
        return;
    }
    let Some(snapshot) = index::Snapshot::text_only(document) else { return };
    // The end of an edit, computed from the change, may fall inside a character: round down.
    let rope = &document.rope;
    let cursor = rope.char_to_byte(rope.byte_to_char(cursor.min(rope.len_bytes())));
    let line = rope.byte_to_line(cursor);
    let tokens = match server.engine.serving() {
        Some((_, info)) => completion::budget_tokens(&server.config.completion, &info),
        None => server.config.completion.context_tokens,
    };
    let budget = context::cross_file_budget(tokens) * 85 / 100;
    server.index.buffer(snapshot.clone(), line, true);
    server.index.prefetch(snapshot, cursor, budget);
}

/// The completion nib would run at `cursor` of the open document `uri`, for inspection:
/// `None` when no model is ready or nothing would be completed there.
pub fn prepare_for(server: &mut Server, uri: &str, cursor: usize) -> Option<completion::Prepared> {
    let (_, info) = server.engine.serving()?;
    let document = server.documents.get(uri)?;
    let (prepared, cross_file) = prepare_in(server, document, cursor, &info);
    server.completions.cross_file = cross_file.or(server.completions.cross_file.take());
    prepared
}

/// The pipeline's preparation with the server's settings and cached cross-file context; also
/// the cross-file context to cache when it had to be computed.
fn prepare_in(
    server: &Server,
    document: &Document,
    cursor: usize,
    info: &ModelInfo,
) -> (Option<completion::Prepared>, Option<(u64, context::CrossFile)>) {
    let (cross_file, new_key) = cross_file_for(server, document, cursor, info);
    let prepared = prepare_with(server, document, cursor, info, &cross_file);
    (prepared, new_key.map(|key| (key, cross_file)))
}

/// The pipeline's preparation with the server's settings and the given cross-file context.
fn prepare_with(
    server: &Server,
    document: &Document,
    cursor: usize,
    info: &ModelInfo,
    cross_file: &context::CrossFile,
) -> Option<completion::Prepared> {
    completion::prepare(&completion::Inputs {
        document,
        cursor,
        config: &server.config.completion,
        model: info,
        cross_file,
        workspace_folders: &server.workspace_folders,
    })
}

/// The byte offset of `position` in the open document `uri`, or the answer to give instead:
/// an error, or nothing when completions are off or the document is out of sync.
fn cursor_if_enabled(
    server: &Server,
    uri: &str,
    position: Position,
    invoked: bool,
    shape: Shape,
) -> Result<usize, Result<Value, ResponseError>> {
    let Some(open_document) = server.documents.get(uri) else {
        return Err(Err(ResponseError::invalid_params(format!("document {uri} is not open"))));
    };
    if open_document.out_of_sync {
        // Automatic requests stay quiet: the user was told once when it happened.
        return Err(if invoked {
            Err(super::did_change::out_of_sync_error(uri))
        } else {
            Ok(shape.render("", Range::default()))
        });
    }
    let cursor = convert::request_byte(&open_document.rope, position, server.encoding).map_err(Err)?;
    let config = &server.config.completion;
    let language_enabled = config.languages.is_empty() || config.languages.contains(&open_document.language_id);
    if !(config.enabled || invoked) || !language_enabled {
        return Err(Ok(shape.render("", Range::default())));
    }
    Ok(cursor)
}

/// Runs the completion pipeline for `position` and answers `responder` in `shape`.
pub fn complete(
    server: &mut Server,
    responder: Responder,
    uri: &str,
    position: Position,
    invoked: bool,
    selected: Option<(Range, String)>,
    shape: Shape,
) {
    let cursor = match cursor_if_enabled(server, uri, position, invoked, shape) {
        Ok(cursor) => cursor,
        Err(answer) => return responder.respond(answer),
    };
    let open_document = &server.documents[uri]; // `cursor_if_enabled` found it open.

    // With a completion item selected in the client's menu, complete as if it were inserted.
    let with_selection;
    let (document, cursor, replace_range, lead) = match &selected {
        Some((range, text)) => {
            let (document, cursor) = with_selected_item(open_document, *range, text, server.encoding);
            with_selection = document;
            (&with_selection, cursor, *range, text.clone())
        }
        None => {
            let at = convert::to_position(&open_document.rope, cursor, server.encoding);
            (open_document, cursor, Range { start: at, end: at }, String::new())
        }
    };

    // Typing through the suggestion on screen.
    let shown = server.completions.suggestion.as_ref().filter(|_| lead.is_empty());
    if let Some(rest) = shown.and_then(|s| cache::type_through(s, uri, &document.rope, cursor)) {
        tracing::debug!(uri, id = %responder.id(), "typing-through hit");
        return responder.respond(Ok(shape.render(&rest, replace_range)));
    }

    let (route, info) = match readiness(server, invoked) {
        Readiness::Serving(route, info) => (route, info),
        Readiness::NoModel(message) => {
            return responder.respond(Err(ResponseError::request_failed(format!("no model: {message}"))));
        }
        Readiness::WaitForModel => {
            // Asked for explicitly: wait for the model (bounded, cancellable), then complete.
            let (uri, selected) = (uri.to_string(), selected.clone());
            return model_wait::park(server, responder, move |server, responder| {
                complete(server, responder, &uri, position, invoked, selected, shape)
            });
        }
        Readiness::Nothing => return responder.respond(Ok(shape.render("", replace_range))),
    };

    if let Some(previous) = server.completions.current.take() {
        previous.cancel();
    }
    let (prepared, cross_file) = prepare_in(server, document, cursor, &info);
    let shown =
        Shown { uri: uri.to_string(), rope: document.rope.clone(), cursor, lead, replace_range, shape, invoked };
    if cross_file.is_some() {
        server.completions.cross_file = cross_file;
    }
    let Some(prepared) = prepared else {
        tracing::debug!(uri, id = %responder.id(), "nothing to complete here");
        return responder.respond(Ok(shape.render("", replace_range)));
    };
    if let Some(grounded) = prepared.grounded {
        // An import line checked against the workspace index: no model needed.
        return answer(server, responder, Ok(grounded.text), shown);
    }

    let prefill_budget_ms = prefill_budget(&server.config.completion, &prepared, invoked);
    let alternative = prefill_budget_ms.and_then(|_| warm_alternative(server, document, cursor, &info, &prepared));
    submit(server, responder, Ready { prepared, alternative, prefill_budget_ms }, route, shown);
}

/// A completion ready for the engine.
struct Ready {
    prepared: completion::Prepared,
    /// The same completion with the cache's cross-file context (`warm_alternative`).
    alternative: Option<Alternative>,
    /// `prefill_budget`'s answer.
    prefill_budget_ms: Option<u64>,
}

/// A completion prompt built with another cross-file context than its own.
struct Alternative {
    prompt: Vec<crate::engine::PromptPiece>,
    cross_file: context::CrossFile,
}

/// For an automatic completion whose cross-file context is not the one the KV cache was last
/// filled with: its prompt built with that one (`GenerationRequest::warm_alternative`). When
/// the cursor moves to a scope whose retrieved context differs, the cache still holds the head
/// of the earlier prompts; the engine runs whichever of the two it holds more of, so ghost text
/// while typing does not wait for a new head's prefill (the pre-warm at the typing pause
/// builds it). While the context stays the same, nothing more is built or tokenized.
fn warm_alternative(
    server: &Server,
    document: &Document,
    cursor: usize,
    info: &ModelInfo,
    prepared: &completion::Prepared,
) -> Option<Alternative> {
    let (uri, earlier) = server.completions.cached_context.as_ref()?;
    if *uri != document.uri || *earlier == prepared.cross_file {
        return None;
    }
    let alternative = prepare_with(server, document, cursor, info, earlier)?;
    (alternative.prompt != prepared.prompt && alternative.mode == prepared.mode)
        .then(|| Alternative { prompt: alternative.prompt, cross_file: earlier.clone() })
}

/// The document as if the menu item `text` replaced `range`, and the cursor after it. A copy
/// sharing the rope and tree, re-parsed incrementally: no whole-text copy.
fn with_selected_item(
    document: &Document,
    range: Range,
    text: &str,
    encoding: crate::position::PositionEncoding,
) -> (Document, usize) {
    let start = convert::to_byte(&document.rope, range.start, encoding);
    let end = convert::to_byte(&document.rope, range.end, encoding).max(start);
    (document.with_replaced(start..end, text), start + text.len())
}

/// Whether a completion can run now, and what else to do.
enum Readiness {
    /// The model is ready: generate through `Route` for a model described by the info.
    Serving(Route, Box<ModelInfo>),
    /// An invoked completion without a model: the load failed with this message.
    NoModel(String),
    /// An invoked completion while the model loads: wait for it.
    WaitForModel,
    /// Nothing to show (an automatic completion before the model is ready).
    Nothing,
}

fn readiness(server: &Server, invoked: bool) -> Readiness {
    match server.engine.status().state {
        ModelState::Ready { .. } => match server.engine.serving() {
            Some((route, info)) => Readiness::Serving(route, info),
            None => Readiness::Nothing,
        },
        ModelState::Failed { message } if invoked => Readiness::NoModel(message),
        ModelState::Loading { .. } | ModelState::Unloaded if invoked => Readiness::WaitForModel,
        _ => Readiness::Nothing,
    }
}

/// The prefill budget of an automatic completion whose prompt ends at the cursor (a plain
/// prefix prompt): a cold one is cut to what the engine prefills within
/// `nib.completion.prefillBudgetMs`, so ghost text never waits seconds; the cache warms in the
/// background when typing pauses (`prewarm::pause_elapsed`) and the prompt grows back. An
/// invoked completion gets its whole prompt.
pub(crate) fn prefill_budget(
    config: &crate::config::CompletionConfig,
    prepared: &completion::Prepared,
    invoked: bool,
) -> Option<u64> {
    let ends_at_cursor = matches!(prepared.prompt[..], [crate::engine::PromptPiece::Text(_)]);
    (!invoked && ends_at_cursor && config.prefill_budget_ms > 0).then_some(config.prefill_budget_ms)
}

/// Queues the generation of a prepared completion; its reply is made on the main loop.
fn submit(server: &mut Server, responder: Responder, ready: Ready, route: Route, shown: Shown) {
    let Ready { prepared, alternative, prefill_budget_ms } = ready;
    let token = CancelToken::default();
    server.track(responder.id(), &token);
    server.completions.current = Some(token.clone());
    crate::lsp::prewarm::requested(server, &shown.uri, shown.cursor);
    let request = GenerationRequest {
        prompt: prepared.prompt.clone(),
        max_tokens: prepared.max_tokens,
        sampling: Sampling::GREEDY,
        stop_strings: prepared.stop_strings.clone(),
        stop_tokens: prepared.stop_tokens.clone(),
        cancel: token,
        deadline: Some(Instant::now() + Duration::from_millis(server.config.request_timeout_ms)),
        prefill_budget_ms,
        single_line: prepared.mode == completion::postprocess::Mode::SingleLine,
        warm_alternative: alternative.as_ref().map(|alternative| alternative.prompt.clone()),
        heal_word: true,
    };
    let (own_context, alternative_context) =
        (prepared.cross_file.clone(), alternative.map(|alternative| alternative.cross_file));
    let observer = prepared.observer();
    let request_id = responder.id().to_string();
    let main_loop = server.main_loop.clone();
    let priority = if shown.invoked { Priority::Invoked } else { Priority::Automatic };
    server.engine.submit(Job {
        request,
        observer: Some(Box::new(observer)),
        route,
        priority,
        on_done: Box::new(move |result| {
            // Post-processing stays on the engine thread; the reply is made on the main loop.
            let ran_with = result.as_ref().ok().and_then(|generation| {
                if generation.stats.warm_alternative { alternative_context } else { Some(own_context) }
            });
            let result = result.map(|generation| {
                let text = prepared.finish(&generation.text);
                // The request id and counters let benches/replay.py classify every reply.
                tracing::debug!(
                    uri = shown.uri,
                    id = request_id,
                    mode = ?prepared.mode,
                    reused = generation.stats.reused_tokens,
                    prefilled = generation.stats.prefilled_tokens,
                    capped = generation.stats.capped_tokens,
                    warm_alternative = generation.stats.warm_alternative,
                    generated = generation.stats.generated_tokens,
                    tokenize_ms = generation.stats.tokenize_ms,
                    prefill_ms = generation.stats.prefill_ms,
                    decode_ms = generation.stats.decode_ms,
                    decode_runs = generation.stats.decode_runs,
                    known_rows = generation.stats.known_rows,
                    drafted = generation.stats.draft_tokens,
                    accepted = generation.stats.accepted_draft_tokens,
                    healed = generation.stats.healed_bytes,
                    "completion"
                );
                text
            });
            main_loop.post(move |server| {
                if let Some(cross_file) = ran_with {
                    server.completions.cached_context = Some((shown.uri.clone(), cross_file));
                }
                answer(server, responder, result, shown)
            });
        }),
    });
}

/// Where a completion is shown, to answer it once generated.
struct Shown {
    uri: String,
    rope: ropey::Rope,
    cursor: usize,
    /// The text of the item selected in the client's menu, which the completion continues.
    lead: String,
    replace_range: Range,
    shape: Shape,
    invoked: bool,
}

/// Answers a generated completion and records it for typing-through.
fn answer(server: &mut Server, responder: Responder, result: Result<String, EngineError>, shown: Shown) {
    let Shown { uri, rope, cursor, lead, replace_range, shape, invoked } = shown;
    match result {
        Ok(text) => {
            if lead.is_empty() {
                server.completions.suggestion =
                    (!text.is_empty()).then(|| cache::Suggestion { uri, rope, cursor, text: text.clone() });
            }
            responder.respond(Ok(shape.render(&format!("{lead}{text}"), replace_range)));
        }
        Err(EngineError::Cancelled) => responder.respond(Err(ResponseError::cancelled())),
        // Automatic requests stay quiet when there is no model, the prompt does not fit or the
        // engine's queue is full.
        Err(EngineError::NotReady(_) | EngineError::PromptTooLong { .. } | EngineError::Busy { .. }) if !invoked => {
            responder.respond(Ok(shape.render("", replace_range)))
        }
        Err(error) => responder.respond(Err(ResponseError::request_failed(error.to_string()))),
    }
}
