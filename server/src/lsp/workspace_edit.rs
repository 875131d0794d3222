//! The last checks on a code action's workspace edit before it goes to the client: the
//! documents it was computed for are still as they were, and its form is one the client said
//! it can apply (`workspace.workspaceEdit.documentChanges` and `resourceOperations`), instead
//! of assuming every client takes versioned changes and file creation.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::document::{Document, file_uri_to_path};

/// What the client can apply, from its `workspace.workspaceEdit` capabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EditSupport {
    /// Versioned `documentChanges` (else only the plain `changes` map).
    pub document_changes: bool,
    /// The `create` resource operation (inside `documentChanges`).
    pub create_files: bool,
}

/// Whether every document the edit names is as it was when the edit was computed: an open one
/// at the version it carries (and in sync), and one that was not open (no version) still not
/// open, under any spelling of its URI.
pub fn documents_unchanged(edit: &Value, documents: &HashMap<String, Document>) -> bool {
    let mut named =
        edit["documentChanges"].as_array().into_iter().flatten().filter_map(|change| change.get("textDocument"));
    named.all(|document| {
        let uri = document["uri"].as_str().unwrap_or_default();
        match document["version"].as_i64() {
            Some(version) => {
                documents.get(uri).is_some_and(|open| !open.out_of_sync && i64::from(open.version) == version)
            }
            None => open_by_path(documents, uri).is_none(),
        }
    })
}

/// The open document at the same file as `uri` (clients spell URIs differently: Neovim does
/// not percent-encode `()!*'`), if any.
pub fn open_by_path<'a>(documents: &'a HashMap<String, Document>, uri: &str) -> Option<&'a Document> {
    let path = file_uri_to_path(uri)?;
    documents.values().find(|document| document.uri == uri || document.path.as_deref() == Some(path.as_path()))
}

/// The URI and version to address `file` with: those of the open document at that path (its
/// spelling, its version), or a fresh `file:` URI without a version.
pub fn address(file: &Path, open: &[(String, i32)]) -> (String, Option<i32>) {
    open.iter()
        .find(|(uri, _)| file_uri_to_path(uri).as_deref() == Some(file))
        .map(|(uri, version)| (uri.clone(), Some(*version)))
        .unwrap_or_else(|| (crate::document::path_to_file_uri(file), None))
}

/// `edit` (built with `documentChanges`) in a form the client can apply: as is; or as the
/// plain `changes` map for a client without `documentChanges`. An edit that must create a file
/// the client cannot create is refused with what to do instead.
pub fn fit_client(edit: Value, support: EditSupport) -> Result<Value, String> {
    let Some(changes) = edit["documentChanges"].as_array() else { return Ok(edit) };
    if let Some(create) = changes.iter().find(|change| change["kind"] == "create") {
        if support.document_changes && support.create_files {
            return Ok(edit);
        }
        let file = create["uri"].as_str().and_then(file_uri_to_path).unwrap_or_default();
        return Err(format!(
            "this editor cannot create files through a workspace edit (workspace.workspaceEdit.resourceOperations \
             has no \"create\"); create {} (it may stay empty) and run the action again",
            file.display()
        ));
    }
    if support.document_changes {
        return Ok(edit);
    }
    let mut by_uri: Map<String, Value> = Map::new();
    for change in changes {
        let uri = change["textDocument"]["uri"].as_str().unwrap_or_default().to_string();
        let edits = change["edits"].as_array().cloned().unwrap_or_default();
        match by_uri.get_mut(&uri).and_then(Value::as_array_mut) {
            Some(existing) => existing.extend(edits),
            None => {
                by_uri.insert(uri, Value::Array(edits));
            }
        }
    }
    Ok(json!({ "changes": by_uri }))
}

/// Whether the file at `path` still holds `expected` (`None`: it does not exist), read without
/// following a link and only up to a size just past `expected`'s. For test files that are not
/// open: they are edited at offsets computed from what was read when the action started.
pub fn file_unchanged(path: &Path, expected: Option<&str>) -> bool {
    use std::io::Read;
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return expected.is_none(),
        Err(_) => return false,
    };
    let Some(expected) = expected else { return false };
    if !metadata.is_file() || metadata.len() != expected.len() as u64 {
        return false;
    }
    let mut text = Vec::with_capacity(expected.len());
    let read = std::fs::File::open(path).and_then(|file| file.take(expected.len() as u64 + 1).read_to_end(&mut text));
    read.is_ok() && text == expected.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(uri: &str, version: i32) -> (String, Document) {
        (uri.to_string(), Document::new(uri.to_string(), "python".into(), version, ""))
    }

    fn test_edit(version: Value) -> Value {
        json!({ "documentChanges": [
            { "kind": "create", "uri": "file:///w/test_a.py", "options": { "ignoreIfExists": true } },
            { "textDocument": { "uri": "file:///w/test_a.py", "version": version }, "edits": [{ "newText": "x" }] },
        ] })
    }

    #[test]
    fn open_documents_are_matched_by_path_whatever_the_uri_spelling() {
        let open = [("file:///w/a(1).py".to_string(), 7)];
        assert_eq!(address(Path::new("/w/a(1).py"), &open), ("file:///w/a(1).py".to_string(), Some(7)));
        assert_eq!(address(Path::new("/w/b(1).py"), &open), ("file:///w/b%281%29.py".to_string(), None));
        let documents: HashMap<String, Document> = [document("file:///w/a(1).py", 7)].into();
        assert!(open_by_path(&documents, "file:///w/a%281%29.py").is_some());
    }

    #[test]
    fn an_edit_is_stale_when_a_document_it_names_changed_or_was_opened() {
        let mut documents: HashMap<String, Document> = [document("file:///w/src.py", 3)].into();
        let source = json!({ "documentChanges": [{ "textDocument": { "uri": "file:///w/src.py", "version": 3 }, "edits": [] }] });
        assert!(documents_unchanged(&source, &documents));
        assert!(documents_unchanged(&test_edit(Value::Null), &documents), "not open then, not open now");
        documents.extend([document("file:///w/test_a.py", 1)]);
        assert!(!documents_unchanged(&test_edit(Value::Null), &documents), "opened meanwhile");
        assert!(documents_unchanged(&test_edit(json!(1)), &documents));
        assert!(!documents_unchanged(&test_edit(json!(0)), &documents), "edited meanwhile");
        documents.get_mut("file:///w/src.py").unwrap().out_of_sync = true;
        assert!(!documents_unchanged(&source, &documents), "out of sync");
    }

    #[test]
    fn the_edit_takes_the_form_the_client_supports() {
        let full = EditSupport { document_changes: true, create_files: true };
        assert_eq!(fit_client(test_edit(Value::Null), full), Ok(test_edit(Value::Null)));
        let refused = fit_client(test_edit(Value::Null), EditSupport { document_changes: true, create_files: false });
        assert!(refused.unwrap_err().contains("create /w/test_a.py"));
        let insert = json!({ "documentChanges": [
            { "textDocument": { "uri": "file:///w/a.py", "version": 2 }, "edits": [{ "newText": "1" }] },
            { "textDocument": { "uri": "file:///w/a.py", "version": 2 }, "edits": [{ "newText": "2" }] },
        ] });
        let plain = fit_client(insert, EditSupport::default()).unwrap();
        assert_eq!(plain, json!({ "changes": { "file:///w/a.py": [{ "newText": "1" }, { "newText": "2" }] } }));
    }

    #[test]
    fn a_file_that_changed_on_disk_is_noticed() {
        let dir = std::env::temp_dir().join(format!("nib-edit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("test_a.py");
        assert!(file_unchanged(&file, None));
        std::fs::write(&file, "def test_a():\n    pass\n").unwrap();
        assert!(!file_unchanged(&file, None), "created meanwhile");
        assert!(file_unchanged(&file, Some("def test_a():\n    pass\n")));
        assert!(!file_unchanged(&file, Some("def test_a():\n    pas\n")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
