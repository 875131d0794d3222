//! Where the tests go and how they import the code: the test file per language layout (the
//! project's `tests/` tree and naming for Python), the package-qualified module path (the
//! `__init__.py` chain, src layouts, the pytest `pythonpath` setting), pytest or unittest, and
//! the project probes the scaffolds need. All reads go through [`ProjectFiles`].

use std::path::{Path, PathBuf};

use super::{Plan, PythonStyle};
use crate::actions::project_files::ProjectFiles;
use crate::actions::scaffold;
use crate::actions::{ActionError, Target};
use crate::syntax::languages::TestLayout;
use crate::syntax::scopes::ScopeKind;

pub(super) fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The name tests import, and the name they call: the class for a method.
pub(super) fn subject(target: &Target) -> (String, String) {
    let name = target.scope.name.clone();
    if target.scope.kind == ScopeKind::Method && matches!(target.language.spec().tests, Some(TestLayout::Python)) {
        let root = target.tree.root_node();
        let mut node = root.descendant_for_byte_range(target.scope.range.start, target.scope.range.end);
        while let Some(current) = node {
            if current.kind() == "class_definition" {
                let class = current
                    .child_by_field_name("name")
                    .map(|n| target.rope.byte_slice(n.byte_range()).to_string())
                    .unwrap_or_default();
                return (class.clone(), format!("{class}.{name}"));
            }
            node = current.parent();
        }
    }
    (name.clone(), name)
}

/// Python keywords, which are not valid module or package names.
const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Whether `name` can appear in an import: an identifier that is not a keyword.
pub(crate) fn is_python_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && !PYTHON_KEYWORDS.contains(&name)
}

/// How the project imports a Python file: the dotted module and the folder it is relative to.
/// With `beside` (the test file sits next to the module) a plain folder is the import root, as
/// pytest puts the test's folder on `sys.path`.
fn python_module(
    source: &Path,
    root: &Path,
    files: &ProjectFiles,
    pythonpath: &[PathBuf],
    beside: bool,
) -> (String, PathBuf) {
    let mut parts: Vec<String> = Vec::new();
    let module_stem = stem(source);
    if module_stem != "__init__" {
        parts.push(module_stem);
    }
    // Up the `__init__.py` chain: each folder holding one is a package.
    let mut folder = source.parent().unwrap_or(root).to_path_buf();
    while folder != root && folder.starts_with(root) && files.is_file(&folder.join("__init__.py")) {
        parts.insert(0, folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        folder = folder.parent().unwrap_or(root).to_path_buf();
    }
    // A plain folder (a namespace package) under a configured import root, `src/` or the root:
    // import relative to that root, as the project's own tests do.
    if !beside && folder != root && !pythonpath.contains(&folder) {
        let base = pythonpath
            .iter()
            .chain([root.join("src"), root.to_path_buf()].iter())
            .find(|base| folder.starts_with(base))
            .cloned()
            .unwrap_or_else(|| root.to_path_buf());
        let relative = folder.strip_prefix(&base).unwrap_or(Path::new(""));
        let mut namespace: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        namespace.extend(parts);
        return (namespace.join("."), base);
    }
    (parts.join("."), folder)
}

/// The `pythonpath` entries of the project's pytest configuration (pytest ≥ 7).
fn pytest_pythonpath(root: &Path, files: &ProjectFiles) -> Vec<PathBuf> {
    let mut entries = Vec::new();
    for name in ["pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini"] {
        let Some(text) = files.read(&root.join(name)) else { continue };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            if key.trim() != "pythonpath" {
                continue;
            }
            let value = value.trim().trim_start_matches('[').trim_end_matches(']');
            for entry in value.split([',', ' ']).map(|e| e.trim().trim_matches(['"', '\''])).filter(|e| !e.is_empty()) {
                let path = root.join(entry);
                if path.starts_with(root) && !entry.contains("..") {
                    entries.push(if entry == "." { root.to_path_buf() } else { path });
                }
            }
        }
    }
    entries
}

/// Whether the project runs its tests with pytest (its configuration or requirements say so).
fn uses_pytest(root: &Path, files: &ProjectFiles) -> bool {
    let mentions =
        |name: &str, what: &[&str]| files.read(&root.join(name)).is_some_and(|t| what.iter().any(|w| t.contains(w)));
    files.is_file(&root.join("pytest.ini"))
        || files.is_file(&root.join("conftest.py"))
        || files.is_file(&root.join("tests/conftest.py"))
        || mentions("pyproject.toml", &["[tool.pytest", "pytest"])
        || mentions("setup.cfg", &["[tool:pytest]"])
        || mentions("tox.ini", &["[pytest]", "pytest"])
        || ["requirements.txt", "requirements-dev.txt", "requirements-test.txt", "dev-requirements.txt"]
            .iter()
            .any(|name| mentions(name, &["pytest"]))
}

fn python_tests_folder(root: &Path, files: &ProjectFiles) -> Option<PathBuf> {
    ["tests", "test"].iter().map(|name| root.join(name)).find(|folder| files.is_dir(folder))
}

/// The Python test file: in the project's tests folder when it has one (mirroring a package
/// subfolder that exists there, with its naming), else beside the module.
fn python_test_file(source: &Path, root: &Path, dotted: &str, files: &ProjectFiles) -> PathBuf {
    let module = stem(source);
    let Some(tests) = python_tests_folder(root, files) else {
        return source.parent().unwrap_or(root).join(format!("test_{module}.py"));
    };
    // `tests/shop/` for `shop.cart` when the project mirrors its packages.
    let mut folder = tests.clone();
    for part in dotted.split('.').rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
        if files.is_dir(&folder.join(part)) {
            folder.push(part);
        } else {
            break;
        }
    }
    let suffix_style = files.list(&folder).iter().filter(|n| n.ends_with("_test.py")).count()
        > files.list(&folder).iter().filter(|n| n.starts_with("test_") && n.ends_with(".py")).count();
    if suffix_style { folder.join(format!("{module}_test.py")) } else { folder.join(format!("test_{module}.py")) }
}

/// Whether a JavaScript file is CommonJS, as node decides: `.cjs` is, `.mjs` is not, and a
/// `.js` file follows the `type` of the nearest `package.json` (up to the workspace folder);
/// without one, a file written with `import`/`export` is an ES module.
fn javascript_is_commonjs(target: &Target, source: &Path, root: &Path, files: &ProjectFiles) -> bool {
    match source.extension().and_then(|e| e.to_str()) {
        Some("cjs") => return true,
        Some("mjs") => return false,
        _ => {}
    }
    let mut folder = source.parent();
    while let Some(current) = folder.filter(|f| f.starts_with(root)) {
        if let Some(text) = files.read(&current.join("package.json")) {
            let kind = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|package| package.get("type").and_then(|t| t.as_str()).map(str::to_string));
            return kind.as_deref() != Some("module");
        }
        folder = current.parent();
    }
    let root_node = target.tree.root_node();
    let mut cursor = root_node.walk();
    let esm = root_node.children(&mut cursor).any(|n| matches!(n.kind(), "import_statement" | "export_statement"));
    !esm
}

/// Decides the test file and how tests import the code. Runs off the main loop: it reads the
/// project's configuration through `files`.
pub fn plan(target: &Target, workspace_folders: &[PathBuf], files: &ProjectFiles) -> Result<Plan, ActionError> {
    let source = target
        .path
        .clone()
        .ok_or_else(|| ActionError::Rejected("tests can only be generated for files on disk".into()))?;
    let root = workspace_folders.iter().find(|folder| source.starts_with(folder)).cloned().ok_or_else(|| {
        ActionError::Rejected(format!("{} is outside the workspace folders; nothing was written", source.display()))
    })?;
    let directory = source.parent().unwrap_or(&root).to_path_buf();
    let module = stem(&source);
    let (imported, _) = subject(target);
    let mut import_roots = Vec::new();
    let mut python_style = PythonStyle::Unittest;
    let mut commonjs = false;
    let Some(layout) = target.language.spec().tests else {
        let language = target.language.spec().display_name;
        return Err(ActionError::Rejected(format!("nib does not generate unit tests for {language}")));
    };
    let (file, import_line, dotted_module) = match layout {
        TestLayout::Python => {
            let pythonpath = pytest_pythonpath(&root, files);
            let beside = python_tests_folder(&root, files).is_none();
            let (dotted, import_root) = python_module(&source, &root, files, &pythonpath, beside);
            if let Some(bad) = dotted.split('.').find(|part| !is_python_identifier(part)) {
                return Err(ActionError::Rejected(format!(
                    "`{bad}` in {} is not a Python identifier, so tests cannot import this module; nothing was written",
                    source.display()
                )));
            }
            import_roots.push(import_root);
            import_roots.extend(pythonpath);
            import_roots.push(root.clone());
            import_roots.dedup();
            python_style = if uses_pytest(&root, files) { PythonStyle::Pytest } else { PythonStyle::Unittest };
            let file = python_test_file(&source, &root, &dotted, files);
            (file, String::new(), dotted)
        }
        TestLayout::Rust => (source.clone(), String::new(), String::new()),
        TestLayout::JavaScript => {
            let extension = source.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "js".into());
            let file_name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            commonjs = javascript_is_commonjs(target, &source, &root, files);
            let import = if commonjs {
                format!("const {{ {imported} }} = require(\"./{file_name}\");")
            } else {
                format!("import {{ {imported} }} from \"./{file_name}\";")
            };
            (directory.join(format!("{module}.test.{extension}")), import, String::new())
        }
        TestLayout::TypeScript => {
            let extension = source.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "js".into());
            let import = format!("import {{ {imported} }} from \"./{module}\";");
            (directory.join(format!("{module}.test.{extension}")), import, String::new())
        }
        TestLayout::Go => (directory.join(format!("{module}_test.go")), String::new(), String::new()),
    };
    if !file.starts_with(&root) {
        return Err(ActionError::Rejected(format!("{} is outside the workspace; nothing was written", file.display())));
    }
    let existing = if file == source { Some(target.rope.to_string()) } else { files.read(&file) };
    if let Some(existing) =
        existing.as_deref().filter(|_| matches!(target.language.spec().tests, Some(TestLayout::Python)))
    {
        // An existing test file's style wins.
        if existing.contains("unittest.TestCase") || existing.contains("IsolatedAsyncioTestCase") {
            python_style = PythonStyle::Unittest;
        } else if existing.contains("def test") && !existing.contains("(self") {
            python_style = PythonStyle::Pytest;
        }
    }
    Ok(Plan {
        layout,
        file,
        existing,
        import_line,
        commonjs,
        imported: vec![imported],
        module: dotted_module,
        extra_imports: Vec::new(),
        async_style: scaffold::python_async_style(&root, &|path| files.read(path)),
        python_style,
        tokio: matches!(target.language.spec().tests, Some(TestLayout::Rust))
            && scaffold::rust_uses_tokio(&source, &root, &|path| files.read(path)),
        import_roots,
        root,
    })
}
