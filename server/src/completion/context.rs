//! What the model sees around the cursor, within a budget: a path header, definitions from
//! other open buffers of the symbols used near the cursor, Jaccard-similar windows from other
//! buffers, the file's imports, and prefix/suffix windows cut at line boundaries that keep the
//! enclosing scope whole when it fits.
//!
//! Everything before the cursor is laid out to stay byte-identical while the user types inside
//! one scope (the window start moves in steps, cross-file context is cached per scope), so the
//! engine's KV cache covers all of it and only the newly typed tokens are prefilled.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use ropey::Rope;
use tree_sitter::Tree;

use super::prompt::{FimFormat, RepositorySection};
use crate::document::Document;
use crate::syntax::Language;
use crate::syntax::languages::Blocks;
use crate::syntax::scopes::{self, Scope};

/// Rough bytes per token of source code for budgeting without running the tokenizer.
pub const BYTES_PER_TOKEN: usize = 3;
/// The prefix window's start moves in steps of this many lines, so it stays put while typing.
const WINDOW_STEP_LINES: usize = 16;
/// Each cross-file source gets at most this long.
const SOURCE_TIME_BOX: Duration = Duration::from_millis(25);
const SIMILAR_WINDOW_LINES: usize = 30;
const SIMILAR_MIN_SCORE: f64 = 0.15;
/// Symbols of the current document looked up in other buffers, in order of first use.
const MAX_SYMBOLS: usize = 200;
/// How much of the current document is compared with other buffers' windows.
const SIMILAR_QUERY_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompletionContext {
    /// Stable text before the code: path header, cross-file snippets, imports.
    pub header: String,
    /// The code before the cursor.
    pub prefix: String,
    /// The code after the cursor.
    pub suffix: String,
    /// Names of the sources used, for inspection.
    pub sources: Vec<String>,
    /// For models with repository tokens: the retrieved code and the file's path, laid out
    /// before the code with the tokens instead of in `header`.
    pub repository: Option<RepositorySection>,
}

pub fn comment_prefix(language: Option<Language>) -> &'static str {
    language.map_or("#", |language| language.spec().line_comment)
}

/// A path relative to the first workspace folder that contains it.
pub fn display_path(path: Option<&Path>, uri: &str, workspace_folders: &[std::path::PathBuf]) -> String {
    let Some(path) = path else {
        return uri.to_string();
    };
    workspace_folders.iter().find_map(|folder| path.strip_prefix(folder).ok()).unwrap_or(path).display().to_string()
}

fn line_start(rope: &Rope, line: usize) -> usize {
    rope.line_to_byte(line.min(rope.len_lines()))
}

/// The prefix window's first line: the earliest line that fits the budget, rounded up to a
/// multiple of `WINDOW_STEP_LINES` so it stays put while typing, moved up to the enclosing
/// scope's start when the scope fits, so the scope is never cut.
fn prefix_start_line(rope: &Rope, cursor: usize, budget_bytes: usize, scope: Option<&Scope>) -> usize {
    let cursor_line = rope.byte_to_line(cursor);
    let mut first = cursor_line;
    while first > 0 && cursor - line_start(rope, first - 1) <= budget_bytes {
        first -= 1;
    }
    let start = if first == 0 { 0 } else { (first.div_ceil(WINDOW_STEP_LINES) * WINDOW_STEP_LINES).min(cursor_line) };
    match scope {
        Some(scope) if scope.anchor.start <= cursor => {
            let scope_line = rope.byte_to_line(scope.anchor.start);
            if cursor - line_start(rope, scope_line) <= budget_bytes { start.min(scope_line) } else { start }
        }
        _ => start,
    }
}

/// The suffix window's end: whole lines within the budget, extended to the scope end when it fits.
fn suffix_end(rope: &Rope, cursor: usize, budget_bytes: usize, scope: Option<&Scope>) -> usize {
    let total = rope.len_bytes();
    let mut end_line = rope.byte_to_line(cursor) + 1;
    while end_line < rope.len_lines() && line_start(rope, end_line + 1) - cursor <= budget_bytes {
        end_line += 1;
    }
    let mut end = line_start(rope, end_line).min(total);
    if let Some(scope) = scope {
        let scope_end = scope.range.end.min(total);
        if scope_end > end && scope_end - cursor <= budget_bytes * 2 {
            end = line_start(rope, rope.byte_to_line(scope_end) + 1).min(total);
        }
    }
    end.max(cursor)
}

/// The first `limit` distinct identifiers in `range` of `tree`, in order of first appearance
/// (the walk stops there: a 10k-line file need not be walked whole).
fn identifiers(tree: &Tree, rope: &Rope, range: Range<usize>, limit: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    let mut cursor = tree.walk();
    loop {
        let node = cursor.node();
        let overlaps = node.start_byte() < range.end && node.end_byte() > range.start;
        if overlaps && node.child_count() == 0 && node.kind().ends_with("identifier") {
            let name = rope.byte_slice(node.byte_range()).to_string();
            if name.len() > 1 && seen.insert(name.clone()) {
                names.push(name);
                if names.len() == limit {
                    return names;
                }
            }
        }
        if overlaps && cursor.goto_first_child() {
            continue;
        }
        while !cursor.goto_next_sibling() {
            if !cursor.goto_parent() {
                return names;
            }
        }
    }
}

/// Definitions (signature and docstring) in other buffers of the symbols used near the cursor.
fn definitions(
    used: &[String],
    others: &[&Document],
    budget_bytes: usize,
    sources: &mut Vec<String>,
) -> Vec<(String, String)> {
    let started = Instant::now();
    let mut snippets = Vec::new();
    let mut spent = 0;
    for other in others {
        if started.elapsed() > SOURCE_TIME_BOX {
            break;
        }
        let (Some(language), Some(tree)) = (other.language, other.tree()) else {
            continue;
        };
        for scope in scopes::all_scopes(language, tree, &other.rope) {
            if !used.contains(&scope.name) {
                continue;
            }
            let mut snippet = scope.signature.clone();
            if let Blocks::Indentation = language.spec().blocks {
                snippet.push(':');
                if let Some(doc) = &scope.doc {
                    snippet.push_str("\n    ");
                    snippet.push_str(other.rope.byte_slice(doc.clone()).to_string().trim());
                }
                snippet.push_str("\n    ...");
            }
            if spent + snippet.len() > budget_bytes {
                return snippets;
            }
            spent += snippet.len();
            sources.push(format!("definition:{}:{}", other.uri, scope.name));
            snippets.push((other.uri.clone(), snippet));
        }
    }
    snippets
}

fn words(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| w.len() > 1).collect()
}

/// The window of each other buffer most similar (Jaccard over words) to the code before the
/// cursor; the best few above a threshold, one per file.
fn similar_windows(
    query: &str,
    others: &[&Document],
    budget_bytes: usize,
    sources: &mut Vec<String>,
) -> Vec<(String, String)> {
    let started = Instant::now();
    let query_words = words(query);
    if query_words.is_empty() {
        return Vec::new();
    }
    let mut best: Vec<(f64, String, String)> = Vec::new();
    for other in others {
        if started.elapsed() > SOURCE_TIME_BOX {
            break;
        }
        let lines: Vec<String> = other.rope.lines().map(|line| line.to_string()).collect();
        let mut file_best: Option<(f64, String)> = None;
        for start in (0..lines.len()).step_by(SIMILAR_WINDOW_LINES / 2) {
            let window = lines[start..(start + SIMILAR_WINDOW_LINES).min(lines.len())].concat();
            let window_words = words(&window);
            let union = query_words.union(&window_words).count();
            let score = query_words.intersection(&window_words).count() as f64 / union.max(1) as f64;
            if score >= SIMILAR_MIN_SCORE && file_best.as_ref().is_none_or(|(best_score, _)| score > *best_score) {
                file_best = Some((score, window));
            }
        }
        if let Some((score, window)) = file_best {
            best.push((score, other.uri.clone(), window));
        }
    }
    best.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut spent = 0;
    let mut chosen = Vec::new();
    for (score, uri, window) in best.into_iter().take(2) {
        if spent + window.len() > budget_bytes {
            break;
        }
        spent += window.len();
        sources.push(format!("similar:{uri}:{score:.2}"));
        chosen.push((uri, window));
    }
    chosen
}

/// Cross-file context for a document: definitions of the symbols it uses and windows similar
/// to it, from the other open buffers. It depends on the whole document rather than on the
/// cursor, so callers can cache it until another buffer changes: text placed before the code
/// must not change while the user types, or the KV cache would miss.
pub fn cross_file(
    document: &Document,
    others: &[&Document],
    budget_bytes: usize,
    workspace_folders: &[std::path::PathBuf],
) -> CrossFile {
    let mut sources = Vec::new();
    let (Some(language), Some(tree)) = (document.language, document.tree()) else {
        return CrossFile::default();
    };
    if others.is_empty() || budget_bytes == 0 {
        return CrossFile::default();
    }
    let rope = &document.rope;
    let whole = 0..rope.len_bytes();
    let used = identifiers(tree, rope, whole, MAX_SYMBOLS);
    let comment = comment_prefix(Some(language));
    let mut text = String::new();
    let snippets = definitions(&used, others, budget_bytes / 2, &mut sources);
    let query = rope.byte_slice(..rope.len_bytes().min(SIMILAR_QUERY_BYTES)).to_string();
    let spent: usize = snippets.iter().map(|snippet| snippet.1.len()).sum();
    let similar = similar_windows(&query, others, budget_bytes - spent, &mut sources);
    let mut files = Vec::new();
    for (uri, snippet) in snippets.iter().chain(&similar) {
        let name = display_path(crate::document::file_uri_to_path(uri).as_deref(), uri, workspace_folders);
        text.push_str(&format!("{comment} from {name}:\n{}\n\n", snippet.trim_end()));
        files.push((name, snippet.trim_end().to_string()));
    }
    CrossFile { text, sources, files, imports: Vec::new() }
}

/// Context from other files, rendered for the head of the prompt, with the names of its
/// sources (for `nib complete --json` and `nib/inspect`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrossFile {
    /// The snippets as comment-headed blocks (`# from <path>:`).
    pub text: String,
    pub sources: Vec<String>,
    /// The same snippets as (path, code), for prompts with repository tokens.
    pub files: Vec<(String, String)>,
    /// Import lines the file is missing, checked against the index: (statement, source). Not
    /// part of the prompt; offered as the completion on import lines (`completion::imports`).
    pub imports: Vec<(String, String)>,
}

/// The byte budget for cross-file context within a prompt budget of `context_tokens`.
pub fn cross_file_budget(context_tokens: usize) -> usize {
    context_tokens * BYTES_PER_TOKEN * 3 / 10
}

/// Renders snippets retrieved from the workspace index, in their order, each under a comment
/// naming its file; snippets that would take the text past `budget_bytes` are left out. The
/// same snippets always render to the same text, so the prompt head stays byte-identical.
pub fn render_snippets(
    snippets: &[crate::index::Snippet],
    language: Option<Language>,
    budget_bytes: usize,
    workspace_folders: &[std::path::PathBuf],
) -> CrossFile {
    let comment = comment_prefix(language);
    let mut rendered = CrossFile::default();
    for snippet in snippets {
        let name = display_path(Some(&snippet.path), "", workspace_folders);
        if snippet.kind == "import" {
            rendered.imports.push((snippet.text.clone(), snippet.source(&name)));
            continue;
        }
        let piece = format!("{comment} from {name}:\n{}\n\n", snippet.text.trim_end());
        if rendered.text.len() + piece.len() > budget_bytes {
            continue;
        }
        rendered.text.push_str(&piece);
        rendered.sources.push(snippet.source(&name));
        rendered.files.push((name, snippet.text.trim_end().to_string()));
    }
    rendered
}

/// Builds the context for `cursor` in `document`. `cross_file` comes from `cross_file` or
/// the workspace index (usually cached per scope). With a FIM format the model sees the code
/// after the cursor (without one, that share of the budget goes to the prefix), and a format
/// with repository tokens gets the cross-file code and the path as a `RepositorySection`
/// instead of comment lines in the header.
pub fn build(
    document: &Document,
    cursor: usize,
    budget_tokens: usize,
    cross_file: &CrossFile,
    workspace_folders: &[std::path::PathBuf],
    fim: Option<&FimFormat>,
) -> CompletionContext {
    let with_suffix = fim.is_some();
    let rope = &document.rope;
    let cursor = cursor.min(rope.len_bytes());
    let budget = budget_tokens * BYTES_PER_TOKEN;
    let scope = match (document.language, document.tree()) {
        (Some(language), Some(tree)) => scopes::scope_at(language, tree, rope, cursor),
        _ => None,
    };
    let mut sources = Vec::new();
    let mut header = String::new();
    // Other files' code first, then the file's own path line right above its code: the layout
    // of repository-level training data (the path names the file the code belongs to).
    let cross_file_budget = budget * 3 / 10;
    let fits = !cross_file.text.is_empty() && cross_file.text.len() <= cross_file_budget;
    if fits {
        sources.extend(cross_file.sources.iter().cloned());
    }
    let path = display_path(document.path.as_deref(), &document.uri, workspace_folders);
    sources.push("path".to_string());
    let repository = fim.and_then(FimFormat::repository).map(|_| RepositorySection {
        name: repository_name(document.path.as_deref(), workspace_folders),
        files: if fits { cross_file.files.clone() } else { Vec::new() },
        path: path.clone(),
    });
    if repository.is_none() {
        if fits {
            header.push_str(&cross_file.text);
        }
        header.push_str(&format!("{} {path}\n", comment_prefix(document.language)));
    }
    let head_bytes = header.len() + repository.as_ref().map_or(0, RepositorySection::text_len);
    let suffix_budget = if with_suffix { budget * 15 / 100 } else { 0 };
    let prefix_budget = budget.saturating_sub(head_bytes + suffix_budget);
    let start_line = prefix_start_line(rope, cursor, prefix_budget, scope.as_ref());
    let window_start = line_start(rope, start_line);
    // Imports above the window keep names resolvable.
    if window_start > 0
        && let (Some(language), Some(tree)) = (document.language, document.tree())
    {
        let imports: Vec<String> = scopes::imports(language, tree)
            .into_iter()
            .filter(|range| range.end <= window_start)
            .map(|range| rope.byte_slice(range).to_string())
            .collect();
        let imports = imports.join("\n");
        if !imports.is_empty() && imports.len() < prefix_budget / 4 {
            header.push_str(&imports);
            header.push_str("\n\n");
            sources.push("imports".to_string());
        }
    }
    let prefix = rope.byte_slice(window_start..cursor).to_string();
    sources.push(format!("prefix:{}-{}", start_line, rope.byte_to_line(cursor)));
    let end = suffix_end(rope, cursor, suffix_budget, scope.as_ref());
    let suffix = rope.byte_slice(cursor..end).to_string();
    sources.push("suffix".to_string());
    CompletionContext { header, prefix, suffix, sources, repository }
}

/// The repository's name in a repository-level prompt: the name of the workspace folder that
/// holds the file (of the first folder, for a file outside them).
fn repository_name(path: Option<&Path>, workspace_folders: &[std::path::PathBuf]) -> String {
    let folder = workspace_folders
        .iter()
        .find(|folder| path.is_some_and(|path| path.starts_with(folder)))
        .or(workspace_folders.first());
    folder
        .and_then(|folder| folder.file_name())
        .map_or_else(|| "workspace".to_string(), |name| name.to_string_lossy().into())
}
