//! Whether a file nib is about to edit (or create) lies in a workspace folder, decided without
//! trusting symbolic links: a repository may ship links to anywhere, including links to files
//! that do not exist yet, which `canonicalize` cannot resolve.
//!
//! The path is walked component by component from the workspace folder down with `lstat`,
//! so no link is followed unseen: a link on the way must resolve to a folder inside the
//! workspace, the file itself must not be a link (a client creating or writing it would follow
//! it) and, when it exists, must be a regular file. Callers check when the action starts and
//! again just before the edit is delivered (docs/security.md).

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// `Ok(())` when `file` may be created or appended to by an edit; otherwise why not, as a
/// sentence that names the path.
pub fn check(file: &Path, folders: &[PathBuf]) -> Result<(), String> {
    let outside = || format!("{} is outside the workspace folders; nothing was written", file.display());
    if !file.is_absolute() || file.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return Err(outside());
    }
    let (root, below) = folders
        .iter()
        .flat_map(|folder| [Some(folder.clone()), folder.canonicalize().ok()])
        .flatten()
        .find_map(|root| Some((root.clone(), file.strip_prefix(&root).ok()?.to_path_buf())))
        .ok_or_else(outside)?;
    let real_roots: Vec<PathBuf> = folders.iter().filter_map(|folder| folder.canonicalize().ok()).collect();
    let components: Vec<Component> = below.components().collect();
    if components.is_empty() {
        return Err(outside());
    }
    let mut current = root;
    for (index, component) in components.iter().enumerate() {
        current.push(component);
        let last = index + 1 == components.len();
        let metadata = match std::fs::symlink_metadata(&current) {
            Ok(metadata) => metadata,
            // Nothing exists from here on: the client creates it inside what was checked.
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(format!("cannot check {}: {error}; nothing was written", current.display())),
        };
        if metadata.file_type().is_symlink() {
            if last {
                return Err(format!(
                    "{} is a symbolic link (an edit would be written wherever it points); nothing was written",
                    file.display()
                ));
            }
            let inside = current
                .canonicalize()
                .is_ok_and(|target| target.is_dir() && real_roots.iter().any(|root| target.starts_with(root)));
            if !inside {
                return Err(format!(
                    "{} leads outside the workspace folders (through the symbolic link {}); nothing was written",
                    file.display(),
                    current.display()
                ));
            }
        } else if last && !metadata.is_file() {
            return Err(format!("{} is not a regular file; nothing was written", file.display()));
        } else if !last && !metadata.is_dir() {
            return Err(format!("{} is not a folder; nothing was written", current.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nib-guard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ws/tests")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        Scratch(dir)
    }

    #[test]
    fn files_inside_are_allowed_existing_or_not() {
        let dir = scratch("inside");
        let ws = dir.0.join("ws");
        std::fs::write(ws.join("tests/test_a.py"), "").unwrap();
        for file in ["tests/test_a.py", "tests/test_new.py", "new/deeper/test_b.py"] {
            assert_eq!(check(&ws.join(file), std::slice::from_ref(&ws)), Ok(()), "{file}");
        }
        // A link to a folder inside the workspace is a folder inside the workspace.
        symlink(ws.join("tests"), ws.join("t")).unwrap();
        assert_eq!(check(&ws.join("t/test_c.py"), std::slice::from_ref(&ws)), Ok(()));
    }

    #[test]
    fn a_dangling_link_to_a_file_outside_is_refused() {
        let dir = scratch("dangling");
        let ws = dir.0.join("ws");
        // The case `canonicalize` cannot see: the link's target does not exist yet.
        symlink(dir.0.join("outside/not-yet.py"), ws.join("tests/test_x.py")).unwrap();
        let refused = check(&ws.join("tests/test_x.py"), std::slice::from_ref(&ws)).unwrap_err();
        assert!(refused.contains("is a symbolic link"), "{refused}");
        // A link as the last component is refused even when it points inside.
        std::fs::write(ws.join("real.py"), "").unwrap();
        symlink(ws.join("real.py"), ws.join("tests/test_y.py")).unwrap();
        assert!(check(&ws.join("tests/test_y.py"), std::slice::from_ref(&ws)).is_err());
    }

    #[test]
    fn a_link_on_the_way_out_is_refused() {
        let dir = scratch("folder-link");
        let ws = dir.0.join("ws");
        symlink(dir.0.join("outside"), ws.join("escape")).unwrap();
        symlink(dir.0.join("nowhere"), ws.join("gone")).unwrap();
        for file in ["escape/test_a.py", "gone/test_a.py"] {
            let refused = check(&ws.join(file), std::slice::from_ref(&ws)).unwrap_err();
            assert!(refused.contains("leads outside"), "{file}: {refused}");
        }
    }

    #[test]
    fn paths_outside_or_not_regular_are_refused() {
        let dir = scratch("outside");
        let ws = dir.0.join("ws");
        for file in
            [dir.0.join("outside/test_a.py"), ws.join("../outside/test_a.py"), ws.clone(), PathBuf::from("tests/x.py")]
        {
            assert!(check(&file, std::slice::from_ref(&ws)).is_err(), "{}", file.display());
        }
        assert!(check(&ws.join("tests"), std::slice::from_ref(&ws)).unwrap_err().contains("not a regular file"));
        std::fs::write(ws.join("file"), "").unwrap();
        assert!(check(&ws.join("file/test_a.py"), std::slice::from_ref(&ws)).unwrap_err().contains("not a folder"));
        assert!(check(&ws.join("tests/test_a.py"), &[]).is_err(), "no workspace folder, no edit");
    }
}
