//! Text generation on a loaded model: tokenize the prompt, reuse the longest cached token
//! prefix, prefill the rest in cancellable chunks, then decode until a stop token, a stop
//! string, the token limit, the caller's observer, cancellation or the deadline. Decoding
//! drafts tokens by prompt lookup (`lookup.rs`) and verifies each draft in one run; the output
//! is the plain output, greedy or seeded sampling, token for token. A completion's prompt that
//! ends inside a word is healed first (`healing.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ort::session::RunOptions;
use tokenizers::Tokenizer;

use super::budget::{self, PrefillSpeed};
use super::healing::{self, Spelling, TokenTexts};
use super::known_rows::KnownRows;
use super::lookup::{Draft, PromptLookup, Recent};
use super::model::{ModelFiles, ModelInfo};
use super::piece_ids::PieceIds;
use super::session::{DecoderSession, KvCache, KvLayout};
use super::{CancelToken, EngineError, EngineStats};

/// Tokens prefilled per forward pass: small enough that cancellation and deadlines are noticed
/// quickly, large enough that per-run overhead stays negligible.
const PREFILL_CHUNK: usize = 128;

/// Tokens per forward pass of a prefill-only request (a pre-warm). A real request whose prompt
/// extends a running pre-warm waits for its pass in flight (the work is kept), so that pass is
/// kept short: 128 tokens took about 230 ms on two cores, a wait longer than the rest of a
/// completion on a warm cache. Passes of 64 tokens prefill about 775 tokens/s against about 640
/// for passes of 32 (a 700-token pre-warm, 2026-12-04), so a file opened and paused on for 1 s
/// is warmed further: the 40 first completions there took a median of 197 ms against 249 ms
/// with 32 (`benches/replay.py --part open-pause`, 8 runs each, the two in turns, 2026-12-05),
/// and the typing replay's single-line KV hits a p50 of 54.5 and 51.9 ms against 51.0 and 50.3.
const PREWARM_CHUNK: usize = 64;

/// A prefill-only request (a pre-warm) that would prefill at most this many tokens runs nothing.
const PREWARM_SLACK: usize = 2;

/// A piece of a prompt: ordinary text, or a special token given by name (FIM markers, chat
/// delimiters), which is looked up in the vocabulary rather than tokenized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptPiece {
    Text(String),
    Special(String),
}

/// Whether `prompt` starts with `head` (pieces equal, the last text piece of `head` a prefix of
/// `prompt`'s): running `prompt` after `head` reuses the KV cache `head` left.
pub fn extends(prompt: &[PromptPiece], head: &[PromptPiece]) -> bool {
    let Some((last, before)) = head.split_last() else { return true };
    let (Some(at_last), true) = (prompt.get(before.len()), prompt.starts_with(before)) else { return false };
    match (last, at_last) {
        (PromptPiece::Text(head_text), PromptPiece::Text(text)) => text.starts_with(head_text.as_str()),
        _ => last == at_last,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling { temperature: 0.0, top_p: 1.0, seed: 0 };
}

#[derive(Clone, Debug)]
pub struct GenerationRequest {
    pub prompt: Vec<PromptPiece>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub stop_strings: Vec<String>,
    /// Special tokens that end generation besides the model's own (FIM separators).
    pub stop_tokens: Vec<String>,
    pub cancel: CancelToken,
    pub deadline: Option<Instant>,
    /// The longest prefill this request should wait for, at the engine's measured prefill
    /// speed: a prompt whose uncached part would take longer keeps its cached head and as many
    /// of its last tokens as fit (`budget::cap`). Only for prompts that end at the cursor. A
    /// pre-warm with a budget is cut only where its cut extends the cut prompt the cache holds
    /// (which it then keeps instead of evicting); otherwise it warms the whole prompt.
    pub prefill_budget_ms: Option<u64>,
    /// The caller stops at the first line end (a single-line completion's observer): prompt
    /// lookup drafts no further than a token that contains a newline, since no token after it
    /// could be used.
    pub single_line: bool,
    /// The same completion with the cross-file context of an earlier prompt at its head: run
    /// instead of `prompt` when the KV cache holds more of it (`Model::choose_prompt`). An
    /// automatic completion whose scope just got new retrieved context thus reuses the cache
    /// the last prompts built, rather than prefilling a new head while the user types; the
    /// new head is warmed when typing pauses (`lsp::prewarm`).
    pub warm_alternative: Option<Vec<PromptPiece>>,
    /// The prompt ends at a cursor, possibly inside a word the output continues: heal it
    /// (`healing.rs`). The generation's text is the same continuation of the prompt as sent,
    /// written with the model's usual tokens for the word.
    pub heal_word: bool,
}

impl GenerationRequest {
    /// Greedy decoding of `prompt`, no stops but the model's own, no deadline.
    pub fn greedy(prompt: Vec<PromptPiece>, max_tokens: usize) -> Self {
        GenerationRequest {
            prompt,
            max_tokens,
            sampling: Sampling::GREEDY,
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            cancel: CancelToken::default(),
            deadline: None,
            prefill_budget_ms: None,
            single_line: false,
            warm_alternative: None,
            heal_word: false,
        }
    }

    /// A prefill-only request: a pre-warm of the KV cache.
    pub fn is_prewarm(&self) -> bool {
        self.max_tokens == 0
    }
}

/// What the observer tells the generator after each new piece of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FinishReason {
    Length,
    StopToken,
    StopString,
    Observer,
}

/// Timings and cache use of one generation.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    pub tokenize_ms: f64,
    pub prefill_ms: f64,
    /// Decoding time; a generation decoded in a batch is charged its share of each run.
    pub decode_ms: f64,
    /// Forward passes during decoding (one per token without speculation), the batch runs it
    /// took part in included.
    pub decode_runs: usize,
    /// Tokens whose logits the cache already held from an earlier run, so that none ran for
    /// them: the prompt's last token, and generated tokens the cache held after the prompt
    /// (`KnownRows`).
    pub known_rows: usize,
    /// Tokens proposed by prompt lookup, and how many of them the model confirmed.
    pub draft_tokens: usize,
    pub accepted_draft_tokens: usize,
    /// The most other generations this one was decoded beside, in one batch
    /// (`Model::generate_batch`); 0 when it decoded alone.
    pub decoded_beside: usize,
    /// Prompt tokens left out to keep the prefill within the request's budget.
    pub capped_tokens: usize,
    /// The request's warm alternative ran instead of its prompt.
    pub warm_alternative: bool,
    /// Bytes at the prompt's end that token healing left to the output to spell.
    pub healed_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    /// The generated token ids (without a final stop token).
    #[cfg_attr(not(test), allow(dead_code))] // Compared token by token in the engine tests.
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub stats: GenerationStats,
}

/// A loaded model with its KV cache. Owned by one thread at a time.
pub struct Model {
    pub info: ModelInfo,
    pub tokenizer: Tokenizer,
    pub(super) session: DecoderSession,
    pub(super) cache: KvCache,
    stop_token_ids: Vec<u32>,
    bos_token_id: Option<u32>,
    /// Drafting for decoding (greedy or sampled); `None` decodes one token per run.
    lookup: Option<PromptLookup>,
    /// `generate_batch` decodes side by side where the session can (off: one after another,
    /// for comparisons).
    pub(super) batching: bool,
    /// The last generations, where drafts are also looked up.
    recent: Recent,
    prefill_speed: PrefillSpeed,
    pub stats: EngineStats,
    /// Every token's text, for token healing (made at load: about 50 ms for 49,152 tokens,
    /// which the first healed completion would otherwise wait for); `None` where the tokenizer
    /// cannot spell by token texts (`healing::token_texts`), which turns healing off.
    token_texts: Option<TokenTexts>,
    /// The ids of the text pieces tokenized lately.
    piece_ids: PieceIds,
}

pub(super) fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

impl Model {
    pub fn new(files: ModelFiles, session: DecoderSession) -> Result<Self, EngineError> {
        // A tokenizer with ids past the model's embedding (one made for another model) would
        // feed the graph ids it cannot look up: refuse it at load time, with both sizes.
        let highest = files.tokenizer.get_vocab(true).into_values().max();
        if let (Some(highest), Some(vocab)) = (highest, session.signature.vocab)
            && highest as usize >= vocab
        {
            return Err(EngineError::Model(format!(
                "model directory {}: tokenizer.json has token ids up to {highest}, but the model's vocabulary has \
                 {vocab} entries: the tokenizer does not belong to this model",
                files.info.dir.display()
            )));
        }
        let cache = session.empty_cache()?;
        let lookup = session.signature.logits_to_keep.then(PromptLookup::default);
        let token_texts = healing::token_texts(&files.tokenizer, session.signature.vocab);
        Ok(Model {
            info: files.info,
            tokenizer: files.tokenizer,
            session,
            cache,
            stop_token_ids: files.stop_token_ids,
            bos_token_id: files.bos_token_id,
            lookup,
            batching: true,
            recent: Recent::default(),
            prefill_speed: PrefillSpeed::default(),
            stats: EngineStats::default(),
            token_texts,
            piece_ids: PieceIds::default(),
        })
    }

    /// Measures the prefill speed once (latency budgets need it before the first real
    /// request): a short warm-up run, then a timed run of 64 tokens; the cache starts empty.
    pub fn calibrate(&mut self) -> Result<(), EngineError> {
        let vocab = self.session.signature.vocab.unwrap_or(64).max(2) as u32;
        let ids: Vec<u32> = (0..66).map(|n| n % vocab).collect();
        self.reset_cache();
        self.session.forward(&mut self.cache, &ids[..2], None)?;
        let started = Instant::now();
        self.session.forward(&mut self.cache, &ids[2..], None)?;
        self.prefill_speed.record(64, millis(started));
        self.reset_cache();
        Ok(())
    }

    /// Milliseconds per prefilled token, as measured; `None` before any measurement.
    pub fn prefill_ms_per_token(&self) -> Option<f64> {
        self.prefill_speed.ms_per_token()
    }

    /// Fixes the prefill speed the latency budget assumes (tests).
    #[cfg(test)]
    pub fn set_prefill_speed_for_test(&mut self, ms_per_token: f64) {
        self.prefill_speed = PrefillSpeed::default();
        self.prefill_speed.record(1000, ms_per_token * 1000.0);
    }

    /// Token ids of a prompt, pieces tokenized one by one (a piece tokenized lately is not
    /// tokenized again: `PieceIds`).
    pub fn tokenize(&mut self, prompt: &[PromptPiece]) -> Result<Vec<u32>, EngineError> {
        let mut ids: Vec<u32> = self.bos_token_id.into_iter().collect();
        for piece in prompt {
            match piece {
                PromptPiece::Text(text) if text.is_empty() => {}
                PromptPiece::Text(text) => {
                    let encode = |text: &str| match self.tokenizer.encode(text, false) {
                        Ok(encoding) => Ok(encoding.get_ids().to_vec()),
                        Err(error) => Err(EngineError::Inference(format!("tokenizer failed: {error}"))),
                    };
                    ids.extend_from_slice(self.piece_ids.ids(text, encode)?);
                }
                PromptPiece::Special(token) => ids.push(self.tokenizer.token_to_id(token).ok_or_else(|| {
                    EngineError::Inference(format!("the model's vocabulary has no special token {token:?}"))
                })?),
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.tokenizer.decode(ids, true).map_err(|error| EngineError::Inference(format!("tokenizer failed: {error}")))
    }

    /// Forgets the KV cache (after an error, whose partial state cannot be trusted) and the
    /// recent generations drafts are looked up in (so a benchmark's runs each start cold).
    pub fn reset_cache(&mut self) {
        self.recent.clear();
        if let Ok(cache) = self.session.empty_cache() {
            self.cache = cache;
        }
    }

    /// Runs `ids` after the cached tokens and returns the last position's logits (tests).
    #[cfg(test)]
    pub fn forward_for_test(&mut self, ids: &[u32], fresh: bool) -> Result<Vec<f32>, EngineError> {
        if fresh {
            self.reset_cache();
        }
        self.session.forward(&mut self.cache, ids, None)
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache.tokens.len()
    }

    /// Bytes the KV cache holds (a shared buffer's whole capacity).
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes(&self.session.signature)
    }

    /// Whether the KV cache is bf16 (nib's attention kernel runs) rather than fp32.
    pub fn kv_bf16(&self) -> bool {
        self.session.signature.kv_type == ort::value::TensorElementType::Bfloat16
    }

    pub fn kv_layout(&self) -> KvLayout {
        self.session.layout()
    }

    /// Turns prompt-lookup speculation on (when the graph can verify drafts) or off (the
    /// equivalence tests and the benchmarks compare both).
    pub fn set_speculation(&mut self, on: bool) {
        self.lookup = (on && self.session.signature.logits_to_keep).then(PromptLookup::default);
    }

    pub fn speculation(&self) -> bool {
        self.lookup.is_some()
    }

    /// Keeps the KV cache in `layout` from now on (the equivalence tests and the benchmarks
    /// compare the layouts); the cache starts empty.
    pub fn set_kv_layout(&mut self, layout: KvLayout) -> Result<(), EngineError> {
        self.cache = self.session.set_layout(layout)?;
        Ok(())
    }

    pub(super) fn check_interrupt(request: &GenerationRequest) -> Result<(), EngineError> {
        if request.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        if request.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(EngineError::TimedOut);
        }
        Ok(())
    }

    /// Brings the cache to `prompt[..len - 1]` plus the last token's logits: reuses the longest
    /// common prefix with what is cached and prefills the rest. Returns the last logits. A
    /// prompt the cache holds whole, with its last row kept, runs nothing, and the cache keeps
    /// what it holds after the prompt for the decoding to follow (`known_row`).
    pub(super) fn prefill(
        &mut self,
        prompt: &[u32],
        request: &GenerationRequest,
        run_options: &RunOptions,
        stats: &mut GenerationStats,
    ) -> Result<Vec<f32>, EngineError> {
        let common = self.cached_prefix(prompt);
        let last = prompt.len() - 1;
        if common == prompt.len()
            && let Some(row) = self.cache.rows.get(last)
        {
            stats.reused_tokens = prompt.len();
            stats.known_rows += 1;
            return Ok(row.to_vec());
        }
        // At least one token must run to produce logits.
        let keep = common.min(last);
        self.session.truncate(&mut self.cache, keep)?;
        stats.reused_tokens = keep;
        stats.prefilled_tokens = prompt.len() - keep;
        let mut logits = Vec::new();
        let chunk_size = if request.is_prewarm() { PREWARM_CHUNK } else { PREFILL_CHUNK };
        for chunk in prompt[keep..].chunks(chunk_size) {
            Self::check_interrupt(request)?;
            let started = Instant::now();
            logits = self.session.forward(&mut self.cache, chunk, Some(run_options))?;
            self.prefill_speed.record(chunk.len(), millis(started));
        }
        self.cache.rows.keep(last, &logits);
        Ok(logits)
    }

    /// `prompt`, cut to fit `request`'s prefill budget (`budget::cap`), and how many tokens
    /// were left out.
    fn within_budget(&self, prompt: Vec<u32>, request: &GenerationRequest) -> (Vec<u32>, usize) {
        let Some(affordable) = request.prefill_budget_ms.and_then(|ms| self.prefill_speed.tokens_within(ms)) else {
            return (prompt, 0);
        };
        let reusable = self.cached_prefix(&prompt);
        let cut = budget::Cut {
            reusable,
            keep_first: usize::from(self.bos_token_id.is_some()),
            cached_after: &self.cache.tokens[reusable..],
        };
        let (capped, left_out) = budget::cap(&prompt, cut, affordable, |id| self.breaks_line(id));
        // A pre-warm is cut to keep the cut prompt the cache holds, which the next keystroke's
        // completion reuses; a cut of its own would only warm less than the whole prompt.
        if request.is_prewarm() && left_out > 0 && self.cached_prefix(&capped) <= reusable {
            return (prompt, 0);
        }
        (capped, left_out)
    }

    /// Generates a continuation of `request.prompt`. `observer` sees the whole text generated so
    /// far after every token and may stop generation early (e.g. at the end of a block).
    pub fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        let run_options = Arc::new(RunOptions::new().map_err(|error| EngineError::Inference(error.to_string()))?);
        request.cancel.attach_run(&run_options);
        let mut result = self.generate_inner(request, observer, &run_options);
        request.cancel.detach_run();
        // A run stopped by the cancel token's termination reports an ONNX Runtime error.
        if result.is_err() && request.cancel.is_cancelled() {
            result = Err(EngineError::Cancelled);
        }
        match &result {
            // A pre-warm the cache already held ran nothing: it is no generation, and must not
            // replace the last request's statistics (`nib/inspect`, the demo) with zeros.
            Ok(generation) if request.is_prewarm() && generation.stats.prefilled_tokens == 0 => {}
            Ok(generation) => self.stats.record(&generation.stats),
            // A run interrupted midway may have left the cache short of its tokens list; the
            // cache is only ever extended after a successful run, so it stays consistent.
            Err(EngineError::Inference(_)) => self.reset_cache(),
            Err(_) => {}
        }
        result
    }

    fn generate_inner(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
        run_options: &RunOptions,
    ) -> Result<Generation, EngineError> {
        let mut stats = GenerationStats::default();
        let Some((prompt, healed)) = self.prompt_to_run(request, &mut stats)? else {
            return Ok(Generation { text: String::new(), tokens: Vec::new(), finish: FinishReason::Length, stats });
        };
        let limit = self.info.context_length;
        let max_tokens = request.max_tokens.min(limit - prompt.len());

        let mut sampler = Sampler::new(&request.sampling, self.spelling(&healed));
        let prefill_started = Instant::now();
        let logits = self.prefill(&prompt, request, run_options, &mut stats)?;
        stats.prefill_ms = millis(prefill_started);

        let decode_started = Instant::now();
        let mut output = Output::new(self, request, healed, max_tokens);
        let mut draft_limit = self.lookup.map_or(0, |lookup| lookup.max_draft);
        // Where the next draft goes on after the last one was turned down (`lookup::Resume`).
        let mut resume = None;
        // The prompt and the tokens generated so far: where drafts are looked up.
        let mut context = prompt;
        // Tokens already sampled, in order: the draft tokens a run confirmed (in the cache), then
        // the one that followed them (not yet in the cache).
        let mut upcoming: VecDeque<u32> = VecDeque::new();
        if max_tokens > 0 {
            upcoming.push_back(sampler.sample(&logits));
        }
        // Positions below this keep their rows for the generations after this one.
        let rows_until = context.len() - 1 + KnownRows::PER_GENERATION;
        while let Some(next) = upcoming.pop_front() {
            if output.take(self, next, observer)? == Flow::Stop {
                break;
            }
            context.push(next);
            if upcoming.is_empty() {
                Self::check_interrupt(request)?;
                let position = context.len() - 1;
                if let Some(row) = self.known_row(next, position) {
                    stats.known_rows += 1;
                    resume = None;
                    upcoming.push_back(sampler.sample(row));
                    continue;
                }
                self.session.truncate(&mut self.cache, position)?;
                let room = (max_tokens - output.generated.len()).min(limit.saturating_sub(context.len()));
                let room = room.saturating_sub(1).min(draft_limit);
                let mut draft = self
                    .lookup
                    .map_or_else(Draft::default, |lookup| lookup.draft(&context, &self.recent, room, resume));
                if request.single_line {
                    draft.tokens.truncate(self.through_line_end(&draft.tokens).len());
                }
                upcoming = self.decode_step(next, &draft.tokens, &mut sampler, rows_until, run_options, &mut stats)?;
                let accepted = upcoming.len() - 1;
                if let (Some(lookup), false) = (self.lookup, draft.tokens.is_empty()) {
                    draft_limit = lookup.next_limit(draft_limit, draft.tokens.len(), accepted);
                }
                resume = draft.resume_after(accepted);
            }
        }
        stats.decode_ms = millis(decode_started);
        Ok(output.finish(self, stats))
    }

    /// The request's prompt as tokens, cut to its latency budget and checked against the context
    /// length; `None` for a pre-warm the cache already holds, which needs no run.
    pub(super) fn prompt_to_run(
        &mut self,
        request: &GenerationRequest,
        stats: &mut GenerationStats,
    ) -> Result<Option<(Vec<u32>, String)>, EngineError> {
        let started = Instant::now();
        let (prompt, healed) = self.choose_prompt(request, stats)?;
        let (prompt, capped) = self.within_budget(prompt, request);
        stats.capped_tokens = capped;
        stats.tokenize_ms = millis(started);
        if prompt.is_empty() {
            return Err(EngineError::Inference("the prompt is empty".into()));
        }
        let limit = self.info.context_length;
        if prompt.len() + 1 > limit {
            return Err(EngineError::PromptTooLong { tokens: prompt.len(), context: limit });
        }
        stats.prompt_tokens = prompt.len();
        let held = self.cached_prefix(&prompt);
        if request.is_prewarm() && held + PREWARM_SLACK >= prompt.len() {
            // A pre-warm the cache already holds: running it would only make the cache forget
            // what it holds after it (the line typed since, the suggestion) to redo a last token
            // or two, which a prompt cut at a line end may join differently from the text after.
            stats.reused_tokens = held;
            return Ok(None);
        }
        stats.healed_bytes = healed.len();
        Ok(Some((prompt, healed)))
    }

    /// `request.prompt` tokenized, or its warm alternative when the KV cache holds a longer
    /// prefix of that one (a tie keeps the prompt); with the text healing left to the output.
    fn choose_prompt(
        &mut self,
        request: &GenerationRequest,
        stats: &mut GenerationStats,
    ) -> Result<(Vec<u32>, String), EngineError> {
        let prompt = self.tokenize_healed(&request.prompt, request)?;
        let Some(alternative) = &request.warm_alternative else { return Ok(prompt) };
        let alternative = self.tokenize_healed(alternative, request)?;
        if self.cached_prefix(&alternative.0) > self.cached_prefix(&prompt.0) {
            stats.warm_alternative = true;
            return Ok(alternative);
        }
        Ok(prompt)
    }

    /// `prompt` tokenized, healed where `request` asks for it (`healing::heal`), and the healed
    /// text (empty when not healed).
    fn tokenize_healed(
        &mut self,
        prompt: &[PromptPiece],
        request: &GenerationRequest,
    ) -> Result<(Vec<u32>, String), EngineError> {
        let heals = request.heal_word && !request.is_prewarm() && self.token_texts.is_some();
        match healing::heal(prompt).filter(|_| heals) {
            Some((healed, text)) => Ok((self.tokenize(&healed)?, text)),
            None => Ok((self.tokenize(prompt)?, String::new())),
        }
    }

    /// What a sampler must spell first: the prompt's end token healing left to the output.
    pub(super) fn spelling(&self, healed: &str) -> Option<Spelling> {
        self.token_texts.clone().filter(|_| !healed.is_empty()).map(|texts| Spelling::new(healed.to_string(), texts))
    }

    /// The logits that follow `next` at `position`, where the cache holds that very token there
    /// and kept the row it produced (a generation before this one ran it).
    fn known_row(&self, next: u32, position: usize) -> Option<&[f32]> {
        (self.cache.tokens.get(position) == Some(&next)).then(|| self.cache.rows.get(position)).flatten()
    }

    /// How many of `prompt`'s first tokens the KV cache holds.
    fn cached_prefix(&self, prompt: &[u32]) -> usize {
        self.cache.tokens.iter().zip(prompt).take_while(|(cached, new)| cached == new).count()
    }

    /// Whether token `id` holds a newline (a byte-level BPE joins one to the indentation after
    /// it, so such a token need not end with it).
    fn breaks_line(&self, id: u32) -> bool {
        self.tokenizer.decode(&[id], false).is_ok_and(|text| text.contains('\n'))
    }

    /// `draft` up to and including its first token that contains a newline.
    fn through_line_end<'a>(&self, draft: &'a [u32]) -> &'a [u32] {
        draft.iter().position(|&id| self.breaks_line(id)).map_or(draft, |end| &draft[..=end])
    }

    /// Runs `next` (the last generated token), and with it `draft` (the tokens prompt lookup
    /// expects after it), and samples what follows: `sampler` takes the rows in order for as
    /// long as it picks the draft's tokens, then one more (the first that differs, or the one
    /// after a draft taken whole). The sampler sees the same rows in the same order as it would
    /// one run at a time, so the tokens are those of plain decoding, greedy or sampled. The
    /// cache keeps `next` and the confirmed draft tokens and forgets the rest; the last token
    /// returned is not in it. The rows of positions below `rows_until` are kept (`KnownRows`).
    fn decode_step(
        &mut self,
        next: u32,
        draft: &[u32],
        sampler: &mut Sampler,
        rows_until: usize,
        run_options: &RunOptions,
        stats: &mut GenerationStats,
    ) -> Result<VecDeque<u32>, EngineError> {
        stats.decode_runs += 1;
        let before = self.cache.tokens.len();
        let mut ids = Vec::with_capacity(draft.len() + 1);
        ids.push(next);
        ids.extend_from_slice(draft);
        let rows = self.session.forward_rows(&mut self.cache, &ids, ids.len(), Some(run_options))?;
        let vocab = rows.len() / ids.len();
        let mut sampled = VecDeque::with_capacity(ids.len());
        for (index, row) in rows.chunks(vocab).enumerate() {
            let token = sampler.sample(row);
            sampled.push_back(token);
            if before + index < rows_until {
                self.cache.rows.keep(before + index, row);
            }
            if draft.get(index) != Some(&token) {
                break;
            }
        }
        let accepted = sampled.len() - 1;
        stats.draft_tokens += draft.len();
        stats.accepted_draft_tokens += accepted;
        self.session.truncate(&mut self.cache, before + 1 + accepted)?;
        Ok(sampled)
    }
}

/// A generation's output as its tokens come: its text, and when it ends (a stop token or
/// string, the observer, the token limit).
pub(super) struct Output<'r> {
    request: &'r GenerationRequest,
    extra_stops: Vec<u32>,
    /// The prompt's end that token healing left to the output to spell.
    healed: String,
    max_tokens: usize,
    pub(super) generated: Vec<u32>,
    text: String,
    reason: FinishReason,
}

impl<'r> Output<'r> {
    pub(super) fn new(model: &Model, request: &'r GenerationRequest, healed: String, max_tokens: usize) -> Self {
        let extra_stops = request.stop_tokens.iter().filter_map(|token| model.tokenizer.token_to_id(token)).collect();
        Output {
            request,
            extra_stops,
            healed,
            max_tokens,
            generated: Vec::new(),
            text: String::new(),
            reason: FinishReason::Length,
        }
    }

    /// Takes the next token; `Flow::Stop` when the output ends with it (a stop token is not
    /// kept).
    pub(super) fn take(
        &mut self,
        model: &Model,
        next: u32,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Flow, EngineError> {
        if model.stop_token_ids.contains(&next) || self.extra_stops.contains(&next) {
            self.reason = FinishReason::StopToken;
            return Ok(Flow::Stop);
        }
        self.generated.push(next);
        let decoded = model.decode(&self.generated)?;
        // A token can end inside a multi-byte character; wait for the rest of it. A healed
        // prompt's text starts once the tokens so far spell its healed end.
        let visible = decoded.strip_prefix(self.healed.as_str());
        if let Some(visible) = visible.filter(|visible| !visible.ends_with('\u{fffd}')) {
            self.text = visible.to_string();
            let stops = &self.request.stop_strings;
            if let Some(cut) = stops.iter().filter_map(|stop| self.text.find(stop.as_str())).min() {
                self.text.truncate(cut);
                self.reason = FinishReason::StopString;
                return Ok(Flow::Stop);
            }
            if observer(&self.text) == Flow::Stop {
                self.reason = FinishReason::Observer;
                return Ok(Flow::Stop);
            }
        }
        Ok(if self.generated.len() == self.max_tokens { Flow::Stop } else { Flow::Continue })
    }

    /// The generation, its tokens remembered for drafting (`Recent`).
    pub(super) fn finish(self, model: &mut Model, mut stats: GenerationStats) -> Generation {
        model.recent.remember(&self.generated);
        stats.generated_tokens = self.generated.len();
        Generation { text: self.text, tokens: self.generated, finish: self.reason, stats }
    }
}

/// Greedy or seeded temperature + nucleus sampling, among the tokens that go on spelling a
/// healed prompt's end while there is one.
pub(super) struct Sampler {
    temperature: f32,
    top_p: f32,
    state: u64,
    spelling: Option<Spelling>,
}

impl Sampler {
    pub(super) fn new(sampling: &Sampling, spelling: Option<Spelling>) -> Self {
        // xorshift64* needs a non-zero state.
        Sampler { temperature: sampling.temperature, top_p: sampling.top_p, state: sampling.seed | 1, spelling }
    }

    /// The next token from `logits`: among those that go on spelling while that lasts.
    pub(super) fn sample(&mut self, logits: &[f32]) -> u32 {
        let Some(spelling) = self.spelling.as_mut().filter(|spelling| !spelling.done()) else {
            return self.pick(logits);
        };
        let masked = spelling.mask(logits).into_owned();
        let token = self.pick(&masked);
        if let Some(spelling) = self.spelling.as_mut() {
            spelling.advance(token);
        }
        token
    }

    fn next_unit(&mut self) -> f32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let bits = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 random bits
        bits as f32 / (1u64 << 24) as f32
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let argmax = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(index, _)| index);
        if self.temperature <= 0.0 {
            return argmax as u32;
        }
        let max = logits[argmax];
        // A token more than 30 temperatures below the best weighs under e^-30 of it: nothing an
        // f32 total of 49,152 of them would hold.
        let floor = max - 30.0 * self.temperature;
        let weighed: Vec<(usize, f32)> = logits
            .iter()
            .enumerate()
            .filter(|&(_, &logit)| logit > floor)
            .map(|(index, &logit)| (index, ((logit - max) / self.temperature).exp()))
            .collect();
        let total: f32 = weighed.iter().map(|c| c.1).sum();
        let candidates = self.nucleus(weighed, total);
        let kept_total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut target = self.next_unit() * kept_total;
        for (index, weight) in &candidates {
            if target < *weight {
                return *index as u32;
            }
            target -= weight;
        }
        candidates.last().map_or(argmax, |c| c.0) as u32
    }

    /// The smallest set of the heaviest of `weighed` whose mass reaches `top_p` of `total`,
    /// heaviest first, ties in token order. Sorting is most of sampling's cost, so when the
    /// tokens above a millionth of the total reach `top_p` with room to spare (they hold all but
    /// at most 5 % of the mass over 49,152 tokens), only they are sorted: the set is the same.
    fn nucleus(&self, weighed: Vec<(usize, f32)>, total: f32) -> Vec<(usize, f32)> {
        let heavy: Vec<(usize, f32)> = weighed.iter().copied().filter(|c| c.1 >= total * 1e-6).collect();
        let heavy_mass: f32 = heavy.iter().map(|c| c.1).sum();
        let mut candidates = if heavy_mass >= (self.top_p + 1e-4) * total { heavy } else { weighed };
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut mass = 0.0;
        let mut kept = 0;
        for candidate in &candidates {
            mass += candidate.1 / total;
            kept += 1;
            if mass >= self.top_p {
                break;
            }
        }
        candidates.truncate(kept);
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_extends_the_heads_it_starts_with() {
        let text = |t: &str| PromptPiece::Text(t.to_string());
        let special = |t: &str| PromptPiece::Special(t.to_string());
        let prompt = [special("<fim_prefix>"), text("# a.py\ndef f():\n    return 1")];
        assert!(extends(&prompt, &[]));
        assert!(extends(&prompt, &[special("<fim_prefix>")]));
        assert!(extends(&prompt, &[special("<fim_prefix>"), text("# a.py\n")]));
        assert!(extends(&prompt, &prompt));
        assert!(!extends(&prompt, &[special("<fim_prefix>"), text("# b.py\n")]));
        assert!(!extends(&prompt, &[text("# a.py\n")]));
        assert!(!extends(&prompt[..1], &prompt));
    }

    /// The nucleus from sorting only the heavy tokens is the one from sorting all of them.
    #[test]
    fn the_nucleus_is_the_same_as_from_a_full_sort() {
        let mut state = 0x2545_f491u64;
        for (round, top_p) in [0.5f32, 0.9, 0.95, 0.99, 1.0].into_iter().cycle().take(40).enumerate() {
            let spread = [2.0f32, 6.0, 12.0, 30.0][round % 4];
            let logits: Vec<f32> = (0..49_152)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 * spread
                })
                .collect();
            let sampler = Sampler::new(&Sampling { temperature: 0.6, top_p, seed: 1 }, None);
            let max = logits.iter().copied().fold(f32::MIN, f32::max);
            let weighed: Vec<(usize, f32)> =
                logits.iter().enumerate().map(|(index, &logit)| (index, ((logit - max) / 0.6).exp())).collect();
            let total: f32 = weighed.iter().map(|c| c.1).sum();
            let mut full = weighed.clone();
            full.sort_by(|a, b| b.1.total_cmp(&a.1));
            let (mut mass, mut kept) = (0.0, 0);
            for candidate in &full {
                mass += candidate.1 / total;
                kept += 1;
                if mass >= top_p {
                    break;
                }
            }
            full.truncate(kept);
            assert_eq!(sampler.nucleus(weighed, total), full, "top_p {top_p}, logits spread over {spread}");
        }
    }

    #[test]
    fn greedy_picks_the_argmax_and_sampling_is_seeded() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        assert_eq!(Sampler::new(&Sampling::GREEDY, None).sample(&logits), 1);
        let sampling = Sampling { temperature: 1.0, top_p: 0.95, seed: 42 };
        let first: Vec<u32> = {
            let mut sampler = Sampler::new(&sampling, None);
            (0..20).map(|_| sampler.sample(&logits)).collect()
        };
        let second: Vec<u32> = {
            let mut sampler = Sampler::new(&sampling, None);
            (0..20).map(|_| sampler.sample(&logits)).collect()
        };
        assert_eq!(first, second);
        assert!(first.contains(&1) && first.contains(&2), "{first:?}");
        // top_p small enough keeps only the best token.
        let mut narrow = Sampler::new(&Sampling { temperature: 1.0, top_p: 0.1, seed: 7 }, None);
        assert!((0..20).all(|_| narrow.sample(&logits) == 1));
    }
}
