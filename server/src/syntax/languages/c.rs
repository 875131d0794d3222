//! C and C++: one family that shares comments, block syntax and Doxygen comments; each has
//! its own grammar and queries.

use super::{Apostrophe, Blocks, DocStyle, QuerySources, Spec};
use crate::syntax::Language;

/// Doxygen comments, the same in both.
const C_DOCS: &str = include_str!("../../../queries/c/docs.scm");

pub(super) static C: Spec = Spec {
    language: Language::C,
    name: "c",
    display_name: "C",
    language_ids: &["c"],
    // `.h` is C's: a C++ project's headers are usually `.hpp`/`.hh`, and the editor's
    // `languageId` wins over the extension anyway.
    extensions: &["c", "h"],
    grammar: || tree_sitter_c::LANGUAGE.into(),
    tags: &[tree_sitter_c::TAGS_QUERY],
    queries: QuerySources {
        scopes: &[include_str!("../../../queries/c/scopes.scm")],
        imports: include_str!("../../../queries/c/imports.scm"),
        docs: C_DOCS,
        tests: None,
    },
    fence: "c",
    line_comment: "//",
    blocks: Blocks::Braces { semicolons: true },
    apostrophe: Apostrophe::CharLiteral,
    top_level_starts: &["\n#include", "\n#define ", "\nstatic ", "\nstruct ", "\ntypedef ", "\nint ", "\nvoid "],
    doc: DocStyle::Doxygen,
    // No standard test layout or framework: Generate unit tests is not offered.
    tests: None,
};

pub(super) static CPP: Spec = Spec {
    language: Language::Cpp,
    name: "cpp",
    display_name: "C++",
    language_ids: &["cpp"],
    extensions: &["cpp", "cc", "cxx", "c++", "hpp", "hh", "hxx", "h++"],
    grammar: || tree_sitter_cpp::LANGUAGE.into(),
    tags: &[tree_sitter_cpp::TAGS_QUERY],
    queries: QuerySources {
        scopes: &[include_str!("../../../queries/cpp/scopes.scm")],
        imports: include_str!("../../../queries/cpp/imports.scm"),
        docs: C_DOCS,
        tests: None,
    },
    fence: "cpp",
    top_level_starts: &[
        "\n#include",
        "\n#define ",
        "\nstatic ",
        "\nstruct ",
        "\nclass ",
        "\nnamespace ",
        "\ntemplate",
        "\nusing ",
        "\nint ",
        "\nvoid ",
    ],
    ..C
};
