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
    let Some(layout) = target.language.spec().tests else {
        let language = target.language.spec().display_name;
        return Err(ActionError::Rejected(format!("nib does not generate unit tests for {language}")));
    };
    let placement = match layout {
        TestLayout::Python => python_placement(&source, &root, files)?,
        TestLayout::Rust => Placement::in_file(source.clone()),
        TestLayout::JavaScript => javascript_placement(target, &source, &root, files),
        TestLayout::TypeScript => typescript_placement(target, &source),
        TestLayout::Go => Placement::in_file(beside(&source, &format!("{}_test.go", stem(&source)))),
    };
    if !placement.file.starts_with(&root) {
        let file = placement.file.display();
        return Err(ActionError::Rejected(format!("{file} is outside the workspace; nothing was written")));
    }
    let existing = if placement.file == source { Some(target.rope.to_string()) } else { files.read(&placement.file) };
    let python_style = match (layout, existing.as_deref()) {
        (TestLayout::Python, Some(existing)) => existing_python_style(existing).unwrap_or(placement.python_style),
        _ => placement.python_style,
    };
    Ok(Plan {
        layout,
        file: placement.file,
        existing,
        import_line: placement.import_line,
        commonjs: placement.commonjs,
        imported: vec![subject(target).0],
        module: placement.module,
        extra_imports: Vec::new(),
        async_style: scaffold::python_async_style(&root, &|path| files.read(path)),
        python_style,
        tokio: layout == TestLayout::Rust && scaffold::rust_uses_tokio(&source, &root, &|path| files.read(path)),
        import_roots: placement.import_roots,
        root,
    })
}

/// Where one layout puts the tests and how they import the code.
struct Placement {
    file: PathBuf,
    /// JavaScript/TypeScript: the import of the code under test.
    import_line: String,
    /// JavaScript: the tests are CommonJS.
    commonjs: bool,
    /// Python: the dotted module the tests import.
    module: String,
    /// Python: the folders the tests import the code from.
    import_roots: Vec<PathBuf>,
    /// Python: the project's framework, before an existing test file has its say.
    python_style: PythonStyle,
}

impl Placement {
    /// Tests in `file`, which imports nothing by name (Rust's test module, a Go test file).
    fn in_file(file: PathBuf) -> Placement {
        Placement {
            file,
            import_line: String::new(),
            commonjs: false,
            module: String::new(),
            import_roots: Vec::new(),
            python_style: PythonStyle::Unittest,
        }
    }
}

/// `name` in the folder of `source`.
fn beside(source: &Path, name: &str) -> PathBuf {
    source.parent().unwrap_or(source).join(name)
}

/// The project's test file for `source`, the dotted module tests import and the folders that
/// must be on `sys.path`; an error when a path part is not a Python identifier.
fn python_placement(source: &Path, root: &Path, files: &ProjectFiles) -> Result<Placement, ActionError> {
    let pythonpath = pytest_pythonpath(root, files);
    let beside = python_tests_folder(root, files).is_none();
    let (dotted, import_root) = python_module(source, root, files, &pythonpath, beside);
    if let Some(bad) = dotted.split('.').find(|part| !is_python_identifier(part)) {
        return Err(ActionError::Rejected(format!(
            "`{bad}` in {} is not a Python identifier, so tests cannot import this module; nothing was written",
            source.display()
        )));
    }
    let mut import_roots = vec![import_root];
    import_roots.extend(pythonpath);
    import_roots.push(root.to_path_buf());
    import_roots.dedup();
    Ok(Placement {
        file: python_test_file(source, root, &dotted, files),
        module: dotted,
        import_roots,
        python_style: if uses_pytest(root, files) { PythonStyle::Pytest } else { PythonStyle::Unittest },
        ..Placement::in_file(PathBuf::new())
    })
}

/// `<module>.test.<ext>` beside the source, importing it with `require` or `import` as the
/// package is CommonJS or an ES module.
fn javascript_placement(target: &Target, source: &Path, root: &Path, files: &ProjectFiles) -> Placement {
    let imported = subject(target).0;
    let file_name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let commonjs = javascript_is_commonjs(target, source, root, files);
    let import_line = if commonjs {
        format!("const {{ {imported} }} = require(\"./{file_name}\");")
    } else {
        format!("import {{ {imported} }} from \"./{file_name}\";")
    };
    Placement { import_line, commonjs, ..Placement::in_file(sibling_test_file(source)) }
}

/// `<module>.test.<ext>` beside the source, importing it by its module name.
fn typescript_placement(target: &Target, source: &Path) -> Placement {
    let import_line = format!("import {{ {} }} from \"./{}\";", subject(target).0, stem(source));
    Placement { import_line, ..Placement::in_file(sibling_test_file(source)) }
}

/// `<module>.test.<ext>` in the source's folder.
fn sibling_test_file(source: &Path) -> PathBuf {
    let extension = source.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "js".into());
    beside(source, &format!("{}.test.{extension}", stem(source)))
}

/// The framework an existing Python test file already uses, if it tells.
fn existing_python_style(existing: &str) -> Option<PythonStyle> {
    if existing.contains("unittest.TestCase") || existing.contains("IsolatedAsyncioTestCase") {
        Some(PythonStyle::Unittest)
    } else if existing.contains("def test") && !existing.contains("(self") {
        Some(PythonStyle::Pytest)
    } else {
        None
    }
}
