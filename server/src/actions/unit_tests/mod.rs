//! **Generate unit tests**: tests for a function, method or class, in the file the language's
//! convention expects (the project's `tests/` tree or `test_<module>.py` beside it, a Rust
//! `#[cfg(test)] mod tests`, `<name>.test.<ext>`, `<file>_test.go`). The model writes test
//! bodies; nib keeps only complete tests that parse, renames clashes with existing tests,
//! deduplicates imports, and appends — an existing test file is never replaced. Running the
//! candidates (`actions::verify`) decides which of them are written.
//!
//! `plan.rs` decides the file and the imports, `write.rs` asks the model, `assemble.rs` finds
//! tests in code and builds the insertion.

mod assemble;
mod plan;
#[cfg(test)]
mod tests;
mod write;

use std::path::PathBuf;

pub use assemble::{Test, find_tests, javascript_header, make_names_unique, python_import_line};
pub use plan::plan;
pub use write::{
    GoResults, Repair, Request, TESTS_PER_ACTION, body_of, finish, generate, go_results, write_candidates,
};

use super::Insertion;
use super::scaffold::AsyncStyle;
use crate::syntax::languages::TestLayout;

/// Which Python framework the tests are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonStyle {
    /// Test functions with plain `assert` and `pytest.raises`.
    Pytest,
    /// Methods of a `unittest.TestCase` class, `self.assertRaises`.
    Unittest,
}

/// Where the tests go and what is there already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The language's test framework and layout.
    pub layout: TestLayout,
    pub file: PathBuf,
    /// The target's current text (an open buffer or the file on disk); `None` when it does
    /// not exist yet.
    pub existing: Option<String>,
    /// JavaScript/TypeScript: the import of the code under test.
    pub import_line: String,
    /// JavaScript: the tests are CommonJS (`require`), as the nearest `package.json` says.
    pub commonjs: bool,
    /// Python: the names tests import from `module` (the subject, then what the tests use).
    pub imported: Vec<String>,
    /// Python: the dotted module tests import the code from (also for `patch` targets).
    pub module: String,
    /// Python: other import lines the tests need (`from boltons import strutils` when they
    /// call `strutils.x`).
    pub extra_imports: Vec<String>,
    /// Python: how the workspace runs async tests.
    pub async_style: AsyncStyle,
    /// Python: pytest when the project uses it, else unittest.
    pub python_style: PythonStyle,
    /// Rust: the crate depends on tokio (`#[tokio::test]` for async functions).
    tokio: bool,
    /// Python: the folders that must be on `sys.path` for the tests to import the code (the
    /// package chain's root, the project's pytest `pythonpath`, the workspace folder).
    pub import_roots: Vec<PathBuf>,
    pub root: PathBuf,
}

/// The result: insert `insertion` into `file` (creating it first when `create`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestEdit {
    pub file: PathBuf,
    pub create: bool,
    pub insertion: Insertion,
    pub test_names: Vec<String>,
    /// The tests inserted, as found in the generated code.
    pub tests: Vec<Test>,
}
