//! Generated tests verified by execution. The model writes candidate tests; nib runs them in
//! the sandbox against the code as the editor shows it and keeps those that pass twice in
//! under 2 s. A wrong plain-data expected value becomes the observed one; a call that raises
//! an exception the code raises on purpose becomes an expected-exception test; other failures
//! go back to the model with the error, for a bounded number of rounds. The test file as it
//! will be written is run once more before it is offered. Without a toolchain (or with
//! `nib.tests.verify` off) tests are written unverified, and the message says so.
//!
//! Everything here runs on a worker thread; the model is reached through the engine's task
//! queue, one round at a time, so the engine thread never waits for a test run.

pub mod budget;
pub mod python;
#[cfg(test)]
mod tests;
pub mod toolchain;

use std::path::PathBuf;

use self::budget::Budget;
use super::project_files::ProjectFiles;
use super::unit_tests::{self, Plan, PythonStyle, Repair, Request, Test, TestEdit};
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
}

/// The tests to insert and what to tell the user.
pub struct Written {
    pub edit: TestEdit,
    /// The test file's text the edit's offsets refer to (`None`: the file is created).
    pub existing: Option<String>,
    pub message: String,
    pub verified: bool,
}

/// Why tests of `language` are written unverified here, if they are.
pub fn unverified_reason(
    language: Language,
    verify: bool,
    python_interpreter: Option<&std::path::Path>,
    root: &std::path::Path,
) -> Option<String> {
    if !verify {
        return Some("nib.tests.verify is off".into());
    }
    match language {
        Language::Python => toolchain::python(python_interpreter, root).is_none().then(|| match python_interpreter {
            Some(path) => format!("the interpreter {} in nib.python.interpreter was not found", path.display()),
            None => "no Python interpreter found: set nib.python.interpreter or create a .venv".into(),
        }),
        _ => Some(format!("nib does not run {} tests yet", language_name(language))),
    }
}

fn language_name(language: Language) -> &'static str {
    language.spec().display_name
}

/// The whole action after the plan (`unit_tests::plan`, which the caller checks): candidates,
/// runs, repairs, the final check.
pub fn write_tests(job: &Job, mut plan: Plan, progress: &dyn Fn(&str)) -> Result<Written, ActionError> {
    let reason = unverified_reason(job.target.language, job.verify, job.python_interpreter.as_deref(), &plan.root);
    match (reason, job.target.language) {
        (None, Language::Python) => {
            let interpreter = toolchain::python(job.python_interpreter.as_deref(), &plan.root)
                .ok_or_else(|| ActionError::Rejected("no Python interpreter found".into()))?;
            python_verified(job, &mut plan, &interpreter.program, progress)
        }
        (reason, _) => unverified(job, &mut plan, &reason.unwrap_or_default(), progress),
    }
}

fn unverified(job: &Job, plan: &mut Plan, reason: &str, progress: &dyn Fn(&str)) -> Result<Written, ActionError> {
    progress("writing tests");
    let tests = ask_model(job, plan, "", unit_tests::TESTS_PER_ACTION, Vec::new(), Vec::new())?;
    if tests.is_empty() && job.budget.spent() {
        return Err(out_of_time_before_any_test(&job.budget));
    }
    import_used_names(&job.target, plan, &tests);
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

fn tests_word(count: usize) -> String {
    if count == 1 { "1 test".into() } else { format!("{count} tests") }
}

/// Imports the module's top-level names the tests use (a dataclass they construct).
fn import_used_names(target: &Target, plan: &mut Plan, tests: &[Test]) {
    let Some(TestLayout::Python) = target.language.spec().tests else {
        return;
    };
    let subject = plan.imported.first().cloned().unwrap_or_default();
    for name in python::names_used(target, tests, &subject) {
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

fn cancelled(error: String) -> ActionError {
    if error == "cancelled" { ActionError::Engine(EngineError::Cancelled) } else { ActionError::Rejected(error) }
}

/// Runs candidates (plain test functions; fixes allowed). Switches to unittest when the
/// interpreter has no pytest.
fn run_candidates(
    target: &Target,
    plan: &mut Plan,
    interpreter: &std::path::Path,
    candidates: &[Test],
    cancel: &CancelToken,
) -> Result<python::Report, ActionError> {
    loop {
        let mut candidate_plan = plan.clone();
        candidate_plan.existing = None;
        // Plain functions, so a failing assertion can be fixed where it failed.
        candidate_plan.python_style = PythonStyle::Pytest;
        candidate_plan.async_style = crate::actions::scaffold::AsyncStyle::PytestAsyncio;
        let insertion = unit_tests::finish(target, &candidate_plan, candidates.to_vec())?.insertion;
        let header = match plan.python_style {
            PythonStyle::Pytest => "import pytest\n",
            PythonStyle::Unittest => "import unittest\n",
        };
        let text = format!("{header}{}", insertion.text);
        let names: Vec<String> = candidates.iter().map(|t| t.name.clone()).collect();
        let tests = python::locate_tests(&text, &names);
        let module = python::Module { text: &text, tests: &tests, fix: true };
        let report = python::run(interpreter, target, plan, &module, cancel).map_err(cancelled)?;
        let pytest_missing = report.module_error.as_deref().is_some_and(|e| e.contains("'pytest'"));
        if pytest_missing && plan.python_style == PythonStyle::Pytest {
            plan.python_style = PythonStyle::Unittest;
            continue;
        }
        return Ok(report);
    }
}

fn python_verified(
    job: &Job,
    plan: &mut Plan,
    interpreter: &std::path::Path,
    progress: &dyn Fn(&str),
) -> Result<Written, ActionError> {
    let hints = python::type_hints(&job.target, plan, &job.files);
    progress("writing candidate tests");
    let mut candidates = ask_model(job, plan, &hints, CANDIDATES, Vec::new(), Vec::new())?;
    if candidates.is_empty() && job.budget.spent() {
        return Err(out_of_time_before_any_test(&job.budget));
    }
    let mut kept: Vec<Test> = Vec::new();
    let mut first_error: Option<String> = None;
    let mut tried = 0;
    // A round cut short by the budget counts as stopped by it.
    let mut out_of_time = job.budget.spent();
    for round in 0..=REPAIR_ROUNDS {
        let taken: Vec<String> = kept.iter().map(|t| t.name.clone()).collect();
        unit_tests::make_names_unique(Language::Python, &mut candidates, &taken);
        if candidates.is_empty() {
            break;
        }
        tried += candidates.len();
        import_used_names(&job.target, plan, &candidates);
        progress(&format!("running {} candidate tests ({})", candidates.len(), job.budget.progress()));
        let report = run_candidates(&job.target, plan, interpreter, &candidates, &job.cancel)?;
        if let Some(error) = report.module_error {
            return Err(ActionError::Rejected(format!(
                "the tests cannot import `{}` under {} ({error}); nothing was written",
                plan.module,
                interpreter.display()
            )));
        }
        let mut repairs = Vec::new();
        for mut candidate in candidates {
            let Some(result) = report.results.iter().find(|r| r.name == candidate.name) else { continue };
            if result.passed() {
                if let Some(text) = &result.text {
                    candidate.text = text.clone();
                }
                // Writing the observed value can turn two candidates into the same test.
                let body = unit_tests::body_of(&candidate);
                if kept.iter().any(|test| unit_tests::body_of(test) == body) {
                    continue;
                }
                for name in &result.imports {
                    if !plan.imported.contains(name) {
                        plan.imported.push(name.clone());
                    }
                }
                kept.push(candidate);
                continue;
            }
            let error = result.error.clone().unwrap_or_else(|| result.outcome.clone());
            first_error.get_or_insert_with(|| error.clone());
            if result.outcome == "fail" {
                repairs.push(Repair { test: candidate, error });
            }
        }
        if kept.len() >= unit_tests::TESTS_PER_ACTION || repairs.is_empty() || round == REPAIR_ROUNDS {
            break;
        }
        if job.budget.spent() {
            out_of_time = true;
            break;
        }
        progress(&format!(
            "repairing {} (round {} of {REPAIR_ROUNDS}, {})",
            tests_word(repairs.len()),
            round + 1,
            job.budget.progress()
        ));
        repairs.truncate(MAX_REPAIRS);
        candidates = ask_model(job, plan, &hints, 0, repairs, kept.clone())?;
        out_of_time = job.budget.spent();
    }
    kept.truncate(KEEP);
    let ran_out = if out_of_time { format!(" before {}", job.budget.ran_out()) } else { String::new() };
    let none_passed = |first_error: Option<String>| {
        ActionError::Rejected(format!(
            "none of the {tried} candidate tests passed on the current code{ran_out} (first error: {}); nothing was written",
            first_error.unwrap_or_else(|| "the model wrote no complete test".into())
        ))
    };
    if kept.is_empty() {
        return Err(none_passed(first_error));
    }
    // The file as it will be written: its header, class and imports must hold too.
    for _ in 0..2 {
        let edit = unit_tests::finish(&job.target, plan, kept)?;
        progress("checking the test file");
        let mut text = plan.existing.clone().unwrap_or_default();
        text.insert_str(edit.insertion.offset.min(text.len()), &edit.insertion.text);
        let tests = python::locate_tests(&text, &edit.test_names);
        let module = python::Module { text: &text, tests: &tests, fix: false };
        let report = python::run(interpreter, &job.target, plan, &module, &job.cancel).map_err(cancelled)?;
        if let Some(error) = report.module_error {
            return Err(none_passed(Some(error)));
        }
        let failing: Vec<&python::TestResult> = report.results.iter().filter(|r| !r.passed()).collect();
        if failing.is_empty() && !edit.tests.is_empty() {
            let message = format!("{} written, they pass on the current code", tests_word(edit.tests.len()));
            let message = if edit.tests.len() == 1 { message.replace("they pass", "it passes") } else { message };
            let message = if out_of_time {
                format!("{message}; {}, so writing and repairing stopped early", job.budget.ran_out())
            } else {
                message
            };
            return Ok(Written { edit, existing: plan.existing.clone(), message, verified: true });
        }
        first_error = failing.first().and_then(|r| r.error.clone()).or(first_error);
        kept = edit.tests.into_iter().filter(|t| !failing.iter().any(|r| r.name == t.name)).collect();
        if kept.is_empty() {
            break;
        }
    }
    Err(none_passed(first_error))
}
