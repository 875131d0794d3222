//! nib's own generation loop (`Model::generate`, exactly what the server runs) timed on a
//! converted model directory; prints one JSON object on stdout. `benches/run.py` (`make bench`)
//! runs it for each precision and compares it with a Python onnxruntime loop and llama.cpp on
//! the same token ids, which it reads from this output.
//!
//!     cargo bench --bench engine -- --model DIR [--threads 2] [--runs 3] [--rounds 3] [--prompt 512]
//!         [--decode 128] [--scaling 256,512,1024,2048,4096] [--layouts | --steps] [--speculation]
//!         [--targets 'FILE::NEEDLE;...'] [--smoke]
//!
//! Measured (greedy, medians over `--runs` after one warm-up):
//! - cold prefill of a `--prompt`-token prompt (empty KV cache), then up to `--decode` tokens
//!   (fewer if the model emits its end token; the count is reported), plain decoding (one token
//!   per run, as the peers decode);
//! - scaling: for each prompt length, the cold request (prefill + 16 tokens: the decode step
//!   time at that depth) and the KV-hit request (the same prompt plus one more line: only the
//!   new tokens are prefilled);
//! - `--layouts`: the decode step time at each scaling depth with the copying KV cache too;
//!   `--steps`: with the shared buffer only (A/B of the attention kernel: run it with and
//!   without `NIB_ATTENTION=onnxruntime`, the output names the kernel); medians of `--rounds`
//!   rounds, each running every depth and layout in turn;
//! - `--speculation`: prompt-lookup speculation against plain decoding (greedy, and the
//!   actions' seeded sampling on retries) on three
//!   workloads (a 64-token code continuation, the docstring action, the unit-test action on
//!   two functions of this repository, or on the Python functions `--targets` names: each
//!   `FILE::NEEDLE` is a file, relative to the repository or absolute, and text that ends
//!   inside the function, such as `def quote`; a file outside the repository is planned with
//!   its own folder as the workspace): the same output (asserted), decode time, forward passes,
//!   drafted and accepted tokens; the docstring workload also with its questions decoded side
//!   by side (`Model::generate_batch`); medians of `--rounds` rounds, each running every way of
//!   a workload in turn.
//!
//! The step and speculation sections report ratios (a deep step over a shallow one, a fast path
//! over plain decoding). On a shared machine whose speed drifts by a third within a minute, one
//! side timed after the other measured the drift as much as the engine (`--speculation` seven
//! times on one build, 2026-12-05: the unit-test speed-up 1.49× to 1.91×), so each round times
//! both sides within seconds of each other.
//!
//! The prompt is real Python source of this repository, cut at a token boundary.

use std::path::PathBuf;
use std::time::Instant;

mod common;

use nib::actions::{Target, docstring, unit_tests};
use nib::config::DocstringStyle;
use nib::document::Document;
use nib::engine::{
    self, CancelToken, EngineSettings, EngineStats, Flow, GenerationRequest, KvLayout, Model, PromptPiece,
};
use nib::syntax::scopes;
use serde_json::{Value, json};

struct Args {
    model: Option<PathBuf>,
    threads: usize,
    runs: usize,
    /// Rounds of the step and speculation sections.
    rounds: usize,
    prompt: usize,
    decode: usize,
    scaling: Vec<usize>,
    layouts: bool,
    /// `--steps`: the layouts section with the shared buffer only.
    shared_only: bool,
    speculation: bool,
    /// `--targets`: the functions of the action workloads, as `FILE::NEEDLE` pairs.
    targets: Vec<(PathBuf, String)>,
    smoke: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: None,
        threads: 2,
        runs: 3,
        rounds: 3,
        prompt: 512,
        decode: 128,
        scaling: vec![256, 512, 1024, 2048, 4096],
        layouts: false,
        shared_only: false,
        speculation: false,
        targets: vec![
            ("models/nib_convert/runtime.py".into(), "    def greedy".into()),
            ("models/nib_convert/quant.py".into(), "def to_nbits".into()),
        ],
        smoke: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--model" => args.model = Some(PathBuf::from(value())),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--runs" => args.runs = value().parse().expect("--runs N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--prompt" => args.prompt = value().parse().expect("--prompt N"),
            "--decode" => args.decode = value().parse().expect("--decode N"),
            "--scaling" => {
                let list = value();
                args.scaling =
                    list.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("--scaling")).collect()
            }
            "--layouts" => args.layouts = true,
            "--steps" => (args.layouts, args.shared_only) = (true, true),
            "--speculation" => args.speculation = true,
            "--targets" => {
                let pair = |target: &str| {
                    let (file, needle) = target.split_once("::").expect("--targets 'FILE::NEEDLE;...'");
                    (PathBuf::from(file), needle.to_string())
                };
                args.targets = value().split(';').filter(|t| !t.is_empty()).map(pair).collect();
            }
            "--smoke" => args.smoke = true,
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    if args.smoke {
        // One short iteration of everything: the bench must run, its numbers mean nothing.
        (args.runs, args.rounds, args.prompt, args.decode, args.scaling) = (1, 1, 64, 4, vec![64]);
    }
    args
}

/// The longest prefix of `source` that tokenizes to at most `tokens` tokens (cut at a token's
/// start offset, so the text re-tokenizes to the same ids).
fn prompt_of(model: &Model, source: &str, tokens: usize) -> String {
    let encoding = model.tokenizer.encode(source, false).expect("tokenize");
    assert!(encoding.len() > tokens, "the source text has only {} tokens", encoding.len());
    let end = encoding.get_offsets()[tokens].0;
    source[..end].to_string()
}

fn request(prompt: &[PromptPiece], max_tokens: usize) -> GenerationRequest {
    GenerationRequest::greedy(prompt.to_vec(), max_tokens)
}

/// One generation: (wall ms, the engine's own stats).
fn run(model: &mut Model, prompt: &[PromptPiece], max_tokens: usize) -> (f64, engine::Generation) {
    let started = Instant::now();
    let generation = model.generate(&request(prompt, max_tokens), &mut |_: &str| Flow::Continue).expect("generate");
    (started.elapsed().as_secs_f64() * 1e3, generation)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn summary(mut values: Vec<f64>) -> Value {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({ "median": median(&mut values), "min": min, "max": max, "runs": values })
}

fn main() {
    // The memory settings the server runs with.
    nib::engine::allocator::restart_with_huge_pages();
    nib::engine::allocator::tune_for_inference();
    let args = parse_args();
    let settings =
        EngineSettings { model_dir: args.model.clone(), onnx_runtime_path: None, threads: args.threads, remote: None };
    let load_started = Instant::now();
    let mut model = engine::load_model(&settings).expect("load the model");
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;
    // Plain decoding (one token per run) unless a section says otherwise.
    model.set_speculation(false);
    let source = common::python_sources();
    eprintln!("engine bench: {} ({} threads) loaded in {load_ms:.0} ms", model.info.dir.display(), args.threads);

    // Prefill + decode, cold cache each run.
    let text = prompt_of(&model, &source, args.prompt);
    let prompt = vec![PromptPiece::Text(text)];
    let ids = model.tokenize(&prompt).expect("tokenize");
    model.reset_cache();
    run(&mut model, &prompt[..], 4); // warm-up: first-run allocations
    let (mut prefill, mut decode, mut generated_counts) = (Vec::new(), Vec::new(), Vec::new());
    let mut generated_ids = Vec::new();
    for index in 0..args.runs {
        model.reset_cache();
        let (_, generation) = run(&mut model, &prompt, args.decode);
        let stats = &generation.stats;
        assert_eq!(stats.reused_tokens, 0, "a cold run reused cached tokens");
        prefill.push(stats.prefilled_tokens as f64 / (stats.prefill_ms / 1e3));
        decode.push(stats.generated_tokens as f64 / (stats.decode_ms / 1e3));
        generated_counts.push(stats.generated_tokens);
        eprintln!(
            "engine bench: run {}/{}: prefill {} tokens {:.0} tok/s, decode {} tokens {:.1} tok/s",
            index + 1,
            args.runs,
            stats.prefilled_tokens,
            prefill.last().unwrap(),
            stats.generated_tokens,
            decode.last().unwrap()
        );
        generated_ids = generation.tokens.clone();
    }

    // Scaling with prompt length: cold request, then a KV hit (one more line typed).
    let mut scaling = Vec::new();
    for &length in &args.scaling {
        if length + 32 > model.info.context_length {
            continue;
        }
        let text = prompt_of(&model, &source, length);
        let cold_prompt = vec![PromptPiece::Text(text.clone())];
        model.reset_cache();
        let (cold_ms, cold) = run(&mut model, &cold_prompt, 16);
        let mut hits = Vec::new();
        let mut hit_prefilled = 0;
        for typed in ["    x", "    y", "    z"].iter().take(args.runs) {
            // Back to exactly the prompt's tokens, as after the cold request's generation is
            // thrown away by the next keystroke.
            let hit_prompt = vec![PromptPiece::Text(format!("{text}{typed}"))];
            let (ms, generation) = run(&mut model, &hit_prompt, 16);
            assert!(generation.stats.reused_tokens > 0, "the KV-hit request reused nothing");
            hit_prefilled = generation.stats.prefilled_tokens;
            hits.push(ms);
        }
        eprintln!(
            "engine bench: scaling {length} tokens: cold {cold_ms:.0} ms (prefill {:.0} ms), KV hit {:.0} ms",
            cold.stats.prefill_ms,
            hits.iter().copied().fold(f64::INFINITY, f64::min)
        );
        scaling.push(json!({
            "promptTokens": cold.stats.prompt_tokens,
            "coldMs": cold_ms,
            "coldPrefillMs": cold.stats.prefill_ms,
            "coldDecodeMs": cold.stats.decode_ms,
            "coldGenerated": cold.stats.generated_tokens,
            "decodeStepMs": cold.stats.decode_ms / cold.stats.generated_tokens.max(1) as f64,
            "hitMs": summary(hits),
            "hitPrefilledTokens": hit_prefilled,
        }));
    }

    let layouts = if args.layouts { layout_steps(&mut model, &source, &args) } else { Value::Null };
    let speculation = if args.speculation { speculation(&mut model, &source, &args) } else { Value::Null };

    let result = json!({
        "model": model.info.dir,
        "threads": args.threads,
        "rounds": args.rounds,
        "loadMs": load_ms,
        "promptIds": ids,
        "generatedIds": generated_ids,
        "generatedTokens": generated_counts,
        "prefillTokPerS": summary(prefill),
        "decodeTokPerS": summary(decode),
        "scaling": scaling,
        "kvLayouts": layouts,
        "attention": if engine::attention::nib_kernel_selected() { "nib" } else { "onnxruntime" },
        "kvCache": if model.kv_bf16() { "bf16" } else { "fp32" },
        "linear": if engine::linear::nib_kernel_selected() { "nib" } else { "onnxruntime" },
        "speculation": speculation,
    });
    println!("{result}");
}

/// Tokens decoded after each cold prefill of `layout_steps`: enough steps that a moment of
/// load on a shared machine moves their mean little (16 gave a 512-token step slower than a
/// 1,024-token one, 12.2 against 8.3 ms, in the make bench run of 2026-12-04 04:36).
const STEP_TOKENS: usize = 64;

/// Decode step time (ms per token over `STEP_TOKENS` tokens after a cold prefill) at each
/// scaling depth, with the shared buffer and with the copying cache: `--rounds` rounds, each
/// running every depth and layout in turn.
fn layout_steps(model: &mut Model, source: &str, args: &Args) -> Value {
    let layouts = [("sharedMs", KvLayout::SharedBuffer), ("copyingMs", KvLayout::Copying)];
    let layouts = &layouts[..if args.shared_only { 1 } else { 2 }];
    let depths: Vec<usize> =
        args.scaling.iter().copied().filter(|&length| length + STEP_TOKENS + 16 <= model.info.context_length).collect();
    let prompts: Vec<_> =
        depths.iter().map(|&length| vec![PromptPiece::Text(prompt_of(model, source, length))]).collect();
    let mut steps = vec![vec![Vec::new(); layouts.len()]; depths.len()];
    for _ in 0..args.rounds {
        for (prompt, steps) in prompts.iter().zip(&mut steps) {
            for (&(_, layout), steps) in layouts.iter().zip(steps) {
                model.set_kv_layout(layout).expect("switch the KV layout");
                model.reset_cache();
                let (_, generation) = run(model, prompt, STEP_TOKENS);
                steps.push(generation.stats.decode_ms / generation.stats.generated_tokens.max(1) as f64);
            }
        }
    }
    model.set_kv_layout(KvLayout::SharedBuffer).expect("switch the KV layout");
    let mut rows = Vec::new();
    for (length, steps) in depths.into_iter().zip(steps) {
        let mut row = json!({ "promptTokens": length });
        for (&(name, _), steps) in layouts.iter().zip(steps) {
            row[name] = summary(steps);
        }
        eprintln!(
            "engine bench: decode step at {length} tokens: shared buffer {:.1} ms, copying {:.1} ms",
            row["sharedMs"]["median"].as_f64().unwrap_or(f64::NAN),
            row["copyingMs"]["median"].as_f64().unwrap_or(f64::NAN)
        );
        rows.push(row);
    }
    Value::Array(rows)
}

/// A docstring / test target: the Python function whose `def` line starts with `needle`.
fn target_in(path: &std::path::Path, needle: &str) -> Target {
    let text = std::fs::read_to_string(path).expect("source file");
    let uri = nib::document::path_to_file_uri(path);
    let document = Document::new(uri.clone(), "python".into(), 1, &text);
    let cursor = text.find(needle).unwrap_or_else(|| panic!("{needle} in {}", path.display())) + needle.len();
    let tree = document.tree().cloned().expect("a syntax tree");
    let language = document.language.expect("python");
    let scope = scopes::scope_at(language, &tree, &document.rope, cursor).expect("a function at the needle");
    Target { uri, path: document.path.clone(), version: 1, language, rope: document.rope.clone(), tree, scope }
}

/// What the engine's counters moved by between two snapshots.
fn delta(before: &EngineStats, after: &EngineStats) -> Value {
    let decode_ms = after.decode_ms - before.decode_ms;
    let tokens = after.generated_tokens - before.generated_tokens;
    let runs = after.decode_runs - before.decode_runs;
    let drafted = after.draft_tokens - before.draft_tokens;
    let accepted = after.accepted_draft_tokens - before.accepted_draft_tokens;
    json!({
        "generations": after.generations - before.generations,
        "generatedTokens": tokens,
        "decodeMs": decode_ms,
        "decodeRuns": runs,
        "effectiveTokPerS": tokens as f64 / (decode_ms / 1e3),
        "draftTokens": drafted,
        "acceptedDraftTokens": accepted,
        "acceptedPerDraftRun": if runs > 0 { accepted as f64 / runs as f64 } else { 0.0 },
    })
}

/// Prompt lookup against plain decoding, per workload; each workload runs with a cold
/// cache, `--rounds` rounds of every way in turn, and must give the same output every way.
fn speculation(model: &mut Model, source: &str, args: &Args) -> Value {
    let repo = common::repo().canonicalize().expect("repository path");
    let targets: Vec<(Target, Vec<PathBuf>)> = args
        .targets
        .iter()
        .map(|(file, needle)| {
            let path = repo.join(file).canonicalize().unwrap_or_else(|error| panic!("{}: {error}", file.display()));
            let folder = if path.starts_with(&repo) { repo.clone() } else { path.parent().expect("a folder").into() };
            (target_in(&path, needle), vec![folder])
        })
        .collect();
    let continuation = vec![PromptPiece::Text(prompt_of(model, source, 512))];
    let workload = |model: &mut Model, name: &str| -> String {
        match name {
            "completion" => run(model, &continuation, 64).1.text,
            "docstring" => targets
                .iter()
                .map(|(target, _)| {
                    match docstring::generate(model, target, DocstringStyle::Google, None, CancelToken::default()) {
                        Ok(written) => written.insertion.text,
                        Err(error) => format!("error: {error}"),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            _ => targets
                .iter()
                .map(|(target, folders)| {
                    let files = nib::actions::project_files::ProjectFiles::new(folders.clone(), Vec::new());
                    let plan = unit_tests::plan(target, folders, &files).expect("a test plan");
                    match unit_tests::generate(model, target, &plan, CancelToken::default()) {
                        Ok(edit) => format!("{edit:?}"),
                        Err(error) => format!("error: {error}"),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    };
    let mut rows = Vec::new();
    // The smoke run only checks that the section runs: one cheap workload.
    let workloads: &[&str] = if args.smoke { &["completion"] } else { &["completion", "docstring", "tests"] };
    for &name in workloads {
        let mut row = json!({ "workload": name });
        let mut outputs = Vec::new();
        // Plain: one token per run, one generation after another; lookup: prompt lookup;
        // side by side: an action's independent generations decode in one batch (lookup on,
        // for the generations that run alone).
        let ways: &[(&str, bool, bool)] = if name == "docstring" {
            &[("plain", false, false), ("lookup", true, false), ("sideBySide", true, true)]
        } else {
            &[("plain", false, false), ("lookup", true, false)]
        };
        let mut timed = vec![(Vec::new(), Vec::new()); ways.len()];
        for _ in 0..args.rounds {
            for (&(key, speculation, batching), (walls, counters)) in ways.iter().zip(&mut timed) {
                model.set_speculation(speculation);
                model.set_batching(batching);
                model.reset_cache();
                let before = model.stats.clone();
                let started = Instant::now();
                outputs.push((key, workload(model, name)));
                walls.push(started.elapsed().as_secs_f64() * 1e3);
                counters.push(delta(&before, &model.stats));
            }
        }
        for (&(key, _, _), (walls, counters)) in ways.iter().zip(timed) {
            let median_of = |field: &str| {
                median(&mut counters.iter().map(|c| c[field].as_f64().unwrap_or(0.0)).collect::<Vec<_>>())
            };
            row[key] = json!({
                "wallMs": summary(walls),
                "decodeMs": median_of("decodeMs"),
                "effectiveTokPerS": median_of("effectiveTokPerS"),
                "acceptedPerDraftRun": median_of("acceptedPerDraftRun"),
                "runs": counters,
            });
        }
        let plain = &outputs[0].1;
        assert!(outputs.iter().all(|(_, output)| output == plain), "{name}: a fast path changed the output");
        let speedup = row["lookup"]["effectiveTokPerS"].as_f64().unwrap_or(0.0)
            / row["plain"]["effectiveTokPerS"].as_f64().unwrap_or(f64::NAN);
        row["speedup"] = json!(speedup);
        eprintln!(
            "engine bench: speculation {name}: plain {:.1} tok/s, lookup {:.1} tok/s ({speedup:.2}x), {:.2} accepted per run",
            row["plain"]["effectiveTokPerS"].as_f64().unwrap_or(0.0),
            row["lookup"]["effectiveTokPerS"].as_f64().unwrap_or(0.0),
            row["lookup"]["acceptedPerDraftRun"].as_f64().unwrap_or(0.0),
        );
        if row["sideBySide"].is_object() {
            let ratio = |field: &str| {
                row["sideBySide"][field]["median"].as_f64().or(row["sideBySide"][field].as_f64()).unwrap_or(0.0)
                    / row["plain"][field]["median"].as_f64().or(row["plain"][field].as_f64()).unwrap_or(f64::NAN)
            };
            let (decode, wall) = (ratio("effectiveTokPerS"), 1.0 / ratio("wallMs"));
            row["sideBySideSpeedup"] = json!(decode);
            row["sideBySideWallSpeedup"] = json!(wall);
            eprintln!(
                "engine bench: {name} side by side: {:.1} tok/s ({decode:.2}x plain decoding), the action {wall:.2}x as fast",
                row["sideBySide"]["effectiveTokPerS"].as_f64().unwrap_or(0.0),
            );
        }
        rows.push(row);
    }
    model.set_speculation(false);
    model.set_batching(true);
    Value::Array(rows)
}
