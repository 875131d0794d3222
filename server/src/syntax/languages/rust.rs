//! Rust.

use super::{Apostrophe, Blocks, DocStyle, QuerySources, Spec, TestLayout};
use crate::syntax::Language;

pub(super) static SPEC: Spec = Spec {
    language: Language::Rust,
    name: "rust",
    display_name: "Rust",
    language_ids: &["rust"],
    extensions: &["rs"],
    grammar: || tree_sitter_rust::LANGUAGE.into(),
    tags: &[tree_sitter_rust::TAGS_QUERY],
    queries: QuerySources {
        scopes: &[include_str!("../../../queries/rust/scopes.scm")],
        imports: include_str!("../../../queries/rust/imports.scm"),
        docs: include_str!("../../../queries/rust/docs.scm"),
        tests: Some(include_str!("../../../queries/rust/tests.scm")),
    },
    fence: "rust",
    line_comment: "//",
    blocks: Blocks::Braces { semicolons: true },
    apostrophe: Apostrophe::CharLiteral,
    top_level_starts: &["\nfn ", "\npub fn ", "\nimpl ", "\nimpl<", "\n#[", "\nmod ", "\nstruct ", "\nenum "],
    doc: DocStyle::RustDoc,
    tests: Some(TestLayout::Rust),
};
