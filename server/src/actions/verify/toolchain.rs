//! Finding the programs that run generated tests. Python: `nib.python.interpreter`, then the
//! workspace's `.venv` or `venv`, then `$VIRTUAL_ENV`, then `python3` on `PATH`. `node` and
//! `cargo` come from `PATH`; `go` from `PATH`, then Debian's `golang-1.19-go` folder.
//! TypeScript runs on `node` with the project's own compiler: the `typescript` package (or the
//! `esbuild` that tsx brings) in the `node_modules` nearest the file. Only file metadata is
//! read; nothing is run here.

use std::path::{Path, PathBuf};

/// A program that runs a language's tests, and where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    pub program: PathBuf,
    /// "nib.python.interpreter", "the workspace's .venv", "PATH", …
    pub source: &'static str,
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|folder| folder.join(name)).find(|candidate| executable(candidate))
}

/// The Python interpreter for tests in `root`.
pub fn python(configured: Option<&Path>, root: &Path) -> Option<Toolchain> {
    if let Some(configured) = configured {
        // A setting that names a missing interpreter is not silently replaced by another.
        return executable(configured)
            .then(|| Toolchain { program: configured.to_path_buf(), source: "nib.python.interpreter" });
    }
    for (folder, source) in [(".venv", "the workspace's .venv"), ("venv", "the workspace's venv")] {
        let candidate = root.join(folder).join("bin/python");
        if executable(&candidate) {
            return Some(Toolchain { program: candidate, source });
        }
    }
    if let Some(environment) = std::env::var_os("VIRTUAL_ENV") {
        let candidate = PathBuf::from(environment).join("bin/python");
        if executable(&candidate) {
            return Some(Toolchain { program: candidate, source: "$VIRTUAL_ENV" });
        }
    }
    on_path("python3").map(|program| Toolchain { program, source: "PATH" })
}

/// `node` on `PATH`.
pub fn node() -> Option<Toolchain> {
    on_path("node").map(|program| Toolchain { program, source: "PATH" })
}

/// Where Debian's `golang-1.19-go` package puts `go` (not on `PATH` by itself).
pub const DEBIAN_GO: &str = "/usr/lib/go-1.19/bin/go";

/// `go` on `PATH`, else Debian's package folder.
pub fn go() -> Option<Toolchain> {
    on_path("go").map(|program| Toolchain { program, source: "PATH" }).or_else(|| {
        executable(Path::new(DEBIAN_GO))
            .then(|| Toolchain { program: DEBIAN_GO.into(), source: "Debian's golang-1.19-go" })
    })
}

/// `cargo` on `PATH`.
pub fn cargo() -> Option<Toolchain> {
    on_path("cargo").map(|program| Toolchain { program, source: "PATH" })
}

/// A project's own TypeScript compiler, which nib's module hooks load inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiler {
    /// "typescript" or "esbuild".
    pub kind: &'static str,
    /// The file node loads it from.
    pub path: PathBuf,
}

/// The compiler in the `node_modules` nearest `folder`, looking up to `root`: `typescript`
/// first, then `esbuild` (what tsx compiles with).
pub fn typescript_compiler(folder: &Path, root: &Path) -> Option<Compiler> {
    let inside = if folder.starts_with(root) { folder } else { root };
    inside.ancestors().take_while(|f| f.starts_with(root)).find_map(|folder| {
        [("typescript", "typescript/lib/typescript.js"), ("esbuild", "esbuild/lib/main.js")]
            .into_iter()
            .map(|(kind, file)| Compiler { kind, path: folder.join("node_modules").join(file) })
            .find(|compiler| compiler.path.is_file())
    })
}

/// What verification would use, per language, for `:checkhealth nib` and the VS Code status.
pub fn summary(python_interpreter: Option<&Path>, root: &Path) -> serde_json::Value {
    let describe = |found: Option<Toolchain>| match found {
        Some(toolchain) => serde_json::json!({ "program": toolchain.program, "source": toolchain.source }),
        None => serde_json::Value::Null,
    };
    serde_json::json!({
        "python": describe(python(python_interpreter, root)),
        "node": describe(node()),
        "typescript": typescript_compiler(root, root)
            .map_or(serde_json::Value::Null, |c| serde_json::json!({ "program": c.path, "source": c.kind })),
        "go": describe(go()),
        "cargo": describe(cargo()),
        // Known once a test run has probed it: the status starts no program.
        "isolation": crate::sandbox::isolation_probed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_prefers_the_setting_then_the_workspace_venv() {
        let workspace = crate::sandbox::PrivateDir::new("nib-toolchain").unwrap();
        let root = workspace.path();
        let venv_python = root.join(".venv/bin/python");
        std::fs::create_dir_all(venv_python.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/sh", &venv_python).unwrap();
        assert_eq!(python(None, root).unwrap(), Toolchain { program: venv_python, source: "the workspace's .venv" });
        let configured = python(Some(Path::new("/bin/sh")), root).unwrap();
        assert_eq!(configured.source, "nib.python.interpreter");
        assert_eq!(python(Some(Path::new("/nonexistent/python")), root), None, "no silent replacement");
    }

    #[test]
    fn typescript_comes_from_the_nearest_node_modules_inside_the_workspace() {
        let workspace = crate::sandbox::PrivateDir::new("nib-toolchain").unwrap();
        let root = workspace.path().join("project");
        let package = root.join("packages/app/src");
        std::fs::create_dir_all(&package).unwrap();
        assert_eq!(typescript_compiler(&package, &root), None);
        let place = |folder: &Path, file: &str| {
            let path = folder.join("node_modules").join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "").unwrap();
            path
        };
        // Outside the workspace folder does not count.
        place(workspace.path(), "typescript/lib/typescript.js");
        assert_eq!(typescript_compiler(&package, &root), None);
        let esbuild = place(&root, "esbuild/lib/main.js");
        assert_eq!(typescript_compiler(&package, &root), Some(Compiler { kind: "esbuild", path: esbuild }));
        let nearest = place(&root.join("packages/app"), "typescript/lib/typescript.js");
        assert_eq!(typescript_compiler(&package, &root), Some(Compiler { kind: "typescript", path: nearest }));
    }
}
