//! The actions end to end on the tiny fixture model (random weights, no chat template): the
//! plain completion-prompt path, deterministic (greedy first), snapshotted. What the model
//! says is nonsense; what is checked is that nib places, shapes and validates it, or refuses
//! with a clear message, the same way every time.

use std::path::{Path, PathBuf};

use super::{Target, docstring, unit_tests};
use crate::config::DocstringStyle;
use crate::engine::{CancelToken, EngineSettings, Model, load_model};

fn fixture_model() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model");
    let model = load_model(&EngineSettings { model_dir: Some(dir), onnx_runtime_path: None, threads: 1, remote: None })
        .unwrap();
    assert!(model.info.chat_format.is_none(), "the fixture exercises the completion-prompt path");
    model
}

fn target(path: &str, language_id: &str, source: &str) -> Target {
    super::test_target(path, language_id, source)
}

/// The document after the docstring action, or its error.
fn docstring_outcome(model: &mut Model, target: &Target) -> String {
    match docstring::generate(model, target, DocstringStyle::Google, None, CancelToken::default()) {
        Ok(written) => {
            let mut text = target.rope.to_string();
            text.insert_str(written.insertion.offset, &written.insertion.text);
            text
        }
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn docstrings_through_the_completion_prompt_path() {
    let mut model = fixture_model();
    let python = target("/w/a.py", "python", "def scale(value, factor=2):\n    return value * factor$0\n");
    let rust = target("/w/lib.rs", "rust", "pub fn scale(value: u32) -> u32 {\n    value * 2$0\n}\n");
    let go = target("/w/m.go", "go", "package m\n\nfunc Scale(v int) int {\n\treturn v * 2$0\n}\n");
    let outcomes: Vec<String> = [python, rust, go].iter().map(|t| docstring_outcome(&mut model, t)).collect();
    // Deterministic: the same request gives the same result.
    let python_again = target("/w/a.py", "python", "def scale(value, factor=2):\n    return value * factor$0\n");
    assert_eq!(docstring_outcome(&mut model, &python_again), outcomes[0]);
    expect_test::expect![[r#"
        error: the model gave no usable summary; nothing was inserted (try again, or a larger model)
        ---
        error: the model gave no usable summary; nothing was inserted (try again, or a larger model)
        ---
        error: the model gave no usable summary; nothing was inserted (try again, or a larger model)"#]]
    .assert_eq(&outcomes.join("\n---\n"));
}

#[test]
fn unit_tests_through_the_completion_prompt_path() {
    let mut model = fixture_model();
    let python = target("/w/calc.py", "python", "def double(x):\n    return x * 2$0\n");
    let files = super::project_files::ProjectFiles::new(vec![PathBuf::from("/w")], Vec::new());
    let plan = unit_tests::plan(&python, &[PathBuf::from("/w")], &files).unwrap();
    let outcome = match unit_tests::generate(&mut model, &python, &plan, CancelToken::default()) {
        Ok(edit) => format!("{}:\n{}", edit.file.display(), edit.insertion.text),
        Err(error) => format!("error: {error}"),
    };
    expect_test::expect!["error: the model wrote no complete test with an assertion for `double`; nothing was written (try again, or a larger model)"].assert_eq(&outcome);
}
