//! Python verification: runs test modules with `runner.py` in the sandbox against the code as
//! the editor shows it, and reads what the syntax tree knows that helps (exceptions the code
//! raises on purpose, the fields of parameter types, the module's top-level names).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tree_sitter::Node;

use super::{Job, Report, Runner, TEST_TIME_LIMIT, TestResult, cancelled};
use crate::actions::project_files::ProjectFiles;
use crate::actions::unit_tests::{self, Plan, PythonStyle, Test};
use crate::actions::{ActionError, Target};
use crate::engine::CancelToken;
use crate::sandbox::{self, Limits, PrivateDir, Spec};
use crate::syntax::scopes::ScopeKind;
use crate::syntax::{self, Language};

const RUNNER: &str = include_str!("runner.py");
const EXPLORER: &str = include_str!("explore.py");
/// How long `explore.py` may spend calling the function under test.
pub const EXPLORE_BUDGET: Duration = Duration::from_secs(3);
const MARK: &str = "@@nib@@ ";

/// Python tests run by `runner.py` under `interpreter`.
pub struct Python {
    pub interpreter: PathBuf,
}

impl Runner for Python {
    fn program(&self) -> &Path {
        &self.interpreter
    }

    fn hints(&self, job: &Job, plan: &Plan) -> String {
        type_hints(&job.target, plan, &job.files)
    }

    fn calls_from_code(&self, job: &Job, plan: &Plan) -> Result<Vec<Test>, ActionError> {
        let left = job.budget.deadline().saturating_duration_since(std::time::Instant::now());
        match explore(&self.interpreter, &job.target, plan, left.min(EXPLORE_BUDGET), &job.cancel) {
            Err(error) if error == "cancelled" => Err(cancelled(error)),
            // Without observed calls the model writes every candidate.
            Err(_) => Ok(Vec::new()),
            Ok(calls) => Ok(calls.into_iter().map(|call| Test { name: call.name, text: call.text }).collect()),
        }
    }

    fn prepare(&self, target: &Target, plan: &mut Plan, candidates: &[Test]) {
        import_used_names(target, plan, candidates);
    }

    /// Runs candidates as plain test functions (so a failing assertion can be fixed where it
    /// failed). Switches the plan to unittest when the interpreter has no pytest.
    fn run_candidates(
        &self,
        target: &Target,
        plan: &mut Plan,
        candidates: &[Test],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError> {
        loop {
            let mut candidate_plan = plan.clone();
            candidate_plan.existing = None;
            candidate_plan.python_style = PythonStyle::Pytest;
            candidate_plan.async_style = crate::actions::scaffold::AsyncStyle::PytestAsyncio;
            let insertion = unit_tests::finish(target, &candidate_plan, candidates.to_vec())?.insertion;
            let header = match plan.python_style {
                PythonStyle::Pytest => "import pytest\n",
                PythonStyle::Unittest => "import unittest\n",
            };
            let text = format!("{header}{}", insertion.text);
            let names: Vec<String> = candidates.iter().map(|t| t.name.clone()).collect();
            let tests = locate_tests(&text, &names);
            let module = Module { text: &text, tests: &tests, fix: true };
            let report = run(&self.interpreter, target, plan, &module, cancel).map_err(cancelled)?;
            let pytest_missing = report.module_error.as_deref().is_some_and(|e| e.contains("'pytest'"));
            if pytest_missing && plan.python_style == PythonStyle::Pytest {
                plan.python_style = PythonStyle::Unittest;
                continue;
            }
            return Ok(report);
        }
    }

    fn run_file(
        &self,
        target: &Target,
        plan: &Plan,
        text: &str,
        names: &[String],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError> {
        let tests = locate_tests(text, names);
        let module = Module { text, tests: &tests, fix: false };
        run(&self.interpreter, target, plan, &module, cancel).map_err(cancelled)
    }
}

/// Imports the module's top-level names the tests use (a dataclass they construct).
pub fn import_used_names(target: &Target, plan: &mut Plan, tests: &[Test]) {
    let subject = plan.imported.first().cloned().unwrap_or_default();
    for name in names_used(target, tests, &subject) {
        if !plan.imported.contains(&name) {
            plan.imported.push(name);
        }
    }
    // Tests that call `strutils.x` need the module itself under its own name.
    let (package, stem) = plan.module.rsplit_once('.').map_or(("", plan.module.as_str()), |(p, s)| (p, s));
    let qualified = format!("{stem}.");
    let uses_module = tests.iter().any(|test| {
        test.text
            .match_indices(&qualified)
            .any(|(at, _)| !test.text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.'))
    });
    let line = if package.is_empty() { format!("import {stem}") } else { format!("from {package} import {stem}") };
    if uses_module && !plan.extra_imports.contains(&line) {
        plan.extra_imports.push(line);
    }
}

/// A test module to run: its text, and which tests (name, enclosing class) to run.
pub struct Module<'a> {
    pub text: &'a str,
    pub tests: &'a [(String, Option<String>)],
    /// Fix wrong plain-data expectations and on-purpose exceptions (candidates only).
    pub fix: bool,
}

/// Runs `module` under `interpreter` in the sandbox; the code under test is the target's
/// buffer text.
pub fn run(
    interpreter: &Path,
    target: &Target,
    plan: &Plan,
    module: &Module,
    cancel: &CancelToken,
) -> Result<Report, String> {
    let folder = private_folder()?;
    let test_file = plan.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or("test_nib.py".into());
    let test_module = write(&folder, &test_file, module.text)?;
    let spec = serde_json::json!({
        "paths": plan.import_roots,
        "overlays": overlays(target, plan, &target.rope.to_string()),
        "test_module": test_module,
        "tests": module.tests.iter().map(|(name, class)| serde_json::json!({ "name": name, "class": class })).collect::<Vec<_>>(),
        "fix": module.fix,
        "style": style(plan),
        "raised_on_purpose": raised_on_purpose(target),
        "module_under_test": plan.module,
        "limit_s": TEST_TIME_LIMIT.as_secs_f64(),
    });
    // Each test runs twice (fixes add a few runs); the interpreter starts once.
    let wall = Duration::from_secs(8) + TEST_TIME_LIMIT * (3 * module.tests.len() as u32).min(30);
    let outcome = run_script(interpreter, plan, &folder, "nib_runner.py", &spec, wall, cancel)?;
    let mut report = Report::default();
    for value in marked(&outcome.stdout) {
        if value.get("pytest").is_some() {
            // Whether the interpreter has pytest: a missing one shows as the module's error.
            continue;
        } else if let Some(error) = value.get("module_error").and_then(|v| v.as_str()) {
            report.module_error = Some(error.to_string());
        } else if let Ok(result) = serde_json::from_value::<TestResult>(value) {
            report.results.push(result);
        }
    }
    if report.results.is_empty() && report.module_error.is_none() && !outcome.success() {
        // The interpreter itself failed (not a Python, a crash, a limit).
        report.module_error = Some(outcome.failure());
    }
    // Tests the run never reached (it was stopped) did not pass.
    for (name, _) in module.tests {
        if !report.results.iter().any(|r| &r.name == name) {
            report.results.push(TestResult::not_run(name, outcome.timed_out));
        }
    }
    Ok(report)
}

/// One call of the target `explore.py` ran, as a test and as its parts.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Observed {
    pub name: String,
    /// The test.
    pub text: String,
    /// `docstring` (an example of its docstring) or `synthesized`.
    pub source: String,
    /// The call (`f(1, 'a')`), the statements it needs first, its result's repr.
    pub call: String,
    #[serde(default)]
    pub setup: Vec<String>,
    pub expected: Option<String>,
    /// The on-purpose exception it raises.
    pub raises: Option<String>,
    /// The result is an iterator (asserted as a list).
    #[serde(default)]
    pub iterator: bool,
    /// The call is itself a check (`f(x) == y`).
    #[serde(default)]
    pub check: bool,
}

/// Calls of the target whose results `explore.py` observed: its docstring's examples and
/// inputs built from its signature, for at most `budget`. Only for top-level functions;
/// none when the explorer could not run them (the module does not import, it was stopped).
pub fn explore(
    interpreter: &Path,
    target: &Target,
    plan: &Plan,
    budget: Duration,
    cancel: &CancelToken,
) -> Result<Vec<Observed>, String> {
    if !explorable(target) {
        return Ok(Vec::new());
    }
    let spec = serde_json::json!({
        "paths": plan.import_roots,
        "overlays": overlays(target, plan, &target.rope.to_string()),
        "module_under_test": plan.module,
        "function": target.scope.name,
        "style": style(plan),
        "raised_on_purpose": raised_on_purpose(target),
        "budget_s": budget.as_secs_f64(),
    });
    let outcome = run_explorer(interpreter, plan, &spec, budget + Duration::from_secs(6), cancel)?;
    Ok(marked(&outcome.stdout).into_iter().filter_map(|value| serde_json::from_value(value).ok()).collect())
}

/// Whether `explore.py` can call the target: a synchronous top-level function in a file.
pub fn explorable(target: &Target) -> bool {
    target.scope.kind == ScopeKind::Function && !target.scope.is_async && target.path.is_some()
}

/// `doctest` on the target's docstring in `source` (the module's text with a docstring edit
/// applied): `Ok(None)` when every example passes, else what failed.
pub fn doctest(
    interpreter: &Path,
    target: &Target,
    plan: &Plan,
    source: &str,
    cancel: &CancelToken,
) -> Result<Option<String>, String> {
    let spec = serde_json::json!({
        "paths": plan.import_roots,
        "overlays": overlays(target, plan, source),
        "module_under_test": plan.module,
        "function": target.scope.name,
        "doctest": true,
    });
    let outcome = run_explorer(interpreter, plan, &spec, Duration::from_secs(10), cancel)?;
    let records = marked(&outcome.stdout);
    let Some(result) = records.iter().find_map(|r| r.get("doctest")) else {
        let error = records.iter().find_map(|r| r.get("error")?.as_str().map(str::to_string));
        return Ok(Some(error.unwrap_or_else(|| outcome.failure())));
    };
    let count = |key: &str| result.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    if count("failed") == 0 && count("attempted") > 0 {
        return Ok(None);
    }
    Ok(Some(result.get("output").and_then(|v| v.as_str()).unwrap_or("no example ran").to_string()))
}

fn run_explorer(
    interpreter: &Path,
    plan: &Plan,
    spec: &serde_json::Value,
    wall: Duration,
    cancel: &CancelToken,
) -> Result<sandbox::Outcome, String> {
    let folder = private_folder()?;
    write(&folder, "explore.py", EXPLORER)?;
    run_script(interpreter, plan, &folder, "explore.py", spec, wall, cancel)
}

fn private_folder() -> Result<PrivateDir, String> {
    PrivateDir::new("nib-tests").map_err(|e| format!("cannot make a private folder for the test run: {e}"))
}

fn write(folder: &PrivateDir, name: &str, text: &str) -> Result<PathBuf, String> {
    folder.write(Path::new(name), text.as_bytes()).map_err(|e| format!("cannot write {name} for the test run: {e}"))
}

/// The module under test as `source` (the editor's buffer text) under its real file name.
fn overlays(target: &Target, plan: &Plan, source: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut overlays = serde_json::Map::new();
    if let Some(path) = &target.path {
        overlays.insert(
            plan.module.clone(),
            serde_json::json!({
                "path": path,
                "source": source,
                "package": path.file_name().is_some_and(|n| n == "__init__.py"),
            }),
        );
    }
    overlays
}

fn style(plan: &Plan) -> &'static str {
    if plan.python_style == PythonStyle::Pytest { "pytest" } else { "unittest" }
}

/// Runs `script` (beside `runner.py`, which it may import) with `spec` in the sandbox.
fn run_script(
    interpreter: &Path,
    plan: &Plan,
    folder: &PrivateDir,
    script: &str,
    spec: &serde_json::Value,
    wall: Duration,
    cancel: &CancelToken,
) -> Result<sandbox::Outcome, String> {
    let runner = write(folder, "nib_runner.py", RUNNER)?;
    let spec_file = write(folder, "nib_spec.json", &spec.to_string())?;
    let program = if script == "nib_runner.py" { runner } else { folder.path().join(script) };
    let outcome = sandbox::run(
        &Spec {
            program: interpreter.to_path_buf(),
            args: vec![program.into(), spec_file.into()],
            cwd: folder.path().to_path_buf(),
            env: vec![
                ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
                ("PYTHONHASHSEED".into(), "0".into()),
                ("PYTHONIOENCODING".into(), "utf-8".into()),
            ],
            read_only: plan_folders(plan),
            limits: Limits { wall, cpu_seconds: wall.as_secs() + 1, ..Limits::default() },
        },
        cancel,
    )
    .map_err(|e| format!("cannot run the Python interpreter {}: {e}", interpreter.display()))?;
    if outcome.cancelled {
        return Err("cancelled".into());
    }
    Ok(outcome)
}

/// The JSON records a script wrote to its original stdout, one per marked line.
fn marked(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line.strip_prefix(MARK)?).ok())
        .collect()
}

/// The folders a run may read but not write: the workspace folder and the import roots.
fn plan_folders(plan: &Plan) -> Vec<PathBuf> {
    let mut folders = vec![plan.root.clone()];
    folders.extend(plan.import_roots.iter().filter(|p| !p.starts_with(&plan.root)).cloned());
    folders
}

/// The definition inside a `decorated_definition` (the node itself otherwise).
fn undecorated(node: Node) -> Node {
    if node.kind() == "decorated_definition" { node.child_by_field_name("definition").unwrap_or(node) } else { node }
}

fn text(target: &Target, node: Node) -> String {
    target.rope.byte_slice(node.byte_range()).to_string()
}

/// The top-level definitions of the target's file: name → node.
fn top_level<'t>(target: &'t Target) -> Vec<(String, Node<'t>)> {
    let root = target.tree.root_node();
    let mut cursor = root.walk();
    let mut found = Vec::new();
    for statement in root.children(&mut cursor) {
        let definition = undecorated(statement);
        match definition.kind() {
            "function_definition" | "class_definition" => {
                if let Some(name) = definition.child_by_field_name("name") {
                    found.push((text(target, name), definition));
                }
            }
            "expression_statement" => {
                let assignment = definition.named_child(0).filter(|n| n.kind() == "assignment");
                if let Some(left) =
                    assignment.and_then(|a| a.child_by_field_name("left")).filter(|l| l.kind() == "identifier")
                {
                    found.push((text(target, left), definition));
                }
            }
            "import_from_statement" | "import_statement" => {
                let mut inner = definition.walk();
                for name in definition.children_by_field_name("name", &mut inner) {
                    let local = match name.kind() {
                        "aliased_import" => name.child_by_field_name("alias").map(|n| text(target, n)),
                        _ => Some(text(target, name)),
                    };
                    if let Some(local) = local.filter(|l| !l.contains('.')) {
                        found.push((local, definition));
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// Exception names the target raises on purpose: `raise X` in its body or in the functions
/// and methods of the same file it calls (followed a few levels deep).
pub fn raised_on_purpose(target: &Target) -> Vec<String> {
    let definitions = top_level(target);
    let raised = |node: Node| {
        let raised = node.named_child(0).filter(|_| node.kind() == "raise_statement")?;
        let raised = if raised.kind() == "call" { raised.child_by_field_name("function")? } else { raised };
        Some(text(target, raised).rsplit('.').next().unwrap_or_default().to_string())
    };
    let called = |node: Node<'_>, function| {
        let Some(callee) = node.child_by_field_name("function").filter(|_| node.kind() == "call") else {
            return Vec::new();
        };
        let callee = text(target, callee);
        let called = callee.strip_prefix("self.").unwrap_or(&callee);
        if let Some((_, definition)) = definitions.iter().find(|(name, _)| name == called) {
            vec![*definition]
        } else if callee.starts_with("self.") {
            methods_named(target, function, called)
        } else {
            Vec::new()
        }
    };
    super::raised_on_purpose(target, raised, called)
}

/// Methods called `name` of the class around `node`.
fn methods_named<'t>(target: &Target, node: Node<'t>, name: &str) -> Vec<Node<'t>> {
    let mut class = Some(node);
    while let Some(current) = class {
        if current.kind() == "class_definition" {
            break;
        }
        class = current.parent();
    }
    let Some(body) = class.and_then(|c| c.child_by_field_name("body")) else { return Vec::new() };
    let mut cursor = body.walk();
    body.named_children(&mut cursor)
        .map(undecorated)
        .filter(|n| n.kind() == "function_definition")
        .filter(|n| n.child_by_field_name("name").is_some_and(|id| text(target, id) == name))
        .collect()
}

/// The target module's top-level names the tests use (types they construct, constants), to
/// import besides the subject.
pub fn names_used(target: &Target, tests: &[crate::actions::unit_tests::Test], subject: &str) -> Vec<String> {
    let mut used: Vec<String> = Vec::new();
    for (name, _) in top_level(target) {
        if name == subject || used.contains(&name) || name.starts_with("test") {
            continue;
        }
        let appears = tests.iter().any(|test| {
            test.text.match_indices(name.as_str()).any(|(at, _)| {
                let before = test.text[..at].chars().next_back();
                let after = test.text[at + name.len()..].chars().next();
                let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
                boundary(before) && after.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            })
        });
        if appears {
            used.push(name);
        }
    }
    used
}

/// What the model needs to build valid arguments: for each parameter type (and, for a method,
/// its class) defined in the file or imported from the workspace, its fields or constructor.
pub fn type_hints(target: &Target, plan: &Plan, files: &ProjectFiles) -> String {
    let mut wanted: Vec<String> = Vec::new();
    for parameter in &target.scope.parameters {
        let Some(annotation) = &parameter.annotation else { continue };
        for word in annotation.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            let typing =
                ["List", "Dict", "Set", "Tuple", "Optional", "Union", "Sequence", "Iterable", "Mapping", "Any"];
            if word.chars().next().is_some_and(char::is_uppercase)
                && !typing.contains(&word)
                && !wanted.iter().any(|w| w == word)
            {
                wanted.push(word.to_string());
            }
        }
    }
    if let Some(class) = enclosing_class(target) {
        wanted.insert(0, class);
    }
    let mut hints = String::new();
    for name in wanted.iter().take(4) {
        if let Some(summary) = class_summary(&target.rope.to_string(), name) {
            hints.push_str(&summary);
        } else if let Some(summary) = imported_class(target, plan, files, name) {
            hints.push_str(&summary);
        }
    }
    // Collaborators the tests mock: what they return tells the model what to make the mock return.
    for collaborator in crate::actions::scaffold::collaborators(target, &plan.module).iter().take(3) {
        let Some((module, name)) = collaborator.patch_target.rsplit_once('.') else { continue };
        let parts: Vec<&str> = module.split('.').collect();
        for base in &plan.import_roots {
            let stem = parts.iter().fold(base.clone(), |path, part| path.join(part));
            let source = [stem.with_extension("py"), stem.join("__init__.py")].iter().find_map(|f| files.read(f));
            if let Some(summary) = source.and_then(|source| function_summary(&source, name)) {
                hints.push_str(&format!("# {module}.py\n{summary}"));
                break;
            }
        }
    }
    hints
}

/// A short function whole (at most 8 lines), else its signature.
fn function_summary(source: &str, name: &str) -> Option<String> {
    let tree = syntax::parse_text(Language::Python, source)?;
    let function = syntax::find_top_level(&tree, |node| {
        node.kind() == "function_definition" && syntax::is_named(node, source, name)
    })?;
    let text = &source[function.byte_range()];
    if text.lines().count() <= 8 {
        return Some(format!("{text}\n\n"));
    }
    let body = function.child_by_field_name("body")?;
    Some(format!("{} ...\n\n", source[function.start_byte()..body.start_byte()].trim_end()))
}

fn enclosing_class(target: &Target) -> Option<String> {
    let mut node = target.tree.root_node().descendant_for_byte_range(target.scope.range.start, target.scope.range.end);
    while let Some(current) = node {
        if current.kind() == "class_definition" && current.start_byte() < target.scope.range.start {
            return current.child_by_field_name("name").map(|n| text(target, n));
        }
        node = current.parent();
    }
    None
}

/// `name`'s class in another workspace module the target imports it from.
fn imported_class(target: &Target, plan: &Plan, files: &ProjectFiles, name: &str) -> Option<String> {
    let root = target.tree.root_node();
    let mut cursor = root.walk();
    let statement = root.children(&mut cursor).find(|statement| {
        statement.kind() == "import_from_statement" && {
            let mut inner = statement.walk();
            statement.children_by_field_name("name", &mut inner).any(|n| text(target, n) == name)
        }
    })?;
    let module = statement.child_by_field_name("module_name").map(|n| text(target, n))?;
    let relative_dots = module.chars().take_while(|c| *c == '.').count();
    let parts: Vec<&str> = module[relative_dots..].split('.').filter(|p| !p.is_empty()).collect();
    let bases: Vec<PathBuf> = if relative_dots > 0 {
        let mut base = target.path.as_deref()?.parent()?.to_path_buf();
        for _ in 1..relative_dots {
            base = base.parent()?.to_path_buf();
        }
        vec![base]
    } else {
        plan.import_roots.clone()
    };
    for base in bases {
        let stem = parts.iter().fold(base, |path, part| path.join(part));
        for candidate in [stem.with_extension("py"), stem.join("__init__.py")] {
            if let Some(source) = files.read(&candidate)
                && let Some(summary) = class_summary(&source, name)
            {
                return Some(summary);
            }
        }
    }
    None
}

/// A class's header with its fields (dataclass-like) or its `__init__` signature.
fn class_summary(source: &str, name: &str) -> Option<String> {
    let tree = syntax::parse_text(Language::Python, source)?;
    let whole = syntax::find_top_level(&tree, |statement| {
        let definition = undecorated(statement);
        definition.kind() == "class_definition" && syntax::is_named(definition, source, name)
    })?;
    let class = undecorated(whole);
    let body = class.child_by_field_name("body")?;
    let mut summary = source[whole.start_byte()..body.start_byte()].trim_end().to_string();
    summary.push('\n');
    let mut inner = body.walk();
    let mut lines = 0;
    for member in body.named_children(&mut inner) {
        let definition = undecorated(member);
        let line = match definition.kind() {
            "expression_statement"
                if definition
                    .named_child(0)
                    .is_some_and(|a| a.kind() == "assignment" && a.child_by_field_name("type").is_some()) =>
            {
                Some(source[definition.byte_range()].to_string())
            }
            "function_definition"
                if definition.child_by_field_name("name").is_some_and(|n| &source[n.byte_range()] == "__init__") =>
            {
                definition
                    .child_by_field_name("body")
                    .map(|b| format!("{} ...", source[definition.start_byte()..b.start_byte()].trim_end()))
            }
            _ => None,
        };
        if let Some(line) = line {
            summary.push_str(&format!("    {}\n", line.lines().next().unwrap_or_default()));
            lines += 1;
            if lines == 12 {
                break;
            }
        }
    }
    if lines == 0 {
        summary.push_str("    ...\n");
    }
    summary.push('\n');
    Some(summary)
}

/// The test functions and methods in `code` named in `names`, with their classes (the last
/// definition of each name: inserted tests come after existing ones).
pub fn locate_tests(code: &str, names: &[String]) -> Vec<(String, Option<String>)> {
    let rope = ropey::Rope::from_str(code);
    let Some(tree) = syntax::parse(&mut Language::Python.parser(), &rope, None) else { return Vec::new() };
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    let root = tree.root_node();
    let mut cursor = root.walk();
    for statement in root.children(&mut cursor) {
        let definition = undecorated(statement);
        let name_of = |node: Node| node.child_by_field_name("name").map(|n| code[n.byte_range()].to_string());
        match definition.kind() {
            "function_definition" => {
                if let Some(name) = name_of(definition).filter(|n| names.contains(n)) {
                    found.retain(|(n, _)| *n != name);
                    found.push((name, None));
                }
            }
            "class_definition" => {
                let class = name_of(definition);
                let Some(body) = definition.child_by_field_name("body") else { continue };
                let mut inner = body.walk();
                for member in body.named_children(&mut inner) {
                    let member = undecorated(member);
                    if member.kind() == "function_definition"
                        && let Some(name) = name_of(member).filter(|n| names.contains(n))
                    {
                        found.retain(|(n, _)| *n != name);
                        found.push((name, class.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    found
}
