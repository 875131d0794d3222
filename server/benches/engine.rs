//! nib's own generation loop (`Model::generate`, exactly what the server runs) timed on a
//! converted model directory; prints one JSON object on stdout. `benches/run.py` (`make bench`)
//! runs it for each precision and compares it with a Python onnxruntime loop and llama.cpp on
//! the same token ids, which it reads from this output.
//!
//!     cargo bench --bench engine -- --model DIR [--threads 2] [--runs 3] [--prompt 512]
//!         [--decode 128] [--scaling 256,512,1024,2048,4096] [--smoke]
//!
//! Measured (greedy, medians over `--runs` after one warm-up):
//! - cold prefill of a `--prompt`-token prompt (empty KV cache), then up to `--decode` tokens
//!   (fewer if the model emits its end token; the count is reported);
//! - scaling: for each prompt length, the cold request (prefill + 16 tokens) and the KV-hit
//!   request (the same prompt plus one more line: only the new tokens are prefilled).
//!
//! The prompt is real Python source of this repository, cut at a token boundary.

use std::path::PathBuf;
use std::time::Instant;

mod common;

use nib::engine::{self, CancelToken, EngineSettings, Flow, GenerationRequest, Model, PromptPiece, Sampling};
use serde_json::{Value, json};

struct Args {
    model: Option<PathBuf>,
    threads: usize,
    runs: usize,
    prompt: usize,
    decode: usize,
    scaling: Vec<usize>,
    smoke: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: None,
        threads: 2,
        runs: 3,
        prompt: 512,
        decode: 128,
        scaling: vec![256, 512, 1024, 2048, 4096],
        smoke: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--model" => args.model = Some(PathBuf::from(value())),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--runs" => args.runs = value().parse().expect("--runs N"),
            "--prompt" => args.prompt = value().parse().expect("--prompt N"),
            "--decode" => args.decode = value().parse().expect("--decode N"),
            "--scaling" => {
                let list = value();
                args.scaling =
                    list.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("--scaling")).collect()
            }
            "--smoke" => args.smoke = true,
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    if args.smoke {
        // One short iteration of everything: the bench must run, its numbers mean nothing.
        (args.runs, args.prompt, args.decode, args.scaling) = (1, 64, 4, vec![64]);
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
    GenerationRequest {
        prompt: prompt.to_vec(),
        max_tokens,
        sampling: Sampling::GREEDY,
        stop_strings: Vec::new(),
        stop_tokens: Vec::new(),
        cancel: CancelToken::default(),
        deadline: None,
    }
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
    let args = parse_args();
    let settings =
        EngineSettings { model_dir: args.model.clone(), onnx_runtime_path: None, threads: args.threads, remote: None };
    let load_started = Instant::now();
    let mut model = engine::load_model(&settings).expect("load the model");
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;
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
            "hitMs": summary(hits),
            "hitPrefilledTokens": hit_prefilled,
        }));
    }

    let result = json!({
        "model": model.info.dir,
        "threads": args.threads,
        "loadMs": load_ms,
        "promptIds": ids,
        "generatedIds": generated_ids,
        "generatedTokens": generated_counts,
        "prefillTokPerS": summary(prefill),
        "decodeTokPerS": summary(decode),
        "scaling": scaling,
    });
    println!("{result}");
}
