//! Running candidates for real (python3 from `PATH`, canned tests instead of the model):
//! observed values, expected exceptions, the editor's unsaved text, and containment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::actions::project_files::ProjectFiles;
use crate::sandbox::PrivateDir;

fn python3() -> PathBuf {
    toolchain::on_path("python3").expect("python3 on PATH (a prerequisite of nib's tests)")
}

/// A workspace with `files`, the target `source` (its buffer text, `$0` at the function), and
/// the plan for it.
struct Scratch {
    root: PrivateDir,
    target: Target,
    plan: Plan,
}

fn scratch(files: &[(&str, &str)], module: &str, buffer: &str) -> Scratch {
    let root = PrivateDir::new("nib-verify").unwrap();
    for (name, text) in files {
        let path = root.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let path = root.path().join(module);
    let target = crate::actions::test_target(&path.to_string_lossy(), "python", buffer);
    let folders = vec![root.path().to_path_buf()];
    let plan = unit_tests::plan(&target, &folders, &ProjectFiles::new(folders.clone(), Vec::new())).unwrap();
    Scratch { root, target, plan }
}

fn candidates(code: &str) -> Vec<Test> {
    unit_tests::find_tests(Language::Python, code)
}

fn run(scratch: &mut Scratch, code: &str) -> python::Report {
    let tests = candidates(code);
    run_candidates(&scratch.target, &mut scratch.plan, &python3(), &tests, &CancelToken::default()).unwrap()
}

fn result<'a>(report: &'a python::Report, name: &str) -> &'a python::TestResult {
    report.results.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name} in {report:?}"))
}

const TAX: &str = "TAX_RATE = 0.2\n\n\ndef with_tax(price, rate=TAX_RATE):\n    return price * (1 + rate)$0\n";

#[test]
fn wrong_plain_values_become_the_observed_ones_and_bad_calls_fail() {
    let mut scratch = scratch(&[("shop.py", TAX)], "shop.py", TAX);
    let report = run(
        &mut scratch,
        "def test_with_tax_rate_one():\n    assert with_tax(10, 1) == 10.0\n\n\ndef test_with_tax_text():\n    assert with_tax(None, 1) == 20\n\n\ndef test_with_tax_zero():\n    assert with_tax(0) == 0\n",
    );
    assert_eq!(report.module_error, None);
    let fixed = result(&report, "test_with_tax_rate_one");
    assert!(fixed.passed(), "{fixed:?}");
    assert_eq!(fixed.text.as_deref(), Some("def test_with_tax_rate_one():\n    assert with_tax(10, 1) == 20"));
    let broken = result(&report, "test_with_tax_text");
    assert_eq!(broken.outcome, "fail");
    assert!(broken.error.as_deref().unwrap().starts_with("TypeError"), "{broken:?}");
    let kept = result(&report, "test_with_tax_zero");
    assert!(kept.passed() && kept.text.is_none(), "{kept:?}");
}

const PARSE: &str = "class EmptyError(ValueError):\n    pass\n\n\ndef _check(text):\n    if not text:\n        raise EmptyError(\"empty\")\n\n\ndef parse(text):\n    _check(text)\n    return int(text)$0\n";

#[test]
fn on_purpose_exceptions_become_expected_exception_tests() {
    let mut scratch = scratch(&[("conftest.py", ""), ("parsing.py", PARSE)], "parsing.py", PARSE);
    assert_eq!(scratch.plan.python_style, PythonStyle::Pytest);
    let code = "def test_parse_empty():\n    assert parse(\"\") == 0\n\n\ndef test_parse_word():\n    assert parse(\"x\") == 0\n";
    let report = run(&mut scratch, code);
    if !report.pytest_available {
        // Without pytest in this interpreter nib writes unittest tests instead.
        assert_eq!(scratch.plan.python_style, PythonStyle::Unittest);
    }
    let expects = if report.pytest_available { "pytest.raises" } else { "self.assertRaises" };
    let empty = result(&report, "test_parse_empty");
    assert!(empty.passed(), "{empty:?}");
    assert_eq!(
        empty.text.as_deref(),
        Some(format!("def test_parse_empty():\n    with {expects}(EmptyError):\n        parse(\"\")").as_str())
    );
    assert_eq!(empty.imports, ["EmptyError"]);
    // int("x") raises a ValueError nobody raised on purpose… but EmptyError is a ValueError,
    // so `raise EmptyError` makes ValueError deliberate only through its subclass: not kept.
    let word = result(&report, "test_parse_word");
    assert_eq!(word.outcome, "fail", "{word:?}");
}

#[test]
fn the_code_under_test_is_the_unsaved_buffer() {
    let disk = "def answer():\n    return 1\n";
    let buffer = "def answer():\n    return 2$0\n";
    let mut scratch = scratch(&[("pkg/__init__.py", ""), ("pkg/deep.py", disk)], "pkg/deep.py", buffer);
    assert_eq!(scratch.plan.module, "pkg.deep");
    let code =
        "def test_answer():\n    assert answer() == 2\n\n\ndef test_module_answer():\n    assert deep.answer() == 2\n";
    import_used_names(&scratch.target, &mut scratch.plan, &candidates(code));
    assert_eq!(scratch.plan.extra_imports, ["from pkg import deep"]);
    let report = run(&mut scratch, code);
    assert!(result(&report, "test_answer").passed(), "{report:?}");
    assert!(result(&report, "test_module_answer").passed(), "{report:?}");
}

#[test]
fn runaway_code_is_stopped_and_leaves_the_workspace_alone() {
    let source = "import socket\n\n\ndef spin(kind):\n    if kind == 'loop':\n        while True:\n            pass\n    if kind == 'memory':\n        hog = []\n        while True:\n            hog.append(bytearray(1 << 24))\n    if kind == 'socket':\n        return socket.create_connection(('1.1.1.1', 53), timeout=1)\n    if kind == 'write':\n        with open(WORKSPACE + '/written.txt', 'w') as f:\n            f.write('x')\n    return kind$0\n";
    let mut scratch = scratch(&[], "runaway.py", "def spin(kind):\n    return kind$0\n");
    let workspace = scratch.root.path().to_string_lossy().into_owned();
    let buffer = format!("WORKSPACE = {workspace:?}\n{source}");
    std::fs::write(scratch.root.path().join("runaway.py"), buffer.replace("$0", "")).unwrap();
    scratch.target =
        crate::actions::test_target(&scratch.root.path().join("runaway.py").to_string_lossy(), "python", &buffer);
    let started = std::time::Instant::now();
    let report = run(
        &mut scratch,
        "def test_loop():\n    assert spin('loop') == 1\n\n\ndef test_memory():\n    assert spin('memory') == 1\n\n\ndef test_socket():\n    assert spin('socket') == 1\n\n\ndef test_write():\n    assert spin('write') == 1\n\n\ndef test_plain():\n    assert spin('plain') == 1\n",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(result(&report, "test_loop").outcome, "timeout");
    assert!(!result(&report, "test_memory").passed(), "{report:?}");
    assert!(result(&report, "test_plain").passed(), "the others still run: {report:?}");
    if crate::sandbox::isolation_available() {
        assert!(!result(&report, "test_socket").passed(), "{report:?}");
        assert!(!result(&report, "test_write").passed(), "{report:?}");
        let entries: Vec<_> =
            std::fs::read_dir(scratch.root.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(entries, ["runaway.py"], "nothing new in the workspace (no __pycache__ either)");
    } else {
        eprintln!("no user namespaces here: sockets and workspace writes are not contained (docs/quality.md)");
    }
}

/// A model that names each test `case_N` and writes the given bodies in turn; every body moves
/// the action's clock on by `seconds_per_body`. It records what it was asked.
struct Scripted {
    info: crate::engine::ModelInfo,
    bodies: &'static [&'static str],
    written: usize,
    seconds: Arc<AtomicU64>,
    seconds_per_body: u64,
    prompts: Arc<Mutex<Vec<String>>>,
}

impl crate::engine::Backend for Scripted {
    fn info(&self) -> &crate::engine::ModelInfo {
        &self.info
    }

    fn generate(
        &mut self,
        request: &crate::engine::GenerationRequest,
        observer: &mut dyn FnMut(&str) -> crate::engine::Flow,
    ) -> Result<crate::engine::Generation, EngineError> {
        use crate::engine::PromptPiece;
        let prompt: String = request
            .prompt
            .iter()
            .map(|piece| match piece {
                PromptPiece::Text(t) | PromptPiece::Special(t) => t.as_str(),
            })
            .collect();
        self.prompts.lock().unwrap().push(prompt);
        let text = if request.max_tokens <= 12 {
            format!("case_{}", self.written)
        } else {
            self.seconds.fetch_add(self.seconds_per_body, Ordering::SeqCst);
            self.written += 1;
            self.bodies[(self.written - 1) % self.bodies.len()].to_string()
        };
        let _ = observer(&text);
        Ok(crate::engine::Generation {
            text,
            tokens: Vec::new(),
            finish: crate::engine::FinishReason::Length,
            stats: Default::default(),
        })
    }
}

/// The verified action on `source` with the scripted model and a 10 s budget on a clock the
/// model moves; the clock starts at `start_seconds`. (the outcome, the prompts, bodies written)
fn budgeted_action(
    source: &str,
    bodies: &'static [&'static str],
    start_seconds: u64,
) -> (Result<Written, ActionError>, Vec<String>, Vec<String>) {
    let scratch = scratch(&[("calc.py", &source.replace("$0", ""))], "calc.py", source);
    let seconds = Arc::new(AtomicU64::new(0));
    let base = std::time::Instant::now();
    let clock = {
        let seconds = seconds.clone();
        Arc::new(move || base + std::time::Duration::from_secs(seconds.load(Ordering::SeqCst)))
    };
    let budget = Budget::with_clock(std::time::Duration::from_secs(10), clock);
    seconds.store(start_seconds, Ordering::SeqCst);
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let model = Scripted {
        info: Default::default(),
        bodies,
        written: 0,
        seconds: seconds.clone(),
        seconds_per_body: 4,
        prompts: prompts.clone(),
    };
    let folders = vec![scratch.root.path().to_path_buf()];
    let job = Job {
        target: scratch.target.clone(),
        files: ProjectFiles::new(folders.clone(), Vec::new()),
        folders,
        verify: true,
        python_interpreter: Some(python3()),
        queue: crate::engine::TaskQueue::serving(Box::new(model)),
        cancel: CancelToken::default(),
        budget,
    };
    let notes = Mutex::new(Vec::new());
    let outcome = write_tests(&job, scratch.plan.clone(), &|note: &str| notes.lock().unwrap().push(note.to_string()));
    let prompts = prompts.lock().unwrap().clone();
    (outcome, prompts, notes.into_inner().unwrap())
}

const DOUBLE: &str = "def double(x):\n    return 2 * x$0\n";

#[test]
fn the_time_budget_stops_writing_and_repairing_and_delivers_what_passed() {
    // Three bodies fit in 10 s at 4 s each (6 would be asked for); the second raises a
    // TypeError, which a repair round would send back to the model.
    let (outcome, prompts, notes) = budgeted_action(DOUBLE, &["1) == 0\n", "None) == 0\n", "3) == 6\n"], 0);
    let written = outcome.unwrap();
    let bodies = prompts.iter().filter(|p| p.ends_with("assert double(")).count();
    assert_eq!(bodies, 3, "no test is started once the budget is spent (of {CANDIDATES} wanted)");
    assert!(!prompts.iter().any(|p| p.contains("The test above fails")), "no repair round after the budget");
    assert!(written.verified);
    let texts: Vec<&str> = written.edit.tests.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].ends_with("assert double(1) == 2"), "the observed value: {texts:?}");
    assert_eq!(
        written.message,
        "2 tests written, they pass on the current code; the 10 s time budget (nib.tests.timeBudgetSeconds) ran out, so writing and repairing stopped early"
    );
    assert!(notes.contains(&"running 3 candidate tests (12 s of 10 s)".to_string()), "{notes:?}");
}

#[test]
fn a_budget_spent_before_any_test_writes_nothing() {
    let (outcome, prompts, _) = budgeted_action(DOUBLE, &["1) == 2\n"], 10);
    assert!(prompts.is_empty(), "the model was not asked: {prompts:?}");
    assert_eq!(
        outcome.err().unwrap().to_string(),
        "the 10 s time budget (nib.tests.timeBudgetSeconds) ran out before the model wrote a complete test; nothing was written"
    );
}
