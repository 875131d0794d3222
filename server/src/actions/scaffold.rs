//! Test scaffolds for code whose tests need structure a small model gets wrong: async
//! functions (awaited in the form the project uses) and functions that call collaborators
//! imported from other modules (patched where they are looked up, `AsyncMock` when awaited,
//! calls asserted). nib writes the structure; the model only fills the holes: the collaborator's
//! return value, the call's arguments, the expected result.

use std::path::{Path, PathBuf};

use tree_sitter::Node;

use super::Target;
use crate::syntax::languages::TestLayout;

/// A collaborator to replace with a mock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collaborator {
    /// What `patch()` gets: where the name is looked up at call time.
    pub patch_target: String,
    /// The mock's variable name in the test.
    pub variable: String,
    pub awaited: bool,
    /// The argument texts at the call site, when they are all parameters of the function.
    pub parameter_arguments: Option<Vec<String>>,
}

/// How a project runs async Python tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncStyle {
    PytestAsyncio,
    Unittest,
}

/// A piece of a scaffolded test: fixed text, or a hole the model fills up to `stop`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Fixed(String),
    /// The rest of a line, up to `stop`.
    Hole {
        stop: &'static str,
    },
    /// Call arguments after an opening parenthesis: generated up to the closing one, which is
    /// then added by nib.
    Arguments,
}

fn text(target: &Target, node: Node) -> String {
    target.rope.byte_slice(node.byte_range()).to_string()
}

/// Imported names of a Python file: local name → (module, attribute), where `attribute` is
/// `None` for `import module` and `Some(name)` for `from module import name`.
fn python_imports(target: &Target) -> Vec<(String, String, Option<String>)> {
    let mut imports = Vec::new();
    let root = target.tree.root_node();
    let mut cursor = root.walk();
    for statement in root.children(&mut cursor) {
        let mut inner = statement.walk();
        match statement.kind() {
            "import_statement" => {
                for name in statement.children_by_field_name("name", &mut inner) {
                    let (module, local) = match name.kind() {
                        "aliased_import" => (
                            name.child_by_field_name("name").map(|n| text(target, n)).unwrap_or_default(),
                            name.child_by_field_name("alias").map(|n| text(target, n)).unwrap_or_default(),
                        ),
                        _ => (text(target, name), text(target, name)),
                    };
                    imports.push((local, module, None));
                }
            }
            "import_from_statement" => {
                let module = statement.child_by_field_name("module_name").map(|n| text(target, n)).unwrap_or_default();
                for name in statement.children_by_field_name("name", &mut inner) {
                    let (original, local) = match name.kind() {
                        "aliased_import" => (
                            name.child_by_field_name("name").map(|n| text(target, n)).unwrap_or_default(),
                            name.child_by_field_name("alias").map(|n| text(target, n)).unwrap_or_default(),
                        ),
                        _ => (text(target, name), text(target, name)),
                    };
                    imports.push((local, module.clone(), Some(original)));
                }
            }
            _ => {}
        }
    }
    imports
}

/// Calls in the function body to names imported from other modules, plus any named by a
/// `# mock: module.name` comment in the function. `module` is how tests import the code under
/// test (`shop.orders`), for patching names imported into it.
pub fn collaborators(target: &Target, module: &str) -> Vec<Collaborator> {
    let Some(TestLayout::Python) = target.language.spec().tests else {
        return Vec::new();
    };
    let mut found: Vec<Collaborator> = Vec::new();
    let Some(body) = target.scope.body.as_ref() else { return found };
    let Some(body_node) = target.tree.root_node().descendant_for_byte_range(body.start, body.end) else { return found };
    let imports = python_imports(target);
    let mut stack = vec![body_node];
    while let Some(node) = stack.pop() {
        let mut cursor = node.walk();
        stack.extend(node.children(&mut cursor));
        let called = (node.kind() == "call").then(|| called_collaborator(target, module, &imports, node)).flatten();
        if let Some(collaborator) = called.filter(|c| found.iter().all(|other| other.patch_target != c.patch_target)) {
            found.push(collaborator);
        }
    }
    named_collaborators(&target.source(), &mut found);
    found.sort_by(|a, b| a.patch_target.cmp(&b.patch_target));
    found
}

/// The collaborator a `call` node calls, when its callee is imported from another module.
fn called_collaborator(
    target: &Target,
    module: &str,
    imports: &[(String, String, Option<String>)],
    call: Node,
) -> Option<Collaborator> {
    let callee = text(target, call.child_by_field_name("function")?);
    let (head, attribute) = match callee.split_once('.') {
        Some((head, rest)) => (head.to_string(), Some(rest.to_string())),
        None => (callee.clone(), None),
    };
    let (_, imported_module, imported_name) = imports.iter().find(|(local, _, _)| *local == head)?;
    let patch_target = match (imported_name, &attribute) {
        // `from app import fetch` … `fetch()`: the name lives in the module under test.
        (Some(_), None) => format!("{module}.{head}"),
        // `import app` … `app.fetch()`: looked up on the app module at call time.
        (None, Some(attribute)) => format!("{imported_module}.{attribute}"),
        (Some(_), Some(attribute)) => format!("{module}.{head}.{attribute}"),
        (None, None) => return None,
    };
    let arguments: Vec<String> = call
        .child_by_field_name("arguments")
        .map(|args| {
            let mut cursor = args.walk();
            args.named_children(&mut cursor).map(|a| text(target, a)).collect()
        })
        .unwrap_or_default();
    let parameters: Vec<&str> = target.scope.parameters.iter().map(|p| p.name.as_str()).collect();
    let parameter_arguments = arguments.iter().all(|a| parameters.contains(&a.as_str())).then_some(arguments);
    Some(Collaborator {
        variable: format!("mock_{}", patch_target.rsplit('.').next().unwrap_or("collaborator")),
        patch_target,
        awaited: call.parent().is_some_and(|p| p.kind() == "await"),
        parameter_arguments,
    })
}

/// Adds the collaborators the user names in `source`: `# mock: app.get_orders_for_customer`.
fn named_collaborators(source: &str, found: &mut Vec<Collaborator>) {
    for line in source.lines() {
        let Some(named) = line.trim().strip_prefix("# mock:") else { continue };
        let patch_target = named.trim().to_string();
        if patch_target.is_empty() || found.iter().any(|c| c.patch_target == patch_target) {
            continue;
        }
        let last = patch_target.rsplit('.').next().unwrap_or("collaborator").to_string();
        let awaited = source
            .contains(&format!("await {}", patch_target.rsplit_once('.').map_or(last.as_str(), |(_, n)| n)))
            || source.contains(&format!("await {patch_target}"));
        found.push(Collaborator { patch_target, variable: format!("mock_{last}"), awaited, parameter_arguments: None });
    }
}

/// A project file's text (see `ProjectFiles::read`: regular files inside the workspace only,
/// capped in size).
pub type Read<'a> = dyn Fn(&Path) -> Option<String> + 'a;

/// pytest-asyncio when the workspace uses it, else unittest's `IsolatedAsyncioTestCase`.
pub fn python_async_style(root: &Path, read: &Read) -> AsyncStyle {
    let files = [
        "pyproject.toml",
        "setup.cfg",
        "setup.py",
        "tox.ini",
        "pytest.ini",
        "conftest.py",
        "requirements.txt",
        "requirements-dev.txt",
        "tests/conftest.py",
    ];
    let uses = files.iter().any(|file| {
        read(&root.join(file)).is_some_and(|text| {
            text.contains("pytest-asyncio") || text.contains("pytest_asyncio") || text.contains("asyncio_mode")
        })
    });
    if uses { AsyncStyle::PytestAsyncio } else { AsyncStyle::Unittest }
}

/// Whether the Rust crate holding `source` depends on tokio (its nearest Cargo.toml says so).
pub fn rust_uses_tokio(source: &Path, root: &Path, read: &Read) -> bool {
    let mut directory: Option<PathBuf> = source.parent().map(Path::to_path_buf);
    while let Some(current) = directory {
        if let Some(manifest) = read(&current.join("Cargo.toml")) {
            return manifest.lines().any(|line| line.trim_start().starts_with("tokio"));
        }
        if current == root {
            return false;
        }
        directory = current.parent().map(Path::to_path_buf);
    }
    false
}

/// Whether a target needs a scaffold rather than free-form tests.
pub fn needed(target: &Target, collaborators: &[Collaborator]) -> bool {
    target.scope.is_async || !collaborators.is_empty()
}

/// The body of one test after its name, as fixed text and holes. `indent` is the test
/// body's indentation; `call` is how the code under test is called (`orders.get(`).
pub fn python_body(call: &str, is_async: bool, collaborators: &[Collaborator], indent: &str) -> Vec<Piece> {
    let fixed = |text: String| Piece::Fixed(text);
    let mut pieces = Vec::new();
    let mut depth = indent.to_string();
    for collaborator in collaborators {
        let mock = if collaborator.awaited { "AsyncMock" } else { "MagicMock" };
        pieces.push(fixed(format!(
            "{depth}with patch(\"{}\", new_callable={mock}) as {}:\n",
            collaborator.patch_target, collaborator.variable
        )));
        depth.push_str("    ");
        pieces.push(fixed(format!("{depth}{}.return_value = ", collaborator.variable)));
        pieces.push(Piece::Hole { stop: "\n" });
        pieces.push(fixed("\n".into()));
    }
    let awaiting = if is_async { "await " } else { "" };
    pieces.push(fixed(format!("{depth}result = {awaiting}{call}")));
    pieces.push(Piece::Arguments);
    pieces.push(fixed("\n".into()));
    for collaborator in collaborators {
        // Filled in from the call's arguments when the collaborator receives parameters.
        pieces.push(fixed(format!("{depth}{}.assert_called_once", collaborator.variable)));
        pieces.push(Piece::Fixed(ASSERT_CALL_MARK.into()));
        pieces.push(fixed("\n".into()));
    }
    pieces.push(fixed(format!("{depth}assert result == ")));
    pieces.push(Piece::Hole { stop: "\n" });
    pieces.push(fixed("\n".into()));
    pieces
}

/// The arguments of a call as generated: up to the first unmatched closing parenthesis or the
/// end of the line, without it.
pub fn cut_arguments(generated: &str) -> String {
    let line = generated.lines().next().unwrap_or_default();
    let mut depth = 0i32;
    for (index, c) in line.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return line[..index].trim_end().to_string(),
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    line.trim_end().to_string()
}

/// Replaced after the call's arguments are known: `_with(args)` or `()`.
pub const ASSERT_CALL_MARK: &str = "\u{1}ASSERT_CALL\u{1}";

/// Completes `assert_called_once` marks: `_with(values)` when the collaborator got the
/// function's parameters and the test's call shows their values, else `()`.
pub fn resolve_assert_calls(
    code: &str,
    collaborators: &[Collaborator],
    parameters: &[String],
    call_arguments: &str,
) -> String {
    let values: Vec<String> = split_arguments(call_arguments);
    let mut result = code.to_string();
    for collaborator in collaborators {
        let replacement = match &collaborator.parameter_arguments {
            Some(arguments) if values.len() == parameters.len() && !values.iter().any(|v| v.contains('=')) => {
                let mapped: Vec<&str> = arguments
                    .iter()
                    .filter_map(|a| parameters.iter().position(|p| p == a).map(|i| values[i].as_str()))
                    .collect();
                format!("_with({})", mapped.join(", "))
            }
            _ => "()".to_string(),
        };
        result = result.replacen(
            &format!(".assert_called_once{ASSERT_CALL_MARK}"),
            &format!(".assert_called_once{replacement}"),
            1,
        );
    }
    result
}

/// Top-level comma-separated arguments of `a, f(b, c), [d]`.
fn split_arguments(text: &str) -> Vec<String> {
    let text = text.trim();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_target;

    const ORDERS: &str = "import app\nfrom billing import charge as bill\n\n\nasync def get_orders(customer_id):\n    orders = await app.get_orders_for_customer(customer_id)\n    bill(customer_id, 3)\n    return [o for o in orders if o.open]$0\n";

    #[test]
    fn finds_collaborators_and_where_to_patch_them() {
        let target = test_target("/w/shop/orders.py", "python", ORDERS);
        let found = collaborators(&target, "shop.orders");
        assert_eq!(
            found,
            [
                Collaborator {
                    patch_target: "app.get_orders_for_customer".into(),
                    variable: "mock_get_orders_for_customer".into(),
                    awaited: true,
                    parameter_arguments: Some(vec!["customer_id".into()]),
                },
                Collaborator {
                    patch_target: "shop.orders.bill".into(),
                    variable: "mock_bill".into(),
                    awaited: false,
                    parameter_arguments: None,
                },
            ]
        );
        assert!(needed(&target, &found));
    }

    #[test]
    fn a_mock_comment_names_a_collaborator() {
        let source = "async def refresh(store):\n    # mock: cache.invalidate\n    return await store.reload()$0\n";
        let target = test_target("/w/r.py", "python", source);
        let found = collaborators(&target, "r");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].patch_target, "cache.invalidate");
    }

    #[test]
    fn python_scaffold_patches_awaits_and_asserts_the_call() {
        let target = test_target("/w/shop/orders.py", "python", ORDERS);
        let found = collaborators(&target, "shop.orders");
        let pieces = python_body("get_orders(", true, &found[..1], "    ");
        // Fill the holes the way the model would.
        let fills = ["[]", "42), extra", "[]"];
        let mut code = String::new();
        let mut holes = fills.iter();
        for piece in &pieces {
            match piece {
                Piece::Fixed(text) => code.push_str(text),
                Piece::Hole { .. } => code.push_str(holes.next().unwrap()),
                Piece::Arguments => code.push_str(&format!("{})", cut_arguments(holes.next().unwrap()))),
            }
        }
        let code = resolve_assert_calls(&code, &found[..1], &["customer_id".to_string()], "42");
        let expected = [
            "    with patch(\"app.get_orders_for_customer\", new_callable=AsyncMock) as mock_get_orders_for_customer:",
            "        mock_get_orders_for_customer.return_value = []",
            "        result = await get_orders(42)",
            "        mock_get_orders_for_customer.assert_called_once_with(42)",
            "        assert result == []",
            "",
        ];
        assert_eq!(code, expected.join("\n"));
    }

    #[test]
    fn async_styles_from_the_workspace() {
        let root = std::env::temp_dir().join(format!("nib-async-style-{}", std::process::id()));
        std::fs::create_dir_all(root.join("src")).unwrap();
        let files = crate::actions::project_files::ProjectFiles::new(vec![root.clone()], Vec::new());
        let read = |path: &Path| files.read(path);
        assert_eq!(python_async_style(&root, &read), AsyncStyle::Unittest);
        std::fs::write(root.join("pyproject.toml"), "[tool.pytest.ini_options]\nasyncio_mode = \"auto\"\n").unwrap();
        assert_eq!(python_async_style(&root, &read), AsyncStyle::PytestAsyncio);
        assert!(!rust_uses_tokio(&root.join("src/lib.rs"), &root, &read));
        std::fs::write(root.join("Cargo.toml"), "[dependencies]\ntokio = { version = \"1\" }\n").unwrap();
        assert!(rust_uses_tokio(&root.join("src/lib.rs"), &root, &read));
        // A manifest that is a device (or huge) is not read: no hang, no tokio.
        std::fs::remove_file(root.join("Cargo.toml")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("Cargo.toml")).unwrap();
        std::fs::remove_file(root.join("pyproject.toml")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("pyproject.toml")).unwrap();
        assert!(!rust_uses_tokio(&root.join("src/lib.rs"), &root, &read));
        assert_eq!(python_async_style(&root, &read), AsyncStyle::Unittest);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
