//! Java.

use super::{Apostrophe, Blocks, DocStyle, QuerySources, Spec};
use crate::syntax::Language;

pub(super) static SPEC: Spec = Spec {
    language: Language::Java,
    name: "java",
    display_name: "Java",
    language_ids: &["java"],
    extensions: &["java"],
    grammar: || tree_sitter_java::LANGUAGE.into(),
    tags: &[tree_sitter_java::TAGS_QUERY],
    queries: QuerySources {
        scopes: &[include_str!("../../../queries/java/scopes.scm")],
        imports: include_str!("../../../queries/java/imports.scm"),
        docs: include_str!("../../../queries/java/docs.scm"),
        tests: None,
    },
    fence: "java",
    line_comment: "//",
    blocks: Blocks::Braces { semicolons: true },
    apostrophe: Apostrophe::CharLiteral,
    top_level_starts: &[
        "\npackage ",
        "\nimport ",
        "\npublic ",
        "\nclass ",
        "\ninterface ",
        "\nenum ",
        "\nrecord ",
        "\nabstract ",
        "\nfinal ",
        "\n@",
    ],
    doc: DocStyle::Javadoc,
    // JUnit needs a build tool (Maven, Gradle) to run: Generate unit tests is not offered.
    tests: None,
};
