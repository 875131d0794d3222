//! Finding and loading the ONNX Runtime shared library. `ort` panics when asked to load a
//! library that is not there, so every candidate is checked here first and every failure
//! becomes a message that says how to fix it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;

use super::EngineError;

/// The oldest ONNX Runtime whose C API `ort` (built with `api-31`) can use.
const MIN_MINOR_VERSION: u32 = 31;

/// ONNX Runtime allows one environment per process; it lives as long as the process.
static ENVIRONMENT: OnceLock<(PathBuf, Environment)> = OnceLock::new();
/// Held while the environment is made: two threads that load models at once (the test
/// binaries do) would otherwise both make one, and ONNX Runtime refuses the second.
static MAKING: Mutex<()> = Mutex::new(());

const FIX: &str = "run `make setup`, or set `nib.onnxRuntimePath` (or ORT_DYLIB_PATH) to libonnxruntime.so from the \
                   onnxruntime 1.31 wheel on PyPI";

/// The process-wide ONNX Runtime environment, loading the library on first use. Once loaded,
/// a library cannot be swapped for another: a different `configured` path then only logs.
pub fn environment(configured: Option<&Path>) -> Result<&'static Environment, EngineError> {
    if let Some(environment) = loaded(configured) {
        return Ok(environment);
    }
    let _making = MAKING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(environment) = loaded(configured) {
        return Ok(environment);
    }
    let library = find_library(configured)?;
    check_library(&library)?;
    let builder = ort::init_from(&library).map_err(|error| {
        EngineError::Runtime(format!("cannot load onnxruntime from {}: {error}; {FIX}", library.display()))
    })?;
    let environment = builder
        .with_name("nib")
        .build()
        .map_err(|error| EngineError::Runtime(format!("cannot start onnxruntime: {error}")))?;
    tracing::info!("onnxruntime loaded from {}", library.display());
    Ok(&ENVIRONMENT.get_or_init(|| (library, environment)).1)
}

/// The environment if it is made; a `configured` library other than the loaded one is logged.
fn loaded(configured: Option<&Path>) -> Option<&'static Environment> {
    let (loaded, environment) = ENVIRONMENT.get()?;
    if let Some(path) = configured.filter(|path| *path != loaded) {
        tracing::warn!(
            "onnxruntime is already loaded from {}; restart nib to use {}",
            loaded.display(),
            path.display()
        );
    }
    Some(environment)
}

/// The library to load: the setting, then `ORT_DYLIB_PATH`, then nib's own virtualenv, then
/// other Python installations.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let roots = site_packages_roots();
    for root in &roots {
        if let Some(found) = library_in_site_packages(root) {
            return Ok(found);
        }
    }
    let looked: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(EngineError::Runtime(format!(
        "onnxruntime library not found (looked in ORT_DYLIB_PATH and {}); {FIX}",
        if looked.is_empty() { "no Python installation".to_string() } else { looked.join(", ") }
    )))
}

/// Python `site-packages` folders to search, nib's own virtualenv first.
fn site_packages_roots() -> Vec<PathBuf> {
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(home) = crate::paths::project_root() {
        venvs.push(home.join(".venv"));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(PathBuf::from(venv));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if let Some(home) = &home {
        venvs.push(home.join(".local"));
        if let Ok(versions) = std::fs::read_dir(home.join(".pyenv/versions")) {
            venvs.extend(versions.flatten().map(|entry| entry.path()));
        }
    }
    venvs.extend(["/usr/local", "/usr"].map(PathBuf::from));
    let mut roots = Vec::new();
    for prefix in venvs {
        let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("python3")))
            .collect();
        pythons.sort();
        for python in pythons {
            roots.push(python.join("site-packages"));
            roots.push(python.join("dist-packages"));
        }
    }
    roots.retain(|root| root.is_dir());
    roots
}

fn library_in_site_packages(root: &Path) -> Option<PathBuf> {
    let capi = root.join("onnxruntime/capi");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("libonnxruntime.so")))
        .collect();
    // Prefer the fully versioned name (`libonnxruntime.so.1.31.1`), which tells the version.
    candidates.sort_by_key(|path| std::cmp::Reverse(path.as_os_str().len()));
    candidates.into_iter().next()
}

/// Checks that `path` is a loadable ONNX Runtime before handing it to `ort`.
pub fn check_library(path: &Path) -> Result<(), EngineError> {
    let mut magic = [0u8; 4];
    let readable = std::fs::File::open(path).and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic));
    if let Err(error) = readable {
        return Err(EngineError::Runtime(format!(
            "cannot read onnxruntime library {}: {error}; {FIX}",
            path.display()
        )));
    }
    if &magic != b"\x7fELF" {
        return Err(EngineError::Runtime(format!("{} is not a shared library; {FIX}", path.display())));
    }
    if let Some((major, minor)) = version_from_file_name(path)
        && (major != 1 || minor < MIN_MINOR_VERSION)
    {
        return Err(EngineError::Runtime(format!(
            "{} is onnxruntime {major}.{minor}, but nib needs 1.{MIN_MINOR_VERSION} or newer; {FIX}",
            path.display()
        )));
    }
    Ok(())
}

/// `libonnxruntime.so.1.31.1` → `(1, 31)`.
fn version_from_file_name(path: &Path) -> Option<(u32, u32)> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let version = name.split_once(".so.")?.1;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_from_file_names() {
        assert_eq!(version_from_file_name(Path::new("/x/libonnxruntime.so.1.31.1")), Some((1, 31)));
        assert_eq!(version_from_file_name(Path::new("/x/libonnxruntime.so")), None);
    }

    #[test]
    fn rejects_missing_foreign_and_old_libraries() {
        let dir = std::env::temp_dir().join(format!("nib-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = check_library(&dir.join("nope.so")).unwrap_err().to_string();
        assert!(missing.contains("cannot read") && missing.contains("make setup"), "{missing}");
        let text_file = dir.join("libonnxruntime.so.1.31.1");
        std::fs::write(&text_file, "not a library").unwrap();
        assert!(check_library(&text_file).unwrap_err().to_string().contains("not a shared library"));
        let old = dir.join("libonnxruntime.so.1.30.0");
        std::fs::write(&old, b"\x7fELF....").unwrap();
        assert!(check_library(&old).unwrap_err().to_string().contains("needs 1.31 or newer"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
