//! Go.

use super::{Apostrophe, Blocks, DocStyle, QuerySources, Spec, TestLayout};
use crate::syntax::Language;

pub(super) static SPEC: Spec = Spec {
    language: Language::Go,
    name: "go",
    display_name: "Go",
    language_ids: &["go"],
    extensions: &["go"],
    grammar: || tree_sitter_go::LANGUAGE.into(),
    tags: &[tree_sitter_go::TAGS_QUERY],
    queries: QuerySources {
        scopes: &[include_str!("../../../queries/go/scopes.scm")],
        imports: include_str!("../../../queries/go/imports.scm"),
        docs: include_str!("../../../queries/go/docs.scm"),
        tests: Some(include_str!("../../../queries/go/tests.scm")),
    },
    fence: "go",
    line_comment: "//",
    // Go has no semicolons to add; `go func() {` and `defer func() {` call their literal.
    blocks: Blocks::Braces { semicolons: false },
    apostrophe: Apostrophe::Quote,
    top_level_starts: &["\nfunc ", "\ntype ", "\nimport "],
    doc: DocStyle::GoDoc,
    tests: Some(TestLayout::Go),
};
