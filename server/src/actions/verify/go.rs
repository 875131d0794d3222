//! Go verification with `go test`. The package is built as the editor shows it through
//! `go test -overlay` (the buffer's text replaces the file, the candidate tests are added
//! beside it; nothing is written into the workspace): the candidates are compiled once into a
//! test binary (a candidate that does not compile is dropped and the rest rebuilt), then each
//! runs twice in a sandboxed process of its own, so a runaway test is stopped at its limit and
//! the others still run. Tests follow a scaffold (`got := F(…)`, a typed `want`, an `err`
//! check): a wrong `want` of plain data gets the observed value, and an error from a function
//! that returns `error` becomes a check that the error comes. The file as written runs under
//! plain `go test -run` (without vet: Go 1.19's vet does not read overlays). Offline: `GOPROXY=off`,
//! `GOTOOLCHAIN=local`, the module cache read where it already is; the build cache is nib's own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Build, Report, Round, Runner, TEST_TIME_LIMIT, TestResult, build_what_compiles, cancelled, fix_rounds};
use crate::actions::unit_tests::{self, Plan, Test};
use crate::actions::{ActionError, Target};
use crate::engine::CancelToken;
use crate::sandbox::{self, Limits, PrivateDir, Spec};

const MARK: &str = "@@nib@@ ";
const CANDIDATE_FILE: &str = "nib_candidates_test.go";
const OBSERVE_FILE: &str = "nib_observe_test.go";
/// Longest a build of the package and its tests may take (the first one fills the cache).
const BUILD_LIMIT: Duration = Duration::from_secs(180);

/// Go tests run by `go`.
pub struct Go {
    pub go: PathBuf,
}

/// What a candidate's observation helpers printed.
#[derive(Debug, Default, Deserialize)]
struct Observation {
    test: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl Runner for Go {
    fn program(&self) -> &Path {
        &self.go
    }

    fn run_candidates(
        &self,
        target: &Target,
        plan: &mut Plan,
        candidates: &[Test],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError> {
        let returns_error = matches!(
            target.scope.return_annotation.as_deref().and_then(unit_tests::go_results),
            Some(unit_tests::GoResults::Error | unit_tests::GoResults::ValueAndError(_))
        );
        fix_rounds(candidates, |batch| {
            let mut round = Round::default();
            let mut building: Vec<Test> = batch.to_vec();
            // Build; a candidate that does not compile fails with the compiler's message.
            let build = |building: &[Test]| {
                let folder = private_folder()?;
                let (text, starts) = candidate_file(target, plan, building)?;
                Ok(match self.build(target, plan, &folder, &text, cancel).map_err(cancelled)? {
                    Ok(binary) => Build::Built((folder, binary)),
                    Err(errors) => Build::Failed { broken: broken_tests(&errors, building, &starts), errors },
                })
            };
            let module_error =
                |errors: &str| errors.lines().find(|l| l.contains(": ")).unwrap_or(errors).trim().to_string();
            let Some((folder, binary)) = build_what_compiles(&mut round, &mut building, build, module_error)? else {
                return Ok(round);
            };
            for test in &building {
                let (result, observation) =
                    self.run_test(plan, &folder, &binary, &test.name, cancel).map_err(cancelled)?;
                let repaired = if result.passed() {
                    None
                } else {
                    observation.and_then(|o| apply_fix(&test.text, &o, returns_error))
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
        let folder = private_folder()?;
        let pattern = format!("^({})$", names.join("|"));
        let overlay =
            self.overlay(target, &folder, &[(plan.file.clone(), text.to_string())]).map_err(ActionError::Rejected)?;
        let args = vec![
            "test".into(),
            "-overlay".into(),
            overlay.into(),
            "-count=1".into(),
            "-vet=off".into(),
            "-v".into(),
            "-run".into(),
            pattern.into(),
            ".".into(),
        ];
        let wall = BUILD_LIMIT + TEST_TIME_LIMIT * (names.len() as u32);
        let outcome = self.go(plan, &folder, args, wall, cancel).map_err(cancelled)?;
        let stdout = String::from_utf8_lossy(&outcome.stdout);
        let mut report = Report::default();
        for name in names {
            let passed = stdout.lines().any(|l| l.starts_with(&format!("--- PASS: {name} (")));
            let failed = stdout.lines().any(|l| l.starts_with(&format!("--- FAIL: {name} (")));
            let result = match (passed, failed) {
                (true, false) => TestResult { name: name.clone(), outcome: "pass".into(), ..TestResult::default() },
                (_, true) => TestResult {
                    name: name.clone(),
                    outcome: "fail".into(),
                    error: Some(test_error(&stdout, name)),
                    ..TestResult::default()
                },
                _ => TestResult::not_run(name, outcome.timed_out),
            };
            report.results.push(result);
        }
        if report.results.iter().all(|r| r.outcome == "timeout") && !outcome.success() && !outcome.timed_out {
            let output = format!("{}{stdout}", String::from_utf8_lossy(&outcome.stderr));
            report.module_error = Some(first_error(&output).unwrap_or_else(|| outcome.failure()));
        }
        Ok(report)
    }
}

fn private_folder() -> Result<PrivateDir, ActionError> {
    PrivateDir::new("nib-tests")
        .map_err(|e| ActionError::Rejected(format!("cannot make a private folder for the test run: {e}")))
}

impl Go {
    /// The overlay file replacing the target with its buffer text and adding `files`.
    fn overlay(&self, target: &Target, folder: &PrivateDir, files: &[(PathBuf, String)]) -> Result<PathBuf, String> {
        let mut replace = serde_json::Map::new();
        let mut all: Vec<(PathBuf, String)> = files.to_vec();
        if let Some(path) = &target.path {
            all.push((path.clone(), target.rope.to_string()));
        }
        for (index, (path, text)) in all.iter().enumerate() {
            // Under its own name: compiler messages name the file they read.
            let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file.go".into());
            let name = format!("overlay-{index}/{base}");
            let private =
                folder.write(Path::new(&name), text.as_bytes()).map_err(|e| format!("cannot write {name}: {e}"))?;
            replace.insert(
                path.to_string_lossy().into_owned(),
                serde_json::Value::String(private.to_string_lossy().into_owned()),
            );
        }
        let overlay = serde_json::json!({ "Replace": replace });
        folder
            .write(Path::new("overlay.json"), overlay.to_string().as_bytes())
            .map_err(|e| format!("cannot write the overlay: {e}"))
    }

    /// Compiles the package with the candidates into a test binary; `Err(output)` when it
    /// does not compile.
    fn build(
        &self,
        target: &Target,
        plan: &Plan,
        folder: &PrivateDir,
        candidates: &str,
        cancel: &CancelToken,
    ) -> Result<Result<PathBuf, String>, String> {
        let directory = plan.file.parent().unwrap_or(&plan.root).to_path_buf();
        let package = candidates.lines().find_map(|l| l.strip_prefix("package ")).unwrap_or("main").trim();
        let observe = OBSERVE.replace("PACKAGE", package);
        let files = [(directory.join(CANDIDATE_FILE), candidates.to_string()), (directory.join(OBSERVE_FILE), observe)];
        let overlay = self.overlay(target, folder, &files)?;
        let binary = folder.path().join("package.test");
        let args = vec![
            "test".into(),
            "-c".into(),
            "-vet=off".into(),
            "-overlay".into(),
            overlay.into(),
            "-o".into(),
            binary.clone().into(),
            ".".into(),
        ];
        let outcome = self.go(plan, folder, args, BUILD_LIMIT, cancel)?;
        if outcome.success() && binary.is_file() {
            return Ok(Ok(binary));
        }
        if outcome.timed_out {
            return Err(format!("building the tests took longer than {} s", BUILD_LIMIT.as_secs()));
        }
        Ok(Err(format!("{}{}", String::from_utf8_lossy(&outcome.stderr), String::from_utf8_lossy(&outcome.stdout))))
    }

    /// Runs one test twice in the compiled binary, in its own process.
    fn run_test(
        &self,
        plan: &Plan,
        folder: &PrivateDir,
        binary: &Path,
        name: &str,
        cancel: &CancelToken,
    ) -> Result<(TestResult, Option<Observation>), String> {
        let args: Vec<OsString> = vec!["-test.v".into(), "-test.count=2".into(), format!("-test.run=^{name}$").into()];
        let wall = TEST_TIME_LIMIT * 2 + Duration::from_secs(3);
        let outcome = sandbox::run(&self.spec(plan, folder, binary.to_path_buf(), args, wall), cancel)
            .map_err(|e| format!("cannot run the Go test binary: {e}"))?;
        if outcome.cancelled {
            return Err("cancelled".into());
        }
        let stdout = String::from_utf8_lossy(&outcome.stdout);
        let observation = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(MARK))
            .filter_map(|json| serde_json::from_str::<Observation>(json).ok())
            .find(|o| o.test == name);
        let runs: Vec<(bool, f64)> = stdout
            .lines()
            .filter_map(|line| {
                let (passed, rest) = if let Some(rest) = line.strip_prefix("--- PASS: ") {
                    (true, rest)
                } else {
                    (false, line.strip_prefix("--- FAIL: ")?)
                };
                let (test, seconds) = rest.split_once(" (")?;
                (test == name).then(|| (passed, seconds.trim_end_matches("s)").parse().unwrap_or(0.0)))
            })
            .collect();
        let result = |outcome: &str, error: Option<String>| TestResult {
            name: name.to_string(),
            outcome: outcome.into(),
            error,
            ..TestResult::default()
        };
        let result = match runs.as_slice() {
            _ if outcome.timed_out => result("timeout", Some(format!("ran past {} s", TEST_TIME_LIMIT.as_secs()))),
            [(true, first), (true, _)] if *first > TEST_TIME_LIMIT.as_secs_f64() => {
                result("slow", Some(format!("took {first:.1} s")))
            }
            [(true, _), (true, _)] => result("pass", None),
            [(true, _), (false, _)] => result("flaky", Some(test_error(&stdout, name))),
            [(false, _), ..] => result("fail", Some(test_error(&stdout, name))),
            _ => {
                let output = format!("{stdout}{}", String::from_utf8_lossy(&outcome.stderr));
                result("fail", Some(first_error(&output).unwrap_or_else(|| outcome.failure())))
            }
        };
        Ok((result, observation))
    }

    fn go(
        &self,
        plan: &Plan,
        folder: &PrivateDir,
        args: Vec<OsString>,
        wall: Duration,
        cancel: &CancelToken,
    ) -> Result<sandbox::Outcome, String> {
        let outcome = sandbox::run(&self.spec(plan, folder, self.go.clone(), args, wall), cancel)
            .map_err(|e| format!("cannot run go {}: {e}", self.go.display()))?;
        if outcome.cancelled {
            return Err("cancelled".into());
        }
        Ok(outcome)
    }

    /// A sandboxed Go command in the package's folder, offline, with private caches.
    fn spec(&self, plan: &Plan, folder: &PrivateDir, program: PathBuf, args: Vec<OsString>, wall: Duration) -> Spec {
        let directory = plan.file.parent().unwrap_or(&plan.root).to_path_buf();
        Spec {
            program,
            args,
            cwd: directory.clone(),
            env: environment(&directory, &plan.root, folder.path()),
            read_only: vec![plan.root.clone()],
            // Go reserves address space it never uses: the data limit bounds its memory.
            limits: Limits { wall, cpu_seconds: wall.as_secs() + 1, address_space: None, ..Limits::default() },
        }
    }
}

/// The Go command's environment: offline, the build cache in nib's cache folder, the module
/// cache where the user's already is (read, never downloaded into), and `-mod=vendor` when the
/// module vendors its dependencies.
fn environment(directory: &Path, root: &Path, private: &Path) -> Vec<(String, String)> {
    let text = |path: &Path| path.to_string_lossy().into_owned();
    let module_root = directory.ancestors().take_while(|d| d.starts_with(root)).find(|d| d.join("go.mod").is_file());
    let cache = crate::paths::user_cache_dir().map_or_else(|| private.join("go-build"), |c| c.join("go-build"));
    let user_modules = std::env::var_os("GOMODCACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("GOPATH").map(|p| PathBuf::from(p).join("pkg/mod")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join("go/pkg/mod")))
        .filter(|p| p.is_dir());
    let mut env = vec![
        ("HOME".into(), text(private)),
        ("TMPDIR".into(), text(private)),
        ("GOTMPDIR".into(), text(private)),
        ("GOPATH".into(), text(&private.join("gopath"))),
        ("GOMODCACHE".into(), text(&user_modules.unwrap_or_else(|| private.join("gopath/pkg/mod")))),
        ("GOCACHE".into(), text(&cache)),
        ("GOENV".into(), "off".into()),
        ("GOPROXY".into(), "off".into()),
        ("GOSUMDB".into(), "off".into()),
        ("GOTOOLCHAIN".into(), "local".into()),
        ("GOTELEMETRY".into(), "off".into()),
        ("CGO_ENABLED".into(), "0".into()),
    ];
    match module_root {
        Some(module) if module.join("vendor/modules.txt").is_file() => {
            env.push(("GOFLAGS".into(), "-mod=vendor".into()))
        }
        Some(_) => env.push(("GOFLAGS".into(), "-mod=mod".into())),
        None => env.push(("GO111MODULE".into(), "off".into())),
    }
    env
}

/// Helpers the candidates call to report what they saw (the package name is filled in).
const OBSERVE: &str = r#"package PACKAGE

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
)

func nibObserve(t *testing.T, got interface{}) {
	nibReport(t, "value", fmt.Sprintf("%#v", got))
}

func nibError(t *testing.T, err error) {
	if err != nil {
		nibReport(t, "error", err.Error())
	}
}

func nibReport(t *testing.T, kind, text string) {
	record, _ := json.Marshal(map[string]string{"test": t.Name(), kind: text})
	fmt.Fprintf(os.Stdout, "\n@@nib@@ %s\n", record)
}
"#;

/// The candidate file for `tests` and the line (1-based) each starts on; each test reports
/// its `got` and `err` (on the same line, so lines keep their numbers).
fn candidate_file(target: &Target, plan: &Plan, tests: &[Test]) -> Result<(String, Vec<usize>), ActionError> {
    let mut candidate_plan = plan.clone();
    candidate_plan.existing = None;
    let instrumented: Vec<Test> =
        tests.iter().map(|t| Test { name: t.name.clone(), text: instrument(&t.text) }).collect();
    let edit = unit_tests::finish(target, &candidate_plan, instrumented)?;
    let text = edit.insertion.text;
    let starts = edit
        .tests
        .iter()
        .map(|test| text.find(&test.text).map_or(0, |at| text[..at].matches('\n').count() + 1))
        .collect();
    Ok((text, starts))
}

/// `test` with its observation calls.
pub fn instrument(test: &str) -> String {
    test.split_inclusive('\n')
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if trimmed.starts_with("if !reflect.DeepEqual(got, want) {") || trimmed.starts_with("if got != want {") {
                format!("{indent}nibObserve(t, got); {trimmed}")
            } else if trimmed.starts_with("if err != nil {") {
                format!("{indent}nibError(t, err); {trimmed}")
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// The candidates (by index) the compiler's `errors` point into, with the first message.
fn broken_tests(errors: &str, tests: &[Test], starts: &[usize]) -> Vec<(usize, String)> {
    let mut broken: Vec<(usize, String)> = Vec::new();
    for line in errors.lines() {
        let Some(at) = line.find(&format!("{CANDIDATE_FILE}:")) else { continue };
        let rest = &line[at + CANDIDATE_FILE.len() + 1..];
        let Some(number) = rest.split(':').next().and_then(|n| n.parse::<usize>().ok()) else { continue };
        let message = rest.splitn(3, ':').nth(2).unwrap_or(rest).trim().to_string();
        let owner = (0..tests.len()).filter(|&i| starts[i] <= number).max_by_key(|&i| starts[i]);
        if let Some(index) = owner.filter(|&i| number < starts[i] + tests[i].text.lines().count())
            && !broken.iter().any(|(b, _)| *b == index)
        {
            broken.push((index, format!("does not compile: {message}")));
        }
    }
    broken.sort();
    broken
}

/// The first line of a failing test's output that says why.
fn test_error(output: &str, name: &str) -> String {
    let mut inside = false;
    for line in output.lines() {
        if line.starts_with(&format!("=== RUN   {name}")) {
            inside = true;
            continue;
        }
        if inside && line.starts_with("    ") && !line.contains(MARK) {
            return line.trim().chars().take(500).collect();
        }
        if inside && line.starts_with("panic: ") {
            return line.trim().chars().take(500).collect();
        }
    }
    "failed".into()
}

/// The first compiler or toolchain error in `output`.
fn first_error(output: &str) -> Option<String> {
    output
        .lines()
        .find(|l| {
            l.contains(".go:") || l.starts_with("go: ") || l.starts_with("panic: ") || l.starts_with("fatal error: ")
        })
        .map(|l| l.trim().chars().take(500).collect())
}

/// Whether `%#v` output reads back as the same value in the test's package: plain numbers,
/// strings, booleans, and slices and maps of those (no type from another package, no pointer).
pub fn plain_literal(text: &str) -> bool {
    let mut outside = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(inner) = chars.next() {
                    match inner {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                outside.push('0');
            }
            '`' => {
                for inner in chars.by_ref() {
                    if inner == '`' {
                        break;
                    }
                }
                outside.push('0');
            }
            _ => outside.push(c),
        }
    }
    let bytes = outside.as_bytes();
    let dots_are_decimal = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'.' || (i > 0 && bytes[i - 1].is_ascii_digit() && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
    });
    !text.is_empty()
        && text.len() <= 300
        && dots_are_decimal
        && outside.chars().all(|c| c.is_ascii_alphanumeric() || "[]{}:, -+._".contains(c))
}

/// `test` with its observation written in: the observed `want`, or, for a function that
/// returns `error`, a test that expects the error.
fn apply_fix(test: &str, observation: &Observation, returns_error: bool) -> Option<String> {
    if let Some(error) = &observation.error {
        if !returns_error || error.is_empty() {
            return None;
        }
        return expect_error(test);
    }
    let value = observation.value.as_ref().filter(|v| plain_literal(v))?;
    let mut fixed = String::new();
    let mut replaced = false;
    for line in test.split_inclusive('\n') {
        match line.find(" want ").filter(|_| line.trim_start().starts_with("var want ")).and_then(|_| line.find(" = "))
        {
            Some(at) if !replaced => {
                fixed.push_str(&line[..at + 3]);
                fixed.push_str(value);
                if line.ends_with('\n') {
                    fixed.push('\n');
                }
                replaced = true;
            }
            _ => fixed.push_str(line),
        }
    }
    replaced.then_some(fixed)
}

/// The scaffolded test rewritten to expect the call's error.
pub fn expect_error(test: &str) -> Option<String> {
    let header = test.lines().next()?;
    let call_line = test
        .lines()
        .find(|l| l.contains(" := ") && (l.contains("got, err :=") || l.trim_start().starts_with("err :=")))?;
    let call = call_line.split_once(" := ")?.1.trim();
    let binding = if call_line.contains("got, err") { "_, err" } else { "err" };
    let quoted = serde_json::to_string(&format!("{call}: expected an error")).ok()?;
    Some(format!("{header}\n\t{binding} := {call}\n\tif err == nil {{\n\t\tt.Fatal({quoted})\n\t}}\n}}"))
}
