//! The inline-completion pipeline, shared by the LSP handlers and `nib complete`: context →
//! prompt → generation (stopped early by post-processing) → post-processing → the candidate
//! that adds no parse error.

pub(crate) mod balance;
pub mod cache;
pub mod context;
pub mod imports;
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
    /// The completion when it needs no model: an import line the index checked (`imports`).
    pub grounded: Option<imports::Grounded>,
    /// The cross-file context at the head of `prompt`.
    pub cross_file: context::CrossFile,
    /// How many pieces at the head of `prompt` are the repository section (0 without one).
    repository_pieces: usize,
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
    /// Cross-file context for the cursor's scope (`context::cross_file`, or the workspace
    /// index through `context::render_snippets`).
    pub cross_file: &'a context::CrossFile,
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

/// The prompt budget in tokens: the setting, within what the model can read. The budget is an
/// estimate (bytes per token): a quarter of the model's context stays spare so a small-context
/// model never gets a prompt longer than it can read.
pub fn budget_tokens(config: &CompletionConfig, model: &ModelInfo) -> usize {
    let model_budget = (model.context_length * 3 / 4).saturating_sub(config.max_tokens).max(64);
    config.context_tokens.min(model_budget)
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
    let budget_tokens = budget_tokens(inputs.config, inputs.model);
    let fim = FimFormat::for_model(inputs.model);
    let mut context =
        context::build(document, cursor, budget_tokens, inputs.cross_file, inputs.workspace_folders, fim.as_ref());
    let grounded = imports::grounded(document, cursor, &inputs.cross_file.imports);
    if let Some(grounded) = &grounded {
        context.sources.push(grounded.source.clone());
    }
    // Token healing, the simple way: byte-level BPE vocabularies glue a space to the word after
    // it (" return") and a newline to the indentation but its last space. A prompt ending in a
    // space makes the model start with something unusual (often a newline); without that
    // space it writes the usual token, and post-processing drops the space the buffer has.
    let mut prompt_prefix = format!("{}{}", context.header, context.prefix);
    if prompt_prefix.ends_with(' ') {
        prompt_prefix.pop();
    }
    let prompt = match (&fim, &context.repository) {
        (Some(format), Some(section)) => format.build_in_repository(section, prompt_prefix, context.suffix.clone()),
        (Some(format), None) => format.build(prompt_prefix, context.suffix.clone()),
        (None, _) => vec![PromptPiece::Text(prompt_prefix)],
    };
    let repository_pieces = match (&fim, &context.repository) {
        (Some(format), Some(section)) => {
            format.repository().map_or(0, |tokens| prompt::repository_head(tokens, section).len())
        }
        _ => 0,
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
        grounded,
        cross_file: inputs.cross_file.clone(),
        repository_pieces,
        surroundings,
        snapshot: Snapshot {
            rope: document.rope.clone(),
            tree: document.tree().cloned(),
            language: document.language,
            cursor,
        },
    })
}

/// What of `prepared`'s prompt to pre-warm in the KV cache: with `at_cursor_line`, for a prompt
/// that ends at the cursor (plain prefix), everything before the cursor's line, which stays the
/// same while the user types on it; else (and for FIM prompts) the [`stable_head`]. `None` when
/// there is nothing stable to warm.
///
/// The text ends before the whitespace it would end with ([`token_stable`]), so its token ids
/// are a prefix of the ids of every prompt typed after it.
pub fn warm_prompt(prepared: &Prepared, at_cursor_line: bool) -> Option<Vec<PromptPiece>> {
    match &prepared.prompt[..] {
        [PromptPiece::Text(text)] if at_cursor_line => {
            let line_start = text.rfind('\n')?;
            let stable = token_stable(&text[..line_start]);
            (!stable.is_empty()).then(|| vec![PromptPiece::Text(stable.to_string())])
        }
        _ => stable_head(prepared),
    }
}

/// `text` without the whitespace it ends with. Byte-level BPE tokenizers (the default model's)
/// split text into words, punctuation runs and whitespace runs before merging, and a whitespace
/// run goes with what follows it: a newline joins the next line's indentation (`"\n   "` is one
/// token), blank lines join each other. Text that ends in whitespace therefore tokenizes
/// differently once more is typed after it; text that ends at a non-space character and is
/// continued by whitespace keeps its tokens, so its ids are a prefix of the continuation's.
fn token_stable(text: &str) -> &str {
    text.trim_end()
}

/// The start of `prepared`'s prompt that stays the same wherever the cursor is in the file (the
/// repository section, the markers before the code and the context header, up to its last
/// non-space character: [`token_stable`]), for pre-warming the KV cache; `None` when the prompt
/// does not start with it (suffix-first FIM).
pub fn stable_head(prepared: &Prepared) -> Option<Vec<PromptPiece>> {
    let header = token_stable(&prepared.context.header);
    let (repository, rest) = prepared.prompt.split_at(prepared.repository_pieces);
    let mut head = repository.to_vec();
    for piece in rest {
        match piece {
            PromptPiece::Special(_) => head.push(piece.clone()),
            PromptPiece::Text(text) if !header.is_empty() && text.starts_with(header) => {
                head.push(PromptPiece::Text(header.to_string()));
                return Some(head);
            }
            PromptPiece::Text(_) => return (!repository.is_empty()).then_some(head),
        }
    }
    None
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

    /// The ghost text for the raw generation (possibly empty). A multi-line completion is
    /// balanced (`balance`) and must not add a parse error: the longest of its balanced cuts at
    /// line ends that adds none is shown, or nothing when none qualifies.
    pub fn finish(&self, raw: &str) -> String {
        let processed = postprocess::process(raw, &self.surroundings, self.mode).text;
        if processed.trim().is_empty() || self.mode == Mode::SingleLine {
            return if processed.trim().is_empty() { String::new() } else { processed };
        }
        let candidates = self.balanced_cuts(&processed);
        match self.parse_check() {
            Some(check) => candidates.into_iter().find(|candidate| check.adds_no_error(candidate)).unwrap_or_default(),
            None => candidates.into_iter().next().unwrap_or_default(),
        }
    }

    /// The completion and its cuts at line ends, longest first, each balanced; no duplicates.
    fn balanced_cuts(&self, processed: &str) -> Vec<String> {
        let mut candidates: Vec<String> = Vec::new();
        let mut rest = processed;
        loop {
            let balanced = balance::balance(rest, &self.surroundings.line_prefix, self.snapshot.language);
            if !balanced.trim().is_empty() && !candidates.contains(&balanced) {
                candidates.push(balanced);
            }
            match rest.rfind('\n') {
                Some(cut) => rest = &rest[..cut],
                None => return candidates,
            }
        }
    }

    /// Parse errors of the document before and after inserting `text` at the cursor, where the
    /// document has a tree (`nib complete --json` reports them).
    pub fn parse_errors(&self, text: &str) -> Option<(usize, usize)> {
        let check = self.parse_check()?;
        Some((check.baseline, check.errors_with(text)?))
    }

    /// The parse check for this completion's document, when it has a tree and is small enough
    /// to re-parse per candidate.
    fn parse_check(&self) -> Option<ParseCheck<'_>> {
        let snapshot = &self.snapshot;
        let (Some(language), Some(tree)) = (snapshot.language, snapshot.tree.as_ref()) else {
            return None;
        };
        if snapshot.rope.len_bytes() > syntax::MAX_PARSE_BYTES / 4 {
            return None;
        }
        Some(ParseCheck {
            snapshot,
            tree,
            baseline: syntax::error_count(tree),
            parser: std::cell::RefCell::new(language.parser()),
        })
    }
}

/// Counts the parse errors of the document with a candidate inserted at the cursor.
pub(crate) struct ParseCheck<'a> {
    snapshot: &'a Snapshot,
    tree: &'a Tree,
    /// Errors in the document before the insertion.
    pub(crate) baseline: usize,
    parser: std::cell::RefCell<tree_sitter::Parser>,
}

impl ParseCheck<'_> {
    /// Errors (ERROR and MISSING nodes) with `candidate` inserted; `None` if parsing failed.
    pub(crate) fn errors_with(&self, candidate: &str) -> Option<usize> {
        let snapshot = self.snapshot;
        let mut rope = snapshot.rope.clone();
        let at = snapshot.cursor;
        rope.insert(rope.byte_to_char(at), candidate);
        let point = |rope: &Rope, byte: usize| {
            let line = rope.byte_to_line(byte);
            Point { row: line, column: byte - rope.line_to_byte(line) }
        };
        let mut edited = self.tree.clone();
        edited.edit(&InputEdit {
            start_byte: at,
            old_end_byte: at,
            new_end_byte: at + candidate.len(),
            start_position: point(&snapshot.rope, at),
            old_end_position: point(&snapshot.rope, at),
            new_end_position: point(&rope, at + candidate.len()),
        });
        let mut parser = self.parser.borrow_mut();
        syntax::parse(&mut parser, &rope, Some(&edited)).map(|tree| syntax::error_count(&tree))
    }

    fn adds_no_error(&self, candidate: &str) -> bool {
        self.errors_with(candidate).is_some_and(|errors| errors <= self.baseline)
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
            ..ModelInfo::default()
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
            cross_file: &context::CrossFile::default(),
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

    /// Prepares a completion at `$0` in /w/shop/cart.py with one retrieved snippet.
    fn prepare_with_retrieved(info: &ModelInfo) -> Prepared {
        let source = "from shop.pricing import total\n\ndef checkout(cart):\n    return $0\n";
        let cursor = source.find("$0").unwrap();
        let document =
            Document::new("file:///w/shop/cart.py".into(), "python".into(), 1, &source.replacen("$0", "", 1));
        let snippet = "def total(items):\n    ...".to_string();
        let cross_file = context::CrossFile {
            text: format!("# from pricing.py:\n{snippet}\n\n"),
            sources: vec!["definition:pricing.py:total".into()],
            files: vec![("pricing.py".into(), snippet)],
            imports: Vec::new(),
        };
        let config = Config::default();
        let inputs = Inputs {
            document: &document,
            cursor,
            config: &config.completion,
            model: info,
            cross_file: &cross_file,
            workspace_folders: &[PathBuf::from("/w/shop")],
        };
        prepare(&inputs).expect("a completion is possible at the cursor")
    }

    #[test]
    fn families_with_repository_tokens_get_each_retrieved_file_as_its_own_section() {
        let code = "from shop.pricing import total\n\ndef checkout(cart):\n    return";
        let qwen = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|repo_name|>", "<|file_sep|>"];
        let starcoder2 = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<repo_name>", "<file_sep>"];
        let cases = [
            (
                model(&qwen),
                format!(
                    "<|repo_name|>shop\n<|file_sep|>pricing.py\ndef total(items):\n    ...\n\
                     <|file_sep|>cart.py\n<|fim_prefix|>{code}<|fim_suffix|>\n<|fim_middle|>"
                ),
            ),
            (
                model(&starcoder2),
                format!(
                    "<repo_name>shop\n<file_sep>pricing.py\ndef total(items):\n    ...\n\
                     <file_sep>cart.py\n<fim_prefix>{code}<fim_suffix>\n<fim_middle>"
                ),
            ),
            // Without the repository tokens in the vocabulary (StarCoder 1, CodeGemma), and for
            // families without them: the comment-block form.
            (
                model(&starcoder2[..3]),
                format!(
                    "<fim_prefix># from pricing.py:\ndef total(items):\n    ...\n\n# cart.py\n{code}<fim_suffix>\n<fim_middle>"
                ),
            ),
            (
                model(&["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|repo_name|>", "<|file_sep|>"]),
                format!(
                    "<｜fim▁begin｜># from pricing.py:\ndef total(items):\n    ...\n\n# cart.py\n{code}<｜fim▁hole｜>\n<｜fim▁end｜>"
                ),
            ),
        ];
        for (info, expected) in cases {
            let prepared = prepare_with_retrieved(&info);
            assert_eq!(prompt::render(&prepared.prompt), expected);
            assert!(prepared.context.sources.contains(&"definition:pricing.py:total".to_string()));
        }
    }

    #[test]
    fn a_remote_model_gets_repository_tokens_when_its_name_was_trained_with_them() {
        let remote = |name: &str, family: &str| ModelInfo {
            name: name.into(),
            fim_family: Some(family.into()),
            markers_are_text: true,
            ..model(&[])
        };
        let rendered = |info: &ModelInfo| prompt::render(&prepare_with_retrieved(info).prompt);
        assert!(rendered(&remote("Qwen/Qwen2.5-Coder-7B", "qwen")).starts_with("<|repo_name|>shop\n<|file_sep|>"));
        assert!(rendered(&remote("bigcode/starcoder2-15b", "starcoder")).starts_with("<repo_name>shop\n<file_sep>"));
        assert!(
            rendered(&remote("bigcode/starcoderbase-1b", "starcoder")).starts_with("<fim_prefix># from pricing.py")
        );
        assert!(rendered(&remote("google/codegemma-2b", "qwen")).starts_with("<|fim_prefix|># from pricing.py"));
    }

    #[test]
    fn the_stable_head_of_a_repository_prompt_ends_before_the_code() {
        let info = model(&["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|repo_name|>", "<|file_sep|>"]);
        let prepared = prepare_with_retrieved(&info);
        let head = stable_head(&prepared).expect("a stable head");
        assert_eq!(
            prompt::render(&head),
            "<|repo_name|>shop\n<|file_sep|>pricing.py\ndef total(items):\n    ...\n<|file_sep|>cart.py\n<|fim_prefix|>"
        );
        assert!(prompt::render(&prepared.prompt).starts_with(&prompt::render(&head)));
    }

    #[test]
    fn a_prewarmed_prompt_tokenizes_as_a_prefix_of_the_prompts_typed_after_it() {
        // The fixture's tokenizer splits and merges like the default model's byte-level BPE: a
        // newline and the indentation after it are one token (`"\n   "`).
        let tokenizer_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-model/tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(tokenizer_path).unwrap();
        let ids = |pieces: &[PromptPiece]| {
            tokenizer.encode(prompt::render(pieces).as_str(), false).unwrap().get_ids().to_vec()
        };
        let head = "import os\n\n\ndef f(x):\n";
        // (where typing paused, what was typed after it on the same line)
        let cases = [
            ("$0", "    return x$0"),
            ("    $0", "    return x$0"),
            ("    y = 1\n\n$0", "    y = 1\n\n    return y$0"),
            ("    y = 1\n    $0", "    y = 1\n    return y$0"),
        ];
        for (paused, typed) in cases {
            let at_pause = prepare_at("a.py", "python", &format!("{head}{paused}\n"), &[]);
            let warm = warm_prompt(&at_pause, true).expect("something to warm");
            let request = prepare_at("a.py", "python", &format!("{head}{typed}\n"), &[]);
            let (warm_ids, request_ids) = (ids(&warm), ids(&request.prompt));
            assert!(warm_ids.len() > 4, "{paused:?}: {warm:?}");
            assert!(
                request_ids.starts_with(&warm_ids),
                "{paused:?} then {typed:?}: the warmed ids {warm_ids:?} are not a prefix of {request_ids:?}"
            );
        }
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
            cross_file: &context::CrossFile::default(),
            workspace_folders: &[],
        };
        assert!(prepare(&inputs).is_none());
    }

    /// (file name, language id, document with `$0`, raw model output, expected ghost text).
    type FinishCase = (&'static str, &'static str, &'static str, &'static str, &'static str);

    /// Multi-line model outputs per language, and the ghost text shown for them.
    const FINISH_CASES: &[FinishCase] = &[
        // The examples. The model's own `}` equals the line below the cursor and used
        // to be cut as a repeat; it now stays, and an output cut short is closed.
        (
            "stack.rs",
            "rust",
            "impl Stack {\n    pub fn pop(&mut self) -> Option<i64> {\n        $0\n    }\n}\n",
            "if self.items.is_empty() {\n            return None;\n        }\n        self.items.pop()\n    }\n}\n",
            "if self.items.is_empty() {\n            return None;\n        }\n        self.items.pop()",
        ),
        (
            "stack.rs",
            "rust",
            "impl Stack {\n    pub fn pop(&mut self) -> Option<i64> {\n        $0\n    }\n}\n",
            "if self.items.is_empty() {\n            self.items.pop();",
            "if self.items.is_empty() {\n            self.items.pop();\n        }",
        ),
        (
            "clamp.js",
            "javascript",
            "function clamp(value, low, high) {\n  if (value < low) { return low; }\n  $0\n}\n",
            "if (value > high) {\n    return high;\n  }\n",
            "if (value > high) {\n    return high;\n  }",
        ),
        (
            "clamp.js",
            "javascript",
            "function clamp(value, low, high) {\n  if (value < low) { return low; }\n  $0\n}\n",
            "if (value > high) {\n    return high;",
            "if (value > high) {\n    return high;\n  }",
        ),
        (
            "clamp.ts",
            "typescript",
            "export function clamp(v: number, lo: number): number {\n  $0\n}\n",
            "if (v < lo) {\n    return lo;\n  }\n  return v;\n}\n",
            "if (v < lo) {\n    return lo;\n  }\n  return v;",
        ),
        (
            "view.tsx",
            "typescriptreact",
            "export function View(p: { ok: boolean }) {\n  $0\n}\n",
            "if (!p.ok) {\n    return <p>no</p>;",
            "if (!p.ok) {\n    return <p>no</p>;\n  }",
        ),
        (
            "sum.go",
            "go",
            "package m\n\nfunc Sum(xs []int) int {\n\ttotal := 0\n\t$0\n}\n",
            "for _, x := range xs {\n\t\ttotal += x",
            "for _, x := range xs {\n\t\ttotal += x\n\t}",
        ),
        // A block with no body yet is cut before its opener; Python likewise.
        (
            "sum.go",
            "go",
            "package m\n\nfunc Sum(xs []int) int {\n\ttotal := 0\n\t$0\n}\n",
            "total++\n\tfor _, x := range xs {\n",
            "total++",
        ),
        (
            "a.py",
            "python",
            "def f(items):\n    total = 0\n    $0\n\nprint(f([1]))\n",
            "total += 1\n    for item in items:\n",
            "total += 1",
        ),
        (
            "a.py",
            "python",
            "def f(items):\n    total = 0\n    $0\n\nprint(f([1]))\n",
            "for item in items:\n        total += item\n    return total\n",
            "for item in items:\n        total += item\n    return total",
        ),
        // Output that cannot be made to parse is not shown at all.
        ("a.py", "python", "def f(x):\n    $0\n\nprint(1)\n", "return x +\n", ""),
    ];

    #[test]
    fn multi_line_completions_close_the_blocks_they_open() {
        for (name, language_id, source, raw, expected) in FINISH_CASES {
            let prepared = prepare_at(name, language_id, source, &[]);
            assert_eq!(prepared.mode, Mode::MultiLine, "{name}");
            let text = prepared.finish(raw);
            assert_eq!(text, *expected, "{name}: {raw:?}");
            if !text.is_empty() {
                let (before, after) = prepared.parse_errors(&text).expect("a parse tree");
                assert!(after <= before, "{name}: {text:?} adds parse errors ({before} → {after})");
            }
        }
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
