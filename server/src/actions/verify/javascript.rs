//! JavaScript verification with node. Candidates run through `runner.mjs`, each test twice in
//! a worker thread of its own (a runaway test is stopped at its limit and the others still
//! run); the file as it will be written runs under node:test itself. The module under test is
//! the editor's buffer text (`preload.mjs` + `hooks.mjs`: a load hook for ES modules, the
//! CommonJS loaders for `require`). A failing equality assertion gets the observed value, a
//! `throw` the code makes on purpose becomes `assert.throws`; nib writes both into the test
//! (with the syntax tree) and runs it again. TypeScript runs the same way, compiled on load by
//! the project's own compiler (`hooks.mjs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tree_sitter::Node;

use super::toolchain::Compiler;
use super::{Report, Round, Runner, TEST_TIME_LIMIT, TestResult, cancelled, fix_rounds};
use crate::actions::unit_tests::{self, Plan, Test};
use crate::actions::{ActionError, Target};
use crate::engine::CancelToken;
use crate::sandbox::{self, Limits, PrivateDir, Spec};
use crate::syntax::{self, Language};

const RUNNER: &str = include_str!("runner.mjs");
const PRELOAD: &str = include_str!("preload.mjs");
const HOOKS: &str = include_str!("hooks.mjs");
const MARK: &str = "@@nib@@ ";
/// Seconds a worker may take to load the code before its test starts.
const LOAD_SECONDS: u64 = 5;
/// Heap of one test's worker, MiB.
const HEAP_MB: u64 = 512;

/// JavaScript tests run by `node`; TypeScript tests too, with the project's compiler.
pub struct JavaScript {
    pub node: PathBuf,
    /// Set for TypeScript: what compiles it.
    pub compiler: Option<Compiler>,
}

/// What the runner says about one test.
#[derive(Debug, Default, Deserialize)]
struct Record {
    #[serde(default)]
    name: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    module_error: Option<String>,
    #[serde(default)]
    fix: Option<Fix>,
}

/// What would make a failing test hold: the observed value, or the error expected.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Fix {
    /// The candidate file's line (1-based) that failed.
    pub line: usize,
    /// The actual value of a failing equality assertion, as a literal.
    #[serde(default)]
    pub value: Option<String>,
    /// The name of an error the code throws on purpose.
    #[serde(default)]
    pub raises: Option<String>,
}

impl Runner for JavaScript {
    fn program(&self) -> &Path {
        &self.node
    }

    fn run_candidates(
        &self,
        target: &Target,
        plan: &mut Plan,
        candidates: &[Test],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError> {
        let raised = raised_on_purpose(target);
        fix_rounds(candidates, |batch| {
            let (text, starts) = candidate_file(target, plan, batch)?;
            let titles: Vec<String> = batch.iter().map(|t| title(&t.name)).collect();
            let run = Run { text: &text, titles: &titles, candidate: true, raised: &raised };
            let records = self.run(target, plan, &run, cancel).map_err(cancelled)?;
            let mut round =
                Round { module_error: records.iter().find_map(|r| r.module_error.clone()), ..Round::default() };
            for ((test, title), start) in batch.iter().zip(&titles).zip(starts) {
                let Some(record) = records.iter().find(|r| &r.name == title) else { continue };
                let repaired = record.fix.as_ref().filter(|_| record.outcome == "fail").and_then(|fix| {
                    let line = fix.line.checked_sub(start)?;
                    apply_fix(target.language, &test.text, line, fix, &target.scope.name)
                });
                let result = TestResult {
                    name: test.name.clone(),
                    outcome: record.outcome.clone(),
                    error: record.error.clone(),
                    ..TestResult::default()
                };
                round.results.push((result, repaired));
            }
            Ok(round)
        })
    }

    fn run_file(
        &self,
        target: &Target,
        plan: &Plan,
        text: &str,
        names: &[String],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError> {
        let titles: Vec<String> = names.iter().map(|n| title(n)).collect();
        let folder = plan.file.parent().unwrap_or(&plan.root);
        let text = absolute_imports(text, folder);
        let run = Run { text: &text, titles: &titles, candidate: false, raised: &[] };
        let records = self.run(target, plan, &run, cancel).map_err(cancelled)?;
        let mut report =
            Report { module_error: records.iter().find_map(|r| r.module_error.clone()), ..Report::default() };
        for (name, title) in names.iter().zip(&titles) {
            let result = match records.iter().find(|r| &r.name == title) {
                Some(record) => TestResult {
                    name: name.clone(),
                    outcome: record.outcome.clone(),
                    error: record.error.clone(),
                    ..TestResult::default()
                },
                None => TestResult::not_run(name, false),
            };
            report.results.push(result);
        }
        Ok(report)
    }
}

/// One sandboxed node run: candidates through the runner, or the final file under node:test.
struct Run<'a> {
    text: &'a str,
    titles: &'a [String],
    candidate: bool,
    raised: &'a [String],
}

impl JavaScript {
    fn run(&self, target: &Target, plan: &Plan, run: &Run, cancel: &CancelToken) -> Result<Vec<Record>, String> {
        let folder =
            PrivateDir::new("nib-tests").map_err(|e| format!("cannot make a private folder for the test run: {e}"))?;
        let write = |name: &str, text: &str| {
            folder
                .write(Path::new(name), text.as_bytes())
                .map_err(|e| format!("cannot write {name} for the test run: {e}"))
        };
        let runner = write("nib_runner.mjs", RUNNER)?;
        let preload = write("nib_preload.mjs", PRELOAD)?;
        write("nib_hooks.mjs", HOOKS)?;
        let test_file = write(&format!("nib_tests.test.{}", self.test_extension(target.language, plan)), run.text)?;
        let target_path = target.path.clone().unwrap_or_default();
        let spec = serde_json::json!({
            "candidate": test_file,
            "titles": run.titles,
            "limit_s": TEST_TIME_LIMIT.as_secs_f64(),
            "load_s": LOAD_SECONDS,
            "heap_mb": HEAP_MB,
            "raised_on_purpose": run.raised,
            "target_path": target_path,
            "target_url": file_url(&target_path),
            "source": target.rope.to_string(),
            "commonjs": plan.commonjs && self.compiler.is_none(),
            "compiler": self.compiler.as_ref().map(|c| serde_json::json!({ "kind": c.kind, "path": c.path })),
        });
        write("nib_spec.json", &spec.to_string())?;
        let per_test = 2 * TEST_TIME_LIMIT.as_secs() + LOAD_SECONDS;
        let wall = Duration::from_secs(5 + per_test * run.titles.len().min(12) as u64);
        let args: Vec<std::ffi::OsString> = if run.candidate {
            vec![runner.into()]
        } else {
            let pattern = format!("^(?:{})$", run.titles.iter().map(|t| regex_escape(t)).collect::<Vec<_>>().join("|"));
            vec![
                "--import".into(),
                file_url(&preload).into(),
                "--test-reporter=tap".into(),
                format!("--test-name-pattern={pattern}").into(),
                test_file.into(),
            ]
        };
        let outcome = sandbox::run(
            &Spec {
                program: self.node.clone(),
                args,
                cwd: folder.path().to_path_buf(),
                env: vec![("NODE_NO_WARNINGS".into(), "1".into())],
                read_only: vec![plan.root.clone()],
                // V8 reserves far more address space than it uses: the data limit and each
                // worker's heap limit bound memory instead.
                limits: Limits { wall, cpu_seconds: wall.as_secs() + 1, address_space: None, ..Limits::default() },
            },
            cancel,
        )
        .map_err(|e| format!("cannot run node {}: {e}", self.node.display()))?;
        if outcome.cancelled {
            return Err("cancelled".into());
        }
        let stdout = String::from_utf8_lossy(&outcome.stdout);
        let mut records = if run.candidate { runner_records(&stdout) } else { tap_records(&stdout, run.titles) };
        if records.is_empty() && !outcome.success() && !outcome.timed_out {
            let stderr = String::from_utf8_lossy(&outcome.stderr);
            let error = load_error(&stderr).unwrap_or_else(|| outcome.failure());
            records.push(Record { module_error: Some(error), ..Record::default() });
        }
        Ok(records)
    }
}

impl JavaScript {
    /// The extension of the test file nib runs: the language's, for node and the compiler.
    fn test_extension(&self, language: Language, plan: &Plan) -> &'static str {
        match (&self.compiler, language) {
            (Some(_), Language::Tsx) => "tsx",
            (Some(_), _) => "ts",
            (None, _) if plan.commonjs => "cjs",
            (None, _) => "mjs",
        }
    }
}

/// `path` as a `file://` URL, the way node spells it.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => url.push(*byte as char),
            other => url.push_str(&format!("%{other:02X}")),
        }
    }
    url
}

fn regex_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if "\\^$.|?*+()[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// A test's title from its name (the string literal the test was declared with).
fn title(name: &str) -> String {
    let quoted = name.len() >= 2 && name.starts_with(['"', '\'', '`']) && name.ends_with(&name[..1]);
    if quoted { name[1..name.len() - 1].to_string() } else { name.to_string() }
}

/// The first line of node's report of an error that stopped the file loading.
fn load_error(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|line| {
            let line = line.trim_start();
            line.starts_with("SyntaxError") || line.starts_with("Error") || line.starts_with("TypeError")
        })
        .map(|line| line.trim().chars().take(500).collect())
}

fn runner_records(stdout: &str) -> Vec<Record> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix(MARK))
        .filter_map(|json| serde_json::from_str::<Record>(json).ok())
        .collect()
}

/// The results of the top-level tests in node:test's TAP output (`ok 1 - title`).
fn tap_records(stdout: &str, titles: &[String]) -> Vec<Record> {
    let lines: Vec<&str> = stdout.lines().collect();
    let mut records = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let (passed, rest) = match line.strip_prefix("ok ") {
            Some(rest) => (true, rest),
            None => match line.strip_prefix("not ok ") {
                Some(rest) => (false, rest),
                None => continue,
            },
        };
        let Some((_, name)) = rest.split_once(" - ") else { continue };
        let name = name.split(" # ").next().unwrap_or(name).replace("\\#", "#").replace("\\\\", "\\");
        if !titles.contains(&name) {
            continue;
        }
        let error = (!passed).then(|| tap_error(&lines[index + 1..]));
        records.push(Record { name, outcome: if passed { "pass" } else { "fail" }.into(), error, ..Record::default() });
    }
    records
}

/// The error in the YAML block after a failing test.
fn tap_error(block: &[&str]) -> String {
    for (index, line) in block.iter().enumerate() {
        let line = line.trim();
        if line == "..." {
            break;
        }
        if let Some(value) = line.strip_prefix("error: ") {
            let value = value.trim_matches('\'');
            if value == "|-" || value == "|" || value == ">-" {
                return block.get(index + 1).map(|l| l.trim().to_string()).unwrap_or_default();
            }
            return value.to_string();
        }
    }
    "failed".into()
}

/// The candidate file for `tests` and the line (1-based) each test starts on: tests register
/// with the runner instead of node:test, and the code under test is imported by its absolute
/// path (its own relative imports and packages resolve from where it lies).
fn candidate_file(target: &Target, plan: &Plan, tests: &[Test]) -> Result<(String, Vec<usize>), ActionError> {
    let mut candidate_plan = plan.clone();
    candidate_plan.existing = None;
    let edit = unit_tests::finish(target, &candidate_plan, tests.to_vec())?;
    let [test_import, _, subject_import] = unit_tests::javascript_header(plan);
    let path = target.path.clone().unwrap_or_default();
    // The import's quoted specifier (`"./price.js"`, or `"./price"` in TypeScript).
    let relative = subject_import.rsplit('"').nth(1).map(|specifier| format!("\"{specifier}\"")).unwrap_or_default();
    let absolute = if plan.commonjs {
        serde_json::to_string(&path.to_string_lossy()).unwrap_or_default()
    } else {
        serde_json::to_string(&file_url(&path)).unwrap_or_default()
    };
    let text: String = edit
        .insertion
        .text
        .split_inclusive('\n')
        .map(|line| {
            if line.trim_end() == test_import {
                "const { test, it } = globalThis.__nib;\n".to_string()
            } else if line.trim_end() == subject_import {
                line.replacen(&relative, &absolute, 1)
            } else {
                line.to_string()
            }
        })
        .collect();
    let starts = tests
        .iter()
        .map(|test| {
            let found = edit.tests.iter().find(|t| t.name == test.name).map_or(test.text.as_str(), |t| t.text.as_str());
            text.find(found).map_or(0, |at| text[..at].matches('\n').count() + 1)
        })
        .collect();
    Ok((text, starts))
}

/// `text` with the relative specifiers of its `import`s and `require`s made absolute, for a
/// copy that runs from another folder than `folder`.
fn absolute_imports(text: &str, folder: &Path) -> String {
    let folder = folder.to_string_lossy();
    text.split_inclusive('\n')
        .map(|line| {
            let trimmed = line.trim_start();
            if !(trimmed.starts_with("import ") || trimmed.contains("require(") || trimmed.starts_with("} from ")) {
                return line.to_string();
            }
            let mut line = line.to_string();
            for quote in ['"', '\''] {
                line = line
                    .replace(&format!("{quote}./"), &format!("{quote}{folder}/"))
                    .replace(&format!("{quote}../"), &format!("{quote}{folder}/../"));
            }
            line
        })
        .collect()
}

fn node_text<'t>(code: &'t str, node: Node) -> &'t str {
    &code[node.byte_range()]
}

/// `test` (a candidate's text) with `fix` written into the assertion on its `line` (0-based
/// within the test): the observed value as the expected one, or the assertion turned into
/// `assert.throws`. `None` when the line holds no assertion on a call of `subject`.
pub fn apply_fix(language: Language, test: &str, line: usize, fix: &Fix, subject: &str) -> Option<String> {
    let rope = ropey::Rope::from_str(test);
    let tree = syntax::parse(&mut language.parser(), &rope, None)?;
    let mut assertion: Option<Node> = None;
    let mut stack = vec![tree.root_node()];
    while let Some(node) = stack.pop() {
        let mut cursor = node.walk();
        stack.extend(node.children(&mut cursor));
        let is_assertion = node.kind() == "call_expression"
            && node.child_by_field_name("function").is_some_and(|f| node_text(test, f).starts_with("assert"));
        let on_line = node.start_position().row <= line && line <= node.end_position().row;
        if is_assertion && on_line && assertion.is_none_or(|a| node.byte_range().len() < a.byte_range().len()) {
            assertion = Some(node);
        }
    }
    let assertion = assertion?;
    let arguments = assertion.child_by_field_name("arguments")?;
    let mut cursor = arguments.walk();
    let values: Vec<Node> = arguments.named_children(&mut cursor).collect();
    let actual = *values.first()?;
    let actual_text = node_text(test, actual);
    let calls_subject = actual_text.contains(&format!("{subject}("));
    if let Some(value) = &fix.value {
        let expected = values.get(1)?;
        if !(calls_subject || actual.kind() == "identifier") {
            return None;
        }
        let mut fixed = test.to_string();
        fixed.replace_range(expected.byte_range(), value);
        return Some(fixed);
    }
    let name = fix.raises.as_ref()?;
    let statement = assertion.parent().filter(|p| p.kind() == "expression_statement")?;
    if !calls_subject || actual_text.starts_with("await ") {
        return None;
    }
    let replacement = format!("assert.throws(() => {actual_text}, {{ name: {} }});", serde_json::to_string(name).ok()?);
    let mut fixed = test.to_string();
    fixed.replace_range(statement.byte_range(), &replacement);
    Some(fixed)
}

/// Names of the errors the target throws on purpose: `throw new X(…)` in its body and in the
/// functions of the same file it calls (a few levels deep).
pub fn raised_on_purpose(target: &Target) -> Vec<String> {
    let code = target.rope.to_string();
    let functions = top_level_functions(&code, target.tree.root_node());
    let raised = |node: Node| {
        let thrown = node.named_child(0).filter(|n| node.kind() == "throw_statement" && n.kind() == "new_expression");
        let constructor = thrown?.child_by_field_name("constructor")?;
        Some(node_text(&code, constructor).rsplit('.').next().unwrap_or_default().to_string())
    };
    let called = |node: Node<'_>, _function| {
        let callee = node.child_by_field_name("function").filter(|_| node.kind() == "call_expression");
        let callee = callee.map(|c| node_text(&code, c)).unwrap_or_default();
        functions.iter().filter(|(name, _)| name == callee).map(|(_, definition)| *definition).collect()
    };
    super::raised_on_purpose(target, raised, called)
}

/// The file's top-level functions (declarations, and `const f = (…) => …`), exported or not.
fn top_level_functions<'t>(code: &str, root: Node<'t>) -> Vec<(String, Node<'t>)> {
    let mut found = Vec::new();
    let mut cursor = root.walk();
    for statement in root.children(&mut cursor) {
        let statement = if statement.kind() == "export_statement" {
            statement.child_by_field_name("declaration").unwrap_or(statement)
        } else {
            statement
        };
        match statement.kind() {
            "function_declaration" | "generator_function_declaration" => {
                if let Some(name) = statement.child_by_field_name("name") {
                    found.push((node_text(code, name).to_string(), statement));
                }
            }
            "lexical_declaration" | "variable_declaration" => {
                let mut inner = statement.walk();
                for declarator in statement.named_children(&mut inner) {
                    let (Some(name), Some(value)) =
                        (declarator.child_by_field_name("name"), declarator.child_by_field_name("value"))
                    else {
                        continue;
                    };
                    if matches!(value.kind(), "arrow_function" | "function_expression" | "function") {
                        found.push((node_text(code, name).to_string(), value));
                    }
                }
            }
            _ => {}
        }
    }
    found
}
