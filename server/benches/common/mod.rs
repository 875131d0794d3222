//! What the benches share: the repository's own source as input text.

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Real Python source of this repository (the model converter), concatenated in a fixed order.
pub fn python_sources() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("models/nib_convert"))
        .expect("models/nib_convert")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
        .collect();
    files.sort();
    files.push(repo().join("models/convert.py"));
    files.iter().map(|path| std::fs::read_to_string(path).expect("source file")).collect::<Vec<_>>().join("\n")
}
