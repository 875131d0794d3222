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

pub fn complete(
    settings: &EngineSettings,
    file: &Path,
    at: LineColumn,
    max_tokens: Option<usize>,
    open: &[PathBuf],
    as_json: bool,
) -> anyhow::Result<()> {
    let document = open_document(file)?;
    if at.line as usize >= document.rope.len_lines() {
        bail!("line {} is past the end of {} ({} lines)", at.line, file.display(), document.rope.len_lines());
    }
    let others = open.iter().map(|path| open_document(path)).collect::<anyhow::Result<Vec<_>>>()?;
    let cursor = position::to_byte(&document.rope, at, PositionEncoding::Utf16);
    let mut config = Config::default().completion;
    if let Some(max_tokens) = max_tokens {
        config.max_tokens = max_tokens;
    }
    let mut model = load_backend(settings)?;
    let folders = vec![std::env::current_dir()?];
    let other_refs: Vec<&Document> = others.iter().collect();
    let budget = config.context_tokens * context::BYTES_PER_TOKEN * 3 / 10;
    let (cross_file, _) = context::cross_file(&document, &other_refs, budget, &folders);
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
    };
    let mut observer = prepared.observer();
    let generation = model.generate(&request, &mut observer)?;
    let text = prepared.finish(&generation.text);
    if as_json {
        let output = json!({
            "text": text,
            "raw": generation.text,
            "mode": format!("{:?}", prepared.mode),
            "prompt": prompt::render(&prepared.prompt),
            "sources": prepared.context.sources,
            // Parse errors (tree-sitter ERROR and MISSING nodes) of the file before and after
            // inserting the text: the quality harness counts completions that add some.
            "parseErrors": prepared.parse_errors(&text).map(|(before, after)| json!({ "before": before, "after": after })),
            "finish": generation.finish,
            "stats": generation.stats,
        });
        output_line(&serde_json::to_string_pretty(&output)?);
    } else {
        output_line(&text);
    }
    Ok(())
}
