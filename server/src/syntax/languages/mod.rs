//! Every language nib knows, as data: one file per language holds its grammar, the names
//! editors use for it, its comment and block syntax, how its documentation is written and
//! where its tests go. Features read these facts instead of branching on the language; the
//! few matches on a language that remain are exhaustive, so adding one is a compile error
//! everywhere it matters.

mod c;
mod go;
mod java;
mod javascript;
mod python;
mod rust;

use std::collections::HashMap;
use std::sync::OnceLock;

use tree_sitter::Query;

use super::Language;

/// What nib knows about one language.
pub struct Spec {
    pub language: Language,
    /// The `languageId` nib reports for files of this language (`nib complete`).
    pub name: &'static str,
    /// The name users read in messages ("TypeScript").
    pub display_name: &'static str,
    /// Every LSP `languageId` (VS Code's and Neovim's filetypes) that means this language.
    pub language_ids: &'static [&'static str],
    /// File extensions, without the dot: the fallback when the `languageId` is unknown.
    pub extensions: &'static [&'static str],
    pub grammar: fn() -> tree_sitter::Language,
    /// The grammar crates' tags queries, concatenated: definitions for the workspace index.
    pub tags: &'static [&'static str],
    /// nib's own queries, from `server/queries/<language>/`.
    pub queries: QuerySources,
    /// The Markdown fence name prompts show code under.
    pub fence: &'static str,
    /// What starts a line comment.
    pub line_comment: &'static str,
    pub blocks: Blocks,
    /// What a `'` starts.
    pub apostrophe: Apostrophe,
    /// Line starts that begin a new top-level item: a multi-line completion stops before them.
    pub top_level_starts: &'static [&'static str],
    /// How documentation is written, and so which renderer writes it.
    pub doc: DocStyle,
    /// How and where unit tests are written; `None`: Generate unit tests is not offered.
    pub tests: Option<TestLayout>,
}

/// The text of a language's query files (tree-sitter `.scm`, as in helix's `runtime/queries`).
#[derive(Clone, Copy)]
pub struct QuerySources {
    /// `scopes.scm`, concatenated: `@function`, `@method` and `@class` definitions.
    pub scopes: &'static [&'static str],
    /// `imports.scm`: `@import` statements.
    pub imports: &'static str,
    /// `docs.scm`: `@doc` (documentation: above an item, or first in its body with
    /// `(#set! place "body")`, only on the line directly above with `(#set! adjacent "true")`)
    /// and `@skip` (what may sit between documentation and its item).
    pub docs: &'static str,
    /// `tests.scm`: `@test` functions with their `@name` and, where their text starts
    /// earlier (decorators, attributes), `@start`. `None` where there is no test layout.
    pub tests: Option<&'static str>,
}

/// A language's queries, compiled once.
pub struct Queries {
    pub scopes: Query,
    pub imports: Query,
    pub docs: Query,
    pub tests: Option<Query>,
}

impl Language {
    /// This language's compiled queries. The query files are part of the build and a test
    /// compiles every one, so a failure here is a build defect.
    pub fn queries(self) -> &'static Queries {
        static COMPILED: OnceLock<HashMap<Language, Queries>> = OnceLock::new();
        let compiled = COMPILED.get_or_init(|| ALL.iter().map(|spec| (spec.language, compile(spec))).collect());
        &compiled[&self]
    }
}

fn compile(spec: &Spec) -> Queries {
    let grammar = (spec.grammar)();
    let query = |file: &str, source: &str| {
        Query::new(&grammar, source).unwrap_or_else(|error| panic!("queries/{}/{file}: {error}", spec.name))
    };
    Queries {
        scopes: query("scopes.scm", &spec.queries.scopes.concat()),
        imports: query("imports.scm", spec.queries.imports),
        docs: query("docs.scm", spec.queries.docs),
        tests: spec.queries.tests.map(|source| query("tests.scm", source)),
    }
}

/// How blocks are delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocks {
    /// By indentation after a `:` (Python). Strings may be triple-quoted; comments start `#`.
    Indentation,
    /// By braces, C-style comments. `semicolons`: a statement that assigns or calls a block
    /// (`const f = () => {`) ends with `;` after its closing brace.
    Braces { semicolons: bool },
}

/// What a `'` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apostrophe {
    /// A string, like `"`.
    Quote,
    /// A character literal (`'{'`) or, in Rust, a lifetime (`'a`).
    CharLiteral,
}

/// How documentation is written: each names a renderer in `actions::docstring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocStyle {
    /// A string literal first in the body (Python), in the configured docstring style.
    Docstring,
    /// `///` lines above the item's attributes with `# Errors` / `# Panics` sections (Rust).
    RustDoc,
    /// A `/** ... */` block with `@param name - ...` and `@returns` (JSDoc / TSDoc).
    JsDoc,
    /// `//` sentences that start with the item's name (Go).
    GoDoc,
    /// A `/** ... */` block with `@param name ...`, `@return` and `@throws` (Java).
    Javadoc,
    /// A `/** ... */` block with `@brief`, `@param`, `@return` and `@throws` (C, C++).
    Doxygen,
}

/// The unit-test framework and layout of a language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestLayout {
    /// pytest or unittest under the project's tests tree.
    Python,
    /// `#[cfg(test)] mod tests` in the same file.
    Rust,
    /// `node:test` in a sibling `*.test.js` file (ES module or CommonJS, as the project is).
    JavaScript,
    /// `node:test` in a sibling `*.test.ts` file.
    TypeScript,
    /// `testing` in a sibling `*_test.go` file.
    Go,
}

/// Every language, in the order detection tries them.
pub const ALL: &[&Spec] = &[
    &python::SPEC,
    &rust::SPEC,
    &javascript::JAVASCRIPT,
    &javascript::TYPESCRIPT,
    &javascript::TSX,
    &go::SPEC,
    &java::SPEC,
    &c::C,
    &c::CPP,
];

impl Language {
    /// This language's facts.
    pub fn spec(self) -> &'static Spec {
        match self {
            Language::Python => &python::SPEC,
            Language::Rust => &rust::SPEC,
            Language::JavaScript => &javascript::JAVASCRIPT,
            Language::TypeScript => &javascript::TYPESCRIPT,
            Language::Tsx => &javascript::TSX,
            Language::Go => &go::SPEC,
            Language::Java => &java::SPEC,
            Language::C => &c::C,
            Language::Cpp => &c::CPP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_is_listed_once_and_knows_itself() {
        for (index, spec) in ALL.iter().enumerate() {
            assert!(std::ptr::eq(spec.language.spec(), *spec), "{} is not its language's spec", spec.name);
            assert!(ALL[..index].iter().all(|other| other.language != spec.language), "{} twice", spec.name);
            assert!(spec.language_ids.contains(&spec.name), "{}: its name is not one of its ids", spec.name);
        }
        let ids: Vec<&str> = ALL.iter().flat_map(|spec| spec.language_ids.iter().copied()).collect();
        let extensions: Vec<&str> = ALL.iter().flat_map(|spec| spec.extensions.iter().copied()).collect();
        for list in [&ids, &extensions] {
            let mut unique = list.to_vec();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), list.len(), "an id or extension names two languages: {list:?}");
        }
    }

    #[test]
    fn every_query_compiles_and_captures_what_nib_reads() {
        for spec in ALL {
            let queries = spec.language.queries();
            for name in queries.scopes.capture_names() {
                assert!(["function", "method", "class"].contains(name), "{}: scopes.scm captures @{name}", spec.name);
            }
            assert_eq!(queries.imports.capture_names(), ["import"], "{}: imports.scm", spec.name);
            for name in queries.docs.capture_names() {
                assert!(["doc", "skip"].contains(name), "{}: docs.scm captures @{name}", spec.name);
            }
            assert_eq!(queries.tests.is_some(), spec.tests.is_some(), "{}: tests.scm without a test layout", spec.name);
            if let Some(tests) = &queries.tests {
                let names = tests.capture_names();
                assert!(names.contains(&"test") && names.contains(&"name"), "{}: tests.scm", spec.name);
                for name in names.iter().filter(|name| !name.starts_with('_')) {
                    assert!(["test", "name", "start"].contains(name), "{}: tests.scm captures @{name}", spec.name);
                }
            }
            let tags = Query::new(&(spec.grammar)(), &spec.tags.join("\n"));
            assert!(tags.is_ok(), "{}: the tags query does not compile: {:?}", spec.name, tags.err());
        }
    }

    /// Both editors start nib for exactly the `languageId`s the server understands.
    #[test]
    fn the_editors_filetypes_are_the_servers_languages() {
        let editors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../editors");
        let read = |path: &str| std::fs::read_to_string(editors.join(path)).unwrap();
        let mut server: Vec<String> = ALL
            .iter()
            .flat_map(|spec| spec.language_ids.iter())
            .filter(|id| !NOT_AN_EDITOR_ID.contains(id))
            .map(|id| id.to_string())
            .collect();
        server.sort();
        let quoted = |text: &str, quote: char| -> Vec<String> {
            text.split(quote).skip(1).step_by(2).map(str::to_string).collect()
        };
        let sorted = |mut list: Vec<String>| {
            list.sort();
            list
        };

        let config = read("nvim/lua/nib/config.lua");
        let line = config.lines().find(|line| line.trim_start().starts_with("filetypes =")).expect("nvim filetypes");
        assert_eq!(sorted(quoted(line, '"')), server, "editors/nvim/lua/nib/config.lua filetypes");

        let logic = read("vscode/src/logic.ts");
        let line = logic.lines().find(|line| line.starts_with("export const LANGUAGES")).expect("LANGUAGES");
        assert_eq!(sorted(quoted(line, '\'')), server, "editors/vscode/src/logic.ts LANGUAGES (documentSelector)");

        let package: serde_json::Value = serde_json::from_str(&read("vscode/package.json")).unwrap();
        let activation: Vec<String> = package["activationEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|event| event.as_str()?.strip_prefix("onLanguage:").map(str::to_string))
            .collect();
        assert_eq!(sorted(activation), server, "editors/vscode/package.json activationEvents");
    }

    /// Ids some other client may send that no editor of ours uses as a filetype.
    const NOT_AN_EDITOR_ID: &[&str] = &["jsx", "tsx"];
}
