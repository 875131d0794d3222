//! Reading the workspace's own files (test files, `pyproject.toml`, `Cargo.toml`, the modules
//! that define parameter types): only regular files that really lie inside a workspace folder,
//! at most [`MAX_FILE_BYTES`] each, and an open buffer's text before the disk's. Callers run on
//! a worker thread, never on the main loop.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Larger files are not read (a configuration or test file is far smaller).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The workspace as the test action sees it: its folders and the open buffers' texts.
#[derive(Clone, Debug, Default)]
pub struct ProjectFiles {
    folders: Vec<PathBuf>,
    open: Vec<(PathBuf, String)>,
}

impl ProjectFiles {
    pub fn new(folders: Vec<PathBuf>, open: Vec<(PathBuf, String)>) -> ProjectFiles {
        ProjectFiles { folders, open }
    }

    /// The text of `path`: the open buffer's, else the file's when it is a regular file inside
    /// a workspace folder (after resolving links) of at most 1 MiB.
    pub fn read(&self, path: &Path) -> Option<String> {
        if let Some((_, text)) = self.open.iter().find(|(open, _)| open == path) {
            return Some(text.clone());
        }
        let real = path.canonicalize().ok()?;
        let inside = self.folders.iter().filter_map(|f| f.canonicalize().ok()).any(|folder| real.starts_with(folder));
        if !inside {
            return None;
        }
        let file = std::fs::OpenOptions::new().read(true).custom_flags_nofollow().open(&real).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return None;
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES).read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Whether `path` is a regular file (or an open buffer) inside the workspace.
    pub fn is_file(&self, path: &Path) -> bool {
        self.open.iter().any(|(open, _)| open == path)
            || std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) && self.inside(path)
    }

    /// Whether `path` is a folder inside the workspace (not a link).
    pub fn is_dir(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) && self.inside(path)
    }

    fn inside(&self, path: &Path) -> bool {
        self.folders.iter().any(|folder| path.starts_with(folder))
    }

    /// Names of the entries of a workspace folder (at most 1000), for naming conventions.
    pub fn list(&self, folder: &Path) -> Vec<String> {
        if !self.is_dir(folder) {
            return Vec::new();
        }
        std::fs::read_dir(folder)
            .map(|entries| entries.flatten().take(1000).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    /// Opening a FIFO or device never blocks (`O_NONBLOCK`); the type check follows the open.
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_small_regular_files_inside_the_workspace() {
        let workspace = crate::sandbox::PrivateDir::new("nib-files").unwrap();
        let root = workspace.path().to_path_buf();
        std::fs::write(root.join("pyproject.toml"), "[tool.pytest.ini_options]\n").unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.toml")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("outside.toml")).unwrap();
        std::fs::write(root.join("big.toml"), vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let files = ProjectFiles::new(vec![root.clone()], vec![(root.join("open.py"), "x = 1\n".into())]);
        assert_eq!(files.read(&root.join("pyproject.toml")).as_deref(), Some("[tool.pytest.ini_options]\n"));
        assert_eq!(files.read(&root.join("zero.toml")), None, "a device behind a link");
        assert_eq!(files.read(&root.join("outside.toml")), None, "a link leading outside");
        assert_eq!(files.read(&root.join("big.toml")), None, "over 1 MiB");
        assert_eq!(files.read(Path::new("/etc/hostname")), None, "outside the workspace");
        assert_eq!(files.read(&root.join("open.py")).as_deref(), Some("x = 1\n"), "an unsaved buffer");
    }
}
