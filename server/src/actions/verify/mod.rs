//! Generated tests verified by execution. The model writes candidate tests; nib runs them in
//! the sandbox against the code as the editor shows it and keeps those that pass twice in
//! under 2 s. A wrong plain-data expected value becomes the observed one; a call that raises
//! an error the code raises on purpose becomes an expected-error test; other failures go back
//! to the model with the error, for a bounded number of rounds. The test file as it will be
//! written is run once more before it is offered. Without a toolchain (or with
//! `nib.tests.verify` off) tests are written unverified, and the message says so.
//!
//! The flow is the same for every language; what differs is a [`Runner`] (one file per
//! language: `python.rs`, `javascript.rs`, `go.rs`, `rust.rs`): how the candidate file is built and run in the
//! sandbox, how its results are read, and how observed values and expected errors are written.
//!
//! Everything here runs on a worker thread; the model is reached through the engine's task
//! queue, one round at a time, so the engine thread never waits for a test run.

pub mod budget;
pub mod doc_examples;
pub mod go;
pub mod javascript;
pub mod python;
pub mod rust;
#[cfg(test)]
mod tests;
pub mod toolchain;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use self::budget::Budget;
use super::project_files::ProjectFiles;
use super::unit_tests::{self, Plan, Repair, Request, Test, TestEdit};
use super::{ActionError, Target};
use crate::engine::{CancelToken, EngineError, TaskQueue};
use crate::syntax::Language;
use crate::syntax::languages::TestLayout;

/// Candidates the model writes in the first round.
const CANDIDATES: usize = 6;
/// Rounds of repairs after the first run.
const REPAIR_ROUNDS: usize = 2;
/// Most failing candidates sent back to the model per round.
const MAX_REPAIRS: usize = 3;
/// Most tests one action writes.
const KEEP: usize = 5;
/// A kept test must pass in under this long.
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(2);

/// One **Generate unit tests** request, with what it needs from the main loop.
pub struct Job {
    pub target: Target,
    /// The workspace folders (for the plan).
    pub folders: Vec<PathBuf>,
    pub files: ProjectFiles,
    /// `nib.tests.verify`.
    pub verify: bool,
    pub python_interpreter: Option<PathBuf>,
    pub queue: TaskQueue,
    pub cancel: CancelToken,
    /// The whole action's time (`nib.tests.timeBudgetSeconds`), started when the job was made.
    pub budget: Budget,
    /// Run the code's own calls (docstring examples, inputs from the signature) before asking
    /// the model; off only in tests of the model's path.
    pub calls_from_code: bool,
}

/// The tests to insert and what to tell the user.
pub struct Written {
    pub edit: TestEdit,
    /// The test file's text the edit's offsets refer to (`None`: the file is created).
    pub existing: Option<String>,
    pub message: String,
    pub verified: bool,
}

/// What one run reported about one test.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    /// `pass`, `fail`, `flaky`, `slow` or `timeout`.
    pub outcome: String,
    #[serde(default)]
    pub error: Option<String>,
    /// The test's fixed text (an observed value, an expected error), when it was fixed.
    #[serde(default)]
    pub text: Option<String>,
    /// Names the fixed test needs from the module under test (a Python exception class).
    #[serde(default)]
    pub imports: Vec<String>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.outcome == "pass"
    }

    /// A test the run never finished (the run was stopped at its limit).
    pub fn not_run(name: &str, timed_out: bool) -> TestResult {
        let error = if timed_out { "the run went past its time limit" } else { "not run" };
        TestResult {
            name: name.to_string(),
            outcome: "timeout".into(),
            error: Some(error.into()),
            ..TestResult::default()
        }
    }
}

/// One run of a test file.
#[derive(Debug, Default)]
pub struct Report {
    /// The test file (or the code it imports) failed to load.
    pub module_error: Option<String>,
    pub results: Vec<TestResult>,
}

/// A language's test runner: everything the flow in this module needs that differs per
/// language.
pub trait Runner {
    /// The program that runs the tests (for messages).
    fn program(&self) -> &Path;
    /// Facts that help the model build valid arguments (the fields of parameter types).
    fn hints(&self, _job: &Job, _plan: &Plan) -> String {
        String::new()
    }
    /// The progress message before `count` candidates run.
    fn running(&self, count: usize) -> String {
        format!("running {count} candidate tests")
    }
    /// Tests from calls whose results nib observed by running the code before the model
    /// writes anything (the docstring's examples, inputs built from the signature).
    fn calls_from_code(&self, _job: &Job, _plan: &Plan) -> Result<Vec<Test>, ActionError> {
        Ok(Vec::new())
    }
    /// Before a round runs: imports the candidates need besides the subject.
    fn prepare(&self, _target: &Target, _plan: &mut Plan, _candidates: &[Test]) {}
    /// Runs the candidates (each twice), writing the observed value into a test whose only
    /// failure is a wrong plain-data expectation, and an expected-error check where the code
    /// raises the error on purpose.
    fn run_candidates(
        &self,
        target: &Target,
        plan: &mut Plan,
        candidates: &[Test],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError>;
    /// Runs the tests `names` of `text`, the test file as it will be written, without fixes.
    fn run_file(
        &self,
        target: &Target,
        plan: &Plan,
        text: &str,
        names: &[String],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError>;
}

/// One run of a batch of candidates: per test its result, and the test's text with a fix
/// written in (an observed value, an expected error) when that is why it failed.
#[derive(Debug, Default)]
pub struct Round {
    pub module_error: Option<String>,
    pub results: Vec<(TestResult, Option<String>)>,
}

/// One build of a batch of candidates for a compiled language (Go, Rust).
pub enum Build<T> {
    Built(T),
    /// The compiler's `errors`, and the candidates (index, message) they blame.
    Failed {
        errors: String,
        broken: Vec<(usize, String)>,
    },
}

/// Builds `building` until it compiles: each candidate the compiler blames fails with its
/// message and leaves the batch. `None` when none is left, or when the errors blame no
/// candidate: then `module_error(errors)` is the round's module error.
pub fn build_what_compiles<T>(
    round: &mut Round,
    building: &mut Vec<Test>,
    mut build: impl FnMut(&[Test]) -> Result<Build<T>, ActionError>,
    module_error: impl Fn(&str) -> String,
) -> Result<Option<T>, ActionError> {
    while !building.is_empty() {
        match build(building)? {
            Build::Built(built) => return Ok(Some(built)),
            Build::Failed { errors, broken } if broken.is_empty() => {
                round.module_error = Some(module_error(&errors));
                return Ok(None);
            }
            Build::Failed { broken, .. } => {
                for (index, error) in broken.into_iter().rev() {
                    let test = building.remove(index);
                    let result = TestResult {
                        name: test.name,
                        outcome: "fail".into(),
                        error: Some(error),
                        ..TestResult::default()
                    };
                    round.results.push((result, None));
                }
            }
        }
    }
    Ok(None)
}

/// Most times a candidate is fixed and run again.
const FIX_ROUNDS: usize = 3;

/// Runs `candidates` through `run`, and those it fixed again (a few rounds): for runners
/// that write fixes outside the test run (JavaScript, Go).
pub fn fix_rounds(
    candidates: &[Test],
    mut run: impl FnMut(&[Test]) -> Result<Round, ActionError>,
) -> Result<Report, ActionError> {
    let mut tests = candidates.to_vec();
    let mut fixed = vec![false; tests.len()];
    let mut pending: Vec<usize> = (0..tests.len()).collect();
    let mut report = Report::default();
    for _ in 0..=FIX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let batch: Vec<Test> = pending.iter().map(|&i| tests[i].clone()).collect();
        let round = run(&batch)?;
        if round.module_error.is_some() {
            report.module_error = round.module_error;
            return Ok(report);
        }
        let mut next = Vec::new();
        for index in pending {
            let test = &tests[index];
            let Some((result, repaired)) = round.results.iter().find(|(r, _)| r.name == test.name) else {
                report.results.push(TestResult::not_run(&test.name, false));
                continue;
            };
            match repaired {
                Some(text) if !result.passed() && *text != test.text => {
                    tests[index].text = text.clone();
                    fixed[index] = true;
                    next.push(index);
                }
                _ => {
                    report.results.push(TestResult { text: fixed[index].then(|| test.text.clone()), ..result.clone() })
                }
            }
        }
        pending = next;
    }
    for index in pending {
        let error = Some("still failing after fixes".into());
        report.results.push(TestResult {
            name: tests[index].name.clone(),
            outcome: "fail".into(),
            error,
            ..TestResult::default()
        });
    }
    Ok(report)
}

/// Names of the errors the target raises on purpose, for any language: `raised(node)` names
/// the error a node raises (a `raise`, a `throw`), `called(node, function)` the same-file
/// functions a call in `function` reaches. The target and what it calls are walked, a few
/// levels deep.
pub fn raised_on_purpose<'t>(
    target: &'t Target,
    raised: impl Fn(tree_sitter::Node<'t>) -> Option<String>,
    called: impl Fn(tree_sitter::Node<'t>, tree_sitter::Node<'t>) -> Vec<tree_sitter::Node<'t>>,
) -> Vec<String> {
    let root = target.tree.root_node();
    let Some(start) = root.descendant_for_byte_range(target.scope.range.start, target.scope.range.end) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let mut visited: Vec<usize> = Vec::new();
    let mut pending = vec![start];
    while let Some(function) = pending.pop() {
        if visited.contains(&function.start_byte()) || visited.len() > 20 {
            continue;
        }
        visited.push(function.start_byte());
        let mut stack = vec![function];
        while let Some(node) = stack.pop() {
            let mut cursor = node.walk();
            stack.extend(node.children(&mut cursor));
            if let Some(name) = raised(node).filter(|n| !n.is_empty() && !names.contains(n)) {
                names.push(name);
            }
            pending.extend(called(node, function));
        }
    }
    names
}

/// The runner for `language` here, or why tests are written unverified. `source` is the file
/// under test (a TypeScript compiler is looked for beside it first).
fn runner(
    language: Language,
    verify: bool,
    python_interpreter: Option<&Path>,
    root: &Path,
    source: Option<&Path>,
) -> Result<Box<dyn Runner>, String> {
    if !verify {
        return Err("nib.tests.verify is off".into());
    }
    match language {
        Language::Python => match toolchain::python(python_interpreter, root) {
            Some(interpreter) => Ok(Box::new(python::Python { interpreter: interpreter.program })),
            None => Err(match python_interpreter {
                Some(path) => format!("the interpreter {} in nib.python.interpreter was not found", path.display()),
                None => "no Python interpreter found: set nib.python.interpreter or create a .venv".into(),
            }),
        },
        Language::JavaScript => match toolchain::node() {
            Some(node) => Ok(Box::new(javascript::JavaScript { node: node.program, compiler: None })),
            None => Err("no node on PATH".into()),
        },
        Language::TypeScript | Language::Tsx => {
            let node = toolchain::node().ok_or("no node on PATH")?;
            let folder = source.and_then(Path::parent).unwrap_or(root);
            let compiler = toolchain::typescript_compiler(folder, root)
                .ok_or("no TypeScript compiler in the project's node_modules (typescript, or tsx's esbuild)")?;
            Ok(Box::new(javascript::JavaScript { node: node.program, compiler: Some(compiler) }))
        }
        Language::Go => match toolchain::go() {
            Some(go) => Ok(Box::new(go::Go { go: go.program })),
            None => Err(format!("no go on PATH or at {}", toolchain::DEBIAN_GO)),
        },
        Language::Rust => match toolchain::cargo() {
            Some(cargo) => Ok(Box::new(rust::Rust { cargo: cargo.program })),
            None => Err("no cargo on PATH".into()),
        },
        Language::Java | Language::C | Language::Cpp => {
            Err(format!("nib does not run {} tests yet", language.spec().display_name))
        }
    }
}

/// Why tests of `language` in `source` are written unverified here, if they are.
pub fn unverified_reason(
    language: Language,
    verify: bool,
    python_interpreter: Option<&Path>,
    root: &Path,
    source: Option<&Path>,
) -> Option<String> {
    runner(language, verify, python_interpreter, root, source).err()
}

/// The whole action after the plan (`unit_tests::plan`, which the caller checks): candidates,
/// runs, repairs, the final check.
pub fn write_tests(job: &Job, mut plan: Plan, progress: &dyn Fn(&str)) -> Result<Written, ActionError> {
    let source = job.target.path.as_deref();
    match runner(job.target.language, job.verify, job.python_interpreter.as_deref(), &plan.root, source) {
        Ok(runner) => verified(job, &mut plan, runner.as_ref(), progress),
        Err(reason) => unverified(job, &mut plan, &reason, progress),
    }
}

fn unverified(job: &Job, plan: &mut Plan, reason: &str, progress: &dyn Fn(&str)) -> Result<Written, ActionError> {
    progress("writing tests");
    let tests = ask_model(job, plan, "", unit_tests::TESTS_PER_ACTION, Vec::new(), Vec::new())?;
    if tests.is_empty() && job.budget.spent() {
        return Err(out_of_time_before_any_test(&job.budget));
    }
    if let Some(TestLayout::Python) = job.target.language.spec().tests {
        python::import_used_names(&job.target, plan, &tests);
    }
    let edit = unit_tests::finish(&job.target, plan, tests)?;
    let count = edit.tests.len();
    let cut = if job.budget.spent() { format!("; {}", job.budget.ran_out()) } else { String::new() };
    Ok(Written {
        message: format!("{} written (unverified: {reason}{cut})", tests_word(count)),
        existing: plan.existing.clone(),
        edit,
        verified: false,
    })
}

fn out_of_time_before_any_test(budget: &Budget) -> ActionError {
    ActionError::Rejected(format!("{} before the model wrote a complete test; nothing was written", budget.ran_out()))
}

/// Where the written tests came from, when nib's own calls wrote some: " (2 from calls nib
/// ran, 1 by the model)".
fn origin(tests: &[Test], observed_bodies: &[String]) -> String {
    let observed = tests.iter().filter(|t| observed_bodies.contains(&unit_tests::body_of(t))).count();
    match (observed, tests.len() - observed) {
        (0, _) => String::new(),
        (observed, 0) => format!(" ({observed} from calls nib ran)"),
        (observed, model) => format!(" ({observed} from calls nib ran, {model} by the model)"),
    }
}

fn tests_word(count: usize) -> String {
    if count == 1 { "1 test".into() } else { format!("{count} tests") }
}

/// Asks the model for one round of candidates on the engine thread and waits for them here.
fn ask_model(
    job: &Job,
    plan: &Plan,
    hints: &str,
    count: usize,
    repairs: Vec<Repair>,
    earlier: Vec<Test>,
) -> Result<Vec<Test>, ActionError> {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    let (target, plan, hints, cancel) = (job.target.clone(), plan.clone(), hints.to_string(), job.cancel.clone());
    let budget = job.budget.clone();
    job.queue.run(Box::new(move |model| {
        let max_discarded = if repairs.is_empty() { 5 } else { 3 };
        let request = Request {
            hints: &hints,
            count,
            repairs: &repairs,
            earlier: &earlier,
            max_discarded,
            budget: Some(&budget),
        };
        let result = model
            .map_err(ActionError::from)
            .and_then(|model| unit_tests::write_candidates(model, &target, &plan, &request, cancel));
        let _ = sender.send(result);
    }));
    receiver.recv().unwrap_or_else(|_| Err(ActionError::Rejected("the model stopped while writing tests".into())))
}

/// A runner's error as the action's: "cancelled" is the cancellation.
pub(crate) fn cancelled(error: String) -> ActionError {
    if error == "cancelled" { ActionError::Engine(EngineError::Cancelled) } else { ActionError::Rejected(error) }
}

/// What the tests import, for messages: the Python module, else the file's name.
fn subject_module(target: &Target, plan: &Plan) -> String {
    if !plan.module.is_empty() {
        return plan.module.clone();
    }
    target.path.as_deref().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn verified(job: &Job, plan: &mut Plan, runner: &dyn Runner, progress: &dyn Fn(&str)) -> Result<Written, ActionError> {
    let flow = Flow { job, runner, hints: runner.hints(job, plan), progress };
    let existing: Vec<Test> =
        plan.existing.as_deref().map(|text| unit_tests::find_tests(job.target.language, text)).unwrap_or_default();
    let (candidates, observed) = flow.first_candidates(plan, &existing)?;
    if candidates.is_empty() && job.budget.spent() {
        return Err(out_of_time_before_any_test(&job.budget));
    }
    let mut attempt = Attempt { observed, out_of_time: job.budget.spent(), ..Attempt::default() };
    // Names in the test file already are taken too (in Go, one package holds both).
    let existing: Vec<String> = existing.into_iter().map(|t| t.name).collect();
    flow.run_rounds(plan, candidates, &existing, &mut attempt)?;
    attempt.kept.truncate(KEEP);
    if attempt.kept.is_empty() {
        let error = attempt.first_error.take();
        return Err(attempt.none_passed(job, error));
    }
    flow.check_file(plan, attempt)
}

/// One verified action: the job, its language's runner, the hints for the model, progress.
struct Flow<'a> {
    job: &'a Job,
    runner: &'a dyn Runner,
    hints: String,
    progress: &'a dyn Fn(&str),
}

/// What the verified action has so far.
#[derive(Default)]
struct Attempt {
    /// Tests that passed, in the order they will be written.
    kept: Vec<Test>,
    /// The bodies of the tests from nib's own calls (for the message).
    observed: Vec<String>,
    first_error: Option<String>,
    tried: usize,
    /// The budget stopped writing or repairing.
    out_of_time: bool,
}

impl Attempt {
    /// Keeps the candidates that passed (with their fixed text) and returns the failures to
    /// send back to the model.
    fn take(&mut self, report: &Report, candidates: Vec<Test>, plan: &mut Plan) -> Vec<Repair> {
        let mut repairs = Vec::new();
        for mut candidate in candidates {
            let Some(result) = report.results.iter().find(|r| r.name == candidate.name) else { continue };
            if !result.passed() {
                let error = result.error.clone().unwrap_or_else(|| result.outcome.clone());
                self.first_error.get_or_insert_with(|| error.clone());
                if result.outcome == "fail" {
                    repairs.push(Repair { test: candidate, error });
                }
                continue;
            }
            if let Some(text) = &result.text {
                candidate.text = text.clone();
            }
            // Writing the observed value can turn two candidates into the same test.
            let body = unit_tests::body_of(&candidate);
            if self.kept.iter().any(|test| unit_tests::body_of(test) == body) {
                continue;
            }
            for name in &result.imports {
                if !plan.imported.contains(name) {
                    plan.imported.push(name.clone());
                }
            }
            self.kept.push(candidate);
        }
        repairs
    }

    fn none_passed(&self, job: &Job, first_error: Option<String>) -> ActionError {
        let ran_out = if self.out_of_time { format!(" before {}", job.budget.ran_out()) } else { String::new() };
        ActionError::Rejected(format!(
            "none of the {} candidate tests passed on the current code{ran_out} (first error: {}); nothing was written",
            self.tried,
            first_error.unwrap_or_else(|| "the model wrote no complete test".into())
        ))
    }

    /// "3 tests written (3 from calls nib ran), they pass on the current code".
    fn passing(&self, job: &Job, tests: &[Test]) -> String {
        let message = format!(
            "{} written{}, they pass on the current code",
            tests_word(tests.len()),
            origin(tests, &self.observed)
        );
        let message = if tests.len() == 1 { message.replace("they pass", "it passes") } else { message };
        if self.out_of_time {
            format!("{message}; {}, so writing and repairing stopped early", job.budget.ran_out())
        } else {
            message
        }
    }
}

impl Flow<'_> {
    /// The first round's candidates: nib's own calls of the code (not those already in the
    /// test file), then the model's when those are too few; and the bodies of nib's own.
    fn first_candidates(&self, plan: &Plan, existing: &[Test]) -> Result<(Vec<Test>, Vec<String>), ActionError> {
        let Flow { job, runner, hints, progress } = self;
        progress("calling the code with its docstring's examples and inputs from its signature");
        let mut observed =
            if job.calls_from_code && !job.budget.spent() { runner.calls_from_code(job, plan)? } else { Vec::new() };
        // A second request for the same function: the calls already in the file are not repeated.
        let existing_bodies: Vec<String> = existing.iter().map(unit_tests::body_of).collect();
        observed.retain(|test| !existing_bodies.contains(&unit_tests::body_of(test)));
        let bodies: Vec<String> = observed.iter().map(unit_tests::body_of).collect();
        let mut candidates = observed;
        // Enough calls with known results: the model is not needed (and its time is saved).
        if candidates.len() < unit_tests::TESTS_PER_ACTION {
            progress("writing candidate tests");
            candidates.extend(ask_model(job, plan, hints, CANDIDATES, Vec::new(), Vec::new())?);
        }
        Ok((candidates, bodies))
    }

    /// Runs the candidates, then up to `REPAIR_ROUNDS` rounds of the model's repairs, until
    /// enough tests pass, nothing is left to repair, or the budget is spent.
    fn run_rounds(
        &self,
        plan: &mut Plan,
        mut candidates: Vec<Test>,
        existing: &[String],
        attempt: &mut Attempt,
    ) -> Result<(), ActionError> {
        let Flow { job, runner, hints, progress } = self;
        for round in 0..=REPAIR_ROUNDS {
            let taken: Vec<String> =
                attempt.kept.iter().map(|t| t.name.clone()).chain(existing.iter().cloned()).collect();
            unit_tests::make_names_unique(job.target.language, &mut candidates, &taken);
            if candidates.is_empty() {
                return Ok(());
            }
            attempt.tried += candidates.len();
            runner.prepare(&job.target, plan, &candidates);
            progress(&format!("{} ({})", runner.running(candidates.len()), job.budget.progress()));
            let report = runner.run_candidates(&job.target, plan, &candidates, &job.cancel)?;
            if let Some(error) = &report.module_error {
                return Err(ActionError::Rejected(format!(
                    "the tests cannot import `{}` under {} ({error}); nothing was written",
                    subject_module(&job.target, plan),
                    runner.program().display()
                )));
            }
            let mut repairs = attempt.take(&report, candidates, plan);
            if attempt.kept.len() >= unit_tests::TESTS_PER_ACTION || repairs.is_empty() || round == REPAIR_ROUNDS {
                return Ok(());
            }
            if job.budget.spent() {
                attempt.out_of_time = true;
                return Ok(());
            }
            progress(&format!(
                "repairing {} (round {} of {REPAIR_ROUNDS}, {})",
                tests_word(repairs.len()),
                round + 1,
                job.budget.progress()
            ));
            repairs.truncate(MAX_REPAIRS);
            candidates = ask_model(job, plan, hints, 0, repairs, attempt.kept.clone())?;
            attempt.out_of_time = job.budget.spent();
        }
        Ok(())
    }

    /// Runs the test file as it will be written (its header, class and imports must hold too);
    /// a test that fails there is dropped and the file checked again, once.
    fn check_file(&self, plan: &mut Plan, mut attempt: Attempt) -> Result<Written, ActionError> {
        let Flow { job, runner, progress, .. } = self;
        for _ in 0..2 {
            let edit = unit_tests::finish(&job.target, plan, std::mem::take(&mut attempt.kept))?;
            progress("checking the test file");
            let mut text = plan.existing.clone().unwrap_or_default();
            text.insert_str(edit.insertion.offset.min(text.len()), &edit.insertion.text);
            let report = runner.run_file(&job.target, plan, &text, &edit.test_names, &job.cancel)?;
            if let Some(error) = report.module_error {
                return Err(attempt.none_passed(job, Some(error)));
            }
            let result = |name: &String| report.results.iter().find(|r| &r.name == name);
            let failing = edit.test_names.iter().filter_map(result).find(|r| !r.passed());
            let missing = edit.test_names.iter().any(|name| result(name).is_none());
            if failing.is_none() && !missing && !edit.tests.is_empty() {
                let message = attempt.passing(job, &edit.tests);
                return Ok(Written { edit, existing: plan.existing.clone(), message, verified: true });
            }
            attempt.first_error = failing.and_then(|r| r.error.clone()).or(attempt.first_error.take());
            attempt.kept = edit.tests.into_iter().filter(|t| result(&t.name).is_some_and(TestResult::passed)).collect();
            if attempt.kept.is_empty() {
                break;
            }
        }
        let error = attempt.first_error.take();
        Err(attempt.none_passed(job, error))
    }
}
