//! Rust verification with `cargo test`, in a private copy of the crate (with its workspace when
//! it is a member; the editor's buffer text in place of the file, the candidates in a
//! `#[cfg(test)] mod nib_candidates` appended to it, `use super::*`), offline, with a build
//! folder of nib's own per crate that persists, so only the first build is slow. The build and
//! the test run are separate sandboxed runs (the build may take minutes and shows as progress;
//! cancelling kills its process group). A test that hangs is stopped at the run's limit and the
//! others run again without it. A failing `assert_eq!` of plain data gets the observed value; a
//! panic the function raises on purpose (`panic!`, `assert!`, `unreachable!` in its body) makes
//! the test `#[should_panic]`; an `Err` from a function that returns `Result` becomes
//! `assert!(….is_err())`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Build, Report, Round, Runner, TEST_TIME_LIMIT, TestResult, build_what_compiles, cancelled, fix_rounds};
use crate::actions::unit_tests::{Plan, Test};
use crate::actions::{ActionError, Target};
use crate::engine::CancelToken;
use crate::sandbox::{self, Limits, PrivateDir, Spec};

const MODULE: &str = "nib_candidates";
/// The crate's copy, in the run's private folder.
const COPY: &str = "crate";
/// Longest the crate's build may take (the first one compiles its dependencies).
const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// Most bytes of the crate copied (sources, manifests; never `target/` or hidden folders).
const COPY_LIMIT: u64 = 64 << 20;

/// Rust tests run by `cargo`.
pub struct Rust {
    pub cargo: PathBuf,
}

/// What libtest said about one test.
#[derive(Debug, Default, Clone)]
struct Outcome {
    passed: bool,
    /// `(file, line)` of the panic, and its message lines.
    panic: Option<(String, usize)>,
    left: Option<String>,
    message: String,
}

impl Runner for Rust {
    fn program(&self) -> &Path {
        &self.cargo
    }

    fn running(&self, count: usize) -> String {
        format!("running {count} candidate tests (cargo builds the crate first: slow the first time, cancellable)")
    }

    fn run_candidates(
        &self,
        target: &Target,
        plan: &mut Plan,
        candidates: &[Test],
        cancel: &CancelToken,
    ) -> Result<Report, ActionError> {
        let source = target.rope.to_string();
        let returns_result =
            target.scope.return_annotation.as_deref().is_some_and(|r| r.trim_start().starts_with("Result"));
        let panics_on_purpose =
            ["panic!(", "assert!(", "assert_eq!(", "unreachable!("].iter().any(|m| target.source().contains(m));
        let function_lines = {
            let start = target.rope.byte_to_line(target.scope.range.start) + 1;
            start..=target.rope.byte_to_line(target.scope.range.end.min(target.rope.len_bytes())) + 1
        };
        fix_rounds(candidates, |batch| {
            let mut round = Round::default();
            let mut building: Vec<Test> = batch.to_vec();
            // Build; a candidate that does not compile fails with the compiler's message.
            let build = |building: &[Test]| {
                let (module, starts) = candidate_module(&source, building);
                Ok(match self.build(target, plan, &format!("{source}{module}"), cancel)? {
                    Ok(built) => Build::Built((built, starts)),
                    Err(errors) => Build::Failed { broken: broken_tests(&errors, building, &starts), errors },
                })
            };
            let Some((built, starts)) = build_what_compiles(&mut round, &mut building, build, first_error)? else {
                return Ok(round);
            };
            let names: Vec<String> = building.iter().map(|t| format!("{MODULE}::{}", t.name)).collect();
            let outcomes = self.run(plan, &built, &names, cancel)?;
            for ((test, name), start) in building.iter().zip(&names).zip(starts) {
                let result = |outcome: &str, error: Option<String>| TestResult {
                    name: test.name.clone(),
                    outcome: outcome.into(),
                    error,
                    ..TestResult::default()
                };
                let Some(runs) = outcomes.iter().find(|(n, _)| n == name).map(|(_, runs)| runs) else {
                    round
                        .results
                        .push((result("timeout", Some(format!("ran past {} s", TEST_TIME_LIMIT.as_secs()))), None));
                    continue;
                };
                let (first, second) = (&runs[0], runs.get(1));
                if first.passed && second.is_some_and(|s| s.passed) {
                    round.results.push((result("pass", None), None));
                    continue;
                }
                if first.passed {
                    round.results.push((
                        result("flaky", Some(second.map_or("not run twice".into(), |s| s.message.clone()))),
                        None,
                    ));
                    continue;
                }
                let in_function = first.panic.as_ref().is_some_and(|(_, line)| function_lines.contains(line));
                let in_test = first.panic.as_ref().and_then(|(_, line)| line.checked_sub(start));
                let repaired = if in_function && panics_on_purpose {
                    Some(should_panic(&test.text))
                } else if let (Some(left), Some(line)) = (&first.left, in_test) {
                    if returns_result && left.starts_with("Err(") {
                        expect_err(&test.text, line)
                    } else {
                        observed(&test.text, line, left)
                    }
                } else {
                    None
                };
                round.results.push((result("fail", Some(first.message.clone())), repaired));
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
        let built = match self.build(target, plan, text, cancel)? {
            Ok(built) => built,
            Err(errors) => return Ok(Report { module_error: Some(first_error(&errors)), ..Report::default() }),
        };
        let outcomes = self.run(plan, &built, names, cancel)?;
        let mut report = Report::default();
        for name in names {
            let runs = outcomes.iter().find(|(path, _)| path == name || path.ends_with(&format!("::{name}")));
            let result = match runs {
                Some((_, runs)) if runs.iter().all(|r| r.passed) => {
                    TestResult { name: name.clone(), outcome: "pass".into(), ..TestResult::default() }
                }
                Some((_, runs)) => TestResult {
                    name: name.clone(),
                    outcome: "fail".into(),
                    error: runs.iter().find(|r| !r.passed).map(|r| r.message.clone()),
                    ..TestResult::default()
                },
                None => TestResult::not_run(name, true),
            };
            report.results.push(result);
        }
        Ok(report)
    }
}

/// A private copy of the crate, built.
struct Built {
    folder: PrivateDir,
    crate_root: PathBuf,
    /// The crate's folder in the copy (empty unless it is a workspace member).
    member: PathBuf,
    relative: PathBuf,
    kind: &'static str,
}

impl Rust {
    /// Copies the crate with `text` as the target file and builds its tests; `Err(output)`
    /// when it does not build.
    fn build(
        &self,
        target: &Target,
        plan: &Plan,
        text: &str,
        cancel: &CancelToken,
    ) -> Result<Result<Built, String>, ActionError> {
        let path = target.path.clone().unwrap_or_default();
        let Some(crate_root) =
            path.ancestors().skip(1).take_while(|d| d.starts_with(&plan.root)).find(|d| d.join("Cargo.toml").is_file())
        else {
            return Ok(Err("error: no Cargo.toml above the file in the workspace".into()));
        };
        // A workspace member is copied with its workspace (inherited keys, path dependencies,
        // the shared lock file) and built from its own folder.
        let workspace = workspace_root(crate_root, &plan.root);
        let member = crate_root.strip_prefix(workspace).unwrap_or(Path::new("")).to_path_buf();
        let folder = PrivateDir::new("nib-tests")
            .map_err(|e| ActionError::Rejected(format!("cannot make a private folder for the test run: {e}")))?;
        let copy = folder.path().join(COPY);
        let mut left = COPY_LIMIT;
        copy_tree(workspace, &copy, &mut left)
            .map_err(|e| ActionError::Rejected(format!("cannot copy the crate for the test run: {e}")))?;
        let relative = path.strip_prefix(crate_root).unwrap_or(&path);
        std::fs::write(copy.join(&member).join(relative), text)
            .map_err(|e| ActionError::Rejected(format!("cannot write the crate copy: {e}")))?;
        let kind = if crate_root.join("src/lib.rs").is_file() && !relative.ends_with("src/main.rs") {
            "--lib"
        } else {
            "--bins"
        };
        let build = self.cargo(
            plan,
            &folder,
            crate_root,
            &member,
            vec!["test".into(), "--offline".into(), "--quiet".into(), kind.into(), "--no-run".into()],
            BUILD_LIMIT,
            cancel,
        )?;
        if build.timed_out {
            return Ok(Err(format!("error: the build took longer than {} s", BUILD_LIMIT.as_secs())));
        }
        if !build.success() {
            return Ok(Err(String::from_utf8_lossy(&build.stderr).into_owned()));
        }
        let (crate_root, relative) = (crate_root.to_path_buf(), relative.to_path_buf());
        Ok(Ok(Built { folder, crate_root, member, relative, kind }))
    }

    /// Runs the tests whose paths end with `names`, twice: per test path its runs. A test
    /// that hangs is left out and the others run again.
    fn run(
        &self,
        plan: &Plan,
        built: &Built,
        names: &[String],
        cancel: &CancelToken,
    ) -> Result<Vec<(String, Vec<Outcome>)>, ActionError> {
        let Built { folder, crate_root, member, relative, kind } = built;
        let kind = *kind;
        let mut outcomes: Vec<(String, Vec<Outcome>)> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        for _ in 0..2 {
            loop {
                let mut args: Vec<OsString> =
                    vec!["test".into(), "--offline".into(), kind.into(), "--".into(), "--test-threads=1".into()];
                args.extend(names.iter().map(OsString::from));
                for skip in &skipped {
                    args.push("--skip".into());
                    args.push(skip.into());
                }
                let wall = Duration::from_secs(10) + TEST_TIME_LIMIT * names.len() as u32;
                let run = self.cargo(plan, folder, crate_root, member, args, wall, cancel)?;
                let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
                // Panic locations are relative to the workspace's root.
                for (name, outcome) in parse(&stdout, &member.join(relative)) {
                    match outcomes.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, runs)) => runs.push(outcome),
                        None => outcomes.push((name, vec![outcome])),
                    }
                }
                // The test that was running when the run was stopped: the others run again.
                match hung_test(&stdout).filter(|_| run.timed_out) {
                    Some(hung) if !skipped.contains(&hung) => skipped.push(hung),
                    _ => break,
                }
            }
        }
        outcomes.retain(|(name, _)| !skipped.contains(name));
        Ok(outcomes)
    }

    #[allow(clippy::too_many_arguments)]
    fn cargo(
        &self,
        plan: &Plan,
        folder: &PrivateDir,
        crate_root: &Path,
        member: &Path,
        args: Vec<OsString>,
        wall: Duration,
        cancel: &CancelToken,
    ) -> Result<sandbox::Outcome, ActionError> {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cargo"));
        let rustup_home = std::env::var_os("RUSTUP_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".rustup"));
        // One build folder per crate, kept between runs.
        let key = crate_root
            .to_string_lossy()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let target_dir = crate::paths::user_cache_dir()
            .map_or_else(|| folder.path().join("target"), |c| c.join(format!("cargo-target/{key:016x}")));
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let outcome = sandbox::run(
            &Spec {
                program: self.cargo.clone(),
                args,
                cwd: folder.path().join(COPY).join(member),
                env: vec![
                    ("HOME".into(), text(folder.path())),
                    ("CARGO_HOME".into(), text(&cargo_home)),
                    ("RUSTUP_HOME".into(), text(&rustup_home)),
                    ("CARGO_TARGET_DIR".into(), text(&target_dir)),
                    ("CARGO_NET_OFFLINE".into(), "true".into()),
                    ("CARGO_TERM_COLOR".into(), "never".into()),
                    ("RUST_BACKTRACE".into(), "0".into()),
                ],
                read_only: vec![plan.root.clone()],
                limits: Limits {
                    wall,
                    cpu_seconds: wall.as_secs() * 2 + 1,
                    address_space: None,
                    data: 4 << 30,
                    ..Limits::default()
                },
            },
            cancel,
        )
        .map_err(|e| ActionError::Rejected(format!("cannot run cargo {}: {e}", self.cargo.display())))?;
        if outcome.cancelled {
            return Err(cancelled("cancelled".into()));
        }
        Ok(outcome)
    }
}

/// The candidates (by index) the compiler's errors point into (`--> src/x.rs:LINE:COL`), with
/// the error's first line.
fn broken_tests(errors: &str, tests: &[Test], starts: &[usize]) -> Vec<(usize, String)> {
    let mut broken: Vec<(usize, String)> = Vec::new();
    let mut message = String::new();
    for line in errors.lines() {
        if line.starts_with("error") {
            message = line.trim().to_string();
            continue;
        }
        let Some(place) = line.trim_start().strip_prefix("--> ") else { continue };
        let Some(number) = place.split(':').nth(1).and_then(|n| n.parse::<usize>().ok()) else { continue };
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

fn first_error(output: &str) -> String {
    let line = output.lines().find(|l| l.starts_with("error")).unwrap_or("the crate does not build");
    line.trim().chars().take(500).collect()
}

/// Copies `from` into `to`: regular files and folders, not `target/` or hidden entries, at
/// most `left` bytes.
/// The root of the Cargo workspace `crate_root` belongs to (a `Cargo.toml` with `[workspace]`
/// above it, inside the workspace folder `root`), else the crate itself.
fn workspace_root<'p>(crate_root: &'p Path, root: &Path) -> &'p Path {
    let files = crate::actions::project_files::ProjectFiles::new(vec![root.to_path_buf()], Vec::new());
    let declares_workspace = |folder: &Path| {
        files
            .read(&folder.join("Cargo.toml"))
            .is_some_and(|manifest| manifest.lines().any(|l| l.trim() == "[workspace]"))
    };
    crate_root.ancestors().take_while(|d| d.starts_with(root)).find(|d| declares_workspace(d)).unwrap_or(crate_root)
}

fn copy_tree(from: &Path, to: &Path, left: &mut u64) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text.starts_with('.') || name_text == "target" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name), left)?;
        } else if kind.is_file() {
            let size = entry.metadata()?.len();
            if size > *left {
                return Err(std::io::Error::other("the crate is larger than nib copies for a test run"));
            }
            *left -= size;
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

/// The module of candidates appended to the file, and the line (1-based) each test starts on.
pub fn candidate_module(source: &str, tests: &[Test]) -> (String, Vec<usize>) {
    let mut module = String::from(if source.ends_with('\n') { "\n" } else { "\n\n" });
    module.push_str(&format!("#[cfg(test)]\nmod {MODULE} {{\n    #[allow(unused_imports)]\n    use super::*;\n"));
    let mut line = source.lines().count() + module.matches('\n').count() + 1;
    let mut starts = Vec::new();
    for test in tests {
        module.push('\n');
        line += 1;
        starts.push(line);
        for text in test.text.lines() {
            module.push_str(&if text.is_empty() { String::new() } else { format!("    {text}") });
            module.push('\n');
            line += 1;
        }
    }
    module.push_str("}\n");
    (module, starts)
}

/// Results per test path from libtest's output (`test a::b ... ok`), with the panic of each
/// failure (`---- a::b stdout ----` sections).
fn parse(stdout: &str, file: &Path) -> Vec<(String, Outcome)> {
    let file = file.to_string_lossy();
    let mut results: Vec<(String, Outcome)> = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test ") else { continue };
        let Some((name, verdict)) = rest.split_once(" ... ") else { continue };
        let name = name.trim_end_matches(" - should panic");
        let passed = match verdict.trim() {
            "ok" => true,
            "FAILED" => false,
            _ => continue,
        };
        results.push((
            name.to_string(),
            Outcome { passed, message: if passed { String::new() } else { "failed".into() }, ..Outcome::default() },
        ));
    }
    let mut current: Option<usize> = None;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            current = results.iter().position(|(n, _)| n == name);
            continue;
        }
        let Some(outcome) = current.map(|i| &mut results[i].1) else { continue };
        if let Some(at) = line.find("panicked at ") {
            let place = line[at + "panicked at ".len()..].trim_end_matches(':');
            let mut parts = place.rsplitn(3, ':');
            let (_, line_number, path) = (parts.next(), parts.next(), parts.next());
            if let (Some(path), Some(number)) = (path, line_number.and_then(|n| n.parse().ok())) {
                outcome.panic = (path == file).then(|| (path.to_string(), number));
            }
        } else if let Some(left) = line.strip_prefix("  left: ") {
            outcome.left = Some(left.trim().to_string());
        } else if outcome.message == "failed" && !line.trim().is_empty() && !line.starts_with("note:") {
            outcome.message = line.trim().chars().take(500).collect();
        }
    }
    results
}

/// The test libtest started last and never finished (`test a::b ... ` without a verdict).
fn hung_test(stdout: &str) -> Option<String> {
    let last = stdout.lines().rev().find(|l| l.starts_with("test "))?;
    let name = last.strip_prefix("test ")?.split(" ... ").next()?.trim_end_matches(" - should panic");
    (!last.ends_with(" ok") && !last.ends_with(" FAILED")).then(|| name.trim().to_string())
}

/// Whether a `{:?}` value reads back as a Rust expression of the same value here: numbers,
/// strings, chars, bools, `Some`/`None`/`Ok`/`Err`, tuples, arrays and structs of those.
pub fn plain_literal(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 300
        && !text.starts_with('{')
        && !text.contains("..")
        && !text.contains('<')
        && !text.contains('#')
        && !text.contains("NaN")
        && !text.contains("inf")
}

/// The span of the `assert_eq!(…)` arguments after the first top-level comma on `line`.
fn second_argument(line: &str) -> Option<std::ops::Range<usize>> {
    let open = line.find("assert_eq!(")? + "assert_eq!(".len();
    let (mut depth, mut comma, mut quoted) = (0i32, None, false);
    let mut chars = line[open..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if quoted => {
                chars.next();
            }
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return comma.map(|start| start..open + at),
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 && comma.is_none() => comma = Some(open + at + 1),
            _ => {}
        }
    }
    None
}

/// `test` with the observed `value` as the expected one of the `assert_eq!` on `line`.
pub fn observed(test: &str, line: usize, value: &str) -> Option<String> {
    if !plain_literal(value) {
        return None;
    }
    let mut lines: Vec<String> = test.lines().map(str::to_string).collect();
    let target = lines.get_mut(line)?;
    let span = second_argument(target)?;
    target.replace_range(span, &format!(" {value}"));
    Some(lines.join("\n"))
}

/// The `assert_eq!` on `line` turned into a check that the call returns an error.
fn expect_err(test: &str, line: usize) -> Option<String> {
    let mut lines: Vec<String> = test.lines().map(str::to_string).collect();
    let target = lines.get_mut(line)?;
    let open = target.find("assert_eq!(")?;
    let span = second_argument(target)?;
    let call = target[open + "assert_eq!(".len()..span.start - 1].trim().to_string();
    let end = target[span.end..].find(';').map_or(target.len(), |at| span.end + at + 1);
    target.replace_range(open..end, &format!("assert!({call}.is_err());"));
    Some(lines.join("\n"))
}

/// The test marked `#[should_panic]` (after its `#[test]`).
pub fn should_panic(test: &str) -> String {
    test.replacen("#[test]", "#[test]\n#[should_panic]", 1)
}
