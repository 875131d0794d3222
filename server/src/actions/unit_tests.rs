//! **Generate unit tests**: tests for a function, method or class, in the file the language's
//! convention expects (pytest `tests/test_<module>.py` or `test_<module>.py`, a Rust
//! `#[cfg(test)] mod tests`, `<name>.test.<ext>`, `<file>_test.go`). The model writes test
//! bodies; nib keeps only complete tests that parse, renames clashes with existing tests,
//! deduplicates imports, and appends — an existing test file is never replaced.

use std::path::{Path, PathBuf};

use tree_sitter::Node;

use super::scaffold::{self, AsyncStyle, Collaborator, Piece};
use super::{ActionError, Asker, Insertion, Target};
use crate::engine::{Backend, CancelToken, Flow};
use crate::syntax::scopes::ScopeKind;
use crate::syntax::{self, Language};

/// Where the tests go and what is there already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub file: PathBuf,
    /// The target's current text (an open buffer or the file on disk); `None` when it does
    /// not exist yet.
    pub existing: Option<String>,
    /// Python: the import of the code under test.
    import_line: String,
    /// Python: the dotted module tests import the code from (for `patch` targets).
    module: String,
    /// Python: how the workspace runs async tests.
    async_style: AsyncStyle,
    /// Rust: the crate depends on tokio (`#[tokio::test]` for async functions).
    tokio: bool,
    /// Python: the workspace's interpreter; the generated module must import under it.
    pub interpreter: Option<PathBuf>,
    root: PathBuf,
}

/// The result: insert `insertion` into `file` (creating it first when `create`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestEdit {
    pub file: PathBuf,
    pub create: bool,
    pub insertion: Insertion,
    pub test_names: Vec<String>,
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The name tests import or call: the class for a method.
fn subject(target: &Target) -> (String, String) {
    let name = target.scope.name.clone();
    if target.scope.kind == ScopeKind::Method && target.language == Language::Python {
        let root = target.tree.root_node();
        let mut node = root.descendant_for_byte_range(target.scope.range.start, target.scope.range.end);
        while let Some(current) = node {
            if current.kind() == "class_definition" {
                let class = current
                    .child_by_field_name("name")
                    .map(|n| target.rope.byte_slice(n.byte_range()).to_string())
                    .unwrap_or_default();
                return (class.clone(), format!("{class}.{name}"));
            }
            node = current.parent();
        }
    }
    (name.clone(), name)
}

/// Decides the test file. `read` gives the current text of a path (open buffer, else disk).
pub fn plan(
    target: &Target,
    workspace_folders: &[PathBuf],
    read: &dyn Fn(&Path) -> Option<String>,
) -> Result<Plan, ActionError> {
    let source = target
        .path
        .clone()
        .ok_or_else(|| ActionError::Rejected("tests can only be generated for files on disk".into()))?;
    let root = workspace_folders.iter().find(|folder| source.starts_with(folder)).cloned().ok_or_else(|| {
        ActionError::Rejected(format!("{} is outside the workspace folders; nothing was written", source.display()))
    })?;
    let directory = source.parent().unwrap_or(&root).to_path_buf();
    let module = stem(&source);
    let (imported, _) = subject(target);
    let (file, import_line, dotted_module) = match target.language {
        Language::Python => {
            if root.join("tests").is_dir() {
                let relative = source.strip_prefix(&root).unwrap_or(&source).with_extension("");
                let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if parts.first().is_some_and(|first| first == "src") {
                    parts.remove(0);
                }
                if parts.last().is_some_and(|last| last == "__init__") {
                    parts.pop();
                }
                let dotted = parts.join(".");
                (
                    root.join("tests").join(format!("test_{module}.py")),
                    format!("from {dotted} import {imported}"),
                    dotted,
                )
            } else {
                (
                    directory.join(format!("test_{module}.py")),
                    format!("from {module} import {imported}"),
                    module.clone(),
                )
            }
        }
        Language::Rust => (source.clone(), String::new(), String::new()),
        Language::JavaScript | Language::TypeScript | Language::Tsx => {
            let extension = source.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "js".into());
            let import = format!("import {{ {imported} }} from \"./{module}\";");
            (directory.join(format!("{module}.test.{extension}")), import, String::new())
        }
        Language::Go => (directory.join(format!("{module}_test.go")), String::new(), String::new()),
    };
    if !file.starts_with(&root) {
        return Err(ActionError::Rejected(format!("{} is outside the workspace; nothing was written", file.display())));
    }
    let existing = if file == source { Some(target.rope.to_string()) } else { read(&file) };
    Ok(Plan {
        file,
        existing,
        import_line,
        module: dotted_module,
        async_style: scaffold::python_async_style(&root),
        tokio: target.language == Language::Rust && scaffold::rust_uses_tokio(&source, &root),
        interpreter: None,
        root,
    })
}

/// How one test is written, in two short generations: the rest of its name after `name_lead`
/// (up to `name_end`), then its body after `body_lead`, which already asserts on a call of the
/// code under test, so every test checks a result of it.
struct Shape {
    name_lead: String,
    name_end: &'static str,
    body_lead: String,
}

fn shape(target: &Target) -> Shape {
    let name = &target.scope.name;
    let callable = target.scope.kind == ScopeKind::Function;
    match target.language {
        Language::Python => Shape {
            name_lead: format!("def test_{}_", name.to_lowercase()),
            name_end: "(",
            body_lead: if callable { format!("():\n    assert {name}(") } else { "():\n    ".into() },
        },
        Language::Rust => Shape {
            name_lead: format!("#[test]\nfn {}_", name.to_lowercase()),
            name_end: "(",
            body_lead: if callable { format!("() {{\n    assert_eq!({name}(") } else { "() {\n    ".into() },
        },
        Language::JavaScript | Language::TypeScript | Language::Tsx => Shape {
            name_lead: format!("test(\"{name} "),
            name_end: "\"",
            body_lead: if callable {
                format!("\", () => {{\n  assert.deepStrictEqual({name}(")
            } else {
                "\", () => {\n  ".into()
            },
        },
        Language::Go => Shape {
            name_lead: format!("func Test{name}"),
            name_end: "(",
            body_lead: if callable {
                format!("(t *testing.T) {{\n\tif got := {name}(")
            } else {
                "(t *testing.T) {\n\t".into()
            },
        },
    }
}

/// Keeps the characters a test name (or title) may hold.
fn clean_name_part(language: Language, text: &str) -> String {
    let keep = |c: char| match language {
        Language::JavaScript | Language::TypeScript | Language::Tsx => c.is_alphanumeric() || " _-,".contains(c),
        _ => c.is_alphanumeric() || c == '_',
    };
    text.chars().take_while(|c| keep(*c)).collect::<String>().trim().to_string()
}

/// For async code and code with collaborators: the name lead, where the name ends, and the
/// scaffold of the body after the name.
fn scaffolded_shape(
    target: &Target,
    plan: &Plan,
    collaborators: &[Collaborator],
) -> Option<(String, &'static str, Vec<Piece>)> {
    if target.scope.kind != ScopeKind::Function {
        return None;
    }
    let name = &target.scope.name;
    let lower = name.to_lowercase();
    let is_async = target.scope.is_async;
    let fixed = |text: &str| Piece::Fixed(text.to_string());
    match target.language {
        Language::Python => {
            let (lead, receiver) = match (is_async, plan.async_style) {
                (true, AsyncStyle::PytestAsyncio) => (format!("@pytest.mark.asyncio\nasync def test_{lower}_"), ""),
                // A method of an `IsolatedAsyncioTestCase`; `assemble` adds the class.
                (true, AsyncStyle::Unittest) => (format!("async def test_{lower}_"), "self"),
                (false, _) => (format!("def test_{lower}_"), ""),
            };
            let mut pieces = vec![Piece::Fixed(format!("({receiver}):\n"))];
            pieces.extend(scaffold::python_body(&format!("{name}("), is_async, collaborators, "    "));
            Some((lead, "(", pieces))
        }
        Language::Rust if is_async && plan.tokio => Some((
            format!("#[tokio::test]\nasync fn {lower}_"),
            "(",
            vec![
                Piece::Fixed(format!("() {{\n    let result = {name}(")),
                Piece::Arguments,
                fixed(".await;\n    assert_eq!(result, "),
                Piece::Hole { stop: "\n" },
                fixed("\n}\n"),
            ],
        )),
        Language::JavaScript | Language::TypeScript | Language::Tsx if is_async => Some((
            format!("test(\"{name} "),
            "\"",
            vec![
                Piece::Fixed(format!("\", async () => {{\n  const result = await {name}(")),
                Piece::Arguments,
                fixed(";\n  assert.deepStrictEqual(result, "),
                Piece::Hole { stop: "\n" },
                fixed("\n});\n"),
            ],
        )),
        _ => None,
    }
}

/// The model as `write_scaffolded` uses it: (code so far, stop strings, max tokens) → text.
type Ask<'a> = dyn FnMut(&str, &[&str], usize) -> Result<String, ActionError> + 'a;

/// A scaffolded test's parts (see `scaffolded_shape`).
struct ScaffoldShape<'a> {
    lead: &'a str,
    name_end: &'static str,
    pieces: &'a [Piece],
    collaborators: &'a [Collaborator],
    parameters: &'a [String],
}

/// Writes one scaffolded test after `written`: its name, then each hole in order.
/// `ask(code so far, stops, max tokens)` is the model (canned answers in tests).
fn write_scaffolded(
    language: Language,
    written: &str,
    shape: &ScaffoldShape,
    index: usize,
    ask: &mut Ask,
) -> Result<String, ActionError> {
    let name_part = clean_name_part(language, &ask(&format!("{written}{}", shape.lead), &[shape.name_end, "\n"], 12)?);
    let name_part = if name_part.is_empty() { format!("case_{}", index + 1) } else { name_part };
    let mut code = format!("{written}{}{name_part}", shape.lead);
    let mut call_arguments = String::new();
    for piece in shape.pieces {
        match piece {
            Piece::Fixed(text) => code.push_str(text),
            Piece::Hole { stop } => {
                let filled = ask(&code, &[stop, "```"], 24)?;
                code.push_str(filled.lines().next().unwrap_or_default().trim_end());
            }
            Piece::Arguments => {
                call_arguments = scaffold::cut_arguments(&ask(&code, &["\n", "```"], 24)?);
                code.push_str(&call_arguments);
                code.push(')');
            }
        }
    }
    Ok(scaffold::resolve_assert_calls(&code, shape.collaborators, shape.parameters, &call_arguments))
}

/// Whether tests of `target` are methods of an `IsolatedAsyncioTestCase` class.
fn in_unittest_class(target: &Target, plan: &Plan) -> bool {
    target.language == Language::Python
        && target.scope.is_async
        && target.scope.kind == ScopeKind::Function
        && plan.async_style == AsyncStyle::Unittest
}

fn framework(language: Language) -> &'static str {
    match language {
        Language::Python => "pytest",
        Language::Rust => "Rust #[test]",
        Language::JavaScript | Language::TypeScript | Language::Tsx => "node:test (with `test` and `assert`)",
        Language::Go => "Go `testing`",
    }
}

/// A test found in generated or existing code: its name and its full text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Test {
    name: String,
    text: String,
}

fn node_text(code: &str, node: Node) -> String {
    code[node.byte_range()].to_string()
}

/// Complete, error-free tests in `code`.
fn find_tests(language: Language, code: &str) -> Vec<Test> {
    let rope = ropey::Rope::from_str(code);
    let Some(tree) = syntax::parse(&mut language.parser(), &rope, None) else {
        return Vec::new();
    };
    let mut tests = Vec::new();
    let mut cursor = tree.walk();
    loop {
        let node = cursor.node();
        let found = match (language, node.kind()) {
            (Language::Python, "function_definition") => {
                // With its decorators (`@pytest.mark.asyncio`).
                let whole = node.parent().filter(|p| p.kind() == "decorated_definition").unwrap_or(node);
                node.child_by_field_name("name")
                    .map(|n| node_text(code, n))
                    .filter(|name| name.starts_with("test"))
                    .map(|name| Test { name, text: node_text(code, whole) })
            }
            (Language::Rust, "function_item") => node
                .prev_sibling()
                .filter(|attribute| {
                    attribute.kind() == "attribute_item" && node_text(code, *attribute).contains("test")
                })
                .and_then(|attribute| {
                    let name = node.child_by_field_name("name").map(|n| node_text(code, n))?;
                    Some(Test { name, text: code[attribute.start_byte()..node.end_byte()].to_string() })
                }),
            (Language::Go, "function_declaration") => node
                .child_by_field_name("name")
                .map(|n| node_text(code, n))
                .filter(|name| name.starts_with("Test"))
                .map(|name| Test { name, text: node_text(code, node) }),
            (Language::JavaScript | Language::TypeScript | Language::Tsx, "expression_statement") => {
                let call = node.named_child(0).filter(|c| c.kind() == "call_expression");
                call.and_then(|call| {
                    let callee = call.child_by_field_name("function").map(|f| node_text(code, f))?;
                    if callee != "test" && callee != "it" {
                        return None;
                    }
                    let title = call.child_by_field_name("arguments")?.named_child(0).map(|t| node_text(code, t))?;
                    Some(Test { name: title, text: node_text(code, node) })
                })
            }
            _ => None,
        };
        if let Some(test) = found.filter(|_| !node.has_error()) {
            tests.push(test);
        } else if cursor.goto_first_child() {
            continue;
        }
        while !cursor.goto_next_sibling() {
            if !cursor.goto_parent() {
                return tests;
            }
        }
    }
}

/// Renames tests whose names are taken (in the target file or earlier in the batch).
fn make_names_unique(language: Language, tests: &mut [Test], taken: &[String]) {
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
                _ => format!("{}_{n}", test.name),
            })
            .find(|candidate| !used.contains(candidate))
            .expect("an unused name exists");
        test.text = test.text.replacen(&test.name, &renamed, 1);
        test.name = renamed.clone();
        used.push(renamed);
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|line| if line.is_empty() { String::new() } else { format!("{by}{line}") })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text to insert into the target for `tests`, with the headers it still lacks.
fn assemble(target: &Target, plan: &Plan, tests: &[Test]) -> Insertion {
    let existing = plan.existing.clone().unwrap_or_default();
    let end = existing.len();
    let separator = if existing.is_empty() || existing.ends_with("\n\n") {
        ""
    } else if existing.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    let body: Vec<&str> = tests.iter().map(|t| t.text.as_str()).collect();
    let has_line = |line: &str| existing.lines().any(|l| l.trim() == line.trim());
    match target.language {
        Language::Python => {
            let uses = |name: &str| body.iter().any(|t| t.contains(name));
            let class = in_unittest_class(target, plan);
            let mut header = String::new();
            if uses("pytest.") && !has_line("import pytest") {
                header.push_str("import pytest\n");
            }
            if class && !has_line("import unittest") {
                header.push_str("import unittest\n");
            }
            let mocks: Vec<&str> = [("AsyncMock", "AsyncMock"), ("MagicMock", "MagicMock"), ("patch(", "patch")]
                .iter()
                .filter(|(used, _)| uses(used))
                .map(|(_, name)| *name)
                .collect();
            let mock_import = format!("from unittest.mock import {}", mocks.join(", "));
            if !mocks.is_empty() && !has_line(&mock_import) {
                header.push_str(&mock_import);
                header.push('\n');
            }
            if !has_line(&plan.import_line) {
                header.push_str(&plan.import_line);
                header.push('\n');
            }
            // Async tests without pytest-asyncio: methods of an IsolatedAsyncioTestCase.
            let class_block = class.then(|| {
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
                let methods: Vec<String> = body.iter().map(|t| indent(t, "    ")).collect();
                format!("class {class_name}(unittest.IsolatedAsyncioTestCase):\n{}", methods.join("\n\n"))
            });
            let mut parts: Vec<&str> = Vec::new();
            if !header.is_empty() {
                parts.push(header.trim_end());
            }
            match &class_block {
                Some(block) => parts.push(block),
                None => parts.extend(&body),
            }
            // PEP 8: two blank lines between top-level definitions.
            let lead = match existing.as_str() {
                "" => "",
                text if text.ends_with("\n\n\n") => "",
                text if text.ends_with("\n\n") => "\n",
                text if text.ends_with('\n') => "\n\n",
                _ => "\n\n\n",
            };
            Insertion { offset: end, text: format!("{lead}{}\n", parts.join("\n\n\n")) }
        }
        Language::Rust => {
            let tests_text = body.iter().map(|t| indent(t, "    ")).collect::<Vec<_>>().join("\n\n");
            // Inside an existing `#[cfg(test)] mod tests { ... }`, before its closing brace.
            let module_end = existing_test_module_end(&target.rope.to_string());
            match module_end {
                Some(close) => Insertion { offset: close, text: format!("\n{tests_text}\n") },
                None => Insertion {
                    offset: end,
                    text: format!("{separator}#[cfg(test)]\nmod tests {{\n    use super::*;\n\n{tests_text}\n}}\n"),
                },
            }
        }
        Language::JavaScript | Language::TypeScript | Language::Tsx => {
            let mut header = String::new();
            for line in [
                "import { test } from \"node:test\";",
                "import assert from \"node:assert/strict\";",
                plan.import_line.as_str(),
            ] {
                if !has_line(line) {
                    header.push_str(line);
                    header.push('\n');
                }
            }
            let gap = if header.is_empty() { "" } else { "\n" };
            Insertion { offset: end, text: format!("{separator}{header}{gap}{}\n", body.join("\n\n")) }
        }
        Language::Go => {
            let header = if existing.trim().is_empty() {
                let package = package_name(target).unwrap_or_else(|| "main".into());
                format!("package {package}\n\nimport \"testing\"\n\n")
            } else {
                String::new()
            };
            Insertion { offset: end, text: format!("{separator}{header}{}\n", body.join("\n\n")) }
        }
    }
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
    let rope = ropey::Rope::from_str(code);
    let tree = syntax::parse(&mut Language::Rust.parser(), &rope, None)?;
    let root = tree.root_node();
    let mut cursor = root.walk();
    let module = root.children(&mut cursor).find(|node| {
        node.kind() == "mod_item"
            && node.child_by_field_name("name").is_some_and(|n| &code[n.byte_range()] == "tests")
            && node
                .prev_sibling()
                .is_some_and(|a| a.kind() == "attribute_item" && code[a.byte_range()].contains("cfg(test)"))
    })?;
    let body = module.child_by_field_name("body")?;
    Some(body.end_byte() - 1)
}

/// How many tests one action writes.
const TESTS_PER_ACTION: usize = 3;
/// Token budget of one test: a test longer than this is probably a loop and is dropped.
const TOKENS_PER_TEST: usize = 160;

/// A test without an assertion checks nothing.
fn asserts_something(language: Language, test: &Test) -> bool {
    match language {
        Language::Go => ["t.Error", "t.Fatal", "t.Fail"].iter().any(|call| test.text.contains(call)),
        _ => test.text.contains("assert") || test.text.contains("pytest.raises") || test.text.contains("should_panic"),
    }
}

/// Where a finished line of `text` repeats an earlier non-blank line (a loop), if it does.
fn repeated_line(text: &str) -> Option<usize> {
    let mut seen: Vec<&str> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break;
        }
        let content = line.trim();
        if content.len() > 3 && seen.contains(&content) {
            return Some(offset);
        }
        seen.push(content);
        offset += line.len();
    }
    None
}

/// What ends a test whose body was cut short.
fn closer(language: Language) -> &'static str {
    match language {
        Language::Python => "",
        Language::Rust | Language::Go => "}\n",
        Language::JavaScript | Language::TypeScript | Language::Tsx => "});\n",
    }
}

/// Body text without the name, to spot a test repeating an earlier one.
fn body_of(test: &Test) -> String {
    test.text.replacen(&test.name, "", 1)
}

/// The whole action: tests written one at a time (each prompt shows the earlier ones, so the
/// model writes different cases and the KV cache covers the shared start), each generation
/// stopped as soon as the test is complete; only complete, asserting, distinct tests are kept.
pub fn generate(
    model: &mut dyn Backend,
    target: &Target,
    plan: &Plan,
    cancel: CancelToken,
) -> Result<TestEdit, ActionError> {
    let language = target.language;
    let (_, qualified) = subject(target);
    let context = format!("```{}\n{}\n```", target.fence(), target.source());
    let mut asker = Asker::new(model, cancel, context);
    let existing_names: Vec<String> = plan
        .existing
        .as_deref()
        .map(|text| find_tests(language, text).into_iter().map(|t| t.name).collect())
        .unwrap_or_default();
    let comment = if language == Language::Python { "#" } else { "//" };
    let question = format!(
        "Write {} unit tests for `{qualified}`. Cover typical inputs and edge cases with short test functions that each assert a result. Reply with code only.",
        framework(language)
    );
    let shape = shape(target);
    let collaborators = scaffold::collaborators(target, &plan.module);
    let scaffolded =
        if scaffold::needed(target, &collaborators) { scaffolded_shape(target, plan, &collaborators) } else { None };
    let parameter_names: Vec<String> = target.scope.parameters.iter().map(|p| p.name.clone()).collect();
    let mut tests: Vec<Test> = Vec::new();
    let mut failures = 0;
    while tests.len() < TESTS_PER_ACTION && failures < 5 {
        // The first test is greedy; later ones (and retries) sample, so they differ.
        asker.attempt = (tests.len() + failures) as u64;
        // The tests so far, then the start of the next one.
        let mut written = match language {
            Language::Python => format!("{}\n\n\n", plan.import_line),
            _ => String::new(),
        };
        for test in &tests {
            written.push_str(&test.text);
            written.push_str(if language == Language::Python { "\n\n\n" } else { "\n\n" });
        }
        let fence = format!("```{}\n", target.fence());
        let completion_lead = format!("{comment} Unit tests for {qualified}\n");
        if let Some((lead, name_end, pieces)) = &scaffolded {
            let mut ask = |code: &str, stops: &[&str], max_tokens: usize| {
                let prompt = asker.prompt(&question, &completion_lead, &format!("{fence}{code}"));
                asker.generate(prompt, max_tokens, stops)
            };
            let shape =
                ScaffoldShape { lead, name_end, pieces, collaborators: &collaborators, parameters: &parameter_names };
            let code = write_scaffolded(language, &written, &shape, tests.len(), &mut ask)?;
            match find_tests(language, &code).into_iter().nth(tests.len()) {
                Some(test) if tests.iter().all(|t| body_of(t) != body_of(&test)) => tests.push(test),
                other => {
                    tracing::debug!(?other, "discarded a scaffolded test");
                    failures += 1;
                }
            }
            continue;
        }
        let name_prompt = asker.prompt(&question, &completion_lead, &format!("{fence}{written}{}", shape.name_lead));
        let name_part = asker.generate(name_prompt, 12, &[shape.name_end, "\n"])?;
        let mut name_part = clean_name_part(language, &name_part);
        if name_part.is_empty() {
            name_part = format!("case_{}", tests.len() + 1);
        }
        let code_so_far = format!("{written}{}{name_part}{}", shape.name_lead, shape.body_lead);
        let prompt = asker.prompt(&question, &completion_lead, &format!("{fence}{code_so_far}"));
        let known = tests.len();
        // The body's first line starts in the lead; loops are spotted on whole lines.
        let line_start = code_so_far.rsplit('\n').next().unwrap_or_default().to_string();
        let mut complete = |text: &str| {
            // A test is complete once its last line is finished and it parses on its own; a
            // line repeating an earlier one is a loop, cut below.
            let finished = text.ends_with('\n') && find_tests(language, &format!("{code_so_far}{text}")).len() > known;
            if finished || repeated_line(&format!("{line_start}{text}")).is_some() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let mut generated = asker.generate_until(prompt, TOKENS_PER_TEST, &["```"], &mut complete)?;
        if let Some(cut) = repeated_line(&format!("{line_start}{generated}")) {
            generated.truncate(cut.saturating_sub(line_start.len()));
            generated.push_str(closer(language));
        }
        let new = find_tests(language, &format!("{code_so_far}{generated}")).into_iter().nth(known);
        match new {
            Some(test) if asserts_something(language, &test) && tests.iter().all(|t| body_of(t) != body_of(&test)) => {
                tests.push(test);
            }
            other => {
                tracing::debug!(?other, "discarded a generated test");
                failures += 1;
            }
        }
    }
    make_names_unique(language, &mut tests, &existing_names);
    // Keep the longest run of tests that leaves the target parsing as well as before.
    while !tests.is_empty() {
        let insertion = assemble(target, plan, &tests);
        if parses_as_well(language, plan.existing.as_deref().unwrap_or(""), &insertion) {
            if let Some(interpreter) = plan.interpreter.as_deref().filter(|_| language == Language::Python) {
                imports_cleanly(interpreter, plan, target, &insertion).map_err(ActionError::Rejected)?;
            }
            return Ok(TestEdit {
                file: plan.file.clone(),
                create: plan.existing.is_none(),
                test_names: tests.iter().map(|t| t.name.clone()).collect(),
                insertion,
            });
        }
        tests.pop();
    }
    Err(ActionError::Rejected(format!(
        "the model wrote no complete test with an assertion for `{qualified}`; nothing was written (try again, or a larger model)"
    )))
}

/// How long the import check may take before it counts as a failure.
const IMPORT_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Imports the finished test module (existing text + insertion) under the workspace's Python
/// interpreter, without running any test: module-level code is nib's own (imports, the
/// `IsolatedAsyncioTestCase` class); what the model wrote sits in test bodies, which importing
/// does not execute.
fn imports_cleanly(interpreter: &Path, plan: &Plan, target: &Target, insertion: &Insertion) -> Result<(), String> {
    let mut module = plan.existing.clone().unwrap_or_default();
    module.insert_str(insertion.offset.min(module.len()), &insertion.text);
    let directory = std::env::temp_dir().join(format!("nib-import-check-{}", std::process::id()));
    std::fs::create_dir_all(&directory).map_err(|e| format!("cannot check the import: {e}"))?;
    let file = directory.join(plan.file.file_name().unwrap_or_default());
    std::fs::write(&file, &module).map_err(|e| format!("cannot check the import: {e}"))?;
    let source_directory = target.path.as_deref().and_then(Path::parent).unwrap_or(&plan.root);
    let search_path = [plan.root.as_path(), source_directory, plan.file.parent().unwrap_or(&plan.root)];
    let script = format!(
        "import importlib.util, sys\nsys.path[:0] = {}\nspec = importlib.util.spec_from_file_location('nib_generated_tests', {:?})\nmodule = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n",
        serde_json::to_string(&search_path.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>()).unwrap_or_default(),
        file.to_string_lossy()
    );
    let child = std::process::Command::new(interpreter)
        .arg("-c")
        .arg(&script)
        .current_dir(&plan.root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = child.map_err(|e| format!("cannot run the Python interpreter {}: {e}", interpreter.display()))?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > IMPORT_CHECK_TIMEOUT {
            let _ = child.kill();
            let _ = std::fs::remove_file(&file);
            return Err("importing the generated tests took too long; nothing was written".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&file);
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let reason =
        stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("unknown error").trim().to_string();
    Err(format!("the generated tests do not import under {} ({reason}); nothing was written", interpreter.display()))
}

fn parses_as_well(language: Language, existing: &str, insertion: &Insertion) -> bool {
    let mut parser = language.parser();
    let before = syntax::parse(&mut parser, &ropey::Rope::from_str(existing), None).map(|t| syntax::error_count(&t));
    let mut after_text = existing.to_string();
    after_text.insert_str(insertion.offset.min(after_text.len()), &insertion.text);
    let after = syntax::parse(&mut parser, &ropey::Rope::from_str(&after_text), None).map(|t| syntax::error_count(&t));
    matches!((before, after), (Some(before), Some(after)) if after <= before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str, language_id: &str, source: &str) -> Target {
        crate::actions::test_target(path, language_id, source)
    }

    fn no_files(_: &Path) -> Option<String> {
        None
    }

    #[test]
    fn python_plans_beside_the_module_or_in_tests() {
        let shop = target("/w/shop/cart.py", "python", "class Cart:\n    def total(self):\n        return 1$0\n");
        let plan = plan(&shop, &[PathBuf::from("/w")], &no_files).unwrap();
        assert_eq!(plan.file, PathBuf::from("/w/shop/test_cart.py"));
        assert_eq!(plan.import_line, "from cart import Cart");
        let outside = plan_error(&shop, &[PathBuf::from("/elsewhere")]);
        assert!(outside.contains("outside the workspace"), "{outside}");
        let dir = std::env::temp_dir().join(format!("nib-plan-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        std::fs::create_dir_all(dir.join("src/shop")).unwrap();
        let path = dir.join("src/shop/cart.py");
        let nested = target(&path.to_string_lossy(), "python", "def total(x):\n    return x$0\n");
        let planned = super::plan(&nested, std::slice::from_ref(&dir), &no_files).unwrap();
        assert_eq!(planned.file, dir.join("tests/test_cart.py"));
        assert_eq!(planned.import_line, "from shop.cart import total");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn plan_error(target: &Target, folders: &[PathBuf]) -> String {
        plan(target, folders, &no_files).unwrap_err().to_string()
    }

    #[test]
    fn python_appends_unique_complete_tests_with_one_import() {
        let cart = target("/w/cart.py", "python", "def total(items):\n    return sum(items)$0\n");
        let existing = "from cart import total\n\n\ndef test_total():\n    assert total([]) == 0\n";
        let plan = plan(&cart, &[PathBuf::from("/w")], &|_| Some(existing.to_string())).unwrap();
        let generated = "from cart import total\n\n\ndef test_total():\n    assert total([1]) == 1\n\n\ndef test_total_many():\n    assert total([1, 2]) == 3\n\n\ndef test_broken(:\n";
        let mut tests = find_tests(Language::Python, generated);
        assert_eq!(tests.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["test_total", "test_total_many"]);
        make_names_unique(Language::Python, &mut tests, &["test_total".to_string()]);
        let insertion = assemble(&cart, &plan, &tests);
        let mut result = existing.to_string();
        result.insert_str(insertion.offset, &insertion.text);
        expect_test::expect![[r#"
            from cart import total


            def test_total():
                assert total([]) == 0


            def test_total_2():
                assert total([1]) == 1


            def test_total_many():
                assert total([1, 2]) == 3
        "#]]
        .assert_eq(&result);
        assert!(parses_as_well(Language::Python, existing, &insertion));
    }

    #[test]
    fn rust_tests_go_into_the_existing_test_module() {
        let source = "fn add(a: u8, b: u8) -> u8 {\n    a + b$0\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn adds() {\n        assert_eq!(add(1, 1), 2);\n    }\n}\n";
        let item = target("/w/src/lib.rs", "rust", source);
        let plan = plan(&item, &[PathBuf::from("/w")], &no_files).unwrap();
        assert_eq!(plan.file, PathBuf::from("/w/src/lib.rs"));
        let mut tests = find_tests(Language::Rust, "#[test]\nfn adds() {\n    assert_eq!(add(0, 0), 0);\n}\n");
        make_names_unique(Language::Rust, &mut tests, &["adds".to_string()]);
        let insertion = assemble(&item, &plan, &tests);
        let mut result = plan.existing.clone().unwrap();
        result.insert_str(insertion.offset, &insertion.text);
        assert!(
            result.ends_with("    #[test]\n    fn adds_2() {\n        assert_eq!(add(0, 0), 0);\n    }\n}\n"),
            "{result}"
        );
        // Without a test module, one is appended.
        let bare = target("/w/src/m.rs", "rust", "fn one() -> u8 {\n    1$0\n}\n");
        let plan = super::plan(&bare, &[PathBuf::from("/w")], &no_files).unwrap();
        let insertion = assemble(
            &bare,
            &plan,
            &find_tests(Language::Rust, "#[test]\nfn one_is_one() {\n    assert_eq!(one(), 1);\n}\n"),
        );
        assert_eq!(
            insertion.text,
            "\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn one_is_one() {\n        assert_eq!(one(), 1);\n    }\n}\n"
        );
    }

    #[test]
    fn javascript_and_go_files_and_headers() {
        let js = target("/w/lib/math.ts", "typescript", "export function double(x: number) {\n  return x * 2;$0\n}\n");
        let plan = plan(&js, &[PathBuf::from("/w")], &no_files).unwrap();
        assert_eq!(plan.file, PathBuf::from("/w/lib/math.test.ts"));
        let mut tests = find_tests(
            Language::TypeScript,
            "test(\"doubles\", () => {\n  assert.equal(double(2), 4);\n});\ntest(\"doubles\", () => {\n  assert.equal(double(0), 0);\n});\n",
        );
        make_names_unique(Language::TypeScript, &mut tests, &[]);
        let insertion = assemble(&js, &plan, &tests);
        assert!(insertion.text.starts_with("import { test } from \"node:test\";\nimport assert from \"node:assert/strict\";\nimport { double } from \"./math\";\n\n"));
        assert!(insertion.text.contains("test(\"doubles (2)\""), "{}", insertion.text);
        let go = target("/w/calc/sum.go", "go", "package calc\n\nfunc Sum(a, b int) int {\n\treturn a + b$0\n}\n");
        let plan = super::plan(&go, &[PathBuf::from("/w")], &no_files).unwrap();
        assert_eq!(plan.file, PathBuf::from("/w/calc/sum_test.go"));
        let insertion = assemble(
            &go,
            &plan,
            &find_tests(
                Language::Go,
                "func TestSum(t *testing.T) {\n\tif Sum(1, 2) != 3 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
            ),
        );
        assert!(
            insertion.text.starts_with("package calc\n\nimport \"testing\"\n\nfunc TestSum(t *testing.T) {"),
            "{}",
            insertion.text
        );
    }

    /// Builds the tests file for `source` in a scratch workspace (with `files` in it), filling
    /// every hole of each scaffolded test from `answers`, in order.
    fn scaffolded_file(
        name: &str,
        files: &[(&str, &str)],
        language_id: &str,
        source: &str,
        answers: &[&str],
    ) -> String {
        // Tests run in parallel and several use the same file name: one folder per call.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("nib-scaffold-{name}-{}-{call}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for (file, text) in files {
            std::fs::write(root.join(file), text).unwrap();
        }
        let path = root.join(name);
        let target = target(&path.to_string_lossy(), language_id, source);
        let plan = plan(&target, std::slice::from_ref(&root), &no_files).unwrap();
        let collaborators = scaffold::collaborators(&target, &plan.module);
        assert!(scaffold::needed(&target, &collaborators));
        let (lead, name_end, pieces) = scaffolded_shape(&target, &plan, &collaborators).expect("a scaffold");
        let parameters: Vec<String> = target.scope.parameters.iter().map(|p| p.name.clone()).collect();
        let shape = ScaffoldShape {
            lead: &lead,
            name_end,
            pieces: &pieces,
            collaborators: &collaborators,
            parameters: &parameters,
        };
        let mut answers = answers.iter();
        let mut ask = |_: &str, _: &[&str], _: usize| Ok(answers.next().expect("enough canned answers").to_string());
        let code = write_scaffolded(target.language, "", &shape, 0, &mut ask).unwrap();
        let tests = find_tests(target.language, &code);
        assert_eq!(tests.len(), 1, "{code}");
        let insertion = assemble(&target, &plan, &tests);
        assert!(parses_as_well(target.language, "", &insertion), "{}", insertion.text);
        std::fs::remove_dir_all(&root).unwrap();
        insertion.text
    }

    #[test]
    fn the_import_check_runs_the_module_level_code_only() {
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        if !python.exists() {
            return; // `make setup` creates the venv; `make test` always has it.
        }
        let root = std::env::temp_dir().join(format!("nib-import-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("calc.py"), "def double(x):\n    return x * 2\n").unwrap();
        let path = root.join("calc.py");
        let calc = target(&path.to_string_lossy(), "python", "def double(x):\n    return x * 2$0\n");
        let mut planned = plan(&calc, std::slice::from_ref(&root), &no_files).unwrap();
        planned.interpreter = Some(python.clone());
        let failing_body = find_tests(
            Language::Python,
            "def test_double_one():\n    assert double(1) == 2\n    raise SystemExit(3)\n",
        );
        let insertion = assemble(&calc, &planned, &failing_body);
        assert_eq!(imports_cleanly(&python, &planned, &calc, &insertion), Ok(()), "test bodies are not run");
        let mut broken = planned.clone();
        broken.import_line = "from calcx import double".into();
        let insertion = assemble(&calc, &broken, &failing_body);
        let error = imports_cleanly(&python, &broken, &calc, &insertion).unwrap_err();
        assert!(error.contains("No module named 'calcx'"), "{error}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    const ORDERS: &str = "import app\n\n\nasync def get_orders(customer_id):\n    orders = await app.get_orders_for_customer(customer_id)\n    return [o for o in orders if o.open]$0\n";

    #[test]
    fn async_python_with_pytest_asyncio_patches_the_collaborator_with_an_async_mock() {
        let files = [("pyproject.toml", "[project]\ndependencies = [\"pytest-asyncio\"]\n")];
        let text = scaffolded_file("orders.py", &files, "python", ORDERS, &["no_open_orders", "[]", "7)", "[]"]);
        expect_test::expect![[r#"
            import pytest
            from unittest.mock import AsyncMock, patch
            from orders import get_orders


            @pytest.mark.asyncio
            async def test_get_orders_no_open_orders():
                with patch("app.get_orders_for_customer", new_callable=AsyncMock) as mock_get_orders_for_customer:
                    mock_get_orders_for_customer.return_value = []
                    result = await get_orders(7)
                    mock_get_orders_for_customer.assert_called_once_with(7)
                    assert result == []
        "#]]
        .assert_eq(&text);
    }

    #[test]
    fn async_python_without_pytest_asyncio_uses_isolated_asyncio_test_case() {
        let text = scaffolded_file("orders.py", &[], "python", ORDERS, &["empty", "[]", "customer_id=3)", "[]"]);
        expect_test::expect![[r#"
            import unittest
            from unittest.mock import AsyncMock, patch
            from orders import get_orders


            class TestGetOrders(unittest.IsolatedAsyncioTestCase):
                async def test_get_orders_empty(self):
                    with patch("app.get_orders_for_customer", new_callable=AsyncMock) as mock_get_orders_for_customer:
                        mock_get_orders_for_customer.return_value = []
                        result = await get_orders(customer_id=3)
                        mock_get_orders_for_customer.assert_called_once()
                        assert result == []
        "#]]
        .assert_eq(&text);
    }

    #[test]
    fn async_rust_with_tokio_and_async_typescript() {
        let cargo = [("Cargo.toml", "[dependencies]\ntokio = { version = \"1\", features = [\"full\"] }\n")];
        let source = "pub async fn double(x: u32) -> u32 {\n    x * 2$0\n}\n";
        let text = scaffolded_file("lib.rs", &cargo, "rust", source, &["of_two", "2) + 1", "4);"]);
        expect_test::expect![[r#"

            #[cfg(test)]
            mod tests {
                use super::*;

                #[tokio::test]
                async fn double_of_two() {
                    let result = double(2).await;
                    assert_eq!(result, 4);
                }
            }
        "#]]
        .assert_eq(&text);
        let source = "export async function fetchUser(id: number) {\n  return await api.get(id);$0\n}\n";
        let text = scaffolded_file("user.ts", &[], "typescript", source, &["returns the user", "1)", "{ id: 1 });"]);
        expect_test::expect![[r#"
            import { test } from "node:test";
            import assert from "node:assert/strict";
            import { fetchUser } from "./user";

            test("fetchUser returns the user", async () => {
              const result = await fetchUser(1);
              assert.deepStrictEqual(result, { id: 1 });
            });
        "#]]
        .assert_eq(&text);
    }
}
