//! Micro benchmarks of the per-keystroke work outside the model: a `didChange` on a 10k-line
//! file (rope and tree edit) and the incremental re-parse that follows when the tree is next
//! needed, context building, prompt assembly and tokenization of a 2k-token prompt.
//!
//!     cargo bench --bench micro              # measure (criterion; `make bench` runs this)
//!     cargo bench --bench micro -- --test    # one iteration each (the smoke in `make test`)
//!
//! Inputs are real files of this repository (the 10k-line document is the engine's Python
//! converter sources repeated) and the default model's tokenizer (`NIB_MODEL` or
//! `models/smollm2-135m-instruct`).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

mod common;

use common::{python_sources, repo};
use criterion::{Criterion, criterion_group, criterion_main};
use nib::completion::{self, context};
use nib::config::Config;
use nib::document::{Document, TextChange};
use nib::position::{LineColumn, PositionEncoding};

/// A Python document of exactly `lines` lines made of real source.
fn big_python(lines: usize) -> String {
    let source = python_sources();
    source.lines().cycle().take(lines).collect::<Vec<_>>().join("\n") + "\n"
}

fn model_dir() -> PathBuf {
    std::env::var_os("NIB_MODEL").map_or_else(|| repo().join("models/smollm2-135m-instruct"), PathBuf::from)
}

fn bench_edit(c: &mut Criterion) {
    let text = big_python(10_000);
    let mut document = Document::new("file:///bench/big.py".into(), "python".into(), 1, &text);
    document.tree();
    let mut version = 1;
    // A keystroke in the middle of the file (inside a function body), then its deletion, so the
    // document stays the same size across iterations.
    let line = 5_000u32;
    let column = document.rope.line(line as usize).len_chars() as u32 - 1;
    let at = LineColumn { line, column };
    let after = LineColumn { line, column: column + 1 };
    let mut keystroke = |document: &mut Document| {
        version += 1;
        let insert = [TextChange { range: Some((at, at)), text: "x".into() }];
        document.apply_changes(&insert, version, PositionEncoding::Utf16).expect("insert");
        version += 1;
        let delete = [TextChange { range: Some((at, after)), text: String::new() }];
        document.apply_changes(&delete, version, PositionEncoding::Utf16).expect("delete");
    };
    // What the main loop does per `didChange` (two of them per iteration): the rope edit and
    // the tree's `edit`; the re-parse waits until a feature asks for the tree.
    c.bench_function("did_change_pair_10k_lines", |b| {
        b.iter(|| {
            keystroke(&mut document);
            black_box(document.rope.len_bytes());
        })
    });
    document.tree();
    // The same two edits and then the incremental re-parse the next completion pays.
    c.bench_function("edit_reparse_10k_lines", |b| {
        b.iter(|| {
            keystroke(&mut document);
            black_box(document.tree().map(|tree| tree.root_node().child_count()));
        })
    });
}

fn bench_context_and_prompt(c: &mut Criterion) {
    let text = big_python(10_000);
    let document = Document::new("file:///bench/big.py".into(), "python".into(), 1, &text);
    let cursor = document.rope.line_to_byte(5_001) - 1;
    let others: Vec<Document> =
        ["models/nib_convert/gguf_model.py", "models/nib_convert/tokenizer.py", "benches/quality.py"]
            .iter()
            .filter_map(|path| {
                let text = std::fs::read_to_string(repo().join(path)).ok()?;
                Some(Document::new(format!("file:///bench/{path}"), "python".into(), 1, &text))
            })
            .collect();
    let other_refs: Vec<&Document> = others.iter().collect();
    let config = Config::default().completion;
    let folders = vec![PathBuf::from("/bench")];
    let budget = config.context_tokens * context::BYTES_PER_TOKEN * 3 / 10;
    let cross_file = context::cross_file(&document, &other_refs, budget, &folders);

    c.bench_function("cross_file_context_3_buffers", |b| {
        b.iter(|| black_box(context::cross_file(&document, &other_refs, budget, &folders)))
    });
    c.bench_function("context_build", |b| {
        b.iter(|| black_box(context::build(&document, cursor, config.context_tokens, &cross_file, &folders, None)))
    });

    let files = nib::engine::model::load(&model_dir()).expect("the default model (make setup)");
    c.bench_function("prompt_assembly", |b| {
        b.iter(|| {
            black_box(completion::prepare(&completion::Inputs {
                document: &document,
                cursor,
                config: &config,
                model: &files.info,
                cross_file: &cross_file,
                workspace_folders: &folders,
            }))
        })
    });

    // A 2k-token prompt: real source, cut at the character where the tokenizer reaches 2,048.
    let tokenizer = &files.tokenizer;
    let source = python_sources();
    let encoding = tokenizer.encode(source.as_str(), false).expect("tokenize");
    let end = encoding.get_offsets().get(2_048).map_or(source.len(), |offset| offset.0);
    let prompt = source[..end].to_string();
    let count = tokenizer.encode(prompt.as_str(), false).expect("tokenize").len();
    assert!((2_000..=2_100).contains(&count), "the 2k-token prompt has {count} tokens");
    c.bench_function("tokenize_2k_tokens", |b| {
        b.iter(|| black_box(tokenizer.encode(black_box(prompt.as_str()), false).expect("tokenize").len()))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

criterion_group!(name = benches; config = config(); targets = bench_edit, bench_context_and_prompt);
criterion_main!(benches);
