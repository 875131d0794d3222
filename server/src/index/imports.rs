//! Import lines the file is missing ("auto-import", Python): the names its code uses without
//! binding them that another file of the workspace defines at its top level, grouped by module,
//! each group as the `from … import …` line the file's own imports call for (relative or
//! absolute as they are; names sorted when they sort theirs, else in order of first use). Every
//! name is one the symbol table has a top-level definition of in that module, so a candidate
//! is true by construction; the completion pipeline offers it on import lines
//! (`completion::imports`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::retrieve::{Cursor, Snippet, free_words, preorder};
use super::store::{FileId, Index};
use crate::syntax::Language;

/// Python's builtins: a name the file uses without binding it is one of these, or missing.
const BUILTINS: &str = "ArithmeticError AssertionError AttributeError BaseException BaseExceptionGroup BlockingIOError \
     BrokenPipeError BufferError BytesWarning ChildProcessError ConnectionAbortedError \
     ConnectionError ConnectionRefusedError ConnectionResetError DeprecationWarning EOFError \
     Ellipsis EncodingWarning EnvironmentError Exception ExceptionGroup False FileExistsError \
     FileNotFoundError FloatingPointError FutureWarning GeneratorExit IOError ImportError \
     ImportWarning IndentationError IndexError InterruptedError IsADirectoryError KeyError \
     KeyboardInterrupt LookupError MemoryError ModuleNotFoundError NameError None NotADirectoryError \
     NotImplemented NotImplementedError OSError OverflowError PendingDeprecationWarning \
     PermissionError ProcessLookupError RecursionError ReferenceError ResourceWarning RuntimeError \
     RuntimeWarning StopAsyncIteration StopIteration SyntaxError SyntaxWarning SystemError \
     SystemExit TabError TimeoutError True TypeError UnboundLocalError UnicodeDecodeError \
     UnicodeEncodeError UnicodeError UnicodeTranslateError UnicodeWarning UserWarning ValueError \
     Warning ZeroDivisionError abs aiter all anext any ascii bin bool breakpoint bytearray bytes \
     callable chr classmethod compile complex copyright credits delattr dict dir divmod enumerate \
     eval exec exit filter float format frozenset getattr globals hasattr hash help hex id input int \
     isinstance issubclass iter len license list locals map max memoryview min next object oct open \
     ord pow print property quit range repr reversed round set setattr slice sorted staticmethod str \
     sum super tuple type vars zip self cls __name__ __file__ __doc__ __all__ __spec__ __package__ \
     __path__ __builtins__ __debug__ __version__";
/// A name defined at the top level of more files than this is too ambiguous to import by name.
const MAX_DEFINING_FILES: usize = 4;
/// Unbound names resolved at most, and import lines proposed at most.
const MAX_NAMES: usize = 24;
const MAX_LINES: usize = 4;

/// One name to import: from `file`, `name`, bound in the file as `alias` when that differs.
struct Needed {
    file: FileId,
    name: String,
    alias: Option<String>,
    line: u32,
}

/// What the file's own imports say about its style.
#[derive(Default)]
struct Style {
    /// `from` imports of the file that are relative, and absolute ones of its own package.
    relative: usize,
    absolute_own_package: usize,
    /// How every `from … import a, b` with several names orders them (when there is one).
    order: Option<NameOrder>,
    star_import: bool,
    /// All words of the file's import statements (bound names, modules).
    words: HashSet<String>,
}

/// How a file sorts the names of an import line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameOrder {
    /// isort's and Ruff's default: constants, then classes, then the rest, each case-insensitively.
    ByType,
    /// Plain string order.
    Plain,
}

impl NameOrder {
    fn key(self, name: &str) -> (u8, String) {
        match self {
            NameOrder::Plain => (0, name.to_string()),
            NameOrder::ByType => {
                let letters = name.trim_start_matches('_');
                let rank = if letters.len() > 1 && !letters.chars().any(char::is_lowercase) {
                    0
                } else if letters.starts_with(char::is_uppercase) {
                    1
                } else {
                    2
                };
                (rank, name.to_lowercase())
            }
        }
    }

    fn sorts(self, names: &[String]) -> bool {
        names.windows(2).all(|pair| self.key(&pair[0]) <= self.key(&pair[1]))
    }
}

/// The import lines the file at `cursor` is missing, as `import` snippets (the statement as
/// text, the module as detail, the first name's definition as lines), in order of first use.
pub(super) fn candidates(index: &Index, cursor: &Cursor) -> Vec<Snippet> {
    let (Language::Python, Some(tree), Some(path)) = (cursor.language, cursor.tree, cursor.path) else {
        return Vec::new();
    };
    let Some(current) = index.file_id(path) else { return Vec::new() };
    let style = style_of(cursor, tree);
    if style.star_import {
        return Vec::new();
    }
    let defined_here: HashSet<u32> =
        index.file(current).map_or_else(HashSet::new, |file| file.defined().iter().copied().collect());
    let mut used = free_words(cursor);
    for name in exported_names(cursor) {
        if !used.contains(&name) {
            used.push(name);
        }
    }
    let unbound = used.into_iter().filter(|word| {
        !BUILTINS.split_whitespace().any(|builtin| builtin == word)
            && !style.words.contains(word)
            && !index.term(word).is_some_and(|term| defined_here.contains(&term))
    });
    let mut needed: Vec<Needed> = Vec::new();
    for word in unbound.take(MAX_NAMES) {
        if let Some(found) = resolve_name(index, &word, current, path, &style) {
            needed.push(found);
        }
    }
    let mut modules: Vec<FileId> = Vec::new();
    for found in &needed {
        if !modules.contains(&found.file) {
            modules.push(found.file);
        }
    }
    let mut snippets = Vec::new();
    for file_id in modules.into_iter().take(MAX_LINES) {
        let Some(module_path) = index.file(file_id).map(|file| file.path.clone()) else { continue };
        let prefer_relative = style.relative > style.absolute_own_package
            || (style.relative == style.absolute_own_package && style.relative > 0)
            || (style.relative == 0 && style.absolute_own_package == 0);
        let Some(module) = module_name(path, &module_path, prefer_relative) else { continue };
        // A file importing its own package both ways gets the other form too, for an import
        // line typed in that form (`from fsspec.|` where most imports are relative).
        let mixed = style.relative > 0 && style.absolute_own_package > 0;
        let other = module_name(path, &module_path, !prefer_relative).filter(|other| mixed && *other != module);
        let mut names: Vec<&Needed> = needed.iter().filter(|found| found.file == file_id).collect();
        if let Some(order) = style.order {
            names.sort_by_key(|found| order.key(&found.name));
        }
        let items: Vec<String> = names
            .iter()
            .map(|found| match &found.alias {
                Some(alias) => format!("{} as {alias}", found.name),
                None => found.name.clone(),
            })
            .collect();
        let line = names[0].line as usize;
        for module in std::iter::once(module).chain(other) {
            snippets.push(Snippet {
                kind: "import",
                path: module_path.clone(),
                lines: line..line + 1,
                detail: module.clone(),
                text: format!("from {module} import {}", items.join(", ")),
            });
        }
    }
    snippets
}

/// The names listed in the file's `__all__` (what a package's `__init__` re-exports).
fn exported_names(cursor: &Cursor) -> Vec<String> {
    let text = cursor.rope.to_string();
    let Some(at) = text.find("__all__") else { return Vec::new() };
    let rest = &text[at + "__all__".len()..];
    let Some(rest) = rest.trim_start().strip_prefix('=').or_else(|| rest.trim_start().strip_prefix("+=")) else {
        return Vec::new();
    };
    let rest = rest.trim_start();
    let close = match rest.chars().next() {
        Some('[') => ']',
        Some('(') => ')',
        _ => return Vec::new(),
    };
    let body = &rest[1..rest.find(close).unwrap_or(rest.len())];
    body.split(',')
        .map(|item| item.trim().trim_matches(|c| c == '"' || c == '\''))
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .map(str::to_string)
        .collect()
}

/// The file's import statements (anywhere in it): relative or absolute, sorted names, star
/// imports, and their words.
fn style_of(cursor: &Cursor, tree: &tree_sitter::Tree) -> Style {
    let mut style = Style::default();
    let package = cursor.path.and_then(top_package);
    let mut lists: Vec<Vec<String>> = Vec::new();
    for node in preorder(tree) {
        if !matches!(node.kind(), "import_statement" | "import_from_statement" | "future_import_statement") {
            continue;
        }
        let text = cursor.rope.byte_slice(node.byte_range()).to_string();
        style.words.extend(super::store::terms(&text).into_iter().map(|(word, _)| word));
        if node.kind() != "import_from_statement" {
            continue;
        }
        let module =
            node.child_by_field_name("module_name").map(|m| cursor.rope.byte_slice(m.byte_range()).to_string());
        match module.as_deref() {
            Some(module) if module.starts_with('.') => style.relative += 1,
            Some(module) if package.as_deref() == module.split('.').next() => style.absolute_own_package += 1,
            _ => {}
        }
        let mut imported = node.walk();
        let names: Vec<String> = node
            .children_by_field_name("name", &mut imported)
            .map(|name| {
                let name = name.child_by_field_name("name").unwrap_or(name);
                cursor.rope.byte_slice(name.byte_range()).to_string()
            })
            .collect();
        if (0..node.named_child_count())
            .any(|i| node.named_child(i as _).is_some_and(|c| c.kind() == "wildcard_import"))
        {
            style.star_import = true;
        }
        if names.len() >= 2 {
            lists.push(names);
        }
    }
    style.order = [NameOrder::ByType, NameOrder::Plain]
        .into_iter()
        .find(|order| !lists.is_empty() && lists.iter().all(|names| order.sorts(names)));
    style
}

/// The name of the top-level package holding `path` (the highest folder above it with an
/// `__init__.py`, without a gap), if any.
fn top_package(path: &Path) -> Option<String> {
    package_root(path.parent()?).map(|(_, name)| name)
}

/// The highest package folder of `folder` (folders with an `__init__.py` up from it): the folder
/// the package is imported from, and the package's name.
fn package_root(folder: &Path) -> Option<(PathBuf, String)> {
    let mut top = None;
    let mut at = Some(folder);
    while let Some(dir) = at.filter(|dir| dir.join("__init__.py").is_file()) {
        top = Some(dir);
        at = dir.parent();
    }
    let top = top?;
    Some((top.parent()?.to_path_buf(), top.file_name()?.to_string_lossy().into()))
}

/// Where the unbound `word` comes from: for `_word`, a file defining `word` (imported
/// `as _word`); a file defining it at its top level; for a name joining a module's name and a name it
/// defines (`CoreParameter` from `core`, `tqdm_auto` from `auto`), that module.
fn resolve_name(index: &Index, word: &str, current: FileId, path: &Path, style: &Style) -> Option<Needed> {
    let needed = |found: (FileId, u32), name: &str| Needed {
        file: found.0,
        name: name.to_string(),
        alias: (name != word).then(|| word.to_string()),
        line: found.1,
    };
    // `_word` is a module keeping an import private (`import word as _word`): a public `word`
    // comes first, another module's private `_word` only where there is none.
    let bare = word.trim_start_matches('_');
    if bare != word
        && bare.len() >= 2
        && let Some(found) = defining_file(index, bare, current, path, style)
    {
        return Some(needed(found, bare));
    }
    if let Some(found) = defining_file(index, word, current, path, style) {
        return Some(needed(found, word));
    }
    module_alias(index, word, current, path).map(|(file, name, line)| needed((file, line), &name))
}

/// The file (and line) of the top-level definition of `name` outside `current`: the only one,
/// or among a few the one in a module the file already imports from, else the nearest.
fn defining_file(index: &Index, name: &str, current: FileId, path: &Path, style: &Style) -> Option<(FileId, u32)> {
    let term = index.term(name)?;
    let mut files: Vec<(FileId, u32)> = Vec::new();
    for definition in index.definitions(term) {
        if definition.top_level && definition.file != current && !files.iter().any(|(f, _)| *f == definition.file) {
            files.push((definition.file, definition.line));
        }
    }
    if files.is_empty() || files.len() > MAX_DEFINING_FILES {
        return None;
    }
    let score = |file: FileId| {
        let Some(entry) = index.file(file) else { return (false, 0, usize::MAX) };
        let stem = module_stem(&entry.path);
        let shared = path.components().zip(entry.path.components()).take_while(|(a, b)| a == b).count();
        (style.words.contains(&stem), shared, usize::MAX - entry.path.components().count())
    };
    files.into_iter().max_by_key(|(file, _)| score(*file))
}

/// `word` made of a module's name and a name the module defines at its top level:
/// `CoreParameter` (`core`, `Parameter`), `tqdm_auto` (`auto`, `tqdm`), `core_parameter`.
fn module_alias(index: &Index, word: &str, current: FileId, path: &Path) -> Option<(FileId, String, u32)> {
    let mut found = None;
    for (file, module_path) in index.files() {
        if file == current || module_path.extension().is_none_or(|ext| ext != "py") {
            continue;
        }
        let stem = module_stem(module_path);
        let stem = stem.trim_start_matches('_');
        if stem.len() < 2 {
            continue;
        }
        let capitalized = format!("{}{}", stem[..1].to_uppercase(), &stem[1..]);
        let splits = [
            word.strip_prefix(capitalized.as_str()).filter(|rest| rest.starts_with(char::is_uppercase)),
            word.strip_suffix(stem).and_then(|head| head.strip_suffix('_')),
            word.strip_prefix(stem).and_then(|rest| rest.strip_prefix('_')),
        ];
        for name in splits.into_iter().flatten().filter(|name| name.len() >= 2) {
            let Some(term) = index.term(name) else { continue };
            let defined = index.definitions(term).iter().find(|d| d.file == file && d.top_level);
            if let Some(definition) = defined {
                let shared = path.components().zip(module_path.components()).take_while(|(a, b)| a == b).count();
                if found.as_ref().is_none_or(|(_, _, _, best)| shared > *best) {
                    found = Some((file, name.to_string(), definition.line, shared));
                }
            }
        }
    }
    found.map(|(file, name, line, _)| (file, name, line))
}

/// A module file's own name: its stem, or its folder's name for a package's `__init__.py`.
fn module_stem(path: &Path) -> String {
    let stem = path.file_stem().map(|stem| stem.to_string_lossy().to_string()).unwrap_or_default();
    if stem == "__init__" {
        return path.parent().and_then(Path::file_name).map(|name| name.to_string_lossy().into()).unwrap_or_default();
    }
    stem
}

/// The module `target` is imported as from `current`: relative (`._types`,
/// `.._core._sockets`, `.`) when `relative` is asked for and both files are in one package,
/// else absolute (`_pytest.main`).
fn module_name(current: &Path, target: &Path, relative: bool) -> Option<String> {
    let target_parts: Vec<String> = {
        let mut parts: Vec<String> =
            target.parent()?.components().map(|c| c.as_os_str().to_string_lossy().into()).collect();
        let stem = target.file_stem()?.to_string_lossy().to_string();
        if stem != "__init__" {
            parts.push(stem);
        }
        parts
    };
    let current_folder = current.parent()?;
    let (root, _) = package_root(current_folder).unzip();
    let same_package = root.is_some() && package_root(target.parent()?).map(|(r, _)| r) == root;
    if relative && same_package {
        let here: Vec<String> = current_folder.components().map(|c| c.as_os_str().to_string_lossy().into()).collect();
        let shared = here.iter().zip(&target_parts).take_while(|(a, b)| a == b).count();
        let dots = ".".repeat(here.len() - shared + 1);
        return Some(format!("{dots}{}", target_parts[shared..].join(".")));
    }
    // Absolute: from the folder the target's package is imported from (or the target's folder).
    let base =
        package_root(target.parent()?).map_or_else(|| target.parent().map(Path::to_path_buf), |(r, _)| Some(r))?;
    let base_len = base.components().count();
    let module = target_parts.get(base_len..)?.join(".");
    (!module.is_empty()).then_some(module)
}
