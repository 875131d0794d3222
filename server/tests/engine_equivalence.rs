//! The engine's fast paths change no token: reuse of the cache (its prefix, and the logit rows
//! it kept) against an empty cache for every request, the shared KV buffer against the copying
//! cache, prompt-lookup speculation against plain decoding (greedy, healed prompts, and seeded
//! sampling as the actions' retries use it), a pre-warmed cache against a cold one, on the
//! tiny fixture and on the default model, over a sequence of requests that reuses, extends,
//! truncates and regrows the cache (so rejected draft tokens would show if they left a trace),
//! and the same requests decoded side by side in one batch against one at a time.

mod common;

use std::path::Path;

use nib::engine::{
    self, EngineError, EngineSettings, Flow, Generation, GenerationRequest, KvLayout, Model, PromptPiece, Sampling,
};

fn load(dir: &Path) -> Model {
    let settings =
        EngineSettings { model_dir: Some(dir.to_path_buf()), onnx_runtime_path: None, threads: 2, remote: None };
    engine::load_model(&settings).expect("the model loads")
}

fn request(prompt: &str, max_tokens: usize) -> GenerationRequest {
    GenerationRequest::greedy(vec![PromptPiece::Text(prompt.to_string())], max_tokens)
}

/// Prompts that share heads in every way the cache cares about: the same prompt again, an
/// extension, a cut in the middle, an unrelated one, a long one (the shared buffer grows) and
/// a short one after it (it shrinks), then the first one again.
fn scenario(source: &str, head_chars: usize, long_chars: usize) -> Vec<(String, usize)> {
    let head: String = source.chars().take(head_chars).collect();
    let long: String = source.chars().take(long_chars).collect();
    let middle: String = source.chars().skip(head_chars / 2).take(head_chars * 5 / 6).collect();
    vec![
        (head.clone(), 40),
        (head.clone(), 40),
        (format!("{head}    # the same again, longer\n"), 40),
        (format!("{}\nclass Other:\n", &head[..head.len() / 2]), 40),
        (middle.clone(), 64),
        (long, 48),
        ("def f(x):\n".to_string(), 24),
        (head, 40),
    ]
}

fn run(model: &mut Model, prompts: &[(String, usize)]) -> Vec<Generation> {
    run_with(model, prompts, |_| Sampling::GREEDY)
}

/// `prompts` in turn, greedy, each ending inside a word that token healing takes back.
fn run_healed(model: &mut Model, prompts: &[(String, usize)]) -> Vec<Generation> {
    prompts
        .iter()
        .map(|(prompt, max_tokens)| {
            let request =
                GenerationRequest { heal_word: true, ..request(&format!("{prompt}\n    x = sel"), *max_tokens) };
            model.generate(&request, &mut |_| Flow::Continue).unwrap()
        })
        .collect()
}

/// `prompts` in turn, request `index` sampled as `sampling(index)` says.
fn run_with(model: &mut Model, prompts: &[(String, usize)], sampling: impl Fn(u64) -> Sampling) -> Vec<Generation> {
    prompts
        .iter()
        .zip(0..)
        .map(|((prompt, max_tokens), index)| {
            let request = GenerationRequest { sampling: sampling(index), ..request(prompt, *max_tokens) };
            model.generate(&request, &mut |_| Flow::Continue).unwrap()
        })
        .collect()
}

/// `prompts` as requests, request `index` sampled as `sampling(index)` says.
fn requests(prompts: &[(String, usize)], sampling: impl Fn(u64) -> Sampling) -> Vec<GenerationRequest> {
    let request_at = |((prompt, max_tokens), index): (&(String, usize), u64)| GenerationRequest {
        sampling: sampling(index),
        ..request(prompt, *max_tokens)
    };
    prompts.iter().zip(0..).map(request_at).collect()
}

/// An observer that stops at the first line end when `line` is set.
fn first_line(line: bool) -> impl FnMut(&str) -> Flow {
    move |text: &str| if line && text.contains('\n') { Flow::Stop } else { Flow::Continue }
}

/// `requests` one after another (`Model::generate`), observed by `first_line(line)`.
fn run_each(model: &mut Model, requests: &[GenerationRequest], line: bool) -> Vec<Generation> {
    requests.iter().map(|request| model.generate(request, &mut first_line(line)).unwrap()).collect()
}

/// `requests` side by side (`Model::generate_batch`), observed by `first_line(line)`; with
/// `completions`, a completion of another prompt runs on the model before each prefill and
/// each run of the batch, as the engine answers waiting completions there (and the number of
/// those runs is checked).
fn run_batch(model: &mut Model, requests: &[GenerationRequest], line: bool, completions: bool) -> Vec<Generation> {
    let mut observers: Vec<_> = requests.iter().map(|_| first_line(line)).collect();
    let mut observers: Vec<&mut dyn FnMut(&str) -> Flow> =
        observers.iter_mut().map(|observer| observer as &mut dyn FnMut(&str) -> Flow).collect();
    let mut between_runs = 0;
    let mut between = |model: &mut Model| {
        if completions {
            between_runs += 1;
            model.generate(&request("class Completion:\n    def", 3), &mut |_| Flow::Continue).unwrap();
        }
    };
    let results = model.generate_batch_yielding(requests, &mut observers, &mut between);
    let generations: Vec<Generation> = results.into_iter().map(|generation| generation.unwrap()).collect();
    if completions {
        let runs = generations.iter().map(|g| g.stats.decode_runs).max().unwrap_or(0);
        let expected = if model.batches() { requests.len() + runs } else { requests.len() };
        assert!(between_runs >= expected, "{between_runs} completions ran between the batch's {expected} steps");
    }
    generations
}

/// The requests of `prompts` side by side give the generations they give one at a time,
/// greedy or sampled, run to their limits or stopped by their observers at different tokens
/// (the batch loses its sequences one by one).
fn check_batch(model: &mut Model, prompts: &[(String, usize)], sampling: impl Fn(u64) -> Sampling + Copy) {
    model.set_speculation(false);
    for (requests, line) in [(requests(prompts, |_| Sampling::GREEDY), false), (requests(prompts, sampling), true)] {
        model.reset_cache();
        let alone = run_each(model, &requests, line);
        let batched = run_batch(model, &requests, line, false);
        assert_same_output(&format!("side by side vs one at a time (first line only: {line})"), &alone, &batched);
        // A model whose rows depend on how many run together decodes one request at a time.
        let beside = batched.iter().map(|generation| generation.stats.decoded_beside).max().unwrap_or(0);
        assert_eq!(beside > 0, model.batches(), "{beside} decoded beside each other at most");
        assert!(alone.iter().all(|generation| generation.stats.decoded_beside == 0));
        let lengths: std::collections::BTreeSet<usize> = batched.iter().map(|g| g.tokens.len()).collect();
        assert!(lengths.len() > 2, "the sequences ended at different tokens: {lengths:?}");
    }
    // Completions run between the batch's runs change none of its tokens.
    let greedy = requests(prompts, |_| Sampling::GREEDY);
    let alone = run_each(model, &greedy, false);
    assert_same_output("side by side with completions between", &alone, &run_batch(model, &greedy, false, true));
    // A cancelled request ends with `Cancelled`; the others of its batch are not held back.
    let requests = requests(prompts, |_| Sampling::GREEDY);
    requests[1].cancel.cancel();
    let mut observers: Vec<_> = requests.iter().map(|_| first_line(false)).collect();
    let mut observers: Vec<&mut dyn FnMut(&str) -> Flow> =
        observers.iter_mut().map(|observer| observer as &mut dyn FnMut(&str) -> Flow).collect();
    let results = model.generate_batch(&requests, &mut observers);
    assert!(matches!(results[1], Err(EngineError::Cancelled)), "{:?}", results[1].as_ref().err());
    assert!(results.iter().enumerate().all(|(index, result)| index == 1 || result.is_ok()));
}

/// `run_with` on an empty cache for every request: nothing reused, the reference for reuse.
fn run_cold(model: &mut Model, prompts: &[(String, usize)], sampling: impl Fn(u64) -> Sampling) -> Vec<Generation> {
    let mut generations = Vec::new();
    for (index, prompt) in prompts.iter().enumerate() {
        model.reset_cache();
        generations.extend(run_with(model, std::slice::from_ref(prompt), |_| sampling(index as u64)));
    }
    generations
}

/// The same tokens, request by request, whatever either run reused.
fn assert_same_output(label: &str, expected: &[Generation], actual: &[Generation]) {
    for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
        assert_eq!(expected.tokens, actual.tokens, "{label}: request {index} differs");
    }
}

/// The same tokens, and the same reuse of the cache, request by request.
fn assert_same_tokens(label: &str, expected: &[Generation], actual: &[Generation]) {
    assert_same_output(label, expected, actual);
    for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
        assert_eq!(expected.stats.reused_tokens, actual.stats.reused_tokens, "{label}: request {index} reuse");
    }
}

/// Every request on an empty cache (the reference), then in turn on the copying cache without
/// speculation, the shared buffer without, and the shared buffer with speculation: the same
/// tokens for every request; seeded sampling with and without speculation, and on empty
/// caches: the same tokens too.
fn check(dir: &Path, source: &str, head_chars: usize, long_chars: usize) -> Vec<Generation> {
    let prompts = scenario(source, head_chars, long_chars);
    let mut model = load(dir);
    assert_eq!(model.kv_layout(), KvLayout::SharedBuffer, "nib's converter declares the shared buffer");
    assert!(model.speculation(), "nib's converter adds logits_to_keep");
    model.set_speculation(false);
    model.set_kv_layout(KvLayout::Copying).unwrap();
    let cold = run_cold(&mut model, &prompts, |_| Sampling::GREEDY);
    model.reset_cache();
    let copying = run(&mut model, &prompts);
    assert_same_output("reused cache vs empty cache", &cold, &copying);
    // The second request repeats the first: its prompt and first tokens come from kept rows.
    assert_eq!(copying[1].stats.prefilled_tokens, 0, "{:?}", copying[1].stats);
    assert!(copying[1].stats.known_rows > 1, "{:?}", copying[1].stats);
    model.set_kv_layout(KvLayout::SharedBuffer).unwrap();
    let shared = run(&mut model, &prompts);
    assert_same_tokens("shared buffer vs copying", &copying, &shared);
    model.set_kv_layout(KvLayout::SharedBuffer).unwrap();
    model.set_speculation(true);
    let speculative = run(&mut model, &prompts);
    assert_same_tokens("speculative vs plain greedy decoding", &copying, &speculative);
    let drafted: usize = speculative.iter().map(|g| g.stats.draft_tokens).sum();
    assert!(drafted > 0, "prompt lookup never drafted");
    // The actions' retries sample (temperature 0.6, top-p 0.9); a different seed per request.
    let sampling = |index| Sampling { temperature: 0.6, top_p: 0.9, seed: 11 + index };
    let sampled: Vec<Vec<Generation>> = [false, true]
        .into_iter()
        .map(|on| {
            model.set_speculation(on);
            run_with(&mut model, &prompts, sampling)
        })
        .collect();
    assert_same_tokens("speculative vs plain sampling", &sampled[0], &sampled[1]);
    let sampled_cold = run_cold(&mut model, &prompts, sampling);
    assert_same_output("sampling on a reused cache vs an empty cache", &sampled_cold, &sampled[1]);
    check_batch(&mut model, &prompts, sampling);
    assert!(sampled[1].iter().any(|g| g.stats.draft_tokens > 0), "prompt lookup never drafted while sampling");
    assert_ne!(
        sampled[0].iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        copying.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        "sampling picked the greedy tokens throughout: it tested nothing greedy did not"
    );
    // Healed prompts: the constrained first tokens change nothing either.
    let healed: Vec<Vec<Generation>> = [false, true]
        .into_iter()
        .map(|on| {
            model.set_speculation(on);
            model.reset_cache();
            run_healed(&mut model, &prompts)
        })
        .collect();
    assert_same_tokens("speculative vs plain decoding of healed prompts", &healed[0], &healed[1]);
    assert!(healed[0].iter().all(|g| g.stats.healed_bytes == " sel".len()), "every prompt was healed");
    // A pre-warm (prefill only) of the first prompt's head, then the first prompt: a cache hit
    // with the cold request's tokens.
    model.reset_cache();
    let (first, max_tokens) = &prompts[0];
    let head: String = first.chars().take(first.chars().count() * 2 / 3).collect();
    let warm = model.generate(&GenerationRequest::greedy(vec![PromptPiece::Text(head)], 0), &mut |_| Flow::Continue);
    assert!(warm.unwrap().tokens.is_empty(), "a pre-warm generates nothing");
    let warmed = model.generate(&request(first, *max_tokens), &mut |_| Flow::Continue).unwrap();
    assert!(warmed.stats.reused_tokens > 0, "the pre-warmed head was not reused");
    assert_eq!(warmed.tokens, copying[0].tokens, "pre-warmed vs cold");
    speculative
}

#[test]
fn fast_paths_change_no_token_on_the_fixture() {
    let source = std::fs::read_to_string(common::repo_root().join("models/nib_convert/runtime.py")).unwrap();
    // The fixture's context is 256 tokens (its vocabulary: ~1.2 characters a token).
    check(&common::fixture_model(), &source, 120, 220);
}

#[test]
fn fast_paths_change_no_token_on_the_default_model() {
    let Some(dir) = common::default_model() else { return };
    let source = std::fs::read_to_string(common::repo_root().join("models/nib_convert/graph.py")).unwrap();
    // ~1,100 tokens: the shared buffer grows three times (256, 512, 768, 1152 rows).
    assert!(load(&dir).batches(), "nib's kernels run the default model: its rows are independent");
    let generations = check(&dir, &source, 600, 4000);
    let accepted: usize = generations.iter().map(|g| g.stats.accepted_draft_tokens).sum();
    assert!(accepted > 0, "the default model accepted no drafted token on code it can copy from");
}

/// A single-line request ends at the first token with a newline (its observer stops there), so
/// prompt lookup drafts nothing past that token: on repeated lines, where the draft would go
/// on into the next line, every drafted token is one the line needed.
#[test]
fn a_single_line_request_drafts_nothing_past_the_line_end() {
    let Some(dir) = common::default_model() else { return };
    let mut model = load(&dir);
    let lines = "    values.append(compute(first, second))\n    names.append(first.name)\n";
    let prompt = format!("def collect(first, second, values, names):\n{lines}{lines}{lines}    values.append(compute(");
    let prompt = prompt.as_str();
    let mut stop_at_newline = |text: &str| if text.contains('\n') { Flow::Stop } else { Flow::Continue };
    let plain = model.generate(&request(prompt, 16), &mut stop_at_newline).unwrap();
    let single_line = GenerationRequest { single_line: true, ..request(prompt, 16) };
    let line = model.generate(&single_line, &mut stop_at_newline).unwrap();
    assert_eq!(line.tokens, plain.tokens, "the same tokens either way");
    assert!(line.text.contains('\n'), "the line ends: {:?}", line.text);
    assert!(
        plain.stats.draft_tokens > plain.tokens.len(),
        "without the hint lookup drafts into the next line: {:?} {:?}",
        plain.text,
        plain.stats
    );
    assert!(
        line.stats.draft_tokens < line.tokens.len(),
        "drafted {} tokens for a line of {}",
        line.stats.draft_tokens,
        line.tokens.len()
    );
}
