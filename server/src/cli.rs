//! The one-shot commands: `nib generate` (raw continuation) and `nib complete` (the server's
//! completion pipeline on a file, for scripts, the quality harness and debugging).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::completion::{self, context, prompt};
use crate::config::Config;
use crate::document::{Document, path_to_file_uri};
use crate::engine::{self, Backend, CancelToken, EngineSettings, Flow, GenerationRequest, PromptPiece, Sampling};
use crate::index::{self, Workspace};
use crate::position::{self, LineColumn, PositionEncoding};
use crate::syntax::Language;

/// Prints a line of output; a closed pipe (`nib complete ... | head`) is not an error.
fn output_line(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

pub fn generate(
    settings: &EngineSettings,
    prompt: String,
    max_tokens: usize,
    sampling: Sampling,
    stream: bool,
) -> anyhow::Result<()> {
    let mut model = load_backend(settings)?;
    let request = GenerationRequest {
        prompt: vec![PromptPiece::Text(prompt)],
        max_tokens,
        sampling,
        stop_strings: Vec::new(),
        stop_tokens: Vec::new(),
        cancel: CancelToken::default(),
        deadline: None,
        prefill_budget_ms: None,
        single_line: false,
        warm_alternative: None,
        heal_word: false,
    };
    let mut printed = 0;
    let mut print_new = |text: &str| {
        if stream && text.len() > printed && text.is_char_boundary(printed) {
            let mut stdout = std::io::stdout();
            let _ = write!(stdout, "{}", &text[printed..]).and_then(|()| stdout.flush());
            printed = text.len();
        }
        Flow::Continue
    };
    let generation = model.generate(&request, &mut print_new)?;
    if stream {
        output_line(generation.text.get(printed..).unwrap_or_default());
        let stats = &generation.stats;
        eprintln!(
            "nib: {} prompt tokens in {:.0} ms, {} tokens in {:.0} ms ({:.1} tok/s), stop: {:?}",
            stats.prompt_tokens,
            stats.prefill_ms,
            stats.generated_tokens,
            stats.decode_ms,
            stats.generated_tokens as f64 / (stats.decode_ms / 1e3).max(1e-9),
            generation.finish
        );
    } else {
        output_line(&generation.text);
    }
    Ok(())
}

/// The configured backend; a warning about it (an unreachable server) goes to stderr.
fn load_backend(settings: &EngineSettings) -> anyhow::Result<Box<dyn Backend + Send>> {
    let (backend, warning) = engine::load_backend(settings)?;
    if let Some(warning) = warning {
        eprintln!("nib: warning: {warning}");
    }
    Ok(backend)
}

fn open_document(path: &Path) -> anyhow::Result<Document> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let absolute = std::path::absolute(path)?;
    let language_id = Language::from_path(&absolute.to_string_lossy()).map_or("plaintext", Language::name);
    Ok(Document::new(path_to_file_uri(&absolute), language_id.to_string(), 1, &text))
}

/// Where `nib complete` takes cross-file context from.
pub struct ContextSources {
    /// Files treated as open buffers.
    pub open: Vec<PathBuf>,
    /// A folder indexed as the workspace (then `open` is not used).
    pub workspace: Option<PathBuf>,
}

/// Indexes `folder` completely, with `document` as an open buffer, as the server's index would.
fn index_workspace(folder: &Path, document: &Document) -> anyhow::Result<Workspace> {
    if !folder.is_dir() {
        bail!("{} is not a folder", folder.display());
    }
    let mut workspace =
        Workspace::new(index::Settings { enabled: true, max_files: Config::default().context.max_files });
    workspace.start_walk(&[std::path::absolute(folder)?]);
    while !workspace.index_queued(64) {}
    if let Some(snapshot) = index::Snapshot::of(document) {
        workspace.open_buffer(&snapshot);
    }
    Ok(workspace)
}

pub fn complete(
    settings: &EngineSettings,
    file: &Path,
    at: LineColumn,
    max_tokens: Option<usize>,
    sources: &ContextSources,
    as_json: bool,
) -> anyhow::Result<()> {
    let document = open_document(file)?;
    if at.line as usize >= document.rope.len_lines() {
        bail!("line {} is past the end of {} ({} lines)", at.line, file.display(), document.rope.len_lines());
    }
    let others = sources.open.iter().map(|path| open_document(path)).collect::<anyhow::Result<Vec<_>>>()?;
    let cursor = position::to_byte(&document.rope, at, PositionEncoding::Utf16);
    let mut config = Config::default().completion;
    if let Some(max_tokens) = max_tokens {
        config.max_tokens = max_tokens;
    }
    let mut model = load_backend(settings)?;
    let folders = match &sources.workspace {
        Some(folder) => vec![std::path::absolute(folder)?],
        None => vec![std::env::current_dir()?],
    };
    let cross_file = cross_file_context(sources, &document, &others, cursor, config.context_tokens, &folders)?;
    let prepared = completion::prepare(&completion::Inputs {
        document: &document,
        cursor,
        config: &config,
        model: model.info(),
        cross_file: &cross_file,
        workspace_folders: &folders,
    })
    .ok_or_else(|| {
        anyhow::anyhow!(
            "code follows the cursor on its line: nib completes only at the end of a line or before closing brackets"
        )
    })?;
    let request = GenerationRequest {
        prompt: prepared.prompt.clone(),
        max_tokens: prepared.max_tokens,
        sampling: Sampling::GREEDY,
        stop_strings: prepared.stop_strings.clone(),
        stop_tokens: prepared.stop_tokens.clone(),
        cancel: CancelToken::default(),
        deadline: None,
        prefill_budget_ms: None,
        single_line: prepared.mode == completion::postprocess::Mode::SingleLine,
        warm_alternative: None,
        heal_word: true,
    };
    let (text, generation) = match &prepared.grounded {
        // An import line checked against the index: no model needed.
        Some(grounded) => (grounded.text.clone(), None),
        None => {
            let mut observer = prepared.observer();
            let generation = model.generate(&request, &mut observer)?;
            (prepared.finish(&generation.text), Some(generation))
        }
    };
    if as_json {
        output_line(&serde_json::to_string_pretty(&completion_json(&text, &generation, &prepared, &cross_file))?);
    } else {
        output_line(&text);
    }
    Ok(())
}

/// What the prompt shows from other files: retrieved from an index of `sources.workspace`
/// when one is given, else from the files `sources.open` names.
fn cross_file_context(
    sources: &ContextSources,
    document: &Document,
    others: &[Document],
    cursor: usize,
    context_tokens: usize,
    folders: &[PathBuf],
) -> anyhow::Result<context::CrossFile> {
    let budget = context::cross_file_budget(context_tokens);
    Ok(match (&sources.workspace, index::Snapshot::of(document)) {
        (Some(folder), Some(snapshot)) => {
            let mut workspace = index_workspace(folder, document)?;
            let snippets = workspace.query(&snapshot, cursor, budget * 85 / 100);
            context::render_snippets(&snippets, document.language, budget, folders)
        }
        _ => {
            let other_refs: Vec<&Document> = others.iter().collect();
            context::cross_file(document, &other_refs, budget, folders)
        }
    })
}

/// `nib complete --json`: the text, the raw generation, the prompt and where its context came
/// from, parse errors before and after, why generation stopped and its timings.
/// A completion without generation (`grounded`) has finish `grounded` and zero timings.
fn completion_json(
    text: &str,
    generation: &Option<crate::engine::Generation>,
    prepared: &completion::Prepared,
    cross_file: &context::CrossFile,
) -> serde_json::Value {
    let (raw, finish, stats) = match generation {
        Some(generation) => (generation.text.as_str(), json!(generation.finish), json!(generation.stats)),
        None => ("", json!("grounded"), json!(crate::engine::GenerationStats::default())),
    };
    json!({
        "text": text,
        "raw": raw,
        // The import candidate offered instead of the model's text (`completion::imports`).
        "grounded": prepared.grounded.as_ref().map(|grounded| &grounded.source),
        "mode": format!("{:?}", prepared.mode),
        "prompt": prompt::render(&prepared.prompt),
        "sources": prepared.context.sources,
        "retrieved": cross_file.text,
        // Parse errors (tree-sitter ERROR and MISSING nodes) of the file before and after
        // inserting the text: the quality harness counts completions that add some.
        "parseErrors": prepared.parse_errors(text).map(|(before, after)| json!({ "before": before, "after": after })),
        "finish": finish,
        "stats": stats,
    })
}

/// `nib index`: indexes `folder` as the workspace index would, then times `queries`
/// retrievals at the middle line of files spread over the index; prints JSON.
pub fn index(folder: &Path, queries: usize, max_files: Option<usize>) -> anyhow::Result<()> {
    if !folder.is_dir() {
        bail!("{} is not a folder", folder.display());
    }
    let rss_before = memory_kb("VmRSS");
    let started = std::time::Instant::now();
    let max_files = max_files.unwrap_or(Config::default().context.max_files);
    let mut workspace = Workspace::new(index::Settings { enabled: true, max_files });
    workspace.start_walk(&[std::path::absolute(folder)?]);
    let walk_ms = started.elapsed().as_secs_f64() * 1e3;
    while !workspace.index_queued(64) {}
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_after = memory_kb("VmRSS");
    let peak_build = memory_kb("VmHWM");
    let status = workspace.status("ready", build_ms as u64);
    let profile = workspace.profile();
    let ms = |duration: std::time::Duration| (duration.as_secs_f64() * 1e3).round();
    let paths = workspace.indexed_paths();
    let step = (paths.len() / queries.max(1)).max(1);
    let budget = context::cross_file_budget(Config::default().completion.context_tokens) * 85 / 100;
    let mut times = Vec::new();
    let mut snippet_count = 0;
    for path in paths.iter().step_by(step).take(queries) {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let document = Document::new(path_to_file_uri(path), String::new(), 1, &text);
        let Some(snapshot) = index::Snapshot::of(&document) else { continue };
        let cursor = document.rope.line_to_byte(document.rope.len_lines() / 2);
        let query_started = std::time::Instant::now();
        snippet_count += workspace.query(&snapshot, cursor, budget).len();
        times.push(query_started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let percentile = |p: f64| times.get(((times.len() as f64 - 1.0) * p).round() as usize).copied();
    let output = json!({
        "folder": folder.display().to_string(),
        "files": status.files,
        "chunks": status.chunks,
        "capped": status.capped,
        "walkMs": walk_ms,
        "buildMs": build_ms,
        "indexHeapBytes": status.heap_bytes,
        "rssBeforeKb": rss_before,
        "rssAfterKb": rss_after,
        // Peak RSS while indexing, and over the whole command (the retrievals parse each queried
        // file as an editor's buffer, which the server holds anyway).
        "peakRssBuildKb": peak_build,
        "peakRssKb": memory_kb("VmHWM"),
        // The process's resident memory at the end: heap and stacks, and the pages of the binary
        // (the grammars' parse tables) that parsing touched.
        "rssAnonKb": memory_kb("RssAnon"),
        "rssFileKb": memory_kb("RssFile"),
        "indexBytes": workspace.index.memory().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "terms": workspace.index.counts().0,
        "postings": workspace.index.counts().1,
        "definitions": workspace.index.counts().2,
        // Thread time of the analysis, summed over the analysing threads.
        "analysis": {
            "files": profile.files,
            "bytes": profile.bytes,
            "readMs": ms(profile.read),
            "parseMs": ms(profile.parse),
            "tagsMs": ms(profile.tags),
            "termsMs": ms(profile.terms),
        },
        "retrieval": {
            "queries": times.len(),
            "p50Ms": percentile(0.5),
            "p95Ms": percentile(0.95),
            "meanSnippets": snippet_count as f64 / times.len().max(1) as f64,
        },
    });
    output_line(&serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// A `/proc/self/status` memory figure in kB (0 where it cannot be read).
fn memory_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)?.trim_start_matches(':').trim().trim_end_matches(" kB").parse().ok()
            })
        })
        .unwrap_or(0)
}
