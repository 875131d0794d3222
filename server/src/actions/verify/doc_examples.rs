//! **Add docstring** with examples whose outputs come from running the code (Python, when
//! verification is available): `explore.py` calls the function, the shortest calls with plain
//! results become a doctest section of the docstring the model wrote, and the section stays
//! only when `doctest` passes on the module as the edit leaves it. Runs on a worker thread; the
//! model is reached through the engine's task queue.

use std::path::{Path, PathBuf};

use super::python::{self, Observed};
use super::toolchain;
use crate::actions::docstring::{self, SeenResults, ValueKind};
use crate::actions::project_files::ProjectFiles;
use crate::actions::unit_tests;
use crate::actions::{ActionError, Insertion, Target};
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
        return Ok(Documented { insertion: write_docstring(job, None)?.insertion, message: String::new() });
    };
    progress("calling the function for examples");
    let observed = observe(job, &interpreter, &plan)?;
    let examples = examples(&observed);
    progress("writing the docstring");
    let written = write_docstring(job, seen_results(&observed))?;
    let (insertion, checked) = (written.insertion, turned_down_note(&written.turned_down));
    let Some(text) = with_examples(&insertion.text, &examples, job.style).filter(|_| !examples.is_empty()) else {
        let message = if checked.is_empty() { checked } else { format!("docstring written{checked}") };
        return Ok(Documented { insertion, message });
    };
    progress("checking the examples with doctest");
    let mut source = job.target.rope.to_string();
    source.insert_str(insertion.offset.min(source.len()), &text);
    match python::doctest(&interpreter, &job.target, &plan, &source, &job.cancel).map_err(super::cancelled)? {
        None => {
            let count = examples_word(examples.len());
            let message = format!("docstring written with {count}; doctest passes on the current code{checked}");
            Ok(Documented { insertion: Insertion { text, ..insertion }, message })
        }
        Some(failure) => {
            let first = failure.lines().find(|line| !line.trim().is_empty() && !line.starts_with('*')).unwrap_or("");
            let message =
                format!("docstring written without examples: doctest failed on them ({}){checked}", first.trim());
            Ok(Documented { insertion, message })
        }
    }
}

/// What the message says of the Returns sentences running the code turned down.
fn turned_down_note(turned_down: &[String]) -> String {
    match turned_down {
        [] => String::new(),
        [only] => format!("; a Returns sentence was not used, running the code contradicts it: {only}"),
        [first, ..] => format!(
            "; {} Returns sentences were not used, running the code contradicts them; the first: {first}",
            turned_down.len()
        ),
    }
}

fn examples_word(count: usize) -> String {
    if count == 1 { "1 example".into() } else { format!("{count} examples") }
}

/// The calls `explore.py` made of the function and what they gave (none when it could not run
/// them).
fn observe(job: &Job, interpreter: &Path, plan: &unit_tests::Plan) -> Result<Vec<Observed>, ActionError> {
    match python::explore(interpreter, &job.target, plan, python::EXPLORE_BUDGET, &job.cancel) {
        Err(error) if error == "cancelled" => Err(super::cancelled(error)),
        Err(_) => Ok(Vec::new()),
        Ok(observed) => Ok(observed),
    }
}

/// The calls that make good examples: plain results that print the same under any hash seed
/// (no sets), nothing a docstring would need escaped, short; the shortest first.
fn examples(observed: &[Observed]) -> Vec<Observed> {
    let mut examples: Vec<Observed> = observed.iter().filter(|call| good_example(call)).cloned().collect();
    examples.sort_by_key(|call| call.call.len() + call.expected.as_deref().map_or(0, str::len));
    examples.truncate(MAX_EXAMPLES);
    examples
}

/// What the calls returned, for the Returns sentence to be checked against; `None` when a
/// result was of a kind prose has no word for (an object, an iterator) or nothing returned.
fn seen_results(observed: &[Observed]) -> Option<SeenResults> {
    let mut seen = SeenResults::default();
    for call in observed.iter().filter(|call| call.raises.is_none() && !call.check) {
        let Some(expected) = call.expected.as_deref() else { continue };
        if call.iterator {
            return None;
        }
        let kind = kind_of_repr(expected)?;
        seen.fractions |= kind == ValueKind::Float && expected.parse::<f64>().is_ok_and(|value| value.fract() != 0.0);
        if !seen.kinds.contains(&kind) {
            seen.kinds.push(kind);
        }
        seen.values.push(expected.to_string());
    }
    (!seen.kinds.is_empty()).then_some(seen)
}

/// The kind of value a plain Python repr (`runner.faithful_repr`) shows; `None` for others.
fn kind_of_repr(repr: &str) -> Option<ValueKind> {
    let digits = repr.strip_prefix('-').unwrap_or(repr);
    Some(match repr {
        "None" => ValueKind::Nothing,
        "True" | "False" => ValueKind::Boolean,
        _ if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => ValueKind::Integer,
        _ if repr.parse::<f64>().is_ok() && repr.bytes().any(|b| b.is_ascii_digit()) => ValueKind::Float,
        _ if repr.starts_with(['\'', '"']) => ValueKind::Text,
        _ if repr.starts_with("b'") || repr.starts_with("b\"") => ValueKind::Bytes,
        _ if repr.starts_with('[') => ValueKind::List,
        _ if repr.starts_with('(') => ValueKind::Tuple,
        "{}" => ValueKind::Dictionary,
        _ if repr.starts_with('{') && repr.contains(": ") => ValueKind::Dictionary,
        _ if repr.starts_with('{') || repr.starts_with("set(") || repr.starts_with("frozenset(") => ValueKind::Set,
        _ => return None,
    })
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

/// The model's docstring, written on the engine thread; its Returns sentence checked against
/// `seen`.
fn write_docstring(job: &Job, seen: Option<SeenResults>) -> Result<docstring::Written, ActionError> {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    let (target, style, cancel) = (job.target.clone(), job.style, job.cancel.clone());
    job.queue.run(Box::new(move |model| {
        let result =
            model.map_err(ActionError::from).and_then(|model| docstring::generate(model, &target, style, seen, cancel));
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
    fn the_message_says_which_returns_sentence_running_the_code_turned_down() {
        assert_eq!(turned_down_note(&[]), "");
        assert_eq!(
            turned_down_note(&["\"An integer.\": it says an integer, but the calls returned a float".into()]),
            "; a Returns sentence was not used, running the code contradicts it: \"An integer.\": it says an integer, \
             but the calls returned a float"
        );
        assert!(turned_down_note(&["a".into(), "b".into()]).starts_with("; 2 Returns sentences were not used"));
    }

    #[test]
    fn the_kinds_of_results_come_from_their_reprs() {
        let kinds = [
            ("12", Some(ValueKind::Integer)),
            ("-3", Some(ValueKind::Integer)),
            ("2.4", Some(ValueKind::Float)),
            ("1e+20", Some(ValueKind::Float)),
            ("'a'", Some(ValueKind::Text)),
            ("b'a'", Some(ValueKind::Bytes)),
            ("[1, 2]", Some(ValueKind::List)),
            ("(1, 2)", Some(ValueKind::Tuple)),
            ("{}", Some(ValueKind::Dictionary)),
            ("{'a': 1}", Some(ValueKind::Dictionary)),
            ("{1, 2}", Some(ValueKind::Set)),
            ("set()", Some(ValueKind::Set)),
            ("True", Some(ValueKind::Boolean)),
            ("None", Some(ValueKind::Nothing)),
            ("Decimal('1.2')", None),
            ("-", None),
        ];
        for (repr, kind) in kinds {
            assert_eq!(kind_of_repr(repr), kind, "{repr}");
        }
    }

    #[test]
    fn seen_results_gather_every_returned_kind_and_whether_a_fraction_was_seen() {
        let raised = Observed { raises: Some("ValueError".into()), ..example("f(-1)", "") };
        let seen = seen_results(&[example("f(2)", "2.4"), example("f(0)", "0.0"), example("f(9)", "None"), raised]);
        let values = ["2.4", "0.0", "None"].map(String::from).to_vec();
        assert_eq!(
            seen,
            Some(SeenResults { kinds: vec![ValueKind::Float, ValueKind::Nothing], fractions: true, values })
        );
        let whole = seen_results(&[example("f(1)", "2.0")]).unwrap();
        assert!(!whole.fractions);
        assert_eq!(seen_results(&[example("f(1)", "2"), example("g()", "<object>")]), None, "an unnamed kind");
        let iterator = Observed { iterator: true, ..example("f(1)", "[1, 2]") };
        assert_eq!(seen_results(&[iterator]), None, "an iterator, asserted as a list");
        assert_eq!(seen_results(&[]), None);
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
