//! Asking the model for tests: the shape of a test per language (its name, then a body that
//! already asserts on a call of the code under test), scaffolds for async code and
//! collaborators, and the rounds of candidates and repairs.

use super::assemble::{Test, assemble, find_tests, make_names_unique, parses_as_well, python_import_line};
use super::plan::subject;
use super::{Plan, TestEdit};
use crate::actions::scaffold::{self, AsyncStyle, Collaborator, Piece};
use crate::actions::verify::budget::Budget;
use crate::actions::{ActionError, Asker, Target};
use crate::engine::{Backend, CancelToken, EngineError, Flow};
use crate::syntax::Language;
use crate::syntax::languages::TestLayout;
use crate::syntax::scopes::ScopeKind;

/// How one test is written, in two short generations: the rest of its name after `name_lead`
/// (up to `name_end`), then its body after `body_lead`, which already asserts on a call of the
/// code under test, so every test checks a result of it.
struct Shape {
    name_lead: String,
    name_end: &'static str,
    body_lead: String,
}

fn shape(target: &Target, layout: TestLayout) -> Shape {
    let name = &target.scope.name;
    let callable = target.scope.kind == ScopeKind::Function;
    match layout {
        TestLayout::Python => Shape {
            name_lead: format!("def test_{}_", name.to_lowercase()),
            name_end: "(",
            body_lead: if callable { format!("():\n    assert {name}(") } else { "():\n    ".into() },
        },
        TestLayout::Rust => Shape {
            name_lead: format!("#[test]\nfn {}_", name.to_lowercase()),
            name_end: "(",
            body_lead: if callable { format!("() {{\n    assert_eq!({name}(") } else { "() {\n    ".into() },
        },
        TestLayout::JavaScript | TestLayout::TypeScript => Shape {
            name_lead: format!("test(\"{name} "),
            name_end: "\"",
            body_lead: if callable {
                format!("\", () => {{\n  assert.deepStrictEqual({name}(")
            } else {
                "\", () => {\n  ".into()
            },
        },
        TestLayout::Go => Shape {
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
        // Titles are string literals; elsewhere the name is an identifier.
        Language::JavaScript | Language::TypeScript | Language::Tsx => c.is_alphanumeric() || " _-,".contains(c),
        Language::Python | Language::Rust | Language::Go | Language::Java | Language::C | Language::Cpp => {
            c.is_alphanumeric() || c == '_'
        }
    };
    text.chars().take_while(|c| keep(*c)).collect::<String>().trim().to_string()
}

/// For async code and code with collaborators: the name lead, where the name ends, and the
/// scaffold of the body after the name.
pub(super) fn scaffolded_shape(
    target: &Target,
    plan: &Plan,
    collaborators: &[Collaborator],
) -> Option<(String, &'static str, Vec<Piece>)> {
    if target.scope.kind != ScopeKind::Function {
        return None;
    }
    let name = &target.scope.name;
    let is_async = target.scope.is_async;
    match target.language {
        Language::Python => Some(python_scaffold(target, plan, collaborators)),
        Language::Rust if is_async && plan.tokio => Some((
            format!("#[tokio::test]\nasync fn {}_", name.to_lowercase()),
            "(",
            call_and_expectation(
                format!("() {{\n    let result = {name}("),
                ".await;\n    assert_eq!(result, ".into(),
                "\n}\n".into(),
            ),
        )),
        Language::Go => go_scaffold(target, plan),
        Language::JavaScript | Language::TypeScript | Language::Tsx if is_async => Some((
            format!("test(\"{name} "),
            "\"",
            call_and_expectation(
                format!("\", async () => {{\n  const result = await {name}("),
                ";\n  assert.deepStrictEqual(result, ".into(),
                "\n});\n".into(),
            ),
        )),
        Language::Rust
        | Language::JavaScript
        | Language::TypeScript
        | Language::Tsx
        | Language::Java
        | Language::C
        | Language::Cpp => None,
    }
}

/// A pytest function (`@pytest.mark.asyncio` for async code when the project has
/// pytest-asyncio) or an `IsolatedAsyncioTestCase` method, its body built around the
/// collaborators' mocks.
fn python_scaffold(target: &Target, plan: &Plan, collaborators: &[Collaborator]) -> (String, &'static str, Vec<Piece>) {
    let name = &target.scope.name;
    let lower = name.to_lowercase();
    let is_async = target.scope.is_async;
    let (lead, receiver) = match (is_async, plan.async_style) {
        (true, AsyncStyle::PytestAsyncio) => (format!("@pytest.mark.asyncio\nasync def test_{lower}_"), ""),
        // A method of an `IsolatedAsyncioTestCase`; `assemble` adds the class.
        (true, AsyncStyle::Unittest) => (format!("async def test_{lower}_"), "self"),
        (false, _) => (format!("def test_{lower}_"), ""),
    };
    let mut pieces = vec![Piece::Fixed(format!("({receiver}):\n"))];
    pieces.extend(scaffold::python_body(&format!("{name}("), is_async, collaborators, "    "));
    (lead, "(", pieces)
}

/// A Go test that calls the function, checks its error and compares its value with a typed
/// expectation; `None` for result lists tests are not written for.
fn go_scaffold(target: &Target, plan: &Plan) -> Option<(String, &'static str, Vec<Piece>)> {
    let name = &target.scope.name;
    let results = go_results(target.scope.return_annotation.as_deref()?)?;
    let uses_reflect = plan.existing.as_deref().is_none_or(|e| e.contains("\"reflect\""));
    let check = |value: &str| go_comparison(name, value, uses_reflect);
    let error_check = format!("\n\tif err != nil {{\n\t\tt.Fatalf(\"{name}: %v\", err)\n\t}}");
    let pieces = match results {
        GoResults::Value(value) => call_and_expectation(
            format!("(t *testing.T) {{\n\tgot := {name}("),
            format!("\n\tvar want {value} = "),
            check(value),
        ),
        GoResults::ValueAndError(value) => call_and_expectation(
            format!("(t *testing.T) {{\n\tgot, err := {name}("),
            format!("{error_check}\n\tvar want {value} = "),
            check(value),
        ),
        GoResults::Error => vec![
            Piece::Fixed(format!("(t *testing.T) {{\n\terr := {name}(")),
            Piece::Arguments,
            Piece::Fixed(format!("{error_check}\n}}\n")),
        ],
    };
    Some((format!("func Test{name}"), "(", pieces))
}

/// The end of a Go test: `got != want` for comparable types in a file without `reflect`,
/// `reflect.DeepEqual` otherwise.
fn go_comparison(name: &str, value: &str, uses_reflect: bool) -> String {
    let comparable = !(value.contains('[') || value.contains("func") || value.contains("interface"));
    let condition = if comparable && !uses_reflect { "got != want" } else { "!reflect.DeepEqual(got, want)" };
    format!("\n\tif {condition} {{\n\t\tt.Errorf(\"{name}() = %#v, want %#v\", got, want)\n\t}}\n}}\n")
}

/// A scaffold that calls the code (`call`, then the model's arguments), then `between`, the
/// model's expected value (one line), then `end`.
fn call_and_expectation(call: String, between: String, end: String) -> Vec<Piece> {
    vec![Piece::Fixed(call), Piece::Arguments, Piece::Fixed(between), Piece::Hole { stop: "\n" }, Piece::Fixed(end)]
}

/// What a Go function returns, as far as its tests care.
#[derive(Debug, PartialEq, Eq)]
pub enum GoResults<'a> {
    Value(&'a str),
    ValueAndError(&'a str),
    Error,
}

/// A Go result list (`int`, `(int, error)`, `(n int, err error)`, `error`) in the forms tests
/// are written for; `None` for others (several values, no result).
pub fn go_results(annotation: &str) -> Option<GoResults<'_>> {
    let inner = annotation.trim().strip_prefix('(').and_then(|a| a.strip_suffix(')')).unwrap_or(annotation.trim());
    let parts: Vec<&str> = inner.split(',').map(go_result_type).collect();
    match parts.as_slice() {
        [""] => None,
        ["error"] => Some(GoResults::Error),
        [value] if !value.contains('(') => Some(GoResults::Value(value)),
        [value, "error"] if !value.contains('(') => Some(GoResults::ValueAndError(value)),
        _ => None,
    }
}

/// The type of a possibly named Go result (`n int` → `int`).
fn go_result_type(part: &str) -> &str {
    let part = part.trim();
    match part.split_once(' ') {
        Some((name, kind)) if name.chars().all(|c| c.is_alphanumeric() || c == '_') => kind.trim(),
        _ => part,
    }
}

/// The model as `write_scaffolded` uses it: (code so far, stop strings, max tokens) → text.
pub(super) type Ask<'a> = dyn FnMut(&str, &[&str], usize) -> Result<String, ActionError> + 'a;

/// A scaffolded test's parts (see `scaffolded_shape`).
pub(super) struct ScaffoldShape<'a> {
    pub(super) lead: &'a str,
    pub(super) name_end: &'static str,
    pub(super) pieces: &'a [Piece],
    pub(super) collaborators: &'a [Collaborator],
    pub(super) parameters: &'a [String],
}

/// Writes one scaffolded test after `written`: its name, then each hole in order.
/// `ask(code so far, stops, max tokens)` is the model (canned answers in tests).
pub(super) fn write_scaffolded(
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

fn framework(layout: TestLayout) -> &'static str {
    match layout {
        TestLayout::Python => "pytest",
        TestLayout::Rust => "Rust #[test]",
        TestLayout::JavaScript | TestLayout::TypeScript => "node:test (with `test` and `assert`)",
        TestLayout::Go => "Go `testing`",
    }
}

/// How many tests one action writes.
pub const TESTS_PER_ACTION: usize = 3;
/// Token budget of one test: a test longer than this is probably a loop and is dropped.
const TOKENS_PER_TEST: usize = 160;

/// A test without an assertion checks nothing.
fn asserts_something(language: Language, test: &Test) -> bool {
    match language {
        Language::Go => ["t.Error", "t.Fatal", "t.Fail"].iter().any(|call| test.text.contains(call)),
        Language::Python
        | Language::Rust
        | Language::JavaScript
        | Language::TypeScript
        | Language::Tsx
        | Language::Java
        | Language::C
        | Language::Cpp => {
            test.text.contains("assert") || test.text.contains("pytest.raises") || test.text.contains("should_panic")
        }
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
fn closer(layout: TestLayout) -> &'static str {
    match layout {
        TestLayout::Python => "",
        TestLayout::Rust | TestLayout::Go => "}\n",
        TestLayout::JavaScript | TestLayout::TypeScript => "});\n",
    }
}

/// Body text without the name, to spot a test repeating an earlier one.
/// A test without its name: two tests with the same body are the same test.
pub fn body_of(test: &Test) -> String {
    test.text.replacen(&test.name, "", 1)
}

/// A candidate that failed when run, and why: the model gets it back to repair.
#[derive(Clone, Debug)]
pub struct Repair {
    pub test: Test,
    pub error: String,
}

/// What the model writes in one round: `count` new tests, or one repaired test per `repairs`.
pub struct Request<'a> {
    /// Facts that help the model build valid inputs (parameter types' fields, constructors).
    pub hints: &'a str,
    pub count: usize,
    pub repairs: &'a [Repair],
    /// Tests already written (kept or still to run): shown, so new ones differ.
    pub earlier: &'a [Test],
    /// Discarded attempts after which the round ends (each costs a generation).
    pub max_discarded: usize,
    /// The action's time budget: no test is started after it, and one being written is cut.
    pub budget: Option<&'a Budget>,
}

/// Candidate tests, written one at a time (each prompt shows the earlier ones, so the model
/// writes different cases and the KV cache covers the shared start), each generation stopped
/// as soon as the test is complete; only complete, asserting, distinct tests are returned.
/// When the request's budget runs out, the tests finished by then are the answer.
pub fn write_candidates(
    model: &mut dyn Backend,
    target: &Target,
    plan: &Plan,
    request: &Request,
    cancel: CancelToken,
) -> Result<Vec<Test>, ActionError> {
    let mut tests = Vec::new();
    match write_into(model, target, plan, request, cancel, &mut tests) {
        // The budget's deadline stopped a generation.
        Err(ActionError::Engine(EngineError::TimedOut)) if request.budget.is_some_and(Budget::spent) => Ok(tests),
        outcome => outcome.map(|()| tests),
    }
}

fn write_into(
    model: &mut dyn Backend,
    target: &Target,
    plan: &Plan,
    request: &Request,
    cancel: CancelToken,
    tests: &mut Vec<Test>,
) -> Result<(), ActionError> {
    let mut asker = Asker::new(model, cancel, prompt_context(target, request.hints));
    asker.deadline = request.budget.map(Budget::deadline);
    let round = Round::new(target, plan, request);
    let wanted = if request.repairs.is_empty() { request.count } else { request.repairs.len() };
    let mut failures = 0;
    let out_of_time = || request.budget.is_some_and(Budget::spent);
    while tests.len() < wanted && failures < request.max_discarded && !out_of_time() {
        // The first test is greedy; later ones (and retries) sample, so they differ.
        asker.attempt = (request.earlier.len() + tests.len() + failures) as u64;
        let written = round.code_before_next_test(tests);
        let known = find_tests(round.language, &written).len();
        let new = match &round.scaffolded {
            Some(scaffolded) => round.write_scaffolded_test(&mut asker, scaffolded, &written, known)?,
            None => {
                let number = request.earlier.len() + tests.len() + 1;
                round.write_free_test(&mut asker, &written, known, number)?
            }
        };
        match new {
            Some(test) if asserts_something(round.language, &test) && is_new(request, tests, &test) => tests.push(test),
            other => {
                tracing::debug!(?other, "discarded a generated test");
                failures += 1;
            }
        }
    }
    Ok(())
}

/// What every question is about: the target's source, then the request's hints.
fn prompt_context(target: &Target, hints: &str) -> String {
    let mut context = format!("```{}\n{}\n```", target.fence(), target.source());
    if !hints.is_empty() {
        context.push_str(&format!("\n\n```{}\n{hints}```", target.fence()));
    }
    context
}

/// A test unlike every one written before it (earlier rounds, this round, those repaired).
fn is_new(request: &Request, tests: &[Test], test: &Test) -> bool {
    let before = request.earlier.iter().chain(tests.iter()).chain(request.repairs.iter().map(|r| &r.test));
    before.into_iter().all(|t| body_of(t) != body_of(test))
}

/// What one round's tests have in common: the question, the shape of a test and, for async
/// code, code with collaborators and Go, the scaffold the model fills.
struct Round<'a> {
    language: Language,
    plan: &'a Plan,
    request: &'a Request<'a>,
    question: String,
    completion_lead: String,
    fence: String,
    shape: Shape,
    scaffolded: Option<(String, &'static str, Vec<Piece>)>,
    collaborators: Vec<Collaborator>,
    parameter_names: Vec<String>,
}

impl<'a> Round<'a> {
    fn new(target: &Target, plan: &'a Plan, request: &'a Request<'a>) -> Round<'a> {
        let language = target.language;
        let (_, qualified) = subject(target);
        let collaborators = scaffold::collaborators(target, &plan.module);
        // Go tests always follow the scaffold: typed expectations and error checks.
        let scaffolded = (scaffold::needed(target, &collaborators) || plan.layout == TestLayout::Go)
            .then(|| scaffolded_shape(target, plan, &collaborators))
            .flatten();
        Round {
            language,
            plan,
            request,
            question: format!(
                "Write {} unit tests for `{qualified}`. Cover typical inputs and edge cases with short test functions that each assert a result. Reply with code only.",
                framework(plan.layout)
            ),
            completion_lead: format!("{} Unit tests for {qualified}\n", language.spec().line_comment),
            fence: format!("```{}\n", target.fence()),
            shape: shape(target, plan.layout),
            scaffolded,
            collaborators,
            parameter_names: target.scope.parameters.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// The test file so far, then the start of the next test: the tests written before it,
    /// or, when repairing, the failing test and its error.
    fn code_before_next_test(&self, tests: &[Test]) -> String {
        let mut written = match self.language {
            Language::Python => format!("{}\n\n\n", python_import_line(self.plan)),
            Language::Rust
            | Language::JavaScript
            | Language::TypeScript
            | Language::Tsx
            | Language::Go
            | Language::Java
            | Language::C
            | Language::Cpp => String::new(),
        };
        match self.request.repairs.get(tests.len()) {
            Some(repair) => {
                let comment = self.language.spec().line_comment;
                written.push_str(&repair.test.text);
                written.push('\n');
                let error = repair.error.lines().next().unwrap_or_default();
                written.push_str(&format!("{comment} The test above fails: {error}\n{comment} A correct test:\n"));
            }
            None => {
                for test in self.request.earlier.iter().chain(tests.iter()) {
                    written.push_str(&test.text);
                    written.push_str(test_separator(self.plan.layout));
                }
            }
        }
        written
    }

    /// A test that follows the scaffold: the model writes its name, arguments and expectations.
    fn write_scaffolded_test(
        &self,
        asker: &mut Asker,
        (lead, name_end, pieces): &(String, &'static str, Vec<Piece>),
        written: &str,
        known: usize,
    ) -> Result<Option<Test>, ActionError> {
        let mut ask = |code: &str, stops: &[&str], max_tokens: usize| {
            let prompt = asker.prompt(&self.question, &self.completion_lead, &format!("{}{code}", self.fence));
            asker.generate(prompt, max_tokens, stops)
        };
        let shape = ScaffoldShape {
            lead,
            name_end,
            pieces,
            collaborators: &self.collaborators,
            parameters: &self.parameter_names,
        };
        let code = write_scaffolded(self.language, written, &shape, known, &mut ask)?;
        Ok(find_tests(self.language, &code).into_iter().nth(known))
    }

    /// A test the model writes freely after the shape's leads: its name, then its body.
    /// `number` names it when the model gives no name.
    fn write_free_test(
        &self,
        asker: &mut Asker,
        written: &str,
        known: usize,
        number: usize,
    ) -> Result<Option<Test>, ActionError> {
        let name_prompt = self.prompt(asker, &format!("{written}{}", self.shape.name_lead));
        let name_part = clean_name_part(self.language, &asker.generate(name_prompt, 12, &[self.shape.name_end, "\n"])?);
        let name_part = if name_part.is_empty() { format!("case_{number}") } else { name_part };
        let code_so_far = format!("{written}{}{name_part}{}", self.shape.name_lead, self.shape.body_lead);
        let body = self.write_body(asker, &code_so_far, known)?;
        Ok(find_tests(self.language, &format!("{code_so_far}{body}")).into_iter().nth(known))
    }

    /// The rest of a test after `code_so_far`, stopped as soon as the test is complete; a
    /// body that starts repeating a line is cut there and closed.
    fn write_body(&self, asker: &mut Asker, code_so_far: &str, known: usize) -> Result<String, ActionError> {
        let prompt = self.prompt(asker, code_so_far);
        // The body's first line starts in the lead; loops are spotted on whole lines.
        let line_start = code_so_far.rsplit('\n').next().unwrap_or_default().to_string();
        let mut complete = |text: &str| {
            // A test is complete once its last line is finished and it parses on its own; a
            // line repeating an earlier one is a loop, cut below.
            let finished =
                text.ends_with('\n') && find_tests(self.language, &format!("{code_so_far}{text}")).len() > known;
            if finished || repeated_line(&format!("{line_start}{text}")).is_some() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let mut generated = asker.generate_until(prompt, TOKENS_PER_TEST, &["```"], &mut complete)?;
        if let Some(cut) = repeated_line(&format!("{line_start}{generated}")) {
            generated.truncate(cut.saturating_sub(line_start.len()));
            generated.push_str(closer(self.plan.layout));
        }
        Ok(generated)
    }

    /// The prompt whose answer continues `code` in the fenced block.
    fn prompt(&self, asker: &Asker, code: &str) -> Vec<crate::engine::PromptPiece> {
        asker.prompt(&self.question, &self.completion_lead, &format!("{}{code}", self.fence))
    }
}

/// What goes between two tests in a file (PEP 8's two blank lines in Python).
fn test_separator(layout: TestLayout) -> &'static str {
    match layout {
        TestLayout::Python => "\n\n\n",
        TestLayout::Rust | TestLayout::JavaScript | TestLayout::TypeScript | TestLayout::Go => "\n\n",
    }
}

/// The edit for `tests`: unique names, and the longest run of them that leaves the target
/// parsing as well as before.
pub fn finish(target: &Target, plan: &Plan, mut tests: Vec<Test>) -> Result<TestEdit, ActionError> {
    let language = target.language;
    let existing_names: Vec<String> = plan
        .existing
        .as_deref()
        .map(|text| find_tests(language, text).into_iter().map(|t| t.name).collect())
        .unwrap_or_default();
    make_names_unique(language, &mut tests, &existing_names);
    while !tests.is_empty() {
        let insertion = assemble(target, plan, &tests);
        if parses_as_well(language, plan.existing.as_deref().unwrap_or(""), &insertion) {
            return Ok(TestEdit {
                file: plan.file.clone(),
                create: plan.existing.is_none(),
                test_names: tests.iter().map(|t| t.name.clone()).collect(),
                insertion,
                tests,
            });
        }
        tests.pop();
    }
    let (_, qualified) = subject(target);
    Err(ActionError::Rejected(format!(
        "the model wrote no complete test with an assertion for `{qualified}`; nothing was written (try again, or a larger model)"
    )))
}

/// Tests as today's unverified pipeline writes them: three candidates, checked only by the
/// parser.
pub fn generate(
    model: &mut dyn Backend,
    target: &Target,
    plan: &Plan,
    cancel: CancelToken,
) -> Result<TestEdit, ActionError> {
    let request =
        Request { hints: "", count: TESTS_PER_ACTION, repairs: &[], earlier: &[], max_discarded: 5, budget: None };
    let tests = write_candidates(model, target, plan, &request, cancel)?;
    finish(target, plan, tests)
}
