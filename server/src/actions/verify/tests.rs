//! Running candidates for real (python3 from `PATH`, canned tests instead of the model):
//! observed values, expected exceptions, the editor's unsaved text, and containment.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::actions::project_files::ProjectFiles;
use crate::actions::unit_tests::PythonStyle;
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
    scratch_in("python", files, module, buffer)
}

/// A scratch workspace whose target `module` is in the language `language_id`.
fn scratch_in(language_id: &str, files: &[(&str, &str)], module: &str, buffer: &str) -> Scratch {
    let root = PrivateDir::new("nib-verify").unwrap();
    write_files(root.path(), files);
    let path = root.path().join(module);
    let target = crate::actions::test_target(&path.to_string_lossy(), language_id, buffer);
    let folders = vec![root.path().to_path_buf()];
    let plan = unit_tests::plan(&target, &folders, &ProjectFiles::new(folders.clone(), Vec::new())).unwrap();
    Scratch { root, target, plan }
}

fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn candidates(code: &str) -> Vec<Test> {
    unit_tests::find_tests(Language::Python, code)
}

fn run(scratch: &mut Scratch, code: &str) -> Report {
    let tests = candidates(code);
    let runner = python::Python { interpreter: python3() };
    runner.run_candidates(&scratch.target, &mut scratch.plan, &tests, &CancelToken::default()).unwrap()
}

fn result<'a>(report: &'a Report, name: &str) -> &'a TestResult {
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
    // Without pytest in this interpreter nib writes unittest tests instead.
    let pytest = scratch.plan.python_style == PythonStyle::Pytest;
    let expects = if pytest { "pytest.raises" } else { "self.assertRaises" };
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
fn a_candidate_that_does_not_compile_fails_alone() {
    let mut scratch = scratch(&[("shop.py", TAX)], "shop.py", TAX);
    // Both parse, but Python refuses to compile the first (a `nonlocal` with nothing to bind).
    let code = "def test_with_tax_broken():\n    nonlocal rate\n    assert with_tax(1) == 1.2\n\n\ndef test_with_tax_zero():\n    assert with_tax(0) == 0\n";
    let report = run(&mut scratch, code);
    assert_eq!(report.module_error, None, "the code under test imports fine");
    let broken = result(&report, "test_with_tax_broken");
    assert_eq!(broken.outcome, "fail");
    assert!(broken.error.as_deref().unwrap().starts_with("SyntaxError"), "{broken:?}");
    assert!(result(&report, "test_with_tax_zero").passed(), "{report:?}");
}

#[test]
fn the_code_under_test_is_the_unsaved_buffer() {
    let disk = "def answer():\n    return 1\n";
    let buffer = "def answer():\n    return 2$0\n";
    let mut scratch = scratch(&[("pkg/__init__.py", ""), ("pkg/deep.py", disk)], "pkg/deep.py", buffer);
    assert_eq!(scratch.plan.module, "pkg.deep");
    let code =
        "def test_answer():\n    assert answer() == 2\n\n\ndef test_module_answer():\n    assert deep.answer() == 2\n";
    python::import_used_names(&scratch.target, &mut scratch.plan, &candidates(code));
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

// JavaScript: node from PATH.

fn node() -> Option<PathBuf> {
    let found = toolchain::node().map(|t| t.program);
    if found.is_none() {
        assert!(std::env::var_os("NIB_REQUIRE_TOOLCHAINS").is_none(), "no node on PATH");
        eprintln!("no node on PATH: the JavaScript runs are skipped");
    }
    found
}

fn run_javascript(scratch: &mut Scratch, node: PathBuf, code: &str) -> Report {
    let tests = unit_tests::find_tests(Language::JavaScript, code);
    let runner = javascript::JavaScript { node, compiler: None };
    runner.run_candidates(&scratch.target, &mut scratch.plan, &tests, &CancelToken::default()).unwrap()
}

fn javascript_scratch(files: &[(&str, &str)], module: &str, buffer: &str) -> Scratch {
    scratch_in("javascript", files, module, buffer)
}

const PRICE_ESM: &str = "import { rate } from \"./rates.js\";\n\nexport function withTax(price) {\n  if (price < 0) {\n    throw new RangeError(\"negative price\");\n  }\n  return price * (1 + rate());$0\n}\n";

#[test]
fn javascript_candidates_get_observed_values_and_expected_errors_on_the_buffer_text() {
    let Some(node) = node() else { return };
    let files = [
        ("package.json", "{ \"type\": \"module\" }\n"),
        ("rates.js", "export function rate() {\n  return 0.5;\n}\n"),
        // On disk the function is different: the buffer is what runs.
        ("price.js", "export function withTax(price) {\n  return 0;\n}\n"),
    ];
    let mut scratch = javascript_scratch(&files, "price.js", PRICE_ESM);
    assert!(!scratch.plan.commonjs);
    let report = run_javascript(
        &mut scratch,
        node.clone(),
        "test(\"withTax ten\", () => {\n  assert.deepStrictEqual(withTax(10), 11);\n});\n\ntest(\"withTax negative\", () => {\n  assert.deepStrictEqual(withTax(-1), 0);\n});\n\ntest(\"withTax text\", () => {\n  assert.deepStrictEqual(withTax(null).toFixed(), 1);\n});\n\ntest(\"withTax zero\", () => {\n  assert.deepStrictEqual(withTax(0), 0);\n});\n",
    );
    assert_eq!(report.module_error, None, "{report:?}");
    let ten = result(&report, "\"withTax ten\"");
    assert!(ten.passed(), "{ten:?}");
    assert_eq!(
        ten.text.as_deref(),
        Some("test(\"withTax ten\", () => {\n  assert.deepStrictEqual(withTax(10), 15);\n});")
    );
    let negative = result(&report, "\"withTax negative\"");
    assert!(negative.passed(), "{negative:?}");
    assert_eq!(
        negative.text.as_deref(),
        Some("test(\"withTax negative\", () => {\n  assert.throws(() => withTax(-1), { name: \"RangeError\" });\n});")
    );
    // `withTax(null)` is 0 and `toFixed()` makes "0", a string: the observed value is written as one.
    let text = result(&report, "\"withTax text\"");
    assert!(text.passed() && text.text.as_deref().unwrap().contains("toFixed(), \"0\")"), "{text:?}");
    let zero = result(&report, "\"withTax zero\"");
    assert!(zero.passed() && zero.text.is_none(), "{zero:?}");

    // The file as it will be written runs under node:test itself.
    let kept: Vec<Test> = ["\"withTax ten\"", "\"withTax negative\""]
        .iter()
        .map(|name| Test { name: name.to_string(), text: result(&report, name).text.clone().unwrap() })
        .collect();
    let edit = unit_tests::finish(&scratch.target, &scratch.plan, kept).unwrap();
    assert!(edit.insertion.text.starts_with("import { test } from \"node:test\";\nimport assert from \"node:assert/strict\";\nimport { withTax } from \"./price.js\";\n"), "{}", edit.insertion.text);
    let runner = javascript::JavaScript { node, compiler: None };
    let final_run = runner
        .run_file(&scratch.target, &scratch.plan, &edit.insertion.text, &edit.test_names, &CancelToken::default())
        .unwrap();
    assert!(final_run.results.iter().all(TestResult::passed), "{final_run:?}");
    let broken = edit.insertion.text.replace("15", "16");
    let final_run =
        runner.run_file(&scratch.target, &scratch.plan, &broken, &edit.test_names, &CancelToken::default()).unwrap();
    assert!(!result(&final_run, "\"withTax ten\"").passed(), "{final_run:?}");
    assert!(result(&final_run, "\"withTax negative\"").passed(), "{final_run:?}");
}

#[test]
fn javascript_commonjs_packages_get_require_and_a_missing_export_is_a_module_error() {
    let Some(node) = node() else { return };
    let buffer = "function double(x) {\n  return x * 2;$0\n}\n\nmodule.exports = { double };\n";
    let mut scratch = javascript_scratch(&[("package.json", "{}\n"), ("math.js", buffer)], "math.js", buffer);
    assert!(scratch.plan.commonjs);
    let report = run_javascript(
        &mut scratch,
        node.clone(),
        "test(\"double two\", () => {\n  assert.strictEqual(double(2), 5);\n});\n",
    );
    let two = result(&report, "\"double two\"");
    assert!(two.passed() && two.text.as_deref().unwrap().contains("double(2), 4)"), "{report:?}");
    let edit = unit_tests::finish(
        &scratch.target,
        &scratch.plan,
        vec![Test { name: "\"double two\"".into(), text: two.text.clone().unwrap() }],
    )
    .unwrap();
    assert!(edit.insertion.text.contains("const { double } = require(\"./math.js\");"), "{}", edit.insertion.text);

    let unexported = "function double(x) {\n  return x * 2;$0\n}\n";
    scratch.target =
        crate::actions::test_target(&scratch.root.path().join("math.js").to_string_lossy(), "javascript", unexported);
    let report =
        run_javascript(&mut scratch, node, "test(\"double two\", () => {\n  assert.strictEqual(double(2), 4);\n});\n");
    let two = result(&report, "\"double two\"");
    assert!(!two.passed() && two.error.as_deref().unwrap().contains("double is not a function"), "{report:?}");
}

#[test]
fn runaway_javascript_is_stopped_and_leaves_the_workspace_alone() {
    let Some(node) = node() else { return };
    let mut scratch = javascript_scratch(&[], "spin.mjs", "export function spin(kind) {\n  return kind;$0\n}\n");
    let workspace = scratch.root.path().to_string_lossy().into_owned();
    let buffer = format!(
        "import fs from \"node:fs\";\nimport net from \"node:net\";\n\nexport async function spin(kind) {{\n  if (kind === \"loop\") {{\n    for (;;) {{}}\n  }}\n  if (kind === \"memory\") {{\n    const hog = [];\n    for (;;) {{\n      hog.push(new Array(1 << 20).fill(kind));\n    }}\n  }}\n  if (kind === \"socket\") {{\n    return await new Promise((resolve, reject) => {{\n      const socket = net.connect(53, \"1.1.1.1\", () => resolve(\"connected\"));\n      socket.on(\"error\", reject);\n    }});\n  }}\n  if (kind === \"write\") {{\n    fs.writeFileSync({:?} + \"/written.txt\", \"x\");\n  }}\n  return kind;$0\n}}\n",
        workspace
    );
    std::fs::write(scratch.root.path().join("spin.mjs"), buffer.replace("$0", "")).unwrap();
    scratch.target =
        crate::actions::test_target(&scratch.root.path().join("spin.mjs").to_string_lossy(), "javascript", &buffer);
    let code = ["loop", "memory", "socket", "write", "plain"]
        .iter()
        .map(|kind| {
            format!(
                "test(\"spin {kind}\", async () => {{\n  assert.deepStrictEqual(await spin(\"{kind}\"), 1);\n}});\n"
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let started = std::time::Instant::now();
    let report = run_javascript(&mut scratch, node, &code);
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
    assert_eq!(result(&report, "\"spin loop\"").outcome, "timeout", "{report:?}");
    assert!(!result(&report, "\"spin memory\"").passed(), "{report:?}");
    let plain = result(&report, "\"spin plain\"");
    assert!(
        plain.passed() && plain.text.as_deref().unwrap().contains("\"plain\")"),
        "the others still run: {report:?}"
    );
    if crate::sandbox::isolation_available() {
        assert!(!result(&report, "\"spin socket\"").passed(), "{report:?}");
        assert!(!result(&report, "\"spin write\"").passed(), "{report:?}");
        let entries: Vec<_> =
            std::fs::read_dir(scratch.root.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(entries, ["spin.mjs"], "nothing new in the workspace");
    } else {
        eprintln!("no user namespaces here: sockets and workspace writes are not contained");
    }
}

// TypeScript: node from PATH with the project's compiler (`scripts/setup-typescript.sh` puts
// typescript and tsx in .cache/typescript; a scratch project links them as its node_modules).

fn typescript_tools() -> Option<PathBuf> {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/typescript/node_modules");
    let found = tools.join("typescript/lib/typescript.js").is_file() && tools.join("esbuild/lib/main.js").is_file();
    if !found {
        assert!(std::env::var_os("NIB_REQUIRE_TOOLCHAINS").is_none(), "no TypeScript: run scripts/setup-typescript.sh");
        eprintln!("no .cache/typescript: the TypeScript runs are skipped (scripts/setup-typescript.sh)");
    }
    found.then_some(tools)
}

const PRICE_TS: &str = "import { rate } from \"./rates\";\n\ninterface Priced {\n  price: number;\n}\n\nexport function withTax(price: number): number {\n  if (price < 0) {\n    throw new RangeError(\"negative price\");\n  }\n  return price * (1 + rate());$0\n}\n";

/// TypeScript candidates through `compiler` ("typescript" or "esbuild", linked from the tools).
fn typescript_candidates_run_with(compiler: &str) {
    let (Some(node), Some(tools)) = (node(), typescript_tools()) else { return };
    let files = [
        ("package.json", "{ \"type\": \"module\" }\n"),
        ("rates.ts", "export function rate(): number {\n  return 0.5;\n}\n"),
        // On disk the function is different: the buffer is what runs.
        ("price.ts", "export function withTax(price: number): number {\n  return 0;\n}\n"),
    ];
    let mut scratch = scratch_in("typescript", &files, "price.ts", PRICE_TS);
    std::fs::create_dir(scratch.root.path().join("node_modules")).unwrap();
    std::os::unix::fs::symlink(tools.join(compiler), scratch.root.path().join("node_modules").join(compiler)).unwrap();
    let found = toolchain::typescript_compiler(scratch.root.path(), scratch.root.path()).unwrap();
    assert_eq!(found.kind, compiler);
    let runner = javascript::JavaScript { node, compiler: Some(found) };
    // A type alias inside the test is erased when compiled: the failing line is found through
    // the source map.
    let code = "test(\"withTax ten\", (): void => {\n  type Price = number;\n  const price: Price = 10;\n  assert.deepStrictEqual(withTax(price), 11);\n});\n\ntest(\"withTax negative\", () => {\n  assert.deepStrictEqual(withTax(-1), 0);\n});\n";
    let tests = unit_tests::find_tests(Language::TypeScript, code);
    let report = runner.run_candidates(&scratch.target, &mut scratch.plan, &tests, &CancelToken::default()).unwrap();
    assert_eq!(report.module_error, None, "{report:?}");
    let ten = result(&report, "\"withTax ten\"");
    assert!(ten.passed() && ten.text.as_deref().unwrap().contains("withTax(price), 15)"), "{ten:?}");
    let negative = result(&report, "\"withTax negative\"");
    assert!(
        negative.passed()
            && negative.text.as_deref().unwrap().contains("assert.throws(() => withTax(-1), { name: \"RangeError\" })"),
        "{negative:?}"
    );

    // The file as it will be written (`./price`, as TypeScript imports) runs under node:test.
    let kept: Vec<Test> = ["\"withTax ten\"", "\"withTax negative\""]
        .iter()
        .map(|name| Test { name: name.to_string(), text: result(&report, name).text.clone().unwrap() })
        .collect();
    let edit = unit_tests::finish(&scratch.target, &scratch.plan, kept).unwrap();
    assert!(edit.insertion.text.contains("import { withTax } from \"./price\";\n"), "{}", edit.insertion.text);
    let run = |text: &str| {
        runner.run_file(&scratch.target, &scratch.plan, text, &edit.test_names, &CancelToken::default()).unwrap()
    };
    let final_run = run(&edit.insertion.text);
    assert!(final_run.results.iter().all(TestResult::passed), "{final_run:?}");
    let final_run = run(&edit.insertion.text.replace("15", "16"));
    assert!(!result(&final_run, "\"withTax ten\"").passed(), "{final_run:?}");
    assert!(result(&final_run, "\"withTax negative\"").passed(), "{final_run:?}");
}

#[test]
fn typescript_candidates_run_on_the_buffer_compiled_by_the_projects_typescript() {
    typescript_candidates_run_with("typescript");
}

#[test]
fn typescript_candidates_run_on_the_buffer_compiled_by_tsxs_esbuild() {
    typescript_candidates_run_with("esbuild");
}

// Go: go from PATH or Debian's folder (`scripts/setup-go.sh`).

fn go_toolchain() -> Option<PathBuf> {
    let found = toolchain::go().map(|t| t.program);
    if found.is_none() {
        assert!(std::env::var_os("NIB_REQUIRE_TOOLCHAINS").is_none(), "no go: run scripts/setup-go.sh");
        eprintln!("no go here: the Go runs are skipped (scripts/setup-go.sh installs it)");
    }
    found
}

fn go_scratch(buffer: &str) -> Scratch {
    let root = PrivateDir::new("nib-verify-go").unwrap();
    std::fs::write(root.path().join("go.mod"), "module example.com/calc\n\ngo 1.19\n").unwrap();
    std::fs::create_dir_all(root.path().join("calc")).unwrap();
    // On disk the package is different: the buffer is what runs.
    std::fs::write(
        root.path().join("calc/calc.go"),
        "package calc\n\nfunc Div(a, b int) (int, error) {\n\treturn 0, nil\n}\n",
    )
    .unwrap();
    let path = root.path().join("calc/calc.go");
    let target = crate::actions::test_target(&path.to_string_lossy(), "go", buffer);
    let folders = vec![root.path().to_path_buf()];
    let plan = unit_tests::plan(&target, &folders, &ProjectFiles::new(folders.clone(), Vec::new())).unwrap();
    Scratch { root, target, plan }
}

const DIV: &str = "package calc\n\nimport \"errors\"\n\nfunc Div(a, b int) (int, error) {\n\tif b == 0 {\n\t\treturn 0, errors.New(\"division by zero\")\n\t}\n\tif a < 0 {\n\t\tfor {\n\t\t}\n\t}\n\treturn a / b, nil$0\n}\n";

fn div_test(name: &str, arguments: &str, want: &str) -> String {
    format!(
        "func TestDiv{name}(t *testing.T) {{\n\tgot, err := Div({arguments})\n\tif err != nil {{\n\t\tt.Fatalf(\"Div: %v\", err)\n\t}}\n\tvar want int = {want}\n\tif got != want {{\n\t\tt.Errorf(\"Div() = %#v, want %#v\", got, want)\n\t}}\n}}\n"
    )
}

#[test]
fn go_candidates_get_observed_values_error_checks_and_lose_only_what_does_not_compile() {
    let Some(go) = go_toolchain() else { return };
    let mut scratch = go_scratch(DIV);
    assert_eq!(scratch.plan.file, scratch.root.path().join("calc/calc_test.go"));
    let code = [
        div_test("Six", "6, 2", "4"),
        div_test("Zero", "1, 0", "0"),
        div_test("Broken", "\"x\", 2", "1"),
        div_test("Loop", "-1, 1", "1"),
        div_test("Exact", "9, 3", "3"),
    ]
    .join("\n");
    let tests = unit_tests::find_tests(Language::Go, &code);
    assert_eq!(tests.len(), 5);
    let runner = go::Go { go };
    let started = std::time::Instant::now();
    let report = runner.run_candidates(&scratch.target, &mut scratch.plan, &tests, &CancelToken::default()).unwrap();
    assert_eq!(report.module_error, None, "{report:?}");
    let six = result(&report, "TestDivSix");
    assert!(six.passed() && six.text.as_deref().unwrap().contains("var want int = 3\n"), "{six:?}");
    let zero = result(&report, "TestDivZero");
    assert!(zero.passed(), "{zero:?}");
    assert_eq!(
        zero.text.as_deref(),
        Some(
            "func TestDivZero(t *testing.T) {\n\t_, err := Div(1, 0)\n\tif err == nil {\n\t\tt.Fatal(\"Div(1, 0): expected an error\")\n\t}\n}"
        )
    );
    let broken = result(&report, "TestDivBroken");
    assert!(!broken.passed() && broken.error.as_deref().unwrap().starts_with("does not compile"), "{broken:?}");
    assert_eq!(result(&report, "TestDivLoop").outcome, "timeout", "{report:?}");
    let exact = result(&report, "TestDivExact");
    assert!(exact.passed() && exact.text.is_none(), "{exact:?}");
    eprintln!("go candidates ran in {:?}", started.elapsed());
    assert!(!scratch.root.path().join("calc/calc_test.go").exists());
    assert_eq!(
        std::fs::read_dir(scratch.root.path().join("calc")).unwrap().count(),
        1,
        "nothing written beside the package"
    );

    // The file as written passes under `go test -run`; a wrong one does not.
    let kept = vec![
        Test { name: "TestDivSix".into(), text: six.text.clone().unwrap() },
        Test { name: "TestDivZero".into(), text: zero.text.clone().unwrap() },
    ];
    let edit = unit_tests::finish(&scratch.target, &scratch.plan, kept).unwrap();
    let final_run = runner
        .run_file(&scratch.target, &scratch.plan, &edit.insertion.text, &edit.test_names, &CancelToken::default())
        .unwrap();
    assert!(final_run.results.iter().all(TestResult::passed), "{final_run:?}");
    let wrong = edit.insertion.text.replace("want int = 3", "want int = 4");
    let final_run =
        runner.run_file(&scratch.target, &scratch.plan, &wrong, &edit.test_names, &CancelToken::default()).unwrap();
    assert!(!result(&final_run, "TestDivSix").passed(), "{final_run:?}");
    assert!(result(&final_run, "TestDivZero").passed(), "{final_run:?}");
}

#[test]
fn go_literals_instrumentation_and_results() {
    use crate::actions::unit_tests::{GoResults, go_results};
    assert_eq!(go_results("int"), Some(GoResults::Value("int")));
    assert_eq!(go_results("(int, error)"), Some(GoResults::ValueAndError("int")));
    assert_eq!(go_results("(n []string, err error)"), Some(GoResults::ValueAndError("[]string")));
    assert_eq!(go_results("error"), Some(GoResults::Error));
    assert_eq!(go_results("(int, int)"), None);
    for plain in ["3", "-2.5", "1e+06", "\"a.b(c)\"", "[]int{1, 2}", "map[string]int{\"a\":1}", "true", "0x5"] {
        assert!(go::plain_literal(plain), "{plain}");
    }
    for other in ["calc.Point{X:1}", "(*int)(nil)", "&errors.errorString{s:\"x\"}", "[]int(nil)", ""] {
        assert!(!go::plain_literal(other), "{other}");
    }
    let test = div_test("Six", "6, 2", "4");
    let instrumented = go::instrument(&test);
    assert_eq!(instrumented.lines().count(), test.lines().count(), "line numbers are kept");
    assert!(instrumented.contains("\tnibError(t, err); if err != nil {\n"));
    assert!(instrumented.contains("\tnibObserve(t, got); if got != want {\n"));
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
    action(source, bodies, start_seconds, false)
}

/// The verified action as [`budgeted_action`], with nib's own calls of the code on or off.
fn action(
    source: &str,
    bodies: &'static [&'static str],
    start_seconds: u64,
    calls_from_code: bool,
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
        calls_from_code,
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

const GRADE: &str = "class ScoreError(ValueError):
    pass


def grade(score):
    \"\"\"The letter for a score.

    >>> grade(95)
    'A'
    \"\"\"
    if score < 0:
        raise ScoreError(\"negative\")
    if score >= 90:
        return \"A\"
    if score >= 50:
        return \"B\"
    return \"C\"$0
";

#[test]
fn calls_from_the_code_write_the_docstring_example_then_one_test_per_new_branch_without_the_model() {
    let (outcome, prompts, notes) = action(GRADE, &[], 0, true);
    assert!(prompts.is_empty(), "enough calls with known results: the model was not asked: {prompts:?}");
    let written = outcome.unwrap();
    assert!(written.verified);
    let texts: Vec<&str> = written.edit.tests.iter().map(|t| t.text.as_str()).collect();
    assert!(texts[0].ends_with("assert grade(95) == 'A'"), "the docstring's example first: {texts:?}");
    let asserted = |result: &str| texts.iter().any(|t| t.ends_with(&format!(") == '{result}'")));
    assert!(asserted("B") && asserted("C"), "one call per branch the example missed: {texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("aises(ScoreError):\n        grade(-1)")),
        "the error the code raises on purpose, at the constant it compares with: {texts:?}"
    );
    assert_eq!(texts.len(), 4, "no call that adds nothing: {texts:?}");
    assert_eq!(written.message, "4 tests written (4 from calls nib ran), they pass on the current code");
    assert!(notes[0].starts_with("calling the code"), "{notes:?}");
}

// Rust: cargo from PATH.

#[test]
fn rust_candidates_get_observed_values_should_panic_and_lose_only_what_does_not_compile() {
    let Some(cargo) = cargo_or_skip() else { return };
    let root = PrivateDir::new("nib-verify-rust").unwrap();
    std::fs::write(
        root.path().join("Cargo.toml"),
        "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("src")).unwrap();
    // On disk the function is different: the buffer is what runs.
    std::fs::write(root.path().join("src/lib.rs"), "pub fn div(a: i32, b: i32) -> i32 {\n    a + b\n}\n").unwrap();
    let buffer = "pub fn div(a: i32, b: i32) -> i32 {\n    assert!(b != 0, \"division by zero\");\n    if a < 0 {\n        loop {}\n    }\n    a / b$0\n}\n";
    let path = root.path().join("src/lib.rs");
    let target = crate::actions::test_target(&path.to_string_lossy(), "rust", buffer);
    let folders = vec![root.path().to_path_buf()];
    let mut plan = unit_tests::plan(&target, &folders, &ProjectFiles::new(folders.clone(), Vec::new())).unwrap();
    let code = [
        ("six", "6, 2", "4"),
        ("zero", "1, 0", "0"),
        ("hangs", "-1, 1", "1"),
        ("broken", "\"x\", 1", "1"),
        ("exact", "9, 3", "3"),
    ]
    .iter()
    .map(|(name, arguments, want)| {
        format!("#[test]\nfn div_{name}() {{\n    assert_eq!(div({arguments}), {want});\n}}\n")
    })
    .collect::<Vec<_>>()
    .join("\n");
    let tests = unit_tests::find_tests(Language::Rust, &code);
    assert_eq!(tests.len(), 5);
    let runner = rust::Rust { cargo };
    let started = std::time::Instant::now();
    let report = runner.run_candidates(&target, &mut plan, &tests, &CancelToken::default()).unwrap();
    eprintln!("rust candidates ran in {:?}", started.elapsed());
    assert_eq!(report.module_error, None, "{report:?}");
    let six = result(&report, "div_six");
    assert!(six.passed() && six.text.as_deref().unwrap().contains("assert_eq!(div(6, 2), 3);"), "{six:?}");
    let zero = result(&report, "div_zero");
    assert!(
        zero.passed() && zero.text.as_deref().unwrap().starts_with("#[test]\n#[should_panic]\nfn div_zero"),
        "{zero:?}"
    );
    let broken = result(&report, "div_broken");
    assert!(!broken.passed() && broken.error.as_deref().unwrap().starts_with("does not compile"), "{broken:?}");
    assert_eq!(result(&report, "div_hangs").outcome, "timeout", "{report:?}");
    let exact = result(&report, "div_exact");
    assert!(exact.passed() && exact.text.is_none(), "{exact:?}");
    let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries.len(), 2, "no target folder or lock file in the workspace: {entries:?}");
}

fn cargo_or_skip() -> Option<PathBuf> {
    let found = toolchain::cargo().map(|t| t.program);
    if found.is_none() {
        assert!(std::env::var_os("NIB_REQUIRE_TOOLCHAINS").is_none(), "no cargo on PATH");
        eprintln!("no cargo here: the Rust runs are skipped");
    }
    found
}

#[test]
fn a_rust_workspace_member_is_built_with_its_workspace() {
    let Some(cargo) = cargo_or_skip() else { return };
    let buffer = "pub fn answer() -> i32 {\n    base::base() + 2$0\n}\n";
    let Scratch { root: _workspace, target, mut plan } = scratch_in(
        "rust",
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"2\"\n\n[workspace.package]\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            (
                "crates/base/Cargo.toml",
                "[package]\nname = \"base\"\nversion.workspace = true\nedition.workspace = true\n",
            ),
            ("crates/base/src/lib.rs", "pub fn base() -> i32 {\n    40\n}\n"),
            (
                "crates/app/Cargo.toml",
                "[package]\nname = \"app\"\nversion.workspace = true\nedition.workspace = true\n\n[dependencies]\nbase = { path = \"../base\" }\n",
            ),
            ("crates/app/src/lib.rs", &buffer.replace("$0", "")),
        ],
        "crates/app/src/lib.rs",
        buffer,
    );
    let tests = unit_tests::find_tests(Language::Rust, "#[test]\nfn answer_is() {\n    assert_eq!(answer(), 41);\n}\n");
    let runner = rust::Rust { cargo };
    let report = runner.run_candidates(&target, &mut plan, &tests, &CancelToken::default()).unwrap();
    assert_eq!(report.module_error, None, "{report:?}");
    let answer = result(&report, "answer_is");
    assert!(answer.passed() && answer.text.as_deref().unwrap().contains("assert_eq!(answer(), 42);"), "{answer:?}");
}

#[test]
fn cancelling_a_rust_build_stops_it_at_once() {
    let Some(cargo) = cargo_or_skip() else { return };
    let buffer = "pub fn one() -> i32 {\n    1$0\n}\n";
    let Scratch { root: _workspace, target, mut plan } = scratch_in(
        "rust",
        &[
            ("Cargo.toml", "[package]\nname = \"slow\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
            // A build that would take ten minutes.
            ("build.rs", "fn main() {\n    std::thread::sleep(std::time::Duration::from_secs(600));\n}\n"),
            ("src/lib.rs", &buffer.replace("$0", "")),
        ],
        "src/lib.rs",
        buffer,
    );
    let tests = unit_tests::find_tests(Language::Rust, "#[test]\nfn one_is() {\n    assert_eq!(one(), 1);\n}\n");
    let cancel = CancelToken::default();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(5));
            cancel.cancel();
            std::time::Instant::now()
        })
    };
    let outcome = rust::Rust { cargo }.run_candidates(&target, &mut plan, &tests, &cancel);
    let stopped = std::time::Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(outcome.is_err(), "cancelled, not a report: {outcome:?}");
    assert!(stopped.duration_since(cancelled_at) < std::time::Duration::from_secs(30), "the build stopped");
}

// Add docstring with examples from running the code.

fn docstring_job(scratch: &Scratch, model: crate::actions::scripted_tests::Scripted) -> doc_examples::Job {
    let folders = vec![scratch.root.path().to_path_buf()];
    doc_examples::Job {
        target: scratch.target.clone(),
        style: crate::config::DocstringStyle::Google,
        configured_interpreter: Some(python3()),
        files: ProjectFiles::new(folders.clone(), Vec::new()),
        folders,
        queue: crate::engine::TaskQueue::serving(Box::new(model)),
        cancel: CancelToken::default(),
    }
}

const PRICE: &str = "def price(base, rate=0.2):\n    if base < 0:\n        raise ValueError(\"negative\")\n    return base * (1 + rate)$0\n";

#[test]
fn add_docstring_gets_examples_from_running_the_code_that_doctest_passes() {
    let scratch = scratch(&[("shop.py", &PRICE.replace("$0", ""))], "shop.py", PRICE);
    let model = crate::actions::scripted_tests::Scripted::new(&[
        ("# Summary of price: ", &["price computes the price with tax\n"]),
        ("# Parameter base of price: ", &["the amount before tax\n"]),
        ("# Parameter rate of price: ", &["The tax rate, a fraction.\n"]),
        ("# price returns: ", &["the price including tax\n"]),
        ("# price raises ValueError when ", &["if base is negative\n"]),
    ]);
    let job = docstring_job(&scratch, model);
    let notes = Mutex::new(Vec::new());
    let documented = doc_examples::document(&job, &|note: &str| notes.lock().unwrap().push(note.to_string())).unwrap();
    let text = &documented.insertion.text;
    assert!(text.contains("\n\n    Examples:\n        >>> price("), "{text}");
    assert!(text.ends_with("\n    \"\"\"\n") && text.contains("Raises:\n        ValueError"), "{text}");
    assert_eq!(text.matches(">>> ").count(), 2, "{text}");
    assert_eq!(documented.message, "docstring written with 2 examples; doctest passes on the current code");
    // The user's own doctest run agrees.
    let mut module = scratch.target.rope.to_string();
    module.insert_str(documented.insertion.offset, text);
    let path = scratch.root.path().join("shop.py");
    std::fs::write(&path, &module).unwrap();
    let run = std::process::Command::new(python3()).args(["-m", "doctest", "-v"]).arg(&path).output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && out.contains("2 passed and 0 failed"), "{out}");
    assert_eq!(notes.into_inner().unwrap()[0], "calling the function for examples");
}

#[test]
fn examples_doctest_rejects_are_left_out_and_the_docstring_still_goes_in() {
    // Each call returns a new object: its repr differs from run to run, so there is no example.
    let source =
        "import itertools\n\n_ids = itertools.count()\n\n\ndef ticket(name):\n    return f\"{name}-{next(_ids)}\"$0\n";
    let scratch = scratch(&[("desk.py", &source.replace("$0", ""))], "desk.py", source);
    let model = crate::actions::scripted_tests::Scripted::new(&[
        ("# Summary of ticket: ", &["ticket makes a numbered ticket\n"]),
        ("# Parameter name of ticket: ", &["who the ticket is for\n"]),
        ("# ticket returns: ", &["the ticket\n"]),
    ]);
    let job = docstring_job(&scratch, model);
    let documented = doc_examples::document(&job, &|_: &str| {}).unwrap();
    assert!(!documented.insertion.text.contains(">>>"), "{}", documented.insertion.text);
    assert!(
        documented.message.starts_with("docstring written without examples: doctest failed"),
        "{}",
        documented.message
    );
}

#[test]
fn an_optional_callable_with_no_value_but_its_default_still_gets_calls() {
    // `predicate` takes nothing from the pools but None (its default): only `items` varies.
    let source = "def keep(items, predicate=None):\n    if predicate is None:\n        return list(items)\n    return [x for x in items if predicate(x)]$0\n";
    let (outcome, prompts, _) = action(source, &[], 0, true);
    assert!(prompts.is_empty(), "{prompts:?}");
    let written = outcome.unwrap();
    assert!(
        written.edit.tests.iter().any(|t| t.text.contains("assert keep([1, 2, 3]) == [1, 2, 3]")),
        "{:?}",
        written.edit.tests
    );
}
