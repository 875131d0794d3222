//! Python.

use super::{Apostrophe, Blocks, DocStyle, QuerySources, Spec, TestLayout};
use crate::syntax::Language;

pub(super) static SPEC: Spec = Spec {
    language: Language::Python,
    name: "python",
    display_name: "Python",
    language_ids: &["python"],
    extensions: &["py", "pyi"],
    grammar: || tree_sitter_python::LANGUAGE.into(),
    tags: &[tree_sitter_python::TAGS_QUERY],
    queries: QuerySources {
        scopes: &[include_str!("../../../queries/python/scopes.scm")],
        imports: include_str!("../../../queries/python/imports.scm"),
        docs: include_str!("../../../queries/python/docs.scm"),
        tests: Some(include_str!("../../../queries/python/tests.scm")),
    },
    fence: "python",
    line_comment: "#",
    blocks: Blocks::Indentation,
    apostrophe: Apostrophe::Quote,
    top_level_starts: &["\nclass ", "\ndef ", "\nasync def ", "\nif __name__", "\n@"],
    doc: DocStyle::Docstring,
    tests: Some(TestLayout::Python),
};
