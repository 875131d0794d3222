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
        Language::JavaScript | Language::TypeScript | Language::Tsx => c.is_alphanumeric() || " _-,".contains(c),
        _ => c.is_alphanumeric() || c == '_',
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
    let lower = name.to_lowercase();
    let is_async = target.scope.is_async;
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
            call_and_expectation(
                format!("() {{\n    let result = {name}("),
                ".await;\n    assert_eq!(result, ".into(),
                "\n}\n".into(),
            ),
        )),
        Language::Go => {
            let results = go_results(target.scope.return_annotation.as_deref()?)?;
            let lead = format!("func Test{name}");
            let check = |value: &str| {
                let comparable = !(value.contains('[') || value.contains("func") || value.contains("interface"));
                let uses_reflect = plan.existing.as_deref().is_none_or(|e| e.contains("\"reflect\""));
                let condition =
                    if comparable && !uses_reflect { "got != want" } else { "!reflect.DeepEqual(got, want)" };
                format!("\n\tif {condition} {{\n\t\tt.Errorf(\"{name}() = %#v, want %#v\", got, want)\n\t}}\n}}\n")
            };
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
            Some((lead, "(", pieces))
        }
        Language::JavaScript | Language::TypeScript | Language::Tsx if is_async => Some((
            format!("test(\"{name} "),
            "\"",
            call_and_expectation(
                format!("\", async () => {{\n  const result = await {name}("),
                ";\n  assert.deepStrictEqual(result, ".into(),
                "\n});\n".into(),
            ),
        )),
        _ => None,
    }
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
    let language = target.language;
    let (_, qualified) = subject(target);
    let mut context = format!("```{}\n{}\n```", target.fence(), target.source());
    if !request.hints.is_empty() {
        context.push_str(&format!("\n\n```{}\n{}```", target.fence(), request.hints));
    }
    let mut asker = Asker::new(model, cancel, context);
    asker.deadline = request.budget.map(Budget::deadline);
    let comment = language.spec().line_comment;
    let question = format!(
        "Write {} unit tests for `{qualified}`. Cover typical inputs and edge cases with short test functions that each assert a result. Reply with code only.",
        framework(plan.layout)
    );
    let shape = shape(target, plan.layout);
    let collaborators = scaffold::collaborators(target, &plan.module);
    // Go tests always follow the scaffold: typed expectations and error checks.
    let scaffolded =
        if scaffold::needed(target, &collaborators) || matches!(language.spec().tests, Some(TestLayout::Go)) {
            scaffolded_shape(target, plan, &collaborators)
        } else {
            None
        };
    let parameter_names: Vec<String> = target.scope.parameters.iter().map(|p| p.name.clone()).collect();
    let wanted = if request.repairs.is_empty() { request.count } else { request.repairs.len() };
    let mut failures = 0;
    let separator = match plan.layout {
        TestLayout::Python => "\n\n\n",
        TestLayout::Rust | TestLayout::JavaScript | TestLayout::TypeScript | TestLayout::Go => "\n\n",
    };
    let out_of_time = || request.budget.is_some_and(Budget::spent);
    while tests.len() < wanted && failures < request.max_discarded && !out_of_time() {
        // The first test is greedy; later ones (and retries) sample, so they differ.
        asker.attempt = (request.earlier.len() + tests.len() + failures) as u64;
        // The tests so far, then the start of the next one.
        let mut written = match language {
            Language::Python => format!("{}\n\n\n", python_import_line(plan)),
            _ => String::new(),
        };
        let repair = request.repairs.get(tests.len());
        match repair {
            // The failing test, its error, then a fresh start.
            Some(repair) => {
                written.push_str(&repair.test.text);
                written.push('\n');
                let error = repair.error.lines().next().unwrap_or_default();
                written.push_str(&format!("{comment} The test above fails: {error}\n{comment} A correct test:\n"));
            }
            None => {
                for test in request.earlier.iter().chain(tests.iter()) {
                    written.push_str(&test.text);
                    written.push_str(separator);
                }
            }
        }
        let known = find_tests(language, &written).len();
        let fence = format!("```{}\n", target.fence());
        let completion_lead = format!("{comment} Unit tests for {qualified}\n");
        let new = if let Some((lead, name_end, pieces)) = &scaffolded {
            let mut ask = |code: &str, stops: &[&str], max_tokens: usize| {
                let prompt = asker.prompt(&question, &completion_lead, &format!("{fence}{code}"));
                asker.generate(prompt, max_tokens, stops)
            };
            let shape =
                ScaffoldShape { lead, name_end, pieces, collaborators: &collaborators, parameters: &parameter_names };
            let code = write_scaffolded(language, &written, &shape, known, &mut ask)?;
            find_tests(language, &code).into_iter().nth(known)
        } else {
            let name_prompt =
                asker.prompt(&question, &completion_lead, &format!("{fence}{written}{}", shape.name_lead));
            let name_part = asker.generate(name_prompt, 12, &[shape.name_end, "\n"])?;
            let mut name_part = clean_name_part(language, &name_part);
            if name_part.is_empty() {
                name_part = format!("case_{}", request.earlier.len() + tests.len() + 1);
            }
            let code_so_far = format!("{written}{}{name_part}{}", shape.name_lead, shape.body_lead);
            let prompt = asker.prompt(&question, &completion_lead, &format!("{fence}{code_so_far}"));
            // The body's first line starts in the lead; loops are spotted on whole lines.
            let line_start = code_so_far.rsplit('\n').next().unwrap_or_default().to_string();
            let mut complete = |text: &str| {
                // A test is complete once its last line is finished and it parses on its own; a
                // line repeating an earlier one is a loop, cut below.
                let finished =
                    text.ends_with('\n') && find_tests(language, &format!("{code_so_far}{text}")).len() > known;
                if finished || repeated_line(&format!("{line_start}{text}")).is_some() {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            };
            let mut generated = asker.generate_until(prompt, TOKENS_PER_TEST, &["```"], &mut complete)?;
            if let Some(cut) = repeated_line(&format!("{line_start}{generated}")) {
                generated.truncate(cut.saturating_sub(line_start.len()));
                generated.push_str(closer(plan.layout));
            }
            find_tests(language, &format!("{code_so_far}{generated}")).into_iter().nth(known)
        };
        let distinct = |test: &Test| {
            request
                .earlier
                .iter()
                .chain(tests.iter())
                .chain(request.repairs.iter().map(|r| &r.test))
                .all(|t| body_of(t) != body_of(test))
        };
        match new {
            Some(test) if asserts_something(language, &test) && distinct(&test) => tests.push(test),
            other => {
                tracing::debug!(?other, "discarded a generated test");
                failures += 1;
            }
        }
    }
    Ok(())
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
