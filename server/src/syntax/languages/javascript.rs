//! JavaScript, TypeScript and TSX: one family that shares its syntax queries, comments,
//! JSDoc and `node:test` layout.

use super::{Apostrophe, Blocks, DocStyle, QuerySources, Spec, TestLayout};
use crate::syntax::Language;

const ECMA_SCOPES: &str = include_str!("../../../queries/ecma/scopes.scm");
const ECMA_IMPORTS: &str = include_str!("../../../queries/ecma/imports.scm");
const ECMA_DOCS: &str = include_str!("../../../queries/ecma/docs.scm");
const ECMA_TESTS: &str = include_str!("../../../queries/ecma/tests.scm");

const TOP_LEVEL_STARTS: &[&str] = &["\nfunction ", "\nexport ", "\nclass ", "\nimport "];

pub(super) static JAVASCRIPT: Spec = Spec {
    language: Language::JavaScript,
    name: "javascript",
    display_name: "JavaScript",
    language_ids: &["javascript", "javascriptreact", "jsx"],
    extensions: &["js", "mjs", "cjs", "jsx"],
    grammar: || tree_sitter_javascript::LANGUAGE.into(),
    tags: &[tree_sitter_javascript::TAGS_QUERY],
    queries: QuerySources { scopes: &[ECMA_SCOPES], imports: ECMA_IMPORTS, docs: ECMA_DOCS, tests: Some(ECMA_TESTS) },
    fence: "javascript",
    line_comment: "//",
    blocks: Blocks::Braces { semicolons: true },
    apostrophe: Apostrophe::Quote,
    top_level_starts: TOP_LEVEL_STARTS,
    doc: DocStyle::JsDoc,
    tests: Some(TestLayout::JavaScript),
};

/// TypeScript's tags query adds its own items (interfaces, signatures) to JavaScript's.
const TYPESCRIPT_TAGS: &[&str] = &[tree_sitter_javascript::TAGS_QUERY, tree_sitter_typescript::TAGS_QUERY];

pub(super) static TYPESCRIPT: Spec = Spec {
    language: Language::TypeScript,
    name: "typescript",
    display_name: "TypeScript",
    language_ids: &["typescript"],
    extensions: &["ts", "mts", "cts"],
    grammar: || tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
    tags: TYPESCRIPT_TAGS,
    queries: QuerySources {
        scopes: &[ECMA_SCOPES, include_str!("../../../queries/typescript/scopes.scm")],
        imports: ECMA_IMPORTS,
        docs: ECMA_DOCS,
        tests: Some(ECMA_TESTS),
    },
    fence: "typescript",
    tests: Some(TestLayout::TypeScript),
    ..JAVASCRIPT
};

pub(super) static TSX: Spec = Spec {
    language: Language::Tsx,
    name: "typescriptreact",
    display_name: "TypeScript",
    language_ids: &["typescriptreact", "tsx"],
    extensions: &["tsx"],
    grammar: || tree_sitter_typescript::LANGUAGE_TSX.into(),
    ..TYPESCRIPT
};
