//! Retrieval for one cursor: the definitions (signature and body head) of the names used near
//! the cursor and of the file's imported names, resolved across files through the symbol
//! table; the chunks most similar to the code around the cursor (BM25 over identifiers); and
//! recently edited or viewed regions of other files (the ring). All of it within a byte
//! budget, in a stable order: the same retrieved set always renders to the same text.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ropey::Rope;
use tree_sitter::Tree;

use super::receivers;
use super::ring::Ring;
use super::store::{Definition, FileId, Index, posting_chunk, posting_count, terms};
use crate::syntax::{Language, scopes};

/// Lines before and after the cursor whose identifiers make the similarity query.
const QUERY_LINES_BEFORE: usize = 30;
const QUERY_LINES_AFTER: usize = 5;
/// Lines before and after the cursor whose names are looked up: the statement being written
/// and its neighbours (names further up are usually in the prompt already).
const NAME_LINES_BEFORE: usize = 8;
const NAME_LINES_AFTER: usize = 2;
/// A definition is shown as its first lines (signature, docstring, body head).
const DEFINITION_HEAD_LINES: usize = 6;
const DEFINITION_HEAD_BYTES: usize = 400;
/// A name defined in more places than this is too ambiguous to resolve by name alone.
const MAX_DEFINITIONS_PER_NAME: usize = 4;
/// Similar chunks are shown as their best window of this many lines.
const SIMILAR_WINDOW_LINES: usize = 12;
const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;
/// Share of the budget for definitions; similar chunks and the ring share the rest.
const DEFINITIONS_SHARE: f64 = 0.35;
/// Share of the budget for the members of modules used by attribute (`types.IntRange`).
const MEMBERS_SHARE: f64 = 0.3;
/// Share of the budget for the methods of the receivers' classes (`self.repo.` → `Repo`).
const METHODS_SHARE: f64 = 0.25;
/// A member's signature line is cut to this many bytes, so many names fit.
const MEMBER_LINE_BYTES: usize = 72;
/// Terms in a larger share of all chunks than this are left out of the similarity score.
const COMMON_TERM_SHARE: f64 = 0.2;
/// Similar chunks scoring below this share of the best one are not shown.
const MIN_SHARE_OF_BEST_SCORE: f64 = 0.4;
/// The identifiers of the file's code (not its strings or comments) that it uses but never
/// binds (as an assignment's target, a parameter, a definition's or an alias's name), nor
/// uses only as an attribute (`y` in `x.y`), in order of first use.
pub(super) fn free_words(cursor: &Cursor) -> Vec<String> {
    let Some(tree) = cursor.tree else {
        return Vec::new();
    };
    let rope = cursor.rope;
    let (mut used, mut bound): (Vec<String>, HashSet<String>) = (Vec::new(), HashSet::new());
    for node in preorder(tree) {
        if node.kind() != "identifier" {
            continue;
        }
        let word = rope.byte_slice(node.byte_range()).to_string();
        let Some(parent) = node.parent() else { continue };
        let in_field = |field: &str| parent.child_by_field_name(field) == Some(node);
        // `x.y`'s `y`, and a keyword argument's name (`f(key=1)`): neither a use nor a binding.
        if ["attribute", "field", "property"].iter().any(|field| in_field(field))
            || (parent.kind() == "keyword_argument" && in_field("name"))
        {
            continue;
        }
        // A parameter's default value and annotation are uses (`tqdm_class=tqdm_auto`).
        let parameter_name = parent.kind().contains("parameter") && !in_field("value") && !in_field("type");
        if parameter_name || binds(node) {
            bound.insert(word);
        } else if !used.contains(&word) {
            used.push(word);
        }
    }
    used.retain(|word| word.len() >= 2 && !bound.contains(word));
    used
}

/// Every node of `tree` below its root, in document order.
pub(super) fn preorder(tree: &Tree) -> impl Iterator<Item = tree_sitter::Node<'_>> {
    let mut walk = tree.walk();
    let mut descend = true;
    std::iter::from_fn(move || {
        loop {
            if (descend && walk.goto_first_child()) || walk.goto_next_sibling() {
                descend = true;
                return Some(walk.node());
            }
            if !walk.goto_parent() {
                return None;
            }
            descend = false;
        }
    })
}

/// Node kinds an assignment's or a loop's target is made of (`a, (b, *c) = ...`).
const TARGET_PATTERNS: &[&str] =
    &["pattern_list", "tuple_pattern", "list_pattern", "list_splat_pattern", "as_pattern_target", "case_pattern"];
/// Statements that bind the names in them (`import a.b`, `global x`).
const BINDING_STATEMENTS: &[&str] =
    &["import_statement", "import_from_statement", "future_import_statement", "global_statement", "nonlocal_statement"];

/// Whether `identifier` is bound where it stands: the target of an assignment, a loop, a
/// `with`/`except` alias (through tuple and list patterns), a definition's or an alias's name,
/// or a name in an import, `global` or `nonlocal` statement.
fn binds(identifier: tree_sitter::Node) -> bool {
    let mut node = identifier;
    while let Some(parent) = node.parent() {
        if BINDING_STATEMENTS.contains(&parent.kind()) {
            return true;
        }
        if parent.kind() == "dotted_name" || parent.kind() == "aliased_import" {
            // Inside an import statement only (checked on the next step up).
            node = parent;
            continue;
        }
        let in_field = |field: &str| parent.child_by_field_name(field) == Some(node);
        if ["left", "name", "alias", "pattern"].iter().any(|field| in_field(field)) {
            return true;
        }
        if !TARGET_PATTERNS.contains(&parent.kind()) {
            return false;
        }
        node = parent;
    }
    false
}

/// Names used but not bound in the file looked up at most (a file that is mostly unresolved,
/// a script using a star import, would otherwise spend the budget on them).
const MAX_UNBOUND_NAMES: usize = 8;
/// The best-scoring chunks considered for the similar snippets (at most two are shown).
const SIMILAR_CANDIDATES: usize = 8;
/// The similarity query uses at most this many of its rarest words.
const MAX_QUERY_TERMS: usize = 48;

/// One retrieved piece of context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snippet {
    /// `definition`, `members`, `methods`, `similar` or `recent`.
    pub kind: &'static str,
    pub path: PathBuf,
    /// 0-based lines of the file.
    pub lines: Range<usize>,
    /// The defined name (definitions) or the BM25 score (similar chunks), for inspection.
    pub detail: String,
    pub text: String,
}

impl Snippet {
    /// The name `nib complete --json` and `nib/inspect` list the snippet under.
    pub fn source(&self, display: &str) -> String {
        format!("{}:{display}:{}-{}:{}", self.kind, self.lines.start + 1, self.lines.end, self.detail)
    }
}

/// The cursor's file as the query sees it.
pub(crate) struct Cursor<'a> {
    pub(crate) path: Option<&'a Path>,
    pub(crate) language: Language,
    pub(crate) rope: &'a Rope,
    pub(crate) tree: Option<&'a Tree>,
    pub(crate) cursor: usize,
}

/// Where snippet text comes from: open buffers first (their live text), else the file.
pub(crate) trait Texts {
    fn text(&mut self, path: &Path) -> Option<String>;
}

/// Names that are the language's own (builtins, keywords, common methods): never looked up.
const NOT_LOOKED_UP: &[&str] = &[
    "self",
    "cls",
    "str",
    "int",
    "float",
    "bool",
    "bytes",
    "dict",
    "list",
    "set",
    "tuple",
    "object",
    "type",
    "len",
    "print",
    "open",
    "range",
    "isinstance",
    "super",
    "None",
    "True",
    "False",
    "return",
    "def",
    "class",
    "import",
    "from",
    "if",
    "else",
    "elif",
    "for",
    "while",
    "in",
    "not",
    "and",
    "or",
    "is",
    "with",
    "as",
    "try",
    "except",
    "raise",
    "pass",
    "yield",
    "await",
    "async",
    "lambda",
    "get",
    "set",
    "update",
    "append",
    "items",
    "keys",
    "values",
    "fn",
    "let",
    "mut",
    "pub",
    "impl",
    "use",
    "crate",
    "Self",
    "Some",
    "Ok",
    "Err",
    "Vec",
    "String",
    "Option",
    "Result",
    "new",
    "const",
    "var",
    "function",
    "this",
    "new",
    "export",
    "func",
    "package",
    "string",
    "error",
    "nil",
    "err",
    "ctx",
    "map",
    "filter",
    "join",
    "format",
    "push",
    "info",
    "debug",
];

/// The cursor's line and the `NAME_LINES_BEFORE` above and `NAME_LINES_AFTER` below it,
/// walking outwards from the cursor's line, so the nearest use of a name decides its rank.
pub(super) fn nearest_lines(cursor: &Cursor) -> Vec<usize> {
    let rope = cursor.rope;
    let line = rope.byte_to_line(cursor.cursor.min(rope.len_bytes()));
    let start = line.saturating_sub(NAME_LINES_BEFORE);
    let end = (line + NAME_LINES_AFTER + 1).min(rope.len_lines());
    let mut order: Vec<usize> = Vec::new();
    for distance in 0..=(line - start).max(end - line) {
        if distance <= line - start {
            order.push(line - distance);
        }
        if distance > 0 && line + distance < end {
            order.push(line + distance);
        }
    }
    order
}

/// Names used near the cursor, nearest first (names also imported first of all, attribute
/// names after free names), then the other names the file imports.
fn wanted_names(index: &Index, cursor: &Cursor) -> Vec<String> {
    let rope = cursor.rope;
    let order = nearest_lines(cursor);
    let imported: Vec<String> = match cursor.tree {
        Some(tree) => scopes::imports(cursor.language, tree)
            .into_iter()
            .flat_map(|range| terms(&rope.byte_slice(range).to_string()))
            .map(|(word, _)| word)
            .collect(),
        None => Vec::new(),
    };
    let mut seen: HashSet<String> = NOT_LOOKED_UP.iter().map(|word| word.to_string()).collect();
    let (mut near_and_imported, mut free, mut attributes) = (Vec::new(), Vec::new(), Vec::new());
    for number in order {
        let text = rope.line(number).to_string();
        for (word, _) in terms(&text) {
            if word.starts_with("__") || !seen.insert(word.clone()) {
                continue;
            }
            let is_attribute = text.match_indices(word.as_str()).all(|(at, _)| text[..at].ends_with('.'));
            match (imported.contains(&word), is_attribute) {
                (true, _) => near_and_imported.push(word),
                (false, false) => free.push(word),
                (false, true) => attributes.push(word),
            }
        }
    }
    let unbound: Vec<String> =
        unbound_names(index, cursor, &imported).into_iter().filter(|word| seen.insert(word.clone())).collect();
    let rest_imported = imported.into_iter().filter(|word| seen.insert(word.clone()));
    near_and_imported.into_iter().chain(unbound).chain(free).chain(attributes).chain(rest_imported).collect()
}

/// Names the file uses (anywhere, after the cursor too) but neither defines nor imports, in
/// order of first use, that another file of the workspace defines: what the file is about to
/// import (`_is_prepared(...)` used below an unfinished import block), which the model cannot
/// see. A name with leading underscores also stands for the name without them (`import x as
/// _x` is how modules keep an import private).
fn unbound_names(index: &Index, cursor: &Cursor, imported: &[String]) -> Vec<String> {
    let Some(current) = cursor.path.and_then(|path| index.file_id(path)) else {
        return Vec::new();
    };
    let defined: HashSet<u32> =
        index.file(current).map_or_else(HashSet::new, |file| file.defined().iter().copied().collect());
    // Defined at the top level of another file (a module-level name, not a method).
    let defined_elsewhere = |word: &str| {
        index.term(word).is_some_and(|term| {
            !defined.contains(&term)
                && index.definitions(term).iter().any(|definition| definition.file != current && definition.top_level)
        })
    };
    let mut found = Vec::new();
    for word in free_words(cursor) {
        if imported.contains(&word) || NOT_LOOKED_UP.contains(&word.as_str()) || word.starts_with("__") {
            continue;
        }
        if index.term(&word).is_some_and(|term| defined.contains(&term)) {
            continue;
        }
        let bare = word.trim_start_matches('_');
        let names = [word.as_str(), bare].into_iter().filter(|name| name.len() >= 2 && defined_elsewhere(name));
        for name in names {
            if !found.iter().any(|found| found == name) {
                found.push(name.to_string());
            }
        }
        if found.len() >= MAX_UNBOUND_NAMES {
            found.truncate(MAX_UNBOUND_NAMES);
            break;
        }
    }
    found
}

/// Words of the import statements: a definition in a file whose name is one of them is the
/// one the import means.
pub(super) fn imported_modules(cursor: &Cursor) -> HashSet<String> {
    let Some(tree) = cursor.tree else {
        return HashSet::new();
    };
    scopes::imports(cursor.language, tree)
        .into_iter()
        .flat_map(|range| terms(&cursor.rope.byte_slice(range).to_string()))
        .map(|(word, _)| word)
        .collect()
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map(|stem| stem.to_string_lossy().to_string()).unwrap_or_default()
}

/// The definition a name most likely means: one in a file the imports name, else the only one.
pub(super) fn resolve<'a>(
    index: &Index,
    definitions: &'a [Definition],
    current: Option<FileId>,
    modules: &HashSet<String>,
) -> Option<&'a Definition> {
    let elsewhere: Vec<&Definition> =
        definitions.iter().filter(|definition| Some(definition.file) != current).collect();
    let imported = elsewhere.iter().find(|definition| {
        index.file(definition.file).is_some_and(|file| {
            let stem = file_stem(&file.path);
            modules.contains(&stem)
                || (stem == "__init__" || stem == "mod" || stem == "index")
                    && file.path.parent().is_some_and(|folder| modules.contains(&file_stem(folder)))
        })
    });
    match imported {
        Some(definition) => Some(definition),
        None if elsewhere.len() <= MAX_DEFINITIONS_PER_NAME => elsewhere.first().copied(),
        None => None,
    }
}

/// The first lines of `bytes` in `text`, at most `DEFINITION_HEAD_LINES` and
/// `DEFINITION_HEAD_BYTES`, whole lines only.
fn head(text: &str, bytes: Range<usize>) -> Option<String> {
    let body = text.get(bytes)?;
    let mut kept = String::new();
    for line in body.split_inclusive('\n').take(DEFINITION_HEAD_LINES) {
        if kept.len() + line.len() > DEFINITION_HEAD_BYTES && !kept.is_empty() {
            break;
        }
        kept.push_str(line);
    }
    let kept = kept.trim_end();
    (!kept.is_empty()).then(|| kept.chars().take(DEFINITION_HEAD_BYTES).collect())
}

/// Definitions of the wanted names in other files, in the order of the names.
fn definitions(index: &Index, cursor: &Cursor, texts: &mut dyn Texts, budget: usize) -> Vec<Snippet> {
    let current = cursor.path.and_then(|path| index.file_id(path));
    let modules = imported_modules(cursor);
    let mut snippets: Vec<Snippet> = Vec::new();
    let mut spent = 0;
    let mut shown: HashSet<(FileId, u32)> = HashSet::new();
    for name in wanted_names(index, cursor) {
        let Some(term) = index.term(&name) else { continue };
        let Some(definition) = resolve(index, index.definitions(term), current, &modules) else {
            continue;
        };
        if !shown.insert((definition.file, definition.bytes.start)) {
            continue;
        }
        let Some(file) = index.file(definition.file) else { continue };
        let Some(text) = texts.text(&file.path) else { continue };
        let Some(snippet_text) = head(&text, definition.bytes.start as usize..definition.bytes.end as usize) else {
            continue;
        };
        if spent + snippet_text.len() > budget {
            continue;
        }
        spent += snippet_text.len();
        let line = definition.line as usize;
        snippets.push(Snippet {
            kind: "definition",
            path: file.path.clone(),
            lines: line..line + snippet_text.lines().count(),
            detail: name,
            text: snippet_text,
        });
    }
    snippets
}

/// Words used as a namespace near the cursor (`types.` in `types.IntRange(...)`), nearest
/// first, that the file imports: modules (Python, JavaScript, Go packages) whose members the
/// code reaches by attribute, so their names appear nowhere else in the file.
fn namespaces_used(cursor: &Cursor, imported: &HashSet<String>) -> Vec<String> {
    let rope = cursor.rope;
    let line = rope.byte_to_line(cursor.cursor.min(rope.len_bytes()));
    let first = line.saturating_sub(QUERY_LINES_BEFORE);
    let last = (line + QUERY_LINES_AFTER + 1).min(rope.len_lines());
    let mut found = Vec::new();
    for number in (first..line + 1).rev().chain(line + 1..last) {
        let text = rope.line(number).to_string();
        for (at, _) in text.match_indices('.') {
            let before = &text[..at];
            let start = before.trim_end_matches(|c: char| c.is_alphanumeric() || c == '_').len();
            let word = &before[start..];
            let preceded_by_dot = before[..start].ends_with('.');
            if !word.is_empty() && !preceded_by_dot && imported.contains(word) && !found.iter().any(|w| w == word) {
                found.push(word.to_string());
            }
        }
    }
    found
}

/// The module the cursor's line imports names from, when the cursor is after its name
/// (`from ._types import |`, `use crate::store::{|`): its top-level names are what comes next.
fn module_imported_at_cursor(cursor: &Cursor) -> Option<String> {
    let rope = cursor.rope;
    let at = cursor.cursor.min(rope.len_bytes());
    let line_start = rope.line_to_byte(rope.byte_to_line(at));
    let before = rope.byte_slice(line_start..at).to_string();
    let before = before.trim_start();
    let path = match cursor.language {
        Language::Python => before.strip_prefix("from ")?.split_once(" import")?.0,
        Language::Rust => {
            let path = before.strip_prefix("pub ").unwrap_or(before).strip_prefix("use ")?;
            path.rsplit_once("::")?.0
        }
        _ => return None,
    };
    let module = path.rsplit(['.', ':']).next()?.trim();
    (!module.is_empty() && module.chars().all(|c| c.is_alphanumeric() || c == '_')).then(|| module.to_string())
}

/// The lower-case parts of an identifier (`IntRange` → `int`, `range`; `to_bytes` → `to`,
/// `bytes`), at least 3 letters long.
fn subwords(word: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in word.chars() {
        let boundary = c == '_' || c.is_ascii_digit() || (c.is_uppercase() && previous_lower);
        if boundary && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
        }
        if c.is_alphabetic() {
            current.extend(c.to_lowercase());
        }
        previous_lower = c.is_lowercase();
    }
    parts.push(current);
    parts.retain(|part| part.len() >= 3);
    parts
}

/// How many word parts of a definition's first line the query shares.
pub(super) fn shared_subwords(line: &str, query_subwords: &HashSet<String>) -> usize {
    let parts: HashSet<String> = terms(line).iter().flat_map(|(word, _)| subwords(word)).collect();
    parts.intersection(query_subwords).count()
}

/// A signature line cut to `MEMBER_LINE_BYTES` at a character boundary, marked with `...`.
pub(super) fn cut_line(line: &str) -> String {
    if line.len() <= MEMBER_LINE_BYTES {
        return line.to_string();
    }
    let mut end = MEMBER_LINE_BYTES - 3;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

/// Whether a definition's first line defines a private name (`def _helper`, `class _Base`,
/// `_CACHE = ...`): the first word after the declaration keywords starts with `_`.
pub(super) fn defines_private_name(line: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "async",
        "def",
        "class",
        "pub",
        "fn",
        "struct",
        "enum",
        "trait",
        "type",
        "const",
        "static",
        "let",
        "var",
        "function",
        "export",
        "default",
        "interface",
        "func",
        "mod",
    ];
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
        .find(|word| !KEYWORDS.contains(word))
        .is_some_and(|word| word.starts_with('_'))
}

/// The indexed file a module name means: a file named after it (or a folder's `__init__`,
/// `mod` or `index` file), the one nearest the current file when there are several.
fn module_file(index: &Index, name: &str, current: Option<&Path>) -> Option<FileId> {
    let is_module = |path: &Path| {
        let stem = file_stem(path);
        stem == name
            || matches!(stem.as_str(), "__init__" | "mod" | "index")
                && path.parent().is_some_and(|folder| file_stem(folder) == name)
    };
    let shared = |path: &Path| {
        current.map_or(0, |current| current.components().zip(path.components()).take_while(|(a, b)| a == b).count())
    };
    index
        .files()
        .filter(|(_, path)| Some(*path) != current && is_module(path))
        .max_by(|a, b| shared(a.1).cmp(&shared(b.1)).then_with(|| b.1.cmp(a.1)))
        .map(|(id, _)| id)
}

/// The top-level definitions of the modules used by attribute near the cursor, one signature
/// line each, the names most used across the workspace first: the vocabulary the code after
/// `module.` chooses from.
fn members(index: &Index, cursor: &Cursor, texts: &mut dyn Texts, budget: usize, taken: &[Snippet]) -> Vec<Snippet> {
    let modules = imported_modules(cursor);
    let query_subwords: HashSet<String> =
        terms(&query_text(cursor)).iter().flat_map(|(word, _)| subwords(word)).collect();
    let imported: Vec<String> = modules.iter().cloned().collect();
    let unbound: HashSet<u32> =
        unbound_names(index, cursor, &imported).iter().filter_map(|name| index.term(name)).collect();
    let mut snippets = Vec::new();
    let mut spent = 0;
    let at_cursor = module_imported_at_cursor(cursor);
    let used = namespaces_used(cursor, &modules).into_iter().filter(|name| Some(name) != at_cursor.as_ref());
    for name in at_cursor.clone().into_iter().chain(used) {
        let Some(file_id) = module_file(index, &name, cursor.path) else { continue };
        let Some(file) = index.file(file_id) else { continue };
        if snippets.iter().any(|snippet: &Snippet| snippet.path == file.path) {
            continue;
        }
        // Definitions already shown whole are not listed again.
        let shown = |line: u32| {
            taken.iter().any(|snippet| snippet.path == file.path && snippet.lines.contains(&(line as usize)))
        };
        let Some(text) = texts.text(&file.path) else { continue };
        let mut entries: Vec<(usize, usize, u32, String)> = file
            .defined()
            .iter()
            .flat_map(|&term| index.definitions(term).iter().filter(|d| d.file == file_id).map(move |d| (term, d)))
            .filter_map(|(term, definition)| {
                let first_line = text.get(definition.bytes.start as usize..)?.lines().next()?.trim_end();
                let before = text.get(..definition.bytes.start as usize)?;
                let top_level = before.is_empty() || before.ends_with('\n');
                let wanted = top_level && !shown(definition.line) && !first_line.is_empty();
                (wanted && !defines_private_name(first_line)).then(|| {
                    // A name the file uses without binding it first: it is about to be imported.
                    let relevance =
                        if unbound.contains(&term) { usize::MAX } else { shared_subwords(first_line, &query_subwords) };
                    (relevance, index.postings(term).len(), definition.line, cut_line(first_line))
                })
            })
            .collect();
        // Names sharing word parts with the code around the cursor first, then the names most
        // used across the workspace.
        entries.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        entries.dedup_by(|a, b| a.3 == b.3);
        let entries = entries.into_iter().map(|(_, _, line, signature)| (line, signature));
        let (kept, size) = fit_lines(entries, budget.saturating_sub(spent));
        if kept.is_empty() {
            continue;
        }
        spent += size;
        let first = kept[0].0 as usize;
        let last = kept[kept.len() - 1].0 as usize;
        snippets.push(Snippet {
            kind: "members",
            path: file.path.clone(),
            lines: first..last + 1,
            detail: name,
            text: kept.into_iter().map(|(_, signature)| signature).collect::<Vec<_>>().join("\n"),
        });
    }
    snippets
}

/// The (line, text) entries, in order of priority, that fit `room` bytes (a newline each),
/// without repeats, in file order (as the file reads); and their size.
pub(super) fn fit_lines(entries: impl Iterator<Item = (u32, String)>, room: usize) -> (Vec<(u32, String)>, usize) {
    let mut kept: Vec<(u32, String)> = Vec::new();
    let mut size = 0;
    for (line, text) in entries {
        if kept.iter().all(|(_, kept_text)| *kept_text != text) && size + text.len() < room {
            size += text.len() + 1;
            kept.push((line, text));
        }
    }
    kept.sort();
    (kept, size)
}

/// The `count` best BM25 scores of the chunks sharing identifiers with `query`, best first,
/// outside `current`. Scores are summed in a dense array indexed by chunk id (no hashing per
/// posting), and only the best are sorted.
pub(crate) fn similar_chunks(index: &Index, query: &str, current: Option<FileId>, count: usize) -> Vec<(u32, f64)> {
    let chunk_count = index.chunk_count().max(1) as f64;
    let average = index.average_chunk_length().max(1.0);
    // The rarest words of the query carry its meaning; words in most chunks (`self`, `return`)
    // say little and cost the most to score.
    let mut query_terms: Vec<(f64, u16, &[u32])> = terms(query)
        .into_iter()
        .filter_map(|(word, query_count)| {
            let postings = index.postings(index.term(&word)?);
            let frequency = postings.len() as f64;
            (frequency <= (chunk_count * COMMON_TERM_SHARE).max(50.0)).then_some((frequency, query_count, postings))
        })
        .collect();
    query_terms.sort_by(|a, b| a.0.total_cmp(&b.0));
    query_terms.truncate(MAX_QUERY_TERMS);
    let mut scores: Vec<f32> = vec![0.0; index.chunk_slots()];
    let mut touched: Vec<u32> = Vec::new();
    for (frequency, query_count, postings) in query_terms {
        let idf = ((chunk_count - frequency + 0.5) / (frequency + 0.5) + 1.0).ln();
        let weight = idf * (BM25_K1 + 1.0) * f64::from(query_count.min(3));
        for &posting in postings {
            let (chunk_id, count) = (posting_chunk(posting), posting_count(posting));
            let Some(chunk) = index.chunk(chunk_id) else { continue };
            if Some(chunk.file) == current {
                continue;
            }
            let tf = f64::from(count);
            let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * f64::from(chunk.length) / average);
            let slot = &mut scores[chunk_id as usize];
            if *slot == 0.0 {
                touched.push(chunk_id);
            }
            *slot += (weight * tf / (tf + norm)) as f32;
        }
    }
    let by_score = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut ranked: Vec<(u32, f64)> = touched.into_iter().map(|id| (id, f64::from(scores[id as usize]))).collect();
    if ranked.len() > count && count > 0 {
        ranked.select_nth_unstable_by(count - 1, by_score);
        ranked.truncate(count);
    }
    ranked.sort_by(by_score);
    ranked
}

/// The `SIMILAR_WINDOW_LINES` lines of `chunk_text` sharing the most identifiers with `query`.
fn best_window(chunk_text: &str, query_words: &HashSet<String>) -> (usize, String) {
    let lines: Vec<&str> = chunk_text.split_inclusive('\n').collect();
    if lines.len() <= SIMILAR_WINDOW_LINES {
        return (0, chunk_text.trim_end().to_string());
    }
    let line_hits: Vec<usize> =
        lines.iter().map(|line| terms(line).iter().filter(|(word, _)| query_words.contains(word)).count()).collect();
    let best_start = (0..=lines.len() - SIMILAR_WINDOW_LINES)
        .max_by_key(|start| {
            (line_hits[*start..*start + SIMILAR_WINDOW_LINES].iter().sum::<usize>(), usize::MAX - start)
        })
        .unwrap_or(0);
    (best_start, lines[best_start..best_start + SIMILAR_WINDOW_LINES].concat().trim_end().to_string())
}

/// The code around the cursor the similarity query is made of.
fn query_text(cursor: &Cursor) -> String {
    let rope = cursor.rope;
    let line = rope.byte_to_line(cursor.cursor.min(rope.len_bytes()));
    let start = rope.line_to_byte(line.saturating_sub(QUERY_LINES_BEFORE));
    let end = rope.line_to_byte((line + QUERY_LINES_AFTER + 1).min(rope.len_lines()));
    rope.byte_slice(start..end).to_string()
}

/// The best similar chunks, one per file, as windows that fit `budget`.
fn similar(index: &Index, cursor: &Cursor, texts: &mut dyn Texts, budget: usize, taken: &[Snippet]) -> Vec<Snippet> {
    let current = cursor.path.and_then(|path| index.file_id(path));
    let query = query_text(cursor);
    let query_words: HashSet<String> = terms(&query).into_iter().map(|(word, _)| word).collect();
    let mut files_used: HashSet<FileId> = HashSet::new();
    let mut snippets = Vec::new();
    let mut spent = 0;
    let ranked = similar_chunks(index, &query, current, SIMILAR_CANDIDATES);
    let best = ranked.first().map_or(0.0, |(_, score)| *score);
    // Far below the best match, a chunk shares only common words with the cursor's code.
    let good_enough = ranked.into_iter().filter(|(_, score)| *score >= best * MIN_SHARE_OF_BEST_SCORE);
    for (chunk_id, score) in good_enough {
        let Some(chunk) = index.chunk(chunk_id) else { continue };
        let Some(file) = index.file(chunk.file) else { continue };
        if !files_used.insert(chunk.file) {
            continue;
        }
        let Some(text) = texts.text(&file.path) else { continue };
        let Some(chunk_text) = text.get(chunk.bytes.start as usize..chunk.bytes.end as usize) else { continue };
        let (offset, window) = best_window(chunk_text, &query_words);
        let first = chunk.lines.start as usize + offset;
        let lines = first..first + window.lines().count();
        let overlaps = |snippet: &Snippet| {
            snippet.path == file.path && snippet.lines.start < lines.end && lines.start < snippet.lines.end
        };
        if window.is_empty() || taken.iter().any(overlaps) || spent + window.len() > budget {
            continue;
        }
        spent += window.len();
        snippets.push(Snippet {
            kind: "similar",
            path: file.path.clone(),
            lines,
            detail: format!("{score:.1}"),
            text: window,
        });
        if snippets.len() == 2 {
            break;
        }
    }
    snippets
}

/// Everything retrieved for `cursor` within `budget` bytes: definitions, members of modules
/// used by attribute, methods of the receivers' classes, similar chunks, then recent regions
/// of other files.
pub(crate) fn retrieve(
    index: &Index,
    cursor: &Cursor,
    ring: &Ring,
    texts: &mut dyn Texts,
    budget: usize,
) -> Vec<Snippet> {
    let definition_budget = (budget as f64 * DEFINITIONS_SHARE) as usize;
    let mut snippets = definitions(index, cursor, texts, definition_budget);
    let members = members(index, cursor, texts, (budget as f64 * MEMBERS_SHARE) as usize, &snippets);
    snippets.extend(members);
    let spent: usize = snippets.iter().map(|snippet| snippet.text.len()).sum();
    let methods_budget = ((budget as f64 * METHODS_SHARE) as usize).min(budget.saturating_sub(spent));
    let query_subwords: HashSet<String> =
        terms(&query_text(cursor)).iter().flat_map(|(word, _)| subwords(word)).collect();
    let methods = receivers::methods(index, cursor, texts, methods_budget, &snippets, &query_subwords);
    snippets.extend(methods);
    let spent: usize = snippets.iter().map(|snippet| snippet.text.len()).sum();
    let similar = similar(index, cursor, texts, budget.saturating_sub(spent) * 2 / 3, &snippets);
    snippets.extend(similar);
    let spent: usize = snippets.iter().map(|snippet| snippet.text.len()).sum();
    let mut remaining = budget.saturating_sub(spent);
    for region in ring.recent(cursor.path) {
        let overlaps = snippets.iter().any(|snippet| {
            snippet.path == region.path
                && snippet.lines.start < region.lines.end
                && region.lines.start < snippet.lines.end
        });
        if overlaps || region.text.len() > remaining {
            continue;
        }
        remaining -= region.text.len();
        snippets.push(Snippet {
            kind: "recent",
            path: region.path.clone(),
            lines: region.lines.clone(),
            detail: region.reason.to_string(),
            text: region.text.clone(),
        });
    }
    // Import lines the file is missing: offered on import lines, not shown in the prompt.
    snippets.extend(super::imports::candidates(index, cursor));
    snippets
}
