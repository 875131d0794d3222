//! An open buffer: the text as a rope, its version, and a tree-sitter tree kept in step with
//! the edits. An edit only moves the old tree (`Tree::edit`, microseconds); the incremental
//! re-parse waits until something first asks for the tree (`Document::tree`), so typing into
//! a large file costs the main loop next to nothing. All offsets are UTF-8 bytes.

use std::cell::{OnceCell, RefCell};
use std::path::PathBuf;

use ropey::Rope;
use tree_sitter::{InputEdit, Parser, Point, Tree};

use crate::position::{self, LineColumn, PositionEncoding};
use crate::syntax::{self, Language};

/// One entry of a `didChange`: a replacement of `range` (or of the whole text when `None`).
#[derive(Clone, Debug)]
pub struct TextChange {
    pub range: Option<(LineColumn, LineColumn)>,
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("stale edit: document is at version {current}, change is for version {received}")]
    StaleVersion { current: i32, received: i32 },
    #[error("invalid edit range: start {start:?} is after end {end:?}")]
    ReversedRange { start: LineColumn, end: LineColumn },
}

pub struct Document {
    pub uri: String,
    /// The file behind a `file:` URI.
    pub path: Option<PathBuf>,
    pub language_id: String,
    pub language: Option<Language>,
    pub version: i32,
    pub rope: Rope,
    /// The tree of the current text, once parsed (empty after an edit until asked for).
    tree: OnceCell<Option<Tree>>,
    /// The last tree, edited to match the current text: where the incremental parse starts.
    edited: Option<Tree>,
    /// A change could not be applied, so the text may differ from the editor's: nothing is
    /// generated for the document until the editor sends its full text again.
    pub out_of_sync: bool,
    parser: RefCell<Option<Parser>>,
}

impl Document {
    pub fn new(uri: String, language_id: String, version: i32, text: &str) -> Self {
        let path = file_uri_to_path(&uri);
        let language = Language::from_language_id(&language_id)
            .or_else(|| path.as_ref().and_then(|p| Language::from_path(&p.to_string_lossy())))
            .or_else(|| Language::from_path(&uri));
        let parser = RefCell::new(language.map(Language::parser));
        let rope = Rope::from_str(text);
        Document {
            uri,
            path,
            language_id,
            language,
            version,
            rope,
            tree: OnceCell::new(),
            edited: None,
            out_of_sync: false,
            parser,
        }
    }

    /// The syntax tree of the current text (`None` without a grammar or above
    /// `syntax::MAX_PARSE_BYTES`), parsed now if an edit came since the last call: incrementally
    /// from the edited old tree, so the cost is that of the changed region.
    pub fn tree(&self) -> Option<&Tree> {
        self.tree
            .get_or_init(|| {
                let mut parser = self.parser.borrow_mut();
                syntax::parse(parser.as_mut()?, &self.rope, self.edited.as_ref())
            })
            .as_ref()
    }

    /// Whether the tree is waiting for a re-parse (the next `tree()` call does it).
    pub fn parse_pending(&self) -> bool {
        self.tree.get().is_none() && self.parser.borrow().is_some()
    }

    /// Applies a `didChange` atomically: either every change lands and the version moves to
    /// `version`, or nothing changes. Versions must increase (LSP: "the version number points
    /// to the version after all provided content changes have been applied"). Returns the byte
    /// where the last change's text ends in the new text (where the user's cursor is after
    /// typing; 0 after a full-text change), found as the change was applied: converting the
    /// change's start again in the new text would clamp a column past its line's end to the
    /// new, longer line.
    pub fn apply_changes(
        &mut self,
        changes: &[TextChange],
        version: i32,
        encoding: PositionEncoding,
    ) -> Result<usize, ChangeError> {
        if version <= self.version {
            return Err(ChangeError::StaleVersion { current: self.version, received: version });
        }
        // Ropes and trees clone in O(1); work on copies so a bad change in the middle leaves no
        // trace.
        let mut rope = self.rope.clone();
        let mut tree = self.tree.get().cloned().unwrap_or_else(|| self.edited.clone());
        let mut edited_to = 0;
        for change in changes {
            let Some((start, end)) = change.range else {
                rope = Rope::from_str(&change.text);
                tree = None;
                edited_to = 0;
                continue;
            };
            if start > end {
                return Err(ChangeError::ReversedRange { start, end });
            }
            let start_byte = position::to_byte(&rope, start, encoding);
            let old_end_byte = position::to_byte(&rope, end, encoding).max(start_byte);
            replace(&mut rope, tree.as_mut(), start_byte..old_end_byte, &change.text);
            edited_to = start_byte + change.text.len();
        }
        self.edited = tree;
        self.tree = OnceCell::new();
        self.rope = rope;
        self.version = version;
        Ok(edited_to)
    }

    /// A copy of the document with the bytes `range` replaced by `text` (a completion item the
    /// client has selected but not inserted): the rope and tree are shared until edited, and
    /// the tree is re-parsed incrementally when asked for, so the cost does not grow with the
    /// document.
    pub fn with_replaced(&self, range: std::ops::Range<usize>, text: &str) -> Document {
        let mut rope = self.rope.clone();
        let mut edited = self.tree.get().cloned().unwrap_or_else(|| self.edited.clone());
        let end = range.end.min(rope.len_bytes());
        let start = range.start.min(end);
        replace(&mut rope, edited.as_mut(), start..end, text);
        Document {
            uri: self.uri.clone(),
            path: self.path.clone(),
            language_id: self.language_id.clone(),
            language: self.language,
            version: self.version,
            rope,
            tree: OnceCell::new(),
            edited,
            out_of_sync: self.out_of_sync,
            parser: RefCell::new(self.language.map(Language::parser)),
        }
    }

    /// A fresh parse of the current text, ignoring the incremental tree (for checks).
    pub fn fresh_tree(&self) -> Option<Tree> {
        let mut parser = self.language?.parser();
        syntax::parse(&mut parser, &self.rope, None)
    }

    pub fn text(&self) -> String {
        self.rope.to_string()
    }
}

/// Replaces the bytes `range` of `rope` by `text` and tells `tree` (to be re-parsed) about it.
fn replace(rope: &mut Rope, tree: Option<&mut Tree>, range: std::ops::Range<usize>, text: &str) {
    let (start_byte, old_end_byte) = (range.start, range.end);
    let start_position = tree_point(rope, start_byte);
    let old_end_position = tree_point(rope, old_end_byte);
    let start_char = rope.byte_to_char(start_byte);
    rope.remove(start_char..rope.byte_to_char(old_end_byte));
    rope.insert(start_char, text);
    let new_end_byte = start_byte + text.len();
    if let Some(tree) = tree {
        tree.edit(&InputEdit {
            start_byte,
            old_end_byte,
            new_end_byte,
            start_position,
            old_end_position,
            new_end_position: tree_point(rope, new_end_byte),
        });
    }
}

/// The tree-sitter point of a byte: row = line, column = bytes since the line start. Rows
/// match tree-sitter's own only where lines end in `\n` (a lone `\r` counts as a line break
/// for LSP but not for tree-sitter); nib only ever reads byte offsets from trees, never points.
fn tree_point(rope: &Rope, byte: usize) -> Point {
    let line = rope.byte_to_line(byte);
    Point { row: line, column: byte - rope.line_to_byte(line) }
}

/// Decodes a `file:` URI to a path; other schemes have none.
pub fn file_uri_to_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    // Skip an authority (`file://host/path`); local files have an empty one.
    let path = &rest[rest.find('/')?..];
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(value) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            decoded.push(value);
            i += 3;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(decoded).ok().map(|path| without_dot_segments(&PathBuf::from(path)))
}

/// Resolves `.` and `..` lexically (RFC 3986 dot-segment removal), so that a path such as
/// `/w/../etc/x.py` cannot pass for one inside the workspace folder `/w`.
fn without_dot_segments(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// Encodes a path as a `file:` URI, percent-encoding everything but unreserved characters and `/`.
pub fn path_to_file_uri(path: &std::path::Path) -> String {
    let mut uri = String::from("file://");
    for byte in path.to_string_lossy().bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => uri.push(byte as char),
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(start: (u32, u32), end: (u32, u32), text: &str) -> TextChange {
        TextChange {
            range: Some((LineColumn { line: start.0, column: start.1 }, LineColumn { line: end.0, column: end.1 })),
            text: text.to_string(),
        }
    }

    #[test]
    fn incremental_edits_keep_tree_equal_to_fresh_parse() {
        let mut doc = Document::new("file:///t/a.py".into(), "python".into(), 1, "def f(x):\n    return x\n");
        doc.apply_changes(
            &[change((1, 12), (1, 12), " + 1"), change((0, 4), (0, 5), "g😀")],
            2,
            PositionEncoding::Utf16,
        )
        .unwrap();
        assert_eq!(doc.text(), "def g😀(x):\n    return x + 1\n");
        let fresh = doc.fresh_tree().unwrap();
        assert!(doc.parse_pending(), "the edit did not parse");
        assert_eq!(doc.tree().unwrap().root_node().to_sexp(), fresh.root_node().to_sexp());
        assert!(!doc.parse_pending());
        // Edits in a row without a parse between them: the old tree is edited each time.
        doc.apply_changes(&[change((1, 4), (1, 10), "yield")], 3, PositionEncoding::Utf16).unwrap();
        doc.apply_changes(&[change((0, 0), (0, 0), "import os\n")], 4, PositionEncoding::Utf16).unwrap();
        doc.apply_changes(&[change((2, 11), (2, 15), "")], 5, PositionEncoding::Utf16).unwrap();
        assert_eq!(doc.text(), "import os\ndef g😀(x):\n    yield x\n");
        let fresh = doc.fresh_tree().unwrap();
        assert_eq!(doc.tree().unwrap().root_node().to_sexp(), fresh.root_node().to_sexp());
    }

    #[test]
    fn a_replaced_copy_matches_a_fresh_parse_and_leaves_the_original_alone() {
        let doc = Document::new("file:///t/a.py".into(), "python".into(), 3, "import os\n\nx = os.\n");
        let selected = doc.with_replaced(18..18, "path.join(");
        assert_eq!(selected.text(), "import os\n\nx = os.path.join(\n");
        let fresh = selected.fresh_tree().unwrap();
        assert_eq!(selected.tree().unwrap().root_node().to_sexp(), fresh.root_node().to_sexp());
        assert_eq!((doc.text().as_str(), selected.version), ("import os\n\nx = os.\n", 3));
        assert_eq!(doc.with_replaced(5..500, "").text(), "impor", "a range past the end is clamped");
    }

    #[test]
    fn a_change_reports_where_its_text_ends() {
        let mut doc = Document::new("file:///t/a.py".into(), "python".into(), 1, "ab\ncd\n");
        // A start column past the line's end clamps to "ab"'s end; the new line "abé" is longer,
        // so converting the start again in the new text would land after "é", mid-character.
        let end = doc.apply_changes(&[change((0, 10), (0, 10), "é")], 2, PositionEncoding::Utf8).unwrap();
        assert_eq!((doc.text().as_str(), end), ("abé\ncd\n", 4));
        let end = doc
            .apply_changes(&[change((1, 0), (1, 0), "x"), change((0, 0), (0, 1), "😀!")], 3, PositionEncoding::Utf16)
            .unwrap();
        assert_eq!((doc.text().as_str(), end), ("😀!bé\nxcd\n", 5), "the last change's end");
        let full = TextChange { range: None, text: "new".into() };
        assert_eq!(doc.apply_changes(&[full], 4, PositionEncoding::Utf16), Ok(0));
    }

    #[test]
    fn rejected_changes_leave_the_document_untouched() {
        let mut doc = Document::new("file:///t/a.py".into(), "python".into(), 5, "abc\n");
        let stale = doc.apply_changes(&[change((0, 0), (0, 0), "x")], 5, PositionEncoding::Utf16);
        assert_eq!(stale, Err(ChangeError::StaleVersion { current: 5, received: 5 }));
        let reversed =
            doc.apply_changes(&[change((0, 0), (0, 0), "x"), change((0, 3), (0, 1), "y")], 6, PositionEncoding::Utf16);
        assert!(matches!(reversed, Err(ChangeError::ReversedRange { .. })));
        assert_eq!((doc.text().as_str(), doc.version), ("abc\n", 5));
    }

    #[test]
    fn full_sync_replaces_text_and_reparses() {
        let mut doc = Document::new("untitled:1".into(), "rust".into(), 1, "fn a() {}");
        doc.apply_changes(&[TextChange { range: None, text: "fn b(".into() }], 2, PositionEncoding::Utf8).unwrap();
        assert_eq!(doc.text(), "fn b(");
        assert!(doc.tree().unwrap().root_node().has_error());
    }

    #[test]
    fn language_falls_back_to_the_extension() {
        let doc = Document::new("file:///w/My%20Lib/x.tsx".into(), "plaintext".into(), 1, "");
        assert_eq!(doc.language, Some(Language::Tsx));
        assert_eq!(doc.path.as_deref(), Some(std::path::Path::new("/w/My Lib/x.tsx")));
        assert_eq!(path_to_file_uri(doc.path.as_deref().unwrap()), "file:///w/My%20Lib/x.tsx");
        assert_eq!(Document::new("file:///w/notes.txt".into(), "plaintext".into(), 1, "").language, None);
    }

    #[test]
    fn dot_segments_cannot_leave_a_folder() {
        for uri in ["file:///w/../etc/x.py", "file:///w/%2E%2E/etc/x.py", "file:///w/./a/../../etc/x.py"] {
            assert_eq!(file_uri_to_path(uri).as_deref(), Some(std::path::Path::new("/etc/x.py")), "{uri}");
        }
        assert_eq!(file_uri_to_path("file:///../../x.py").as_deref(), Some(std::path::Path::new("/x.py")));
    }
}
