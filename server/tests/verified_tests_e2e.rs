//! **Generate unit tests** with verification, end to end on the real default model and the
//! real toolchains, for the languages besides Python (`code_actions_e2e.rs` covers Python):
//! the tests nib writes pass when the user runs them the project's way.
//!
//! Needs the default model, like `completion_e2e.rs`. A toolchain that is missing here skips
//! its test with a note, unless `NIB_REQUIRE_TOOLCHAINS` is set (as `make test` does).

mod common;

use std::path::Path;
use std::process::Command;

use common::{ScratchDir, TestServer, default_model};
use serde_json::json;

/// `program` on PATH (or at `fallback`), else a skip (or a failure under `NIB_REQUIRE_TOOLCHAINS`).
fn toolchain(program: &str, fallback: Option<&str>) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()))
        .or_else(|| fallback.map(std::path::PathBuf::from).filter(|p| p.is_file()));
    if found.is_none() {
        assert!(std::env::var_os("NIB_REQUIRE_TOOLCHAINS").is_none(), "{program} is missing: run `make setup`");
        eprintln!("skipping: no {program} here");
    }
    found
}

/// Resolves **Generate unit tests** at `line` of `name` and returns the new test file's text
/// and the summary shown to the user.
fn generate_tests(server: &mut TestServer, root: &Path, name: &str, language: &str, line: u32) -> (String, String) {
    let uri = format!("file://{}", root.join(name).display());
    let text = std::fs::read_to_string(root.join(name)).unwrap();
    server.open(&uri, language, &text);
    let actions = server.code_actions(&uri, line, 4);
    let action = actions
        .iter()
        .find(|a| a["kind"] == "refactor.nib.tests")
        .unwrap_or_else(|| panic!("no tests action at line {line}: {actions:?}"))
        .clone();
    let title = action["title"].as_str().unwrap();
    assert!(!title.contains("unverified"), "{title}");
    let resolved = server.request("codeAction/resolve", action).expect("verified tests");
    let said = server.wait_for("the summary", |m| m["method"] == "window/showMessage");
    let summary = said["params"]["message"].as_str().unwrap().to_string();
    let changes = resolved["edit"]["documentChanges"].as_array().unwrap();
    assert_eq!(changes[0]["kind"], "create", "{changes:?}");
    let edits = changes[1]["edits"].as_array().unwrap();
    let written: String = edits.iter().map(|e| e["newText"].as_str().unwrap()).collect();
    (written, summary)
}

fn progress_messages(server: &TestServer) -> Vec<String> {
    server
        .log
        .iter()
        .filter(|m| m["method"] == "$/progress")
        .filter_map(|m| m["params"]["value"]["message"].as_str().map(str::to_string))
        .collect()
}

fn assert_passes(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} fails:\n{report}");
    report
}

#[test]
fn javascript_tests_are_verified_with_node_test() {
    let Some(model) = default_model() else { return };
    let Some(node) = toolchain("node", None) else { return };
    let workspace = ScratchDir::new("verified-js");
    let root = workspace.0.clone();
    std::fs::write(root.join("package.json"), "{ \"type\": \"module\" }\n").unwrap();
    let source = "export function withTax(price, rate = 0.2) {\n  if (price < 0) {\n    throw new RangeError(\"negative price\");\n  }\n  return price * (1 + rate);\n}\n";
    std::fs::write(root.join("price.js"), source).unwrap();
    let mut server = TestServer::ready_at(&root, json!({ "modelPath": model, "threads": 2 }));
    let (written, summary) = generate_tests(&mut server, &root, "price.js", "javascript", 4);
    assert!(summary.contains(" on the current code"), "{summary}");
    assert!(written.starts_with("import { test } from \"node:test\";\nimport assert from \"node:assert/strict\";\nimport { withTax } from \"./price.js\";\n"), "{written}");
    assert!(progress_messages(&server).iter().any(|m| m.starts_with("running ")), "progress names the runs");
    std::fs::write(root.join("price.test.js"), &written).unwrap();
    let report = assert_passes(Command::new(node).arg("--test").arg("price.test.js").current_dir(&root), "node --test");
    assert!(report.contains("# pass") && report.contains("# fail 0"), "{report}");
    let entries: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries.len(), 3, "verification wrote nothing into the workspace: {entries:?}");
    server.shutdown();
}

#[test]
fn typescript_tests_are_verified_with_the_projects_compiler() {
    let Some(model) = default_model() else { return };
    let Some(node) = toolchain("node", None) else { return };
    // typescript and tsx, as `scripts/setup-typescript.sh` installs them.
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/typescript/node_modules");
    let Some(_) = toolchain("tsx", tools.join(".bin/tsx").to_str()) else { return };
    let workspace = ScratchDir::new("verified-ts");
    let root = workspace.0.clone();
    std::fs::write(root.join("package.json"), "{ \"type\": \"module\" }\n").unwrap();
    std::os::unix::fs::symlink(&tools, root.join("node_modules")).unwrap();
    let source = "export function withTax(price: number, rate: number = 0.2): number {\n  if (price < 0) {\n    throw new RangeError(\"negative price\");\n  }\n  return price * (1 + rate);\n}\n";
    std::fs::write(root.join("price.ts"), source).unwrap();
    let mut server = TestServer::ready_at(&root, json!({ "modelPath": model, "threads": 2 }));
    let (written, summary) = generate_tests(&mut server, &root, "price.ts", "typescript", 4);
    assert!(summary.contains(" on the current code"), "{summary}");
    assert!(written.contains("import { withTax } from \"./price\";\n"), "{written}");
    std::fs::write(root.join("price.test.ts"), &written).unwrap();
    // The user's way: node:test through tsx, the project's runner.
    let report = assert_passes(
        Command::new(node).args(["--import", "tsx", "--test", "price.test.ts"]).current_dir(&root),
        "node --import tsx --test",
    );
    assert!(report.contains("# pass") && report.contains("# fail 0"), "{report}");
    let entries: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries.len(), 4, "verification wrote nothing into the workspace: {entries:?}");
    server.shutdown();
}

#[test]
fn go_tests_are_verified_with_go_test() {
    let Some(model) = default_model() else { return };
    let Some(go) = toolchain("go", Some("/usr/lib/go-1.19/bin/go")) else { return };
    let workspace = ScratchDir::new("verified-go");
    let root = workspace.0.clone();
    std::fs::write(root.join("go.mod"), "module example.com/calc\n\ngo 1.19\n").unwrap();
    let source = "package calc\n\nimport \"errors\"\n\nfunc Div(a, b int) (int, error) {\n\tif b == 0 {\n\t\treturn 0, errors.New(\"division by zero\")\n\t}\n\treturn a / b, nil\n}\n";
    std::fs::write(root.join("calc.go"), source).unwrap();
    let mut server = TestServer::ready_at(&root, json!({ "modelPath": model, "threads": 2 }));
    let (written, summary) = generate_tests(&mut server, &root, "calc.go", "go", 8);
    assert!(summary.contains(" on the current code"), "{summary}");
    assert!(written.starts_with("package calc\n\nimport "), "{written}");
    std::fs::write(root.join("calc_test.go"), &written).unwrap();
    let cache = ScratchDir::new("verified-go-cache");
    let report = assert_passes(
        Command::new(go)
            .args(["test", "-count=1", "-v", "."])
            .current_dir(&root)
            .env("GOCACHE", &cache.0)
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", "0"),
        "go test",
    );
    assert!(report.contains("--- PASS: TestDiv"), "{report}");
    let entries: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries.len(), 3, "verification wrote nothing into the workspace: {entries:?}");
    server.shutdown();
}

#[test]
fn rust_tests_are_verified_with_cargo_test() {
    let Some(model) = default_model() else { return };
    let Some(cargo) = toolchain("cargo", None) else { return };
    let workspace = ScratchDir::new("verified-rust");
    let root = workspace.0.clone();
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        .unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    let source = "pub fn halve(value: i32) -> i32 {\n    value / 2\n}\n";
    std::fs::write(root.join("src/lib.rs"), source).unwrap();
    let mut server = TestServer::ready_at(&root, json!({ "modelPath": model, "threads": 2 }));
    let uri = format!("file://{}", root.join("src/lib.rs").display());
    server.open(&uri, "rust", source);
    let actions = server.code_actions(&uri, 1, 4);
    let action = actions.iter().find(|a| a["kind"] == "refactor.nib.tests").expect("the tests action").clone();
    assert!(!action["title"].as_str().unwrap().contains("unverified"), "{action}");
    let resolved = server.request("codeAction/resolve", action).expect("verified tests");
    let said = server.wait_for("the summary", |m| m["method"] == "window/showMessage");
    let summary = said["params"]["message"].as_str().unwrap();
    assert!(summary.contains(" on the current code"), "{summary}");
    let change = &resolved["edit"]["documentChanges"][0];
    let inserted: String = change["edits"].as_array().unwrap().iter().map(|e| e["newText"].as_str().unwrap()).collect();
    assert!(inserted.contains("#[cfg(test)]\nmod tests {\n    use super::*;\n"), "{inserted}");
    let entries: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries.len(), 2, "verification wrote nothing into the workspace: {entries:?}");
    std::fs::write(root.join("src/lib.rs"), format!("{source}{inserted}")).unwrap();
    let target = ScratchDir::new("verified-rust-target");
    let report = assert_passes(
        Command::new(cargo).args(["test", "--offline", "--lib"]).current_dir(&root).env("CARGO_TARGET_DIR", &target.0),
        "cargo test",
    );
    assert!(report.contains("test result: ok."), "{report}");
    server.shutdown();
}
