//! Several generations side by side: each prompt is prefilled on the model's cache as it
//! would be alone, its rows copied into a sequence of a batch (`session::BatchCache`), and
//! then every run decodes one token of each sequence still going. A run of n rows costs much
//! less than n runs of one (the weights are read once), and a row's logits do not depend on
//! the rows beside it, so each generation is the one it would be alone, token for token.
//! Independent questions about the same code (a docstring's sentences) run this way.

use std::sync::Arc;
use std::time::Instant;

use ort::session::RunOptions;

use super::generate::{Output, Sampler, millis};
use super::session::BatchCache;
use super::{EngineError, Flow, Generation, GenerationRequest, GenerationStats, Model};

/// The most bytes of keys and values one batch holds: with SmolLM2-135M's fp16 cache (22.5 KiB
/// a token), five sequences of 870 tokens, the five questions of a docstring for a function
/// of 800 tokens.
const BATCH_KV_BYTES: usize = 96 << 20;

/// A request's index, its prompt as tokens with the text healing left to the output, and its
/// statistics so far.
type Prompt = (usize, (Vec<u32>, String), GenerationStats);

/// Work the engine does on the model between two runs of a batch.
pub type Between<'b> = &'b mut dyn FnMut(&mut Model);

/// What every step of a batch works with.
struct Work<'a, 'o> {
    requests: &'a [GenerationRequest],
    observers: &'a mut [&'o mut dyn FnMut(&str) -> Flow],
    run_options: &'a RunOptions,
    between: Between<'a>,
    /// Each request's result, once it has one.
    results: Vec<Option<Result<Generation, EngineError>>>,
    /// Forward passes the batches ran.
    passes: usize,
}

impl Work<'_, '_> {
    fn end(&mut self, index: usize, result: Result<Generation, EngineError>) {
        self.results[index] = Some(result);
    }
}

/// One generation of the batch while it decodes.
struct Sequence<'r> {
    /// The request's index.
    index: usize,
    output: Output<'r>,
    sampler: Sampler,
    stats: GenerationStats,
    /// The last token sampled, not yet in the cache.
    next: u32,
}

impl Model {
    /// Whether `generate_batch` decodes side by side (else one request after another).
    pub fn batches(&self) -> bool {
        self.batching && self.session.batches()
    }

    /// Turns decoding side by side on (where the session can) or off (the benchmarks compare
    /// both).
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
    }

    /// Generates each of `requests` (`observers[i]` watching request `i`) and returns their
    /// results in order: the same generations as `generate` one after another, decoded side by
    /// side where the session can (`DecoderSession::batches`) and without prompt lookup.
    pub fn generate_batch(
        &mut self,
        requests: &[GenerationRequest],
        observers: &mut [&mut dyn FnMut(&str) -> Flow],
    ) -> Vec<Result<Generation, EngineError>> {
        self.generate_batch_yielding(requests, observers, &mut |_| {})
    }

    /// `generate_batch`, running `between` on the model before each prefill and each run of the
    /// batch (the engine answers waiting completions there: the batch's rows are its own, and
    /// what `between` generates changes none of its tokens).
    pub fn generate_batch_yielding(
        &mut self,
        requests: &[GenerationRequest],
        observers: &mut [&mut dyn FnMut(&str) -> Flow],
        between: Between<'_>,
    ) -> Vec<Result<Generation, EngineError>> {
        assert_eq!(requests.len(), observers.len(), "one observer per request");
        if requests.len() < 2 || !self.batches() || requests.iter().any(GenerationRequest::is_prewarm) {
            let mut alone = |(request, observer): (&GenerationRequest, &mut &mut dyn FnMut(&str) -> Flow)| {
                between(self);
                self.generate(request, *observer)
            };
            return requests.iter().zip(observers).map(&mut alone).collect();
        }
        let run_options = match RunOptions::new() {
            Ok(options) => Arc::new(options),
            Err(error) => return requests.iter().map(|_| Err(EngineError::Inference(error.to_string()))).collect(),
        };
        // A cancel stops the run in flight where it stops every request of the batch (an
        // action's questions share one token); otherwise it is noticed between runs.
        let one_token = requests.windows(2).all(|pair| pair[0].cancel.is(&pair[1].cancel));
        if one_token {
            requests[0].cancel.attach_run(&run_options);
        }
        let results = requests.iter().map(|_| None).collect();
        let mut work = Work { requests, observers, run_options: &run_options, between, results, passes: 0 };
        if let Err(error) = self.run_batches(&mut work) {
            // An interrupted run may leave the cache short of its token list.
            if matches!(error, EngineError::Inference(_)) {
                self.reset_cache();
            }
            for (request, result) in requests.iter().zip(&mut work.results) {
                let error = if request.cancel.is_cancelled() { EngineError::Cancelled } else { error.clone() };
                result.get_or_insert(Err(error));
            }
        }
        if one_token {
            requests[0].cancel.detach_run();
        }
        // The batch's buffers are freed by now; malloc would keep their memory.
        super::allocator::give_back_freed_memory();
        let results: Vec<_> =
            work.results.into_iter().map(|result| result.expect("every request has a result")).collect();
        self.record_batch(&results, work.passes);
        results
    }

    /// Adds the batch's generations to the engine's statistics, whose forward passes count each
    /// run of the batch once (a generation's own count has every run it took part in).
    fn record_batch(&mut self, results: &[Result<Generation, EngineError>], passes: usize) {
        let mut runs = 0;
        for generation in results.iter().flatten() {
            self.stats.record(&generation.stats);
            runs += generation.stats.decode_runs;
        }
        self.stats.decode_runs -= (runs - passes.min(runs)) as u64;
    }

    /// Prefills every prompt and decodes them in batches; the requests that end are given
    /// their results as they end. An error ends the requests still without a result.
    fn run_batches(&mut self, work: &mut Work) -> Result<(), EngineError> {
        // Each prompt as tokens; a request whose prompt cannot run ends here, as it would alone.
        let mut prompts = Vec::with_capacity(work.requests.len());
        for (index, request) in work.requests.iter().enumerate() {
            let mut stats = GenerationStats::default();
            match self.prompt_to_run(request, &mut stats) {
                Ok(prompt) => prompts.push((index, prompt.expect("not a pre-warm"), stats)),
                Err(error) => work.end(index, Err(error)),
            }
        }
        let limit = self.info.context_length;
        let requests = work.requests;
        let rows =
            |(index, (prompt, _), _): &Prompt| prompt.len() + requests[*index].max_tokens.min(limit - prompt.len());
        let capacity = prompts.iter().map(rows).max().unwrap_or(1);
        // Each sequence holds its own copy of the prompt's rows: as many side by side as fit in
        // `BATCH_KV_BYTES`, and the rest in the batches after.
        let per_batch = BATCH_KV_BYTES / (capacity * self.session.signature.kv_bytes_per_row()).max(1);
        let mut prompts = prompts.into_iter().peekable();
        while prompts.peek().is_some() {
            let group: Vec<Prompt> = prompts.by_ref().take(per_batch.max(1)).collect();
            self.side_by_side(work, group, capacity)?;
        }
        Ok(())
    }

    /// Prefills each of `prompts` and decodes them side by side in one batch of `capacity`
    /// rows per sequence.
    fn side_by_side(&mut self, work: &mut Work, prompts: Vec<Prompt>, capacity: usize) -> Result<(), EngineError> {
        let mut batch = self.session.new_batch(prompts.len(), capacity)?;
        let mut sequences = Vec::with_capacity(prompts.len());
        let requests = work.requests;
        for (index, prompt, stats) in prompts {
            (work.between)(self);
            let request = &requests[index];
            match self.start_sequence((index, request), prompt, stats, work.run_options, (&mut batch, sequences.len()))
            {
                Ok(sequence) => sequences.push(sequence),
                Err(error) => {
                    // A prefill interrupted midway may leave the cache short of its token list.
                    if matches!(error, EngineError::Inference(_)) {
                        self.reset_cache();
                    }
                    let cancelled = request.cancel.is_cancelled();
                    work.end(index, Err(if cancelled { EngineError::Cancelled } else { error }));
                }
            }
        }
        self.decode_together(work, sequences, &mut batch)
    }

    /// Decodes `sequences`, whose rows `batch` holds: each token sampled is taken, and the
    /// sequences that go on run the next one together.
    fn decode_together<'r>(
        &mut self,
        work: &mut Work<'r, '_>,
        mut sequences: Vec<Sequence<'r>>,
        batch: &mut BatchCache,
    ) -> Result<(), EngineError> {
        loop {
            let going = self.take_sampled(work, sequences)?;
            if going.is_empty() {
                return Ok(());
            }
            if going.len() < batch.len() {
                let slots: Vec<usize> = going.iter().map(|(slot, _)| *slot).collect();
                self.session.keep_in_batch(batch, &slots)?;
            }
            sequences = going.into_iter().map(|(_, sequence)| sequence).collect();
            (work.between)(self);
            let started = Instant::now();
            let ids: Vec<u32> = sequences.iter().map(|sequence| sequence.next).collect();
            let logits = self.session.forward_batch(batch, &ids, work.run_options)?;
            work.passes += 1;
            let vocab = logits.len() / ids.len();
            for (sequence, row) in sequences.iter_mut().zip(logits.chunks_exact(vocab)) {
                sequence.next = sequence.sampler.sample(row);
            }
            // Each sequence is charged its share of the run: the generations' decode times add
            // up to the time spent decoding.
            let (share, beside) = (millis(started) / ids.len() as f64, ids.len() - 1);
            for sequence in &mut sequences {
                sequence.stats.decode_runs += 1;
                sequence.stats.decode_ms += share;
                sequence.stats.decoded_beside = sequence.stats.decoded_beside.max(beside);
            }
        }
    }

    /// Takes each sequence's sampled token: the generations that end get their results, and
    /// the others go on, each with its slot in the batch.
    fn take_sampled<'r>(
        &mut self,
        work: &mut Work<'r, '_>,
        sequences: Vec<Sequence<'r>>,
    ) -> Result<Vec<(usize, Sequence<'r>)>, EngineError> {
        let mut going = Vec::with_capacity(sequences.len());
        for (slot, mut sequence) in sequences.into_iter().enumerate() {
            let index = sequence.index;
            let started = Instant::now();
            let flow = sequence.output.take(self, sequence.next, &mut *work.observers[index])?;
            sequence.stats.decode_ms += millis(started);
            if flow == Flow::Stop {
                work.end(index, Ok(sequence.output.finish(self, sequence.stats)));
                continue;
            }
            match Self::check_interrupt(&work.requests[index]) {
                Ok(()) => going.push((slot, sequence)),
                Err(error) => work.end(index, Err(error)),
            }
        }
        Ok(going)
    }

    /// Prefills request `index`'s `prompt` as `generate` would, copies its rows into sequence
    /// `slot` of `batch` and samples its first token.
    fn start_sequence<'r>(
        &mut self,
        (index, request): (usize, &'r GenerationRequest),
        (prompt, healed): (Vec<u32>, String),
        mut stats: GenerationStats,
        run_options: &RunOptions,
        (batch, slot): (&mut BatchCache, usize),
    ) -> Result<Sequence<'r>, EngineError> {
        let prefill_started = Instant::now();
        let logits = self.prefill(&prompt, request, run_options, &mut stats)?;
        stats.prefill_ms = millis(prefill_started);
        self.session.copy_into_batch(&self.cache, prompt.len(), batch, slot)?;
        let max_tokens = request.max_tokens.min(self.info.context_length - prompt.len());
        let mut sampler = Sampler::new(&request.sampling, self.spelling(&healed));
        let next = sampler.sample(&logits);
        let output = Output::new(self, request, healed, max_tokens);
        Ok(Sequence { index, output, sampler, stats, next })
    }
}
