//! Unit tests of planning, writing and assembling tests (canned model answers).

use std::path::PathBuf;

use super::assemble::{assemble, find_tests, make_names_unique, parses_as_well};
use super::plan::is_python_identifier;
use super::write::{ScaffoldShape, scaffolded_shape, write_scaffolded};
use super::*;
use crate::actions::Target;
use crate::actions::project_files::ProjectFiles;
use crate::actions::scaffold;
use crate::syntax::Language;

fn target(path: &str, language_id: &str, source: &str) -> Target {
    crate::actions::test_target(path, language_id, source)
}

/// A workspace at `root` with no files besides those on disk.
fn no_files_in(root: &str) -> ProjectFiles {
    ProjectFiles::new(vec![PathBuf::from(root)], Vec::new())
}

/// A scratch workspace holding `files` (empty text makes a folder when the name ends in `/`).
fn workspace(files: &[(&str, &str)]) -> crate::sandbox::PrivateDir {
    let root = crate::sandbox::PrivateDir::new("nib-plan").unwrap();
    for (name, text) in files {
        let path = root.path().join(name);
        if name.ends_with('/') {
            std::fs::create_dir_all(&path).unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
    }
    root
}

/// (test file relative to the root, import line) for `source` in a workspace with `files`.
fn python_plan(files: &[(&str, &str)], source: &str) -> (String, String, PythonStyle) {
    let root = workspace(files);
    let path = root.path().join(source);
    let planned = plan(
        &target(&path.to_string_lossy(), "python", "def total(x):\n    return x$0\n"),
        &[root.path().to_path_buf()],
        &ProjectFiles::new(vec![root.path().to_path_buf()], Vec::new()),
    )
    .unwrap();
    let file = planned.file.strip_prefix(root.path()).unwrap().to_string_lossy().into_owned();
    (file, python_import_line(&planned), planned.python_style)
}

#[test]
fn python_plans_beside_the_module_or_in_tests() {
    let shop = target("/w/shop/cart.py", "python", "class Cart:\n    def total(self):\n        return 1$0\n");
    let plan = plan(&shop, &[PathBuf::from("/w")], &no_files_in("/w")).unwrap();
    assert_eq!(plan.file, PathBuf::from("/w/shop/test_cart.py"));
    assert_eq!(python_import_line(&plan), "from cart import Cart");
    let outside = plan_error(&shop, &[PathBuf::from("/elsewhere")]);
    assert!(outside.contains("outside the workspace"), "{outside}");
    // A src layout without packages: relative to src/.
    let planned = python_plan(&[("tests/", ""), ("src/shop/cart.py", "")], "src/shop/cart.py");
    assert_eq!(planned.0, "tests/test_cart.py");
    assert_eq!(planned.1, "from shop.cart import total");
}

#[test]
fn python_imports_follow_the_package_chain_and_the_pytest_pythonpath() {
    let package = [("pkg/__init__.py", ""), ("pkg/text/__init__.py", ""), ("pkg/text/words.py", "")];
    // Beside the module: pytest puts the first folder without `__init__.py` on sys.path.
    assert_eq!(
        python_plan(&package, "pkg/text/words.py"),
        ("pkg/text/test_words.py".into(), "from pkg.text.words import total".into(), PythonStyle::Unittest)
    );
    // In the project's tests tree, mirroring a package folder it has, with its naming.
    let mut with_tests = package.to_vec();
    with_tests.extend([("tests/pkg/words_old_test.py", ""), ("conftest.py", "")]);
    assert_eq!(
        python_plan(&with_tests, "pkg/text/words.py"),
        ("tests/pkg/words_test.py".into(), "from pkg.text.words import total".into(), PythonStyle::Pytest)
    );
    // A src layout with packages.
    let src = [("tests/", ""), ("src/pkg/__init__.py", ""), ("src/pkg/words.py", "")];
    assert_eq!(python_plan(&src, "src/pkg/words.py").1, "from pkg.words import total");
    // A namespace package under the configured pythonpath.
    let configured = [
        ("pyproject.toml", "[tool.pytest.ini_options]\npythonpath = [\"lib\"]\n"),
        ("tests/", ""),
        ("lib/ns/words.py", ""),
    ];
    assert_eq!(
        python_plan(&configured, "lib/ns/words.py"),
        ("tests/test_words.py".into(), "from ns.words import total".into(), PythonStyle::Pytest)
    );
}

#[test]
fn python_module_paths_must_be_identifiers() {
    // `from my-pkg.cart import total` would not even parse.
    let root = workspace(&[("tests/", ""), ("my-pkg/cart.py", "")]);
    let path = root.path().join("my-pkg/cart.py");
    let cart = target(&path.to_string_lossy(), "python", "def total(x):\n    return x$0\n");
    let error = plan_error(&cart, &[root.path().to_path_buf()]);
    assert!(error.contains("`my-pkg`") && error.contains("not a Python identifier"), "{error}");
    assert!(is_python_identifier("café_2") && !is_python_identifier("class") && !is_python_identifier("2x"));
}

#[test]
fn planning_reads_no_device_behind_a_configuration_file() {
    let root = workspace(&[("tests/", ""), ("shop/cart.py", "")]);
    for name in ["pyproject.toml", "setup.cfg", "tox.ini", "tests/test_cart.py"] {
        std::os::unix::fs::symlink("/dev/zero", root.path().join(name)).unwrap();
    }
    let path = root.path().join("shop/cart.py");
    let cart = target(&path.to_string_lossy(), "python", "def total(x):\n    return x$0\n");
    let folders = vec![root.path().to_path_buf()];
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let planned = plan(&cart, &folders, &ProjectFiles::new(folders.clone(), Vec::new()));
        let _ = sender.send(planned.map(|p| p.existing));
    });
    let existing = receiver.recv_timeout(std::time::Duration::from_secs(20)).expect("planning finishes");
    assert_eq!(existing.unwrap(), None, "the link to /dev/zero is not read as the test file");
}

fn plan_error(target: &Target, folders: &[PathBuf]) -> String {
    let files = ProjectFiles::new(folders.to_vec(), Vec::new());
    plan(target, folders, &files).unwrap_err().to_string()
}

#[test]
fn python_appends_unique_complete_tests_with_one_import() {
    let cart = target("/w/cart.py", "python", "def total(items):\n    return sum(items)$0\n");
    let existing = "from cart import total\n\n\ndef test_total():\n    assert total([]) == 0\n";
    let files =
        ProjectFiles::new(vec![PathBuf::from("/w")], vec![(PathBuf::from("/w/test_cart.py"), existing.to_string())]);
    let plan = plan(&cart, &[PathBuf::from("/w")], &files).unwrap();
    let generated = "from cart import total\n\n\ndef test_total():\n    assert total([1]) == 1\n\n\ndef test_total_many():\n    assert total([1, 2]) == 3\n\n\ndef test_broken(:\n";
    let mut tests = find_tests(Language::Python, generated);
    assert_eq!(tests.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["test_total", "test_total_many"]);
    make_names_unique(Language::Python, &mut tests, &["test_total".to_string()]);
    let insertion = assemble(&cart, &plan, &tests);
    let mut result = existing.to_string();
    result.insert_str(insertion.offset, &insertion.text);
    expect_test::expect![[r#"
        from cart import total


        def test_total():
            assert total([]) == 0


        def test_total_2():
            assert total([1]) == 1


        def test_total_many():
            assert total([1, 2]) == 3
    "#]]
    .assert_eq(&result);
    assert!(parses_as_well(Language::Python, existing, &insertion));
}

#[test]
fn rust_tests_go_into_the_existing_test_module() {
    let source = "fn add(a: u8, b: u8) -> u8 {\n    a + b$0\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn adds() {\n        assert_eq!(add(1, 1), 2);\n    }\n}\n";
    let item = target("/w/src/lib.rs", "rust", source);
    let plan = plan(&item, &[PathBuf::from("/w")], &no_files_in("/w")).unwrap();
    assert_eq!(plan.file, PathBuf::from("/w/src/lib.rs"));
    let mut tests = find_tests(Language::Rust, "#[test]\nfn adds() {\n    assert_eq!(add(0, 0), 0);\n}\n");
    make_names_unique(Language::Rust, &mut tests, &["adds".to_string()]);
    let insertion = assemble(&item, &plan, &tests);
    let mut result = plan.existing.clone().unwrap();
    result.insert_str(insertion.offset, &insertion.text);
    assert!(
        result.ends_with("    #[test]\n    fn adds_2() {\n        assert_eq!(add(0, 0), 0);\n    }\n}\n"),
        "{result}"
    );
    // Without a test module, one is appended.
    let bare = target("/w/src/m.rs", "rust", "fn one() -> u8 {\n    1$0\n}\n");
    let plan = super::plan(&bare, &[PathBuf::from("/w")], &no_files_in("/w")).unwrap();
    let insertion = assemble(
        &bare,
        &plan,
        &find_tests(Language::Rust, "#[test]\nfn one_is_one() {\n    assert_eq!(one(), 1);\n}\n"),
    );
    assert_eq!(
        insertion.text,
        "\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn one_is_one() {\n        assert_eq!(one(), 1);\n    }\n}\n"
    );
}

#[test]
fn javascript_and_go_files_and_headers() {
    let js = target("/w/lib/math.ts", "typescript", "export function double(x: number) {\n  return x * 2;$0\n}\n");
    let plan = plan(&js, &[PathBuf::from("/w")], &no_files_in("/w")).unwrap();
    assert_eq!(plan.file, PathBuf::from("/w/lib/math.test.ts"));
    let mut tests = find_tests(
        Language::TypeScript,
        "test(\"doubles\", () => {\n  assert.equal(double(2), 4);\n});\ntest(\"doubles\", () => {\n  assert.equal(double(0), 0);\n});\n",
    );
    make_names_unique(Language::TypeScript, &mut tests, &[]);
    let insertion = assemble(&js, &plan, &tests);
    assert!(insertion.text.starts_with("import { test } from \"node:test\";\nimport assert from \"node:assert/strict\";\nimport { double } from \"./math\";\n\n"));
    assert!(insertion.text.contains("test(\"doubles (2)\""), "{}", insertion.text);
    let go = target("/w/calc/sum.go", "go", "package calc\n\nfunc Sum(a, b int) int {\n\treturn a + b$0\n}\n");
    let plan = super::plan(&go, &[PathBuf::from("/w")], &no_files_in("/w")).unwrap();
    assert_eq!(plan.file, PathBuf::from("/w/calc/sum_test.go"));
    let insertion = assemble(
        &go,
        &plan,
        &find_tests(
            Language::Go,
            "func TestSum(t *testing.T) {\n\tif Sum(1, 2) != 3 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
        ),
    );
    assert!(
        insertion.text.starts_with("package calc\n\nimport \"testing\"\n\nfunc TestSum(t *testing.T) {"),
        "{}",
        insertion.text
    );
}

/// Builds the tests file for `source` in a scratch workspace (with `files` in it), filling
/// every hole of each scaffolded test from `answers`, in order.
fn scaffolded_file(name: &str, files: &[(&str, &str)], language_id: &str, source: &str, answers: &[&str]) -> String {
    // Tests run in parallel and several use the same file name: one folder per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = std::env::temp_dir().join(format!("nib-scaffold-{name}-{}-{call}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    for (file, text) in files {
        std::fs::write(root.join(file), text).unwrap();
    }
    let path = root.join(name);
    let target = target(&path.to_string_lossy(), language_id, source);
    let files = ProjectFiles::new(vec![root.clone()], Vec::new());
    let plan = plan(&target, std::slice::from_ref(&root), &files).unwrap();
    let collaborators = scaffold::collaborators(&target, &plan.module);
    assert!(scaffold::needed(&target, &collaborators));
    let (lead, name_end, pieces) = scaffolded_shape(&target, &plan, &collaborators).expect("a scaffold");
    let parameters: Vec<String> = target.scope.parameters.iter().map(|p| p.name.clone()).collect();
    let shape = ScaffoldShape {
        lead: &lead,
        name_end,
        pieces: &pieces,
        collaborators: &collaborators,
        parameters: &parameters,
    };
    let mut answers = answers.iter();
    let mut ask = |_: &str, _: &[&str], _: usize| Ok(answers.next().expect("enough canned answers").to_string());
    let code = write_scaffolded(target.language, "", &shape, 0, &mut ask).unwrap();
    let tests = find_tests(target.language, &code);
    assert_eq!(tests.len(), 1, "{code}");
    let insertion = assemble(&target, &plan, &tests);
    assert!(parses_as_well(target.language, "", &insertion), "{}", insertion.text);
    std::fs::remove_dir_all(&root).unwrap();
    insertion.text
}

const ORDERS: &str = "import app\n\n\nasync def get_orders(customer_id):\n    orders = await app.get_orders_for_customer(customer_id)\n    return [o for o in orders if o.open]$0\n";

#[test]
fn async_python_with_pytest_asyncio_patches_the_collaborator_with_an_async_mock() {
    let files = [("pyproject.toml", "[project]\ndependencies = [\"pytest-asyncio\"]\n")];
    let text = scaffolded_file("orders.py", &files, "python", ORDERS, &["no_open_orders", "[]", "7)", "[]"]);
    expect_test::expect![[r#"
        import pytest
        from unittest.mock import AsyncMock, patch
        from orders import get_orders


        @pytest.mark.asyncio
        async def test_get_orders_no_open_orders():
            with patch("app.get_orders_for_customer", new_callable=AsyncMock) as mock_get_orders_for_customer:
                mock_get_orders_for_customer.return_value = []
                result = await get_orders(7)
                mock_get_orders_for_customer.assert_called_once_with(7)
                assert result == []
    "#]]
    .assert_eq(&text);
}

#[test]
fn async_python_without_pytest_asyncio_uses_isolated_asyncio_test_case() {
    let text = scaffolded_file("orders.py", &[], "python", ORDERS, &["empty", "[]", "customer_id=3)", "[]"]);
    expect_test::expect![[r#"
        import unittest
        from unittest.mock import AsyncMock, patch
        from orders import get_orders


        class TestGetOrders(unittest.IsolatedAsyncioTestCase):
            async def test_get_orders_empty(self):
                with patch("app.get_orders_for_customer", new_callable=AsyncMock) as mock_get_orders_for_customer:
                    mock_get_orders_for_customer.return_value = []
                    result = await get_orders(customer_id=3)
                    mock_get_orders_for_customer.assert_called_once()
                    assert result == []


        if __name__ == "__main__":
            unittest.main()
    "#]]
    .assert_eq(&text);
}

#[test]
fn async_rust_with_tokio_and_async_typescript() {
    let cargo = [("Cargo.toml", "[dependencies]\ntokio = { version = \"1\", features = [\"full\"] }\n")];
    let source = "pub async fn double(x: u32) -> u32 {\n    x * 2$0\n}\n";
    let text = scaffolded_file("lib.rs", &cargo, "rust", source, &["of_two", "2) + 1", "4);"]);
    expect_test::expect![[r#"

        #[cfg(test)]
        mod tests {
            use super::*;

            #[tokio::test]
            async fn double_of_two() {
                let result = double(2).await;
                assert_eq!(result, 4);
            }
        }
    "#]]
    .assert_eq(&text);
    let source = "export async function fetchUser(id: number) {\n  return await api.get(id);$0\n}\n";
    let text = scaffolded_file("user.ts", &[], "typescript", source, &["returns the user", "1)", "{ id: 1 });"]);
    expect_test::expect![[r#"
        import { test } from "node:test";
        import assert from "node:assert/strict";
        import { fetchUser } from "./user";

        test("fetchUser returns the user", async () => {
          const result = await fetchUser(1);
          assert.deepStrictEqual(result, { id: 1 });
        });
    "#]]
    .assert_eq(&text);
}

/// The tests `find_tests` finds in each language: complete, error-free test functions (with
/// their decorators or test attribute), not those nested in a test found already, nothing
/// that is not a test by the language's convention; none for languages without a test layout.
#[test]
fn tests_are_found_per_language() {
    let table: &[(Language, &str)] = &[
        (
            Language::Python,
            "import pytest\n\n@pytest.mark.slow\ndef test_slow():\n    assert f()\n\ndef helper():\n    def test_inner():\n        assert 1\n\nclass TestShop:\n    def test_price(self):\n        def test_nested():\n            pass\n        assert price()\n\ndef test_broken(:\n    assert 1\n\ndef check_it():\n    assert 1\n",
        ),
        (
            Language::Rust,
            "#[test]\nfn adds() {\n    assert_eq!(add(1, 1), 2);\n}\n\n#[tokio::test]\nasync fn waits() {\n    assert!(wait().await);\n}\n\n#[inline]\nfn not_a_test() {}\n\nfn plain() {}\n\nmod tests {\n    #[test]\n    fn inside() {\n        assert!(true);\n    }\n}\n",
        ),
        (
            Language::Go,
            "package m\n\nfunc TestSum(t *testing.T) {\n\tif Sum(1, 2) != 3 {\n\t\tt.Fail()\n\t}\n}\n\nfunc helper() {}\n\nfunc (s *S) TestMethod(t *testing.T) {}\n",
        ),
        (
            Language::JavaScript,
            "import { test } from \"node:test\";\n\ntest(\"adds\", () => {\n  assert.equal(add(1, 1), 2);\n  test(\"inner\", () => {});\n});\n\nit('works', async () => {});\n\ndescribe(\"group\", () => {\n  test(\"grouped\", () => {});\n});\n\ntest.skip(\"skipped\", () => {});\n",
        ),
        (Language::TypeScript, "test(\"typed\", (): void => {\n  assert.ok(true);\n});\n"),
        (Language::Java, "class ShopTest {\n    @Test\n    void price() {}\n}\n"),
    ];
    let found: Vec<String> = table
        .iter()
        .map(|(language, code)| {
            let tests = find_tests(*language, code);
            let lines: Vec<String> = tests.iter().map(|t| format!("  {} = {:?}", t.name, t.text)).collect();
            format!("{language:?}:\n{}", lines.join("\n"))
        })
        .collect();
    expect_test::expect![[r##"
        Python:
          test_slow = "@pytest.mark.slow\ndef test_slow():\n    assert f()"
          test_inner = "def test_inner():\n        assert 1"
          test_price = "def test_price(self):\n        def test_nested():\n            pass\n        assert price()"
        Rust:
          adds = "#[test]\nfn adds() {\n    assert_eq!(add(1, 1), 2);\n}"
          waits = "#[tokio::test]\nasync fn waits() {\n    assert!(wait().await);\n}"
          inside = "#[test]\n    fn inside() {\n        assert!(true);\n    }"
        Go:
          TestSum = "func TestSum(t *testing.T) {\n\tif Sum(1, 2) != 3 {\n\t\tt.Fail()\n\t}\n}"
        JavaScript:
          "adds" = "test(\"adds\", () => {\n  assert.equal(add(1, 1), 2);\n  test(\"inner\", () => {});\n});"
          'works' = "it('works', async () => {});"
          "grouped" = "test(\"grouped\", () => {});"
        TypeScript:
          "typed" = "test(\"typed\", (): void => {\n  assert.ok(true);\n});"
        Java:
    "##]]
    .assert_eq(&found.join("\n"));
}
