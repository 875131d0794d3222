//! Where nib finds its own files: the checkout it was built in (for the default model and the
//! project's Python virtualenv) and the per-user data folder for installed copies.

use std::path::PathBuf;

/// The name of the default model's directory under `models/`.
pub const DEFAULT_MODEL_DIR_NAME: &str = "smollm2-135m-instruct";

/// The nib checkout: `NIB_HOME` when set, else the nearest ancestor of the executable that
/// looks like one (`target/release/nib` lives two levels below it).
pub fn project_root() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("NIB_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("server/Cargo.toml").is_file() && dir.join("models").is_dir())
        .map(PathBuf::from)
}

/// Per-user data folder for installed copies: `$XDG_DATA_HOME/nib` or `~/.local/share/nib`.
pub fn user_data_dir() -> Option<PathBuf> {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(data).join("nib"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/nib"))
}

/// Per-user cache folder for build caches of test runs (`$XDG_CACHE_HOME/nib` or
/// `~/.cache/nib`), made with mode 0700 when missing.
pub fn user_cache_dir() -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let folder = base.join("nib");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&folder).ok()?;
    Some(folder)
}

/// Candidate locations of the default model, in the order they are tried.
pub fn default_model_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("NIB_MODEL").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(path));
    }
    if let Some(root) = project_root() {
        candidates.push(root.join("models").join(DEFAULT_MODEL_DIR_NAME));
    }
    if let Some(data) = user_data_dir() {
        candidates.push(data.join("models").join(DEFAULT_MODEL_DIR_NAME));
    }
    candidates
}
