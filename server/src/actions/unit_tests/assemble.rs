//! Tests in code and the insertion that adds them: finding complete tests with the syntax
//! tree, unique names, the headers a file still lacks (imports, a `unittest` class, a Rust
//! test module, a Go package clause) and the check that the result parses.

use std::collections::HashMap;

use tree_sitter::{Node, Query, QueryCursor, StreamingIterator, Tree};

use super::{Plan, PythonStyle};
use crate::actions::scaffold::AsyncStyle;
use crate::actions::{Insertion, Target};
use crate::syntax::languages::TestLayout;
use crate::syntax::scopes::ScopeKind;
use crate::syntax::{self, Language};

/// Whether tests of `target` are methods of a `unittest` class: an `IsolatedAsyncioTestCase`
/// for async code without pytest-asyncio, a `TestCase` when the project uses unittest.
pub(super) fn in_unittest_class(target: &Target, plan: &Plan) -> bool {
    let is_async = target.scope.is_async && target.scope.kind == ScopeKind::Function;
    matches!(target.language.spec().tests, Some(TestLayout::Python))
        && if is_async { plan.async_style == AsyncStyle::Unittest } else { plan.python_style == PythonStyle::Unittest }
}

/// `from <module> import <names>` for the names the tests use.
pub fn python_import_line(plan: &Plan) -> String {
    format!("from {} import {}", plan.module, plan.imported.join(", "))
}

/// The Python import lines `existing` still lacks for `plan`'s names.
fn python_missing_imports(existing: &str, plan: &Plan) -> Option<String> {
    let prefix = format!("from {} import ", plan.module);
    let have: Vec<&str> = existing
        .lines()
        .filter_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .flat_map(|names| names.split(','))
        .map(|name| name.trim().trim_matches(['(', ')']).split(" as ").next().unwrap_or_default().trim())
        .collect();
    let missing: Vec<&str> = plan.imported.iter().map(String::as_str).filter(|name| !have.contains(name)).collect();
    (!missing.is_empty()).then(|| format!("{prefix}{}", missing.join(", ")))
}

/// A test found in generated or existing code: its name and its full text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Test {
    pub name: String,
    pub text: String,
}

fn node_text(code: &str, node: Node) -> String {
    code[node.byte_range()].to_string()
}

/// Complete, error-free tests in `code`, as the language's `tests.scm` finds them, in document
/// order; a test inside another one found is part of it.
pub fn find_tests(language: Language, code: &str) -> Vec<Test> {
    let Some(query) = language.queries().tests.as_ref() else {
        return Vec::new();
    };
    let rope = ropey::Rope::from_str(code);
    let Some(tree) = syntax::parse(&mut language.parser(), &rope, None) else {
        return Vec::new();
    };
    let found = test_nodes(query, &tree, code);
    let mut outermost: Vec<&FoundTest> = found
        .values()
        .filter(|test| !test.node.has_error())
        .filter(|test| {
            let mut ancestor = test.node.parent();
            while let Some(node) = ancestor {
                if found.get(&node.id()).is_some_and(|outer| !outer.node.has_error()) {
                    return false;
                }
                ancestor = node.parent();
            }
            true
        })
        .collect();
    outermost.sort_by_key(|test| test.node.start_byte());
    outermost
        .iter()
        .map(|test| Test { name: node_text(code, test.name), text: code[test.start..test.node.end_byte()].to_string() })
        .collect()
}

/// A test the query captured: the test, its name, and where its text starts (decorators and
/// attributes included).
struct FoundTest<'tree> {
    node: Node<'tree>,
    name: Node<'tree>,
    start: usize,
}

/// Every test node `query` captures in `tree`, by node id.
fn test_nodes<'tree>(query: &Query, tree: &'tree Tree, code: &str) -> HashMap<usize, FoundTest<'tree>> {
    let mut found: HashMap<usize, FoundTest> = HashMap::new();
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(query, tree.root_node(), code.as_bytes());
    while let Some(matched) = matches.next() {
        let captured = |name: &str| {
            let index = query.capture_index_for_name(name)?;
            matched.captures().iter().find(|capture| capture.index == index).map(|capture| capture.node)
        };
        let (Some(node), Some(name)) = (captured("test"), captured("name")) else { continue };
        let start = captured("start").map_or(node.start_byte(), |start| start.start_byte());
        let test = found.entry(node.id()).or_insert(FoundTest { node, name, start });
        test.start = test.start.min(start);
    }
    found
}

/// Renames tests whose names are taken (in the target file or earlier in the batch).
pub fn make_names_unique(language: Language, tests: &mut [Test], taken: &[String]) {
    let mut used: Vec<String> = taken.to_vec();
    for test in tests.iter_mut() {
        if !used.contains(&test.name) {
            used.push(test.name.clone());
            continue;
        }
        let renamed = (2..)
            .map(|n| match language {
                // Titles are string literals: number them inside the quotes.
                Language::JavaScript | Language::TypeScript | Language::Tsx => {
                    let quote = &test.name[..1];
                    format!("{} ({n}){quote}", &test.name[..test.name.len() - 1])
                }
                Language::Python | Language::Rust | Language::Go | Language::Java | Language::C | Language::Cpp => {
                    format!("{}_{n}", test.name)
                }
            })
            .find(|candidate| !used.contains(candidate))
            .expect("an unused name exists");
        test.text = test.text.replacen(&test.name, &renamed, 1);
        test.name = renamed.clone();
        used.push(renamed);
    }
}

/// A test function as a method: `def test_x():` takes `self`.
fn as_method(test: &str) -> String {
    match test.find("():") {
        Some(at) if !test[..at].contains('\n') || test[..at].trim_start().starts_with('@') => {
            format!("{}(self):{}", &test[..at], &test[at + 3..])
        }
        _ => test.to_string(),
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|line| if line.is_empty() { String::new() } else { format!("{by}{line}") })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text to insert into the target for `tests`, with the headers it still lacks.
pub(super) fn assemble(target: &Target, plan: &Plan, tests: &[Test]) -> Insertion {
    let existing = plan.existing.clone().unwrap_or_default();
    let body: Vec<&str> = tests.iter().map(|t| t.text.as_str()).collect();
    match plan.layout {
        TestLayout::Python => python_insertion(target, plan, &existing, &body),
        TestLayout::Rust => rust_insertion(target, &existing, &body),
        TestLayout::JavaScript | TestLayout::TypeScript => {
            let header = missing_lines(&existing, javascript_header(plan));
            let gap = if header.is_empty() { "" } else { "\n" };
            let text = format!("{}{header}{gap}{}\n", separator(&existing), body.join("\n\n"));
            Insertion { offset: existing.len(), text }
        }
        TestLayout::Go => {
            let header = if existing.trim().is_empty() { go_header(target, &body) } else { String::new() };
            Insertion {
                offset: existing.len(),
                text: format!("{}{header}{}\n", separator(&existing), body.join("\n\n")),
            }
        }
    }
}

/// What goes between the existing text and appended tests: a blank line.
fn separator(existing: &str) -> &'static str {
    if existing.is_empty() || existing.ends_with("\n\n") {
        ""
    } else if existing.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    }
}

/// Whether `existing` has `line` (ignoring indentation).
fn has_line(existing: &str, line: &str) -> bool {
    existing.lines().any(|l| l.trim() == line.trim())
}

/// The `lines` that `existing` lacks, each ended by a newline.
fn missing_lines(existing: &str, lines: impl IntoIterator<Item = String>) -> String {
    lines.into_iter().filter(|line| !has_line(existing, line)).map(|line| format!("{line}\n")).collect()
}

/// Python tests appended after the imports they still need, as functions or as methods of a
/// `unittest` class, two blank lines apart (PEP 8).
fn python_insertion(target: &Target, plan: &Plan, existing: &str, body: &[&str]) -> Insertion {
    let class = in_unittest_class(target, plan);
    let header = python_header(plan, existing, body, class);
    let class_block = class.then(|| unittest_class(target, existing, body));
    let main = (class && existing.is_empty()).then_some("if __name__ == \"__main__\":\n    unittest.main()");
    let mut parts: Vec<&str> = Vec::new();
    if !header.is_empty() {
        parts.push(header.trim_end());
    }
    match &class_block {
        Some(block) => parts.push(block),
        None => parts.extend(body),
    }
    parts.extend(main);
    // PEP 8: two blank lines between top-level definitions.
    let lead = match existing {
        "" => "",
        text if text.ends_with("\n\n\n") => "",
        text if text.ends_with("\n\n") => "\n",
        text if text.ends_with('\n') => "\n\n",
        _ => "\n\n\n",
    };
    Insertion { offset: existing.len(), text: format!("{lead}{}\n", parts.join("\n\n\n")) }
}

/// The import lines the tests use that `existing` lacks: pytest, unittest, `unittest.mock`,
/// the plan's extra imports, the code under test.
fn python_header(plan: &Plan, existing: &str, body: &[&str], class: bool) -> String {
    let uses = |name: &str| body.iter().any(|t| t.contains(name));
    let mut lines = Vec::new();
    if uses("pytest.") {
        lines.push("import pytest".to_string());
    }
    if class {
        lines.push("import unittest".to_string());
    }
    let mocks: Vec<&str> = [("AsyncMock", "AsyncMock"), ("MagicMock", "MagicMock"), ("patch(", "patch")]
        .iter()
        .filter(|(used, _)| uses(used))
        .map(|(_, name)| *name)
        .collect();
    if !mocks.is_empty() {
        lines.push(format!("from unittest.mock import {}", mocks.join(", ")));
    }
    lines.extend(plan.extra_imports.iter().cloned());
    let mut header = missing_lines(existing, lines);
    if let Some(import_line) = python_missing_imports(existing, plan) {
        header.push_str(&import_line);
        header.push('\n');
    }
    header
}

/// The tests as methods of a `Test<Name>` class: an `IsolatedAsyncioTestCase` for async code
/// without pytest-asyncio, a `TestCase` for a project that uses unittest.
fn unittest_class(target: &Target, existing: &str, body: &[&str]) -> String {
    let camel: String = target
        .scope
        .name
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect();
    let mut class_name = format!("Test{camel}");
    while existing.contains(&format!("class {class_name}(")) {
        class_name.push('2');
    }
    let methods: Vec<String> = body.iter().map(|t| indent(&as_method(t), "    ")).collect();
    let is_async = target.scope.is_async && target.scope.kind == ScopeKind::Function;
    let base = if is_async { "IsolatedAsyncioTestCase" } else { "TestCase" };
    format!("class {class_name}(unittest.{base}):\n{}", methods.join("\n\n"))
}

/// Rust tests inside the file's `#[cfg(test)] mod tests`, before its closing brace, or in a
/// new one at the end.
fn rust_insertion(target: &Target, existing: &str, body: &[&str]) -> Insertion {
    let tests_text = body.iter().map(|t| indent(t, "    ")).collect::<Vec<_>>().join("\n\n");
    match existing_test_module_end(&target.rope.to_string()) {
        Some(close) => Insertion { offset: close, text: format!("\n{tests_text}\n") },
        None => Insertion {
            offset: existing.len(),
            text: format!("{}#[cfg(test)]\nmod tests {{\n    use super::*;\n\n{tests_text}\n}}\n", separator(existing)),
        },
    }
}

/// A new Go test file's package clause and imports (`reflect` when the tests compare with it).
fn go_header(target: &Target, body: &[&str]) -> String {
    let package = package_name(target).unwrap_or_else(|| "main".into());
    if body.iter().any(|t| t.contains("reflect.")) {
        format!("package {package}\n\nimport (\n\t\"reflect\"\n\t\"testing\"\n)\n\n")
    } else {
        format!("package {package}\n\nimport \"testing\"\n\n")
    }
}

/// The lines a JavaScript or TypeScript test file starts with: node:test, strict assertions,
/// the code under test (`require` in a CommonJS package).
pub fn javascript_header(plan: &Plan) -> [String; 3] {
    let (test, assert) = if plan.commonjs {
        ("const { test } = require(\"node:test\");", "const assert = require(\"node:assert/strict\");")
    } else {
        ("import { test } from \"node:test\";", "import assert from \"node:assert/strict\";")
    };
    [test.to_string(), assert.to_string(), plan.import_line.clone()]
}

fn package_name(target: &Target) -> Option<String> {
    let root = target.tree.root_node();
    let mut cursor = root.walk();
    let clause = root.children(&mut cursor).find(|n| n.kind() == "package_clause")?;
    let name = clause.named_child(0)?;
    Some(target.rope.byte_slice(name.byte_range()).to_string())
}

/// The byte offset of the closing brace of a `#[cfg(test)] mod tests { ... }` in `code`.
fn existing_test_module_end(code: &str) -> Option<usize> {
    let tree = syntax::parse_text(Language::Rust, code)?;
    let module = syntax::find_top_level(&tree, |node| {
        node.kind() == "mod_item"
            && syntax::is_named(node, code, "tests")
            && node
                .prev_sibling()
                .is_some_and(|a| a.kind() == "attribute_item" && code[a.byte_range()].contains("cfg(test)"))
    })?;
    let body = module.child_by_field_name("body")?;
    Some(body.end_byte() - 1)
}

pub(super) fn parses_as_well(language: Language, existing: &str, insertion: &Insertion) -> bool {
    let mut parser = language.parser();
    let before = syntax::parse(&mut parser, &ropey::Rope::from_str(existing), None).map(|t| syntax::error_count(&t));
    let mut after_text = existing.to_string();
    after_text.insert_str(insertion.offset.min(after_text.len()), &insertion.text);
    let after = syntax::parse(&mut parser, &ropey::Rope::from_str(&after_text), None).map(|t| syntax::error_count(&t));
    matches!((before, after), (Some(before), Some(after)) if after <= before)
}
