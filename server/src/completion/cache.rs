//! Typing-through: when the user types the characters of the suggestion on screen, the rest of
//! that suggestion is still right, and is returned at once without running the model.

use ropey::Rope;

#[derive(Clone)]
pub struct Suggestion {
    pub uri: String,
    /// The document when the suggestion was made (ropes clone in O(1)).
    pub rope: Rope,
    pub cursor: usize,
    pub text: String,
}

/// The rest of `suggestion` if the document now equals the old one with a prefix of the
/// suggestion typed at the old cursor, and the new cursor right after it.
pub fn type_through(suggestion: &Suggestion, uri: &str, rope: &Rope, cursor: usize) -> Option<String> {
    if suggestion.uri != uri || cursor < suggestion.cursor || suggestion.text.is_empty() {
        return None;
    }
    let typed_length = cursor - suggestion.cursor;
    if typed_length >= suggestion.text.len() || !suggestion.text.is_char_boundary(typed_length) {
        return None;
    }
    let old = &suggestion.rope;
    if rope.len_bytes() != old.len_bytes() + typed_length {
        return None;
    }
    let typed = rope.get_byte_slice(suggestion.cursor..cursor)?;
    if typed != suggestion.text[..typed_length] {
        return None;
    }
    let same_before = rope.get_byte_slice(..suggestion.cursor)? == old.byte_slice(..suggestion.cursor);
    let same_after = rope.get_byte_slice(cursor..)? == old.byte_slice(suggestion.cursor..);
    (same_before && same_after).then(|| suggestion.text[typed_length..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggestion(before: &str, after: &str, text: &str) -> Suggestion {
        Suggestion {
            uri: "file:///a.py".into(),
            rope: Rope::from_str(&format!("{before}{after}")),
            cursor: before.len(),
            text: text.into(),
        }
    }

    #[test]
    fn serves_the_rest_while_typing_matches() {
        let shown = suggestion("x = ", "\nprint(x)\n", "compute(1)");
        let now = Rope::from_str("x = comp\nprint(x)\n");
        assert_eq!(type_through(&shown, "file:///a.py", &now, 8).as_deref(), Some("ute(1)"));
        // Same position, nothing typed yet: the whole suggestion.
        let same = Rope::from_str("x = \nprint(x)\n");
        assert_eq!(type_through(&shown, "file:///a.py", &same, 4).as_deref(), Some("compute(1)"));
    }

    #[test]
    fn misses_when_anything_else_changed() {
        let shown = suggestion("x = ", "\nprint(x)\n", "compute(1)");
        let typo = Rope::from_str("x = comq\nprint(x)\n");
        assert_eq!(type_through(&shown, "file:///a.py", &typo, 8), None);
        let edited_below = Rope::from_str("x = comp\nprint(y)\n");
        assert_eq!(type_through(&shown, "file:///a.py", &edited_below, 8), None);
        let everything_typed = Rope::from_str("x = compute(1)\nprint(x)\n");
        assert_eq!(type_through(&shown, "file:///a.py", &everything_typed, 14), None);
        let other_file = Rope::from_str("x = comp\nprint(x)\n");
        assert_eq!(type_through(&shown, "file:///b.py", &other_file, 8), None);
    }
}
