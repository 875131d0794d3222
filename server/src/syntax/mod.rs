//! Languages nib understands (their facts live in `languages/`, one file each): detection
//! from an LSP `languageId` or a file extension, and (re)parsing straight from a rope.

pub mod languages;
pub mod scopes;

use ropey::Rope;
use tree_sitter::{Parser, Tree};

/// A language with a tree-sitter grammar. Documents in other languages are tracked as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    Rust,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
}

impl Language {
    /// Maps an LSP `languageId` (the identifiers VS Code and Neovim use) to a language.
    pub fn from_language_id(id: &str) -> Option<Self> {
        languages::ALL.iter().find(|spec| spec.language_ids.contains(&id)).map(|spec| spec.language)
    }

    /// Maps a path's extension to a language; the fallback when the `languageId` is unknown.
    pub fn from_path(path: &str) -> Option<Self> {
        let extension = path.rsplit_once('.')?.1;
        languages::ALL.iter().find(|spec| spec.extensions.contains(&extension)).map(|spec| spec.language)
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub(crate) fn grammar(self) -> tree_sitter::Language {
        (self.spec().grammar)()
    }

    /// The language's keywords: the grammar's anonymous tokens that are spelled like words
    /// (`fn`, `let`, `def`, `return`).
    pub(crate) fn keywords(self) -> Vec<String> {
        let grammar = self.grammar();
        let mut keywords = Vec::new();
        for id in 0..grammar.node_kind_count() as u16 {
            if grammar.node_kind_is_named(id) {
                continue;
            }
            let Some(kind) = grammar.node_kind_for_id(id) else { continue };
            if kind.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                keywords.push(kind.to_string());
            }
        }
        keywords
    }

    /// A parser for this language. Grammar versions are pinned in Cargo.toml, so a failure here
    /// is a build defect, not a runtime condition.
    pub fn parser(self) -> Parser {
        let mut parser = Parser::new();
        parser.set_language(&self.grammar()).expect("grammar built against an incompatible tree-sitter");
        parser
    }
}

/// Documents larger than this are tracked as text only: parsing them would stall the server
/// for seconds on every edit, and nothing nib does needs a tree of a generated 10 MB file.
pub const MAX_PARSE_BYTES: usize = 4 * 1024 * 1024;

/// `text` parsed as `language` (generated code, a file read from disk).
pub fn parse_text(language: Language, text: &str) -> Option<Tree> {
    parse(&mut language.parser(), &Rope::from_str(text), None)
}

/// The first top-level node of `tree` that `wanted` accepts.
pub fn find_top_level<'t>(
    tree: &'t Tree,
    wanted: impl Fn(tree_sitter::Node<'t>) -> bool,
) -> Option<tree_sitter::Node<'t>> {
    let root = tree.root_node();
    let mut cursor = root.walk();
    root.children(&mut cursor).find(|node| wanted(*node))
}

/// Whether `node`'s `name` field reads `name` in `source`.
pub fn is_named(node: tree_sitter::Node, source: &str, name: &str) -> bool {
    node.child_by_field_name("name").is_some_and(|n| &source[n.byte_range()] == name)
}

/// Parses `rope`, reusing `old_tree` (already `edit`ed to match `rope`) when given.
pub fn parse(parser: &mut Parser, rope: &Rope, old_tree: Option<&Tree>) -> Option<Tree> {
    if rope.len_bytes() > MAX_PARSE_BYTES {
        return None;
    }
    let mut read = |byte: usize, _position: tree_sitter::Point| -> &[u8] {
        if byte >= rope.len_bytes() {
            return &[];
        }
        let (chunk, chunk_start, _, _) = rope.chunk_at_byte(byte);
        &chunk.as_bytes()[byte - chunk_start..]
    };
    parser.parse_with_options(&mut read, old_tree, None)
}

/// Counts ERROR and MISSING nodes: how much of the file tree-sitter could not make sense of.
pub fn error_count(tree: &Tree) -> usize {
    let mut count = 0;
    let mut cursor = tree.walk();
    loop {
        let node = cursor.node();
        if node.is_error() || node.is_missing() {
            count += 1;
        }
        // Only descend into subtrees that contain errors.
        if node.has_error() && cursor.goto_first_child() {
            continue;
        }
        while !cursor.goto_next_sibling() {
            if !cursor.goto_parent() {
                return count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_languages() {
        assert_eq!(Language::from_language_id("typescriptreact"), Some(Language::Tsx));
        assert_eq!(Language::from_language_id("markdown"), None);
        assert_eq!(Language::from_path("/a/b/c.pyi"), Some(Language::Python));
        assert_eq!(Language::from_path("/a/b.c/Makefile"), None);
        assert_eq!(Language::from_path("main.go"), Some(Language::Go));
    }

    #[test]
    fn every_grammar_parses_its_hello_world() {
        let samples = [
            (Language::Python, "def f(x):\n    return x\n"),
            (Language::Rust, "fn f(x: u8) -> u8 { x }\n"),
            (Language::JavaScript, "function f(x) { return <div>{x}</div>; }\n"),
            (Language::TypeScript, "function f(x: number): number { return x; }\n"),
            (Language::Tsx, "const f = (x: number) => <b>{x}</b>;\n"),
            (Language::Go, "package main\nfunc f(x int) int { return x }\n"),
        ];
        for (language, text) in samples {
            let tree = parse(&mut language.parser(), &Rope::from_str(text), None).unwrap();
            assert_eq!(error_count(&tree), 0, "{language:?}: {}", tree.root_node().to_sexp());
        }
        let broken = parse(&mut Language::Python.parser(), &Rope::from_str("def f(:\n"), None).unwrap();
        assert!(error_count(&broken) > 0);
    }
}
