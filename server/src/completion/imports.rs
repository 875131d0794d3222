//! Grounded import completion ("auto-import" ghost text, Python): on an import line being
//! typed (`from ._ty|`), or on an empty line next to the file's imports, the completion is the
//! rest of an import line the workspace index proposed (`index::imports`: names the file uses
//! without binding them, each defined in that module), instead of the model's guess. Names the
//! buffer has bound since the index answered are left out.

use std::collections::HashSet;

use crate::document::Document;
use crate::syntax::Language;

/// A completion that needs no model: its text and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grounded {
    pub text: String,
    /// The candidate's source (`import:<module file>:<line>:<module>`).
    pub source: String,
}

const IMPORT_STATEMENTS: &[&str] = &["import_statement", "import_from_statement", "future_import_statement"];

/// The import line to offer at `cursor`, from `candidates` ((statement, source) pairs), if the
/// cursor is on an import line that one of them continues, or on an empty line whose nearest
/// non-empty neighbour above or below is an import at the same indentation.
pub fn grounded(document: &Document, cursor: usize, candidates: &[(String, String)]) -> Option<Grounded> {
    if document.language != Some(Language::Python) || candidates.is_empty() {
        return None;
    }
    let rope = &document.rope;
    let line = rope.byte_to_line(cursor);
    let line_text = rope.line(line).to_string();
    let column = cursor - rope.line_to_byte(line);
    let (before, after) = line_text.split_at(column.min(line_text.len()));
    if !after.trim().is_empty() {
        return None;
    }
    let typed = before.trim_start();
    let indent = before.len() - typed.len();
    let starts_import = typed.is_empty() || typed.starts_with("from ");
    if !starts_import || (typed.is_empty() && !next_to_imports(document, line, indent)) {
        return None;
    }
    let bound = bound_by_imports(document, line);
    let live: Vec<(String, &str, String)> = candidates
        .iter()
        .filter_map(|(statement, source)| {
            let statement = without_bound_names(statement, &bound)?;
            let module = statement.strip_prefix("from ")?.split(' ').next()?.to_string();
            statement.starts_with(typed).then_some((statement, source.as_str(), module))
        })
        .collect();
    let (above, below) = neighbour_modules(document, line);
    // Where the file's imports are sorted by module, the one that sorts between its neighbours.
    let fits = |module: &str| match (&above, &below) {
        (Some(above), Some(below)) if above <= below => {
            sort_key(above) <= sort_key(module) && sort_key(module) <= sort_key(below)
        }
        _ => false,
    };
    let chosen = live.iter().find(|(_, _, module)| fits(module)).or(live.first())?;
    let text = chosen.0[typed.len()..].to_string();
    (!text.is_empty()).then(|| Grounded { text, source: chosen.1.to_string() })
}

/// How isort orders modules within a section: case-insensitively, dots first.
fn sort_key(module: &str) -> String {
    module.to_lowercase()
}

/// Whether the nearest non-empty line above or below `line` is part of an import statement
/// indented by `indent`.
fn next_to_imports(document: &Document, line: usize, indent: usize) -> bool {
    let rope = &document.rope;
    let non_empty = |number: &usize| !rope.line(*number).to_string().trim().is_empty();
    let above = (0..line).rev().find(non_empty);
    let below = (line + 1..rope.len_lines()).find(non_empty);
    [above, below].into_iter().flatten().any(|number| {
        let text = rope.line(number).to_string();
        let own_indent = text.len() - text.trim_start().len();
        import_statement_at(document, number).is_some_and(|start_indent| start_indent == indent)
            && (own_indent == indent || text.trim_start().starts_with(')'))
    })
}

/// The indentation of the import statement that line `number` is part of, if it is one.
fn import_statement_at(document: &Document, number: usize) -> Option<usize> {
    let rope = &document.rope;
    let tree = document.tree()?;
    let text = rope.line(number).to_string();
    let first = rope.line_to_byte(number) + (text.len() - text.trim_start().len());
    let mut node = tree.root_node().descendant_for_byte_range(first, first)?;
    loop {
        if IMPORT_STATEMENTS.contains(&node.kind()) {
            return Some(node.start_position().column);
        }
        node = node.parent()?;
    }
}

/// The words of the file's import statements, the cursor's line left out: names it binds.
fn bound_by_imports(document: &Document, cursor_line: usize) -> HashSet<String> {
    let rope = &document.rope;
    let mut words = HashSet::new();
    for number in 0..rope.len_lines() {
        if number != cursor_line && import_statement_at(document, number).is_some() {
            let text = rope.line(number).to_string();
            words.extend(
                text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).map(str::to_string),
            );
        }
    }
    words
}

/// `statement` without the names (or aliases) already bound; `None` when none is left.
fn without_bound_names(statement: &str, bound: &HashSet<String>) -> Option<String> {
    let (head, names) = statement.split_once(" import ")?;
    let kept: Vec<&str> =
        names.split(", ").filter(|item| !bound.contains(item.rsplit(' ').next().unwrap_or(item))).collect();
    (!kept.is_empty()).then(|| format!("{head} import {}", kept.join(", ")))
}

/// The modules of the nearest `from … import` lines above and below `line`.
fn neighbour_modules(document: &Document, line: usize) -> (Option<String>, Option<String>) {
    let rope = &document.rope;
    let module_of = |number: usize| {
        let text = rope.line(number).to_string();
        let module = text.trim().strip_prefix("from ")?.split(' ').next()?.to_string();
        Some(module)
    };
    let is_code = |number: &usize| !rope.line(*number).to_string().trim().is_empty();
    let above = (0..line).rev().find(is_code).and_then(module_of);
    let below = (line + 1..rope.len_lines()).find(is_code).and_then(module_of);
    (above, below)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANDIDATES: &[(&str, &str)] = &[
        ("from ._types import is_prepared as _is_prepared", "import:_types.py:1-1:._types"),
        ("from .core import Parameter", "import:core.py:3-3:.core"),
    ];

    /// The grounded completion at `$0` in `source` (a Python file).
    fn at(source: &str) -> Option<String> {
        let cursor = source.find("$0").unwrap();
        let document = Document::new("file:///w/pkg/a.py".into(), "python".into(), 1, &source.replacen("$0", "", 1));
        let candidates: Vec<(String, String)> =
            CANDIDATES.iter().map(|(statement, source)| (statement.to_string(), source.to_string())).collect();
        grounded(&document, cursor, &candidates).map(|grounded| grounded.text)
    }

    #[test]
    fn an_import_line_being_typed_is_completed_from_the_candidate_it_starts() {
        let body = "\n\ndef f(r):\n    return _is_prepared(r), Parameter()\n";
        assert_eq!(
            at(&format!("import os\nfrom ._ty$0{body}")).as_deref(),
            Some("pes import is_prepared as _is_prepared")
        );
        assert_eq!(at(&format!("import os\nfrom .core import $0{body}")).as_deref(), Some("Parameter"));
        assert_eq!(at(&format!("import os\nfrom .other import $0{body}")), None, "no candidate starts so");
        assert_eq!(at(&format!("import os\nimport $0{body}")), None, "only `from` lines are proposed");
    }

    #[test]
    fn an_empty_line_next_to_the_imports_gets_the_line_that_sorts_there() {
        let body = "\n\ndef f(r):\n    return _is_prepared(r), Parameter()\n";
        // Between `._internal` and `.adapters` (sorted): `._types`; between `.auth` and `.exceptions`: `.core`.
        let sorted = format!("from ._internal import x\n$0\nfrom .adapters import y\nfrom .auth import z\n{body}");
        assert_eq!(at(&sorted).as_deref(), Some("from ._types import is_prepared as _is_prepared"));
        let sorted = format!("from ._internal import x\nfrom .auth import z\n$0\nfrom .exceptions import y\n{body}");
        assert_eq!(at(&sorted).as_deref(), Some("from .core import Parameter"));
        // After the last import: the first candidate (the names used first).
        assert_eq!(
            at(&format!("import os\n$0\n{body}")).as_deref(),
            Some("from ._types import is_prepared as _is_prepared")
        );
    }

    #[test]
    fn no_import_is_offered_away_from_the_imports_or_for_names_already_bound() {
        // An empty line in a function body, far from any import.
        assert_eq!(at("import os\n\n\ndef f(r):\n    x = 1\n    $0\n    return _is_prepared(r)\n"), None);
        // Code after the cursor on its line.
        assert_eq!(at("import os\n$0x = 1\n"), None);
        // The buffer has bound `_is_prepared` since the index answered: only `.core` is left.
        let bound = "from ._types import is_prepared as _is_prepared\n$0\n\ndef f(r):\n    return Parameter()\n";
        assert_eq!(at(bound).as_deref(), Some("from .core import Parameter"));
    }
}
