//! **Add docstring** with examples whose outputs come from running the code (Python, when
//! verification is available): `explore.py` calls the function, the shortest calls with plain
//! results become a doctest section of the docstring the model wrote, and the section stays
//! only when `doctest` passes on the module as the edit leaves it. Runs on a worker thread; the
//! model is reached through the engine's task queue.

use std::path::{Path, PathBuf};

use super::python::{self, Observed};
use super::toolchain;
use crate::actions::project_files::ProjectFiles;
use crate::actions::unit_tests;
use crate::actions::{ActionError, Insertion, Target, docstring};
use crate::config::DocstringStyle;
use crate::engine::{CancelToken, TaskQueue};

/// Most examples one docstring gets.
const MAX_EXAMPLES: usize = 2;
/// Longest example line (call or output), so the docstring stays readable.
const MAX_WIDTH: usize = 60;

/// One Add docstring request that may get examples.
pub struct Job {
    pub target: Target,
    pub style: DocstringStyle,
    /// `nib.python.interpreter`.
    pub configured_interpreter: Option<PathBuf>,
    pub folders: Vec<PathBuf>,
    pub files: ProjectFiles,
    pub queue: TaskQueue,
    pub cancel: CancelToken,
}

/// The docstring to insert and what to tell the user.
pub struct Documented {
    pub insertion: Insertion,
    pub message: String,
}

/// Whether Add docstring on `target` may run it for examples: a Python top-level function in
/// a file, with verification (`nib.tests.verify`) on.
pub fn wanted(target: &Target, verify: bool) -> bool {
    let python = target.language.spec().tests == Some(crate::syntax::languages::TestLayout::Python);
    verify && python && python::explorable(target)
}

/// The docstring, with examples when running the code gave some and doctest passes on them.
pub fn document(job: &Job, progress: &dyn Fn(&str)) -> Result<Documented, ActionError> {
    let plan = unit_tests::plan(&job.target, &job.folders, &job.files).ok();
    let interpreter =
        plan.as_ref().and_then(|plan| toolchain::python(job.configured_interpreter.as_deref(), &plan.root));
    let (Some(plan), Some(interpreter)) = (plan, interpreter.map(|found| found.program)) else {
        progress("writing the docstring");
        return Ok(Documented { insertion: write_docstring(job)?, message: String::new() });
    };
    progress("calling the function for examples");
    let examples = find(job, &interpreter, &plan)?;
    progress("writing the docstring");
    let insertion = write_docstring(job)?;
    let Some(text) = with_examples(&insertion.text, &examples, job.style).filter(|_| !examples.is_empty()) else {
        return Ok(Documented { insertion, message: String::new() });
    };
    progress("checking the examples with doctest");
    let mut source = job.target.rope.to_string();
    source.insert_str(insertion.offset.min(source.len()), &text);
    match python::doctest(&interpreter, &job.target, &plan, &source, &job.cancel).map_err(super::cancelled)? {
        None => {
            let count = examples_word(examples.len());
            let message = format!("docstring written with {count}; doctest passes on the current code");
            Ok(Documented { insertion: Insertion { text, ..insertion }, message })
        }
        Some(failure) => {
            let first = failure.lines().find(|line| !line.trim().is_empty() && !line.starts_with('*')).unwrap_or("");
            let message = format!("docstring written without examples: doctest failed on them ({})", first.trim());
            Ok(Documented { insertion, message })
        }
    }
}

fn examples_word(count: usize) -> String {
    if count == 1 { "1 example".into() } else { format!("{count} examples") }
}

/// The calls that make good examples: plain results that print the same under any hash seed
/// (no sets), nothing a docstring would need escaped, short; the shortest first.
fn find(job: &Job, interpreter: &Path, plan: &unit_tests::Plan) -> Result<Vec<Observed>, ActionError> {
    let observed = match python::explore(interpreter, &job.target, plan, python::EXPLORE_BUDGET, &job.cancel) {
        Err(error) if error == "cancelled" => return Err(super::cancelled(error)),
        Err(_) => Vec::new(),
        Ok(observed) => observed,
    };
    let mut examples: Vec<Observed> = observed.into_iter().filter(good_example).collect();
    examples.sort_by_key(|call| call.call.len() + call.expected.as_deref().map_or(0, str::len));
    examples.truncate(MAX_EXAMPLES);
    Ok(examples)
}

fn good_example(call: &Observed) -> bool {
    let Some(expected) = call.expected.as_deref() else { return false };
    let unordered = expected.contains('{') && !expected.contains(':') || expected.contains("set(");
    call.raises.is_none()
        && !call.check
        && !call.iterator
        && call.setup.is_empty()
        && expected != "None"
        && !unordered
        && !format!("{}{expected}", call.call).contains(['\\', '"'])
        && call.call.len() <= MAX_WIDTH
        && expected.len() <= MAX_WIDTH
}

/// The model's docstring, written on the engine thread.
fn write_docstring(job: &Job) -> Result<Insertion, ActionError> {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    let (target, style, cancel) = (job.target.clone(), job.style, job.cancel.clone());
    job.queue.run(Box::new(move |model| {
        let result =
            model.map_err(ActionError::from).and_then(|model| docstring::generate(model, &target, style, cancel));
        let _ = sender.send(result);
    }));
    receiver
        .recv()
        .unwrap_or_else(|_| Err(ActionError::Rejected("the model stopped while writing the docstring".into())))
}

/// `docstring` (an inserted `"""…"""` block, indented) with an examples section before its
/// closing quotes, in `style`; `None` when its shape is not one nib wrote.
pub fn with_examples(docstring: &str, examples: &[Observed], style: DocstringStyle) -> Option<String> {
    let trimmed = docstring.trim_end_matches('\n');
    let first = trimmed.lines().find(|line| !line.trim().is_empty())?;
    let indent = &first[..first.len() - first.trim_start().len()];
    let body = trimmed.strip_suffix("\"\"\"")?;
    // A one-line docstring opens and closes on the same line: the section goes on new lines.
    let body = body.trim_end();
    let doctest: Vec<String> =
        examples.iter().flat_map(|e| [format!(">>> {}", e.call), e.expected.clone().unwrap_or_default()]).collect();
    let section = match style {
        DocstringStyle::Google => {
            let lines: Vec<String> = doctest.iter().map(|line| format!("{indent}    {line}")).collect();
            format!("{indent}Examples:\n{}", lines.join("\n"))
        }
        DocstringStyle::Numpy => {
            let lines: Vec<String> = doctest.iter().map(|line| format!("{indent}{line}")).collect();
            format!("{indent}Examples\n{indent}--------\n{}", lines.join("\n"))
        }
        DocstringStyle::Rest => {
            let lines: Vec<String> = doctest.iter().map(|line| format!("{indent}{line}")).collect();
            lines.join("\n")
        }
    };
    let newline = if docstring.ends_with('\n') { "\n" } else { "" };
    Some(format!("{body}\n\n{section}\n{indent}\"\"\"{newline}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(call: &str, expected: &str) -> Observed {
        Observed { call: call.into(), expected: Some(expected.into()), ..Observed::default() }
    }

    const GOOGLE: &str = "    \"\"\"Add tax to a price.\n\n    Args:\n        price: The price.\n\n    Returns:\n        The price with tax.\n    \"\"\"\n";

    #[test]
    fn the_section_goes_before_the_closing_quotes_in_each_style() {
        let examples = [example("with_tax(10)", "12.0")];
        assert_eq!(
            with_examples(GOOGLE, &examples, DocstringStyle::Google).unwrap(),
            "    \"\"\"Add tax to a price.\n\n    Args:\n        price: The price.\n\n    Returns:\n        The price with tax.\n\n    Examples:\n        >>> with_tax(10)\n        12.0\n    \"\"\"\n"
        );
        let one_line = "    \"\"\"Add tax to a price.\"\"\"\n";
        assert_eq!(
            with_examples(one_line, &examples, DocstringStyle::Numpy).unwrap(),
            "    \"\"\"Add tax to a price.\n\n    Examples\n    --------\n    >>> with_tax(10)\n    12.0\n    \"\"\"\n"
        );
        assert_eq!(
            with_examples(one_line, &examples, DocstringStyle::Rest).unwrap(),
            "    \"\"\"Add tax to a price.\n\n    >>> with_tax(10)\n    12.0\n    \"\"\"\n"
        );
    }

    #[test]
    fn examples_that_would_not_read_back_the_same_are_not_used() {
        assert!(good_example(&example("f(1)", "[1, 2]")));
        assert!(good_example(&example("f(1)", "{'a': 1}")), "a dict prints in insertion order");
        assert!(!good_example(&example("f(1)", "{1, 2}")), "a set's order depends on the hash seed");
        assert!(!good_example(&example("f('a\\nb')", "'a'")), "a backslash would be read by the docstring");
        assert!(!good_example(&example("f(1)", "None")), "nothing to show");
        assert!(!good_example(&Observed { raises: Some("ValueError".into()), ..example("f(-1)", "") }));
    }
}
