//! Which files of a workspace the index reads: source files in the languages nib knows, walked
//! from each workspace folder while honouring `.gitignore` files (and `.git/info/exclude`),
//! skipping version-control, vendor and build folders, and files that are large, binary or
//! generated.

use std::fs;
use std::path::{Path, PathBuf};

use crate::syntax::Language;

/// Folders never indexed: version control, dependencies, virtual environments, build output
/// and caches. Their code is not the user's, and they are often larger than the project.
const SKIPPED_FOLDERS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    "bower_components",
    "vendor",
    "third_party",
    "target",
    "build",
    "dist",
    "out",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "site-packages",
    ".next",
    ".cache",
    "coverage",
];

/// Files larger than this are skipped: they are data or generated more often than written.
pub(crate) const MAX_FILE_BYTES: u64 = 256 * 1024;

/// One `.gitignore` pattern, relative to the folder of the file that holds it.
#[derive(Clone, Debug)]
struct Pattern {
    glob: Vec<u8>,
    negated: bool,
    only_folders: bool,
    /// Matched against the whole relative path (the pattern had a `/` before its end) rather
    /// than against the last component.
    anchored: bool,
}

/// The ignore rules in force in one folder: its own `.gitignore` on top of its parents'.
#[derive(Clone, Debug, Default)]
pub(crate) struct IgnoreRules {
    /// (folder the patterns are relative to, patterns), outermost first.
    layers: Vec<(PathBuf, Vec<Pattern>)>,
}

impl IgnoreRules {
    /// The rules for `folder`: these rules plus the folder's own `.gitignore`, if any.
    pub(crate) fn enter(&self, folder: &Path) -> IgnoreRules {
        let mut rules = self.clone();
        for file in [folder.join(".gitignore"), folder.join(".git/info/exclude")] {
            if let Ok(text) = fs::read_to_string(&file) {
                let patterns: Vec<Pattern> = text.lines().filter_map(parse_pattern).collect();
                if !patterns.is_empty() {
                    rules.layers.push((folder.to_path_buf(), patterns));
                }
            }
        }
        rules
    }

    /// Whether `path` is ignored; the last matching pattern decides, as in git.
    pub(crate) fn is_ignored(&self, path: &Path, is_folder: bool) -> bool {
        let mut ignored = false;
        for (base, patterns) in &self.layers {
            let Ok(relative) = path.strip_prefix(base) else {
                continue;
            };
            let relative = relative.to_string_lossy();
            let name = relative.rsplit('/').next().unwrap_or_default();
            for pattern in patterns {
                if pattern.only_folders && !is_folder {
                    continue;
                }
                let subject = if pattern.anchored { relative.as_bytes() } else { name.as_bytes() };
                if glob_matches(&pattern.glob, subject) {
                    ignored = !pattern.negated;
                }
            }
        }
        ignored
    }
}

fn parse_pattern(line: &str) -> Option<Pattern> {
    let line = line.trim_end();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (negated, line) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line.strip_prefix('\\').unwrap_or(line)),
    };
    let (only_folders, line) = match line.strip_suffix('/') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let anchored = line.contains('/');
    let glob = line.strip_prefix('/').unwrap_or(line);
    // `**/name` matches `name` at any depth, like a pattern without a slash.
    let (anchored, glob) = match glob.strip_prefix("**/") {
        Some(rest) if !rest.contains('/') => (false, rest),
        _ => (anchored, glob),
    };
    (!glob.is_empty()).then(|| Pattern { glob: glob.as_bytes().to_vec(), negated, only_folders, anchored })
}

/// Git's wildcard matching: `*` and `?` stop at `/`, `**` crosses it, `[...]` is a class.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    match glob.first() {
        None => text.is_empty(),
        Some(b'*') if glob.get(1) == Some(&b'*') => {
            let rest = glob[2..].strip_prefix(b"/").unwrap_or(&glob[2..]);
            (0..=text.len()).any(|skip| glob_matches(rest, &text[skip..]))
        }
        Some(b'*') => {
            let rest = &glob[1..];
            let limit = text.iter().position(|b| *b == b'/').unwrap_or(text.len());
            (0..=limit).any(|skip| glob_matches(rest, &text[skip..]))
        }
        Some(b'?') => text.first().is_some_and(|b| *b != b'/') && glob_matches(&glob[1..], &text[1..]),
        Some(b'[') => match (glob.iter().position(|b| *b == b']'), text.first()) {
            (Some(end), Some(&byte)) if end > 1 => {
                let class = &glob[1..end];
                let (negated, class) = match class.first() {
                    Some(b'!' | b'^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut found = false;
                let mut index = 0;
                while index < class.len() {
                    if index + 2 < class.len() && class[index + 1] == b'-' {
                        found |= (class[index]..=class[index + 2]).contains(&byte);
                        index += 3;
                    } else {
                        found |= class[index] == byte;
                        index += 1;
                    }
                }
                found != negated && glob_matches(&glob[end + 1..], &text[1..])
            }
            _ => text.first() == Some(&b'[') && glob_matches(&glob[1..], &text[1..]),
        },
        Some(&byte) => text.first() == Some(&byte) && glob_matches(&glob[1..], &text[1..]),
    }
}

/// Why a file is left out of the index, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    Language,
    Large,
    Binary,
    Generated,
}

/// Whether a file's name says it is generated or minified.
fn named_as_generated(name: &str) -> bool {
    let generated_suffixes = [".min.js", ".bundle.js", "_pb2.py", "_pb2_grpc.py", ".pb.go", ".d.ts", "_generated.go"];
    generated_suffixes.iter().any(|suffix| name.ends_with(suffix))
}

/// Whether the start of a file says it is generated (`// Code generated ... DO NOT EDIT.`,
/// `# @generated`) or is not text.
pub(crate) fn check_contents(head: &[u8]) -> Result<(), Skip> {
    if head.contains(&0) {
        return Err(Skip::Binary);
    }
    let head = String::from_utf8_lossy(&head[..head.len().min(1024)]);
    let generated = head.lines().take(5).any(|line| {
        let line = line.to_ascii_lowercase();
        line.contains("do not edit") || line.contains("@generated") || line.contains("autogenerated")
    });
    if generated { Err(Skip::Generated) } else { Ok(()) }
}

/// The language of an indexable file, or why it is skipped (contents are checked when read).
pub(crate) fn classify(path: &Path, size: u64) -> Result<Language, Skip> {
    let name = path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let language = Language::from_path(&name).ok_or(Skip::Language)?;
    if named_as_generated(&name) {
        return Err(Skip::Generated);
    }
    if size > MAX_FILE_BYTES {
        return Err(Skip::Large);
    }
    Ok(language)
}

/// A file the walk found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) path: PathBuf,
    pub(crate) language: Language,
}

/// Whether a folder is skipped by name.
pub(crate) fn is_skipped_folder(name: &str) -> bool {
    SKIPPED_FOLDERS.contains(&name) || name.ends_with(".egg-info")
}

/// Whether `path` (a file inside `root`) would be walked: no skipped folder on the way and no
/// ignore rule matching it or a folder above it.
pub(crate) fn is_indexable(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    let mut rules = IgnoreRules::default().enter(root);
    let mut folder = root.to_path_buf();
    let components: Vec<_> = relative.components().collect();
    for (index, component) in components.iter().enumerate() {
        let name = component.as_os_str().to_string_lossy();
        let is_last = index + 1 == components.len();
        folder.push(component);
        if !is_last && is_skipped_folder(&name) || rules.is_ignored(&folder, !is_last) {
            return false;
        }
        if !is_last {
            rules = rules.enter(&folder);
        }
    }
    true
}

/// Every indexable file under `root`, at most `limit`, in a stable order (sorted per folder).
/// Unreadable folders are skipped silently: they are not the user's code either.
pub(crate) fn walk(root: &Path, limit: usize) -> Vec<Found> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), IgnoreRules::default().enter(root))];
    while let Some((folder, rules)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|entry| entry.file_name());
        let mut subfolders = Vec::new();
        for entry in entries {
            let path = entry.path();
            // Symbolic links are not followed: they can leave the workspace or loop.
            let Ok(kind) = entry.file_type() else { continue };
            let name = entry.file_name().to_string_lossy().to_string();
            if kind.is_dir() {
                if !is_skipped_folder(&name) && !rules.is_ignored(&path, true) {
                    subfolders.push(path);
                }
            } else if kind.is_file() && !rules.is_ignored(&path, false) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                if let Ok(language) = classify(&path, size) {
                    found.push(Found { path, language });
                    if found.len() >= limit {
                        return found;
                    }
                }
            }
        }
        for subfolder in subfolders.into_iter().rev() {
            let rules = rules.enter(&subfolder);
            stack.push((subfolder, rules));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str, is_folder: bool) -> bool {
        let rules = IgnoreRules { layers: vec![(PathBuf::from("/r"), parse_pattern(pattern).into_iter().collect())] };
        rules.is_ignored(&Path::new("/r").join(path), is_folder)
    }

    #[test]
    fn gitignore_patterns_match_as_git_does() {
        let cases = [
            ("*.py", "a/b.py", false, true),
            ("*.py", "a/b.pyc", false, false),
            ("/build", "build", true, true),
            ("/build", "a/build", true, false),
            ("build/", "a/build", true, true),
            ("build/", "a/build", false, false),
            ("docs/*.py", "docs/conf.py", false, true),
            ("docs/*.py", "docs/x/conf.py", false, false),
            ("docs/**/*.py", "docs/x/y/conf.py", false, true),
            ("**/gen", "a/b/gen", true, true),
            ("gen_[0-9].go", "gen_7.go", false, true),
            ("gen_[!0-9].go", "gen_7.go", false, false),
            ("file?.rs", "file1.rs", false, true),
            ("# comment", "# comment", false, false),
        ];
        for (pattern, path, is_folder, expected) in cases {
            assert_eq!(matches(pattern, path, is_folder), expected, "{pattern} vs {path}");
        }
    }

    #[test]
    fn the_last_matching_pattern_wins() {
        let patterns = ["*.py", "!keep.py"].iter().filter_map(|line| parse_pattern(line)).collect();
        let rules = IgnoreRules { layers: vec![(PathBuf::from("/r"), patterns)] };
        assert!(rules.is_ignored(Path::new("/r/drop.py"), false));
        assert!(!rules.is_ignored(Path::new("/r/keep.py"), false));
    }

    #[test]
    fn the_walk_skips_ignored_vendor_large_binary_and_generated_files() {
        let root = std::env::temp_dir().join(format!("nib-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let write = |path: &str, content: &[u8]| {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        };
        write(".gitignore", b"ignored/\n*.tmp.py\n");
        write("pkg/core.py", b"def f():\n    pass\n");
        write("pkg/.gitignore", b"local.py\n");
        write("pkg/local.py", b"x = 1\n");
        write("pkg/scratch.tmp.py", b"x = 1\n");
        write("ignored/a.py", b"x = 1\n");
        write("node_modules/lib/index.js", b"x = 1\n");
        write("target/debug/build.rs", b"fn main() {}\n");
        write("src/main.rs", b"fn main() {}\n");
        write("src/big.rs", &vec![b'a'; MAX_FILE_BYTES as usize + 1]);
        write("web/app.min.js", b"x=1\n");
        write("web/app.ts", b"export const x = 1;\n");
        write("README.md", b"# readme\n");
        let found: Vec<String> = walk(&root, 100)
            .into_iter()
            .map(|found| found.path.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(found, ["pkg/core.py", "src/main.rs", "web/app.ts"]);
        assert!(is_indexable(&root, &root.join("pkg/core.py")));
        assert!(!is_indexable(&root, &root.join("pkg/local.py")));
        assert!(!is_indexable(&root, &root.join("node_modules/lib/index.js")));
        assert_eq!(walk(&root, 2).len(), 2, "the limit bounds the walk");
        assert_eq!(check_contents(b"// Code generated by protoc. DO NOT EDIT.\npackage p\n"), Err(Skip::Generated));
        assert_eq!(check_contents(b"\x00\x01binary"), Err(Skip::Binary));
        assert_eq!(check_contents(b"def f():\n    pass\n"), Ok(()));
        fs::remove_dir_all(&root).unwrap();
    }
}
