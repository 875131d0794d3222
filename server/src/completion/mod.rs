//! The inline-completion pipeline, shared by the LSP handlers and `nib complete`: context →
//! prompt → generation (stopped early by post-processing) → post-processing → the candidate
//! that adds no parse error.

pub mod cache;
pub mod context;
pub mod postprocess;
pub mod prompt;

use std::path::PathBuf;

use ropey::Rope;
use tree_sitter::{InputEdit, Point, Tree};

use crate::config::CompletionConfig;
use crate::document::Document;
use crate::engine::{Flow, ModelInfo, PromptPiece};
use crate::syntax::{self, Language, scopes};
use context::CompletionContext;
use postprocess::{Mode, Surroundings};
use prompt::FimFormat;

/// Single-line completions rarely need more tokens than this; stopping early saves decode time.
const SINGLE_LINE_MAX_TOKENS: usize = 32;

/// Everything needed to run and finish one completion, built on the main thread.
pub struct Prepared {
    pub prompt: Vec<PromptPiece>,
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    pub stop_tokens: Vec<String>,
    pub mode: Mode,
    pub context: CompletionContext,
    surroundings: Surroundings,
    snapshot: Snapshot,
}

/// The document as it was when the request came in, for the parse check.
struct Snapshot {
    rope: Rope,
    tree: Option<Tree>,
    language: Option<Language>,
    cursor: usize,
}

pub struct Inputs<'a> {
    pub document: &'a Document,
    pub cursor: usize,
    pub config: &'a CompletionConfig,
    pub model: &'a ModelInfo,
    /// Cross-file context for the cursor's scope (see `context::cross_file`).
    pub cross_file: &'a str,
    pub workspace_folders: &'a [PathBuf],
}

pub fn surroundings(document: &Document, cursor: usize) -> Surroundings {
    let rope = &document.rope;
    let line = rope.byte_to_line(cursor);
    let line_start = rope.line_to_byte(line);
    let line_text = rope.line(line).to_string();
    let line_text = line_text.trim_end_matches(['\n', '\r']);
    let column = (cursor - line_start).min(line_text.len());
    let next_line = (line + 1..rope.len_lines())
        .map(|l| rope.line(l).to_string())
        .find(|text| !text.trim().is_empty())
        .map(|text| text.trim_end_matches(['\n', '\r']).to_string());
    let in_scope = match (document.language, document.tree()) {
        (Some(language), Some(tree)) => scopes::scope_at(language, tree, rope, cursor).is_some(),
        _ => false,
    };
    Surroundings {
        language: document.language,
        line_prefix: line_text[..column].to_string(),
        line_suffix: line_text[column..].to_string(),
        next_line,
        in_scope,
    }
}

/// Prepares a completion, or `None` where nothing should be completed (code follows the
/// cursor on its line).
pub fn prepare(inputs: &Inputs) -> Option<Prepared> {
    let document = inputs.document;
    let cursor = inputs.cursor.min(document.rope.len_bytes());
    let surroundings = surroundings(document, cursor);
    if !postprocess::rest_of_line_allows_completion(&surroundings) {
        return None;
    }
    let mode = postprocess::decide_mode(&surroundings);
    // The budget is an estimate (bytes per token): keep a quarter of the model's context spare
    // so a small-context model never gets a prompt longer than it can read.
    let model_budget = (inputs.model.context_length * 3 / 4).saturating_sub(inputs.config.max_tokens).max(64);
    let budget_tokens = inputs.config.context_tokens.min(model_budget);
    let context = context::build(document, cursor, budget_tokens, inputs.cross_file, inputs.workspace_folders);
    let fim = FimFormat::for_model(inputs.model);
    // Token healing, the simple way: byte-level BPE vocabularies glue a space to the word after
    // it (" return") and a newline to the indentation but its last space. A prompt ending in a
    // space makes the model start with something unusual (often a newline); without that
    // space it writes the usual token, and post-processing drops the space the buffer has.
    let mut prompt_prefix = format!("{}{}", context.header, context.prefix);
    if prompt_prefix.ends_with(' ') {
        prompt_prefix.pop();
    }
    let prompt = match &fim {
        Some(format) => format.build(prompt_prefix, context.suffix.clone()),
        None => vec![PromptPiece::Text(prompt_prefix)],
    };
    let max_tokens = match mode {
        Mode::SingleLine => inputs.config.max_tokens.min(SINGLE_LINE_MAX_TOKENS),
        Mode::MultiLine => inputs.config.max_tokens,
    };
    let mut stop_strings: Vec<String> =
        postprocess::stop_strings(document.language).iter().map(|s| s.to_string()).collect();
    if mode == Mode::SingleLine {
        // One line, and once it ended nothing more is needed.
        stop_strings.push("\n\n".to_string());
    }
    Some(Prepared {
        prompt,
        max_tokens,
        stop_strings,
        stop_tokens: fim.map(|format| format.stop_tokens()).unwrap_or_default(),
        mode,
        context,
        surroundings,
        snapshot: Snapshot {
            rope: document.rope.clone(),
            tree: document.tree().cloned(),
            language: document.language,
            cursor,
        },
    })
}

impl Prepared {
    /// Stops generation once post-processing says more tokens cannot change the result.
    pub fn observer(&self) -> impl FnMut(&str) -> Flow + Send + 'static {
        let surroundings = self.surroundings.clone();
        let mode = self.mode;
        move |text: &str| {
            if postprocess::process(text, &surroundings, mode).complete { Flow::Stop } else { Flow::Continue }
        }
    }

    /// The ghost text for the raw generation (possibly empty).
    pub fn finish(&self, raw: &str) -> String {
        let processed = postprocess::process(raw, &self.surroundings, self.mode).text;
        if processed.trim().is_empty() {
            return String::new();
        }
        self.prefer_parseable(processed)
    }

    /// Among the completion and its cuts at line ends (longest first), the first whose insertion
    /// adds no parse error; the completion itself when none does.
    fn prefer_parseable(&self, processed: String) -> String {
        let snapshot = &self.snapshot;
        let (Some(language), Some(tree)) = (snapshot.language, snapshot.tree.as_ref()) else {
            return processed;
        };
        if snapshot.rope.len_bytes() > syntax::MAX_PARSE_BYTES / 4 {
            return processed;
        }
        let baseline = syntax::error_count(tree);
        let mut candidates = vec![processed.clone()];
        let mut rest = processed.as_str();
        while let Some(cut) = rest.rfind('\n') {
            rest = &rest[..cut];
            if !rest.trim().is_empty() {
                candidates.push(rest.to_string());
            }
            if candidates.len() == 4 {
                break;
            }
        }
        let mut parser = language.parser();
        for candidate in &candidates {
            let mut rope = snapshot.rope.clone();
            let at = snapshot.cursor;
            let start_char = rope.byte_to_char(at);
            rope.insert(start_char, candidate);
            let mut edited = tree.clone();
            let point = |rope: &Rope, byte: usize| {
                let line = rope.byte_to_line(byte);
                Point { row: line, column: byte - rope.line_to_byte(line) }
            };
            edited.edit(&InputEdit {
                start_byte: at,
                old_end_byte: at,
                new_end_byte: at + candidate.len(),
                start_position: point(&snapshot.rope, at),
                old_end_position: point(&snapshot.rope, at),
                new_end_position: point(&rope, at + candidate.len()),
            });
            if let Some(reparsed) = syntax::parse(&mut parser, &rope, Some(&edited))
                && syntax::error_count(&reparsed) <= baseline
            {
                return candidate.clone();
            }
        }
        processed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn model(special: &[&str]) -> ModelInfo {
        ModelInfo {
            dir: "m".into(),
            name: "m".into(),
            context_length: 2048,
            fim_family: None,
            fim_declared_absent: false,
            special_tokens: special.iter().map(|s| s.to_string()).collect(),
            markers_are_text: false,
            chat_format: None,
        }
    }

    /// Prepares a completion at `$0` in `source` (a file at /w/<name>).
    fn prepare_at(name: &str, language_id: &str, source: &str, special: &[&str]) -> Prepared {
        let cursor = source.find("$0").unwrap();
        let text = source.replacen("$0", "", 1);
        let document = Document::new(format!("file:///w/{name}"), language_id.into(), 1, &text);
        let config = Config::default();
        let info = model(special);
        prepare(&Inputs {
            document: &document,
            cursor,
            config: &config.completion,
            model: &info,
            cross_file: "",
            workspace_folders: &[PathBuf::from("/w")],
        })
        .expect("a completion is possible at the cursor")
    }

    #[test]
    fn plain_prompt_for_each_language_puts_the_path_first() {
        let cases = [
            ("a.py", "python", "import os\n\ndef f(x):\n    return $0\n", "# a.py\nimport os\n\ndef f(x):\n    return"),
            ("lib.rs", "rust", "fn f() -> u8 {\n    $0\n}\n", "// lib.rs\nfn f() -> u8 {\n   "),
            ("a.js", "javascript", "function f() { return $0 }", "// a.js\nfunction f() { return"),
            ("a.ts", "typescript", "const x: number = $0;", "// a.ts\nconst x: number ="),
            ("a.tsx", "typescriptreact", "const A = () => $0;", "// a.tsx\nconst A = () =>"),
            (
                "m.go",
                "go",
                "package m\n\nfunc F() int {\n\treturn $0\n}\n",
                "// m.go\npackage m\n\nfunc F() int {\n\treturn",
            ),
        ];
        for (name, language_id, source, expected) in cases {
            let prepared = prepare_at(name, language_id, source, &["<|endoftext|>"]);
            assert_eq!(prompt::render(&prepared.prompt), expected, "{name}");
        }
    }

    #[test]
    fn fim_prompt_carries_the_suffix() {
        let prepared = prepare_at(
            "a.py",
            "python",
            "def f(x):\n    y = $0\n    return y\n",
            &["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
        );
        assert_eq!(
            prompt::render(&prepared.prompt),
            "<fim_prefix># a.py\ndef f(x):\n    y =<fim_suffix>\n    return y\n<fim_middle>"
        );
        assert!(prepared.stop_tokens.contains(&"<file_sep>".to_string()));
        assert_eq!(prepared.mode, Mode::SingleLine);
    }

    #[test]
    fn long_files_keep_imports_and_a_stable_window_start() {
        let mut source = String::from("import json\nimport os\n\n");
        for i in 0..400 {
            source.push_str(&format!("value_{i} = {i}\n"));
        }
        source.push_str("result = $0\n");
        let first = prepare_at("big.py", "python", &source, &[]);
        let rendered = prompt::render(&first.prompt);
        assert!(rendered.starts_with("# big.py\nimport json\nimport os\n\n"), "{}", &rendered[..80]);
        assert!(!rendered.contains("value_0 = 0\n"), "the window is cut to the budget");
        assert!(rendered.len() <= 1024 * context::BYTES_PER_TOKEN + 100);
        // Typing on the same line leaves everything before the cursor line unchanged.
        let typed = prepare_at("big.py", "python", &source.replace("result = $0", "result = val$0"), &[]);
        let typed_rendered = prompt::render(&typed.prompt);
        assert_eq!(typed_rendered, format!("{rendered} val"));
    }

    #[test]
    fn nothing_is_prepared_in_front_of_code() {
        let document = Document::new("file:///w/a.py".into(), "python".into(), 1, "x = foo(1)\n");
        let config = Config::default();
        let info = model(&[]);
        let inputs = Inputs {
            document: &document,
            cursor: 4,
            config: &config.completion,
            model: &info,
            cross_file: "",
            workspace_folders: &[],
        };
        assert!(prepare(&inputs).is_none());
    }

    #[test]
    fn finish_prefers_a_candidate_that_parses() {
        let prepared = prepare_at("a.py", "python", "def f(x):\n    $0\n\nprint(1)\n", &[]);
        assert_eq!(prepared.mode, Mode::MultiLine);
        // The second line would leave an unclosed bracket: only the first line is kept.
        assert_eq!(prepared.finish("y = x + 1\n    return (y\n"), "y = x + 1");
        assert_eq!(prepared.finish("return x * 2\n"), "return x * 2");
    }
}
