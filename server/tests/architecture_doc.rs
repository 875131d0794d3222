//! ARCHITECTURE.md stays true: its code map names every source file, and every test an
//! invariant names exists. Plain text checks, no server.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The text of the `## <title>` section, up to the next `## ` heading.
fn section(document: &str, title: &str) -> String {
    let start = document.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title:?}"));
    let body = &document[start + title.len() + 5..];
    body[..body.find("\n## ").unwrap_or(body.len())].to_string()
}

/// Every file below `folder`, recursively.
fn files_below(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The spans written in backticks.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn architecture() -> String {
    std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).unwrap()
}

#[test]
fn the_code_map_names_every_source_file() {
    let map = section(&architecture(), "Code map");
    let spans = code_spans(&map);
    let named = |name: &str| spans.iter().any(|span| span.split('/').any(|part| part == name));
    let missing: Vec<_> = files_below(&repo_root().join("server/src"))
        .into_iter()
        .filter(|file| {
            let name = file.file_name().unwrap().to_str().unwrap();
            let stem = file.file_stem().unwrap().to_str().unwrap();
            let folder = file.parent().unwrap().file_name().unwrap().to_str().unwrap();
            match name {
                "mod.rs" => !named(folder),
                _ => !named(name) && !named(stem),
            }
        })
        .collect();
    assert!(missing.is_empty(), "files the code map does not name: {missing:?}");
}

/// The names a test can be found by: `fn name`, `mod name` or a file `name.rs`.
fn defined_somewhere(name: &str, sources: &[(PathBuf, String)]) -> bool {
    sources.iter().any(|(path, text)| {
        path.file_stem().is_some_and(|stem| stem == name)
            || text.contains(&format!("fn {name}("))
            || text.contains(&format!("mod {name} "))
            || text.contains(&format!("mod {name};"))
    })
}

#[test]
fn every_test_an_invariant_names_exists() {
    let invariants = section(&architecture(), "Invariants");
    let root = repo_root().join("server");
    let sources: Vec<_> = files_below(&root)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    let is_path = |span: &str| {
        span.split("::").all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
    };
    let referenced: Vec<_> = code_spans(&invariants)
        .into_iter()
        .filter(|span| is_path(span) && (span.contains("::") || span.matches('_').count() >= 3))
        .collect();
    assert!(referenced.len() > 20, "too few test names found: {referenced:?}");
    let missing: Vec<_> =
        referenced.into_iter().filter(|span| !defined_somewhere(span.rsplit("::").next().unwrap(), &sources)).collect();
    assert!(missing.is_empty(), "invariants name tests that do not exist: {missing:?}");
}

/// The non-test part of a source file: up to its inline `#[cfg(test)] mod … {`.
fn non_test_code(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "#[cfg(test)]" {
            let next = text[offset + line.len()..].lines().next().unwrap_or("");
            if next.starts_with("mod ") && next.trim_end().ends_with('{') {
                return &text[..offset];
            }
        }
        offset += line.len();
    }
    text
}

/// The module path of a file under `server/src` (`engine/mod.rs` is `engine`).
fn module_path(file: &Path) -> String {
    let relative = file.strip_prefix(repo_root().join("server/src")).unwrap().with_extension("");
    let parts: Vec<_> = relative.iter().map(|part| part.to_str().unwrap()).filter(|part| *part != "mod").collect();
    parts.join("::")
}

#[test]
fn every_lock_is_one_the_invariants_name() {
    let invariants = section(&architecture(), "Invariants");
    let locks = invariants
        .split("\n- ")
        .find(|bullet| bullet.starts_with("The locks that remain"))
        .expect("an invariant that begins \"The locks that remain\"");
    let named = code_spans(locks);
    let unnamed: Vec<_> = files_below(&repo_root().join("server/src"))
        .into_iter()
        .filter(|file| file.extension().is_some_and(|e| e == "rs"))
        .filter(|file| !file.file_stem().unwrap().to_str().unwrap().ends_with("tests"))
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let code = non_test_code(&text);
            code.contains("Mutex<") || code.contains("RwLock<") || code.contains("Mutex::new")
        })
        .map(|file| module_path(&file))
        .filter(|module| !named.contains(&module.as_str()))
        .collect();
    assert!(unnamed.is_empty(), "modules with a lock the locks invariant does not name and justify: {unnamed:?}");
}

#[test]
fn no_code_compares_a_language_instead_of_matching_it() {
    // `x == Language::Go`, `x != crate::syntax::Language::Go`, `Language::Go == x`, or
    // `matches!(x, Language::Go | …)`; a match arm's guard (`Language::Go if a == b =>`) is fine.
    let is_language = |text: &str| {
        text.trim_start().trim_start_matches("crate::").trim_start_matches("syntax::").starts_with("Language::")
    };
    let compares = |line: &str| {
        let comparison = ["==", "!="].iter().any(|operator| {
            line.match_indices(operator).any(|(at, _)| {
                let before = line[..at].trim_end();
                let operand_before = before.rsplit([' ', '(', '!', '&', '|']).next().unwrap_or("");
                is_language(&line[at + 2..]) || is_language(operand_before)
            })
        });
        let matched = line
            .split("matches!(")
            .skip(1)
            .any(|rest| rest.split_once(',').is_some_and(|(_, pattern)| is_language(pattern)));
        comparison || matched
    };
    let mut found = Vec::new();
    for file in files_below(&repo_root().join("server/src")) {
        if file.extension().is_none_or(|e| e != "rs") || file.file_name().unwrap() == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in non_test_code(&text).lines().enumerate() {
            if compares(line) && !line.trim_start().starts_with("//") {
                found.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "a language is matched exhaustively, never compared (ARCHITECTURE.md): {found:?}");
}
