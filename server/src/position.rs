//! Conversion between editor positions (line + column in a negotiated encoding) and the UTF-8
//! byte offsets used everywhere else in nib. This is the only module that knows about UTF-16
//! code units or code points; the rest of the server speaks in byte offsets.
//!
//! Lines are split the way LSP splits them: at `\n`, `\r\n` and `\r` (ropey is built with
//! `cr_lines` and without `unicode_lines` for exactly this reason).

use ropey::Rope;

/// The unit an editor counts columns in (LSP `PositionEncodingKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PositionEncoding {
    Utf8,
    /// The LSP default, used when the client offers nothing else.
    #[default]
    Utf16,
    Utf32,
}

impl PositionEncoding {
    pub fn as_lsp_str(self) -> &'static str {
        match self {
            PositionEncoding::Utf8 => "utf-8",
            PositionEncoding::Utf16 => "utf-16",
            PositionEncoding::Utf32 => "utf-32",
        }
    }

    pub fn from_lsp_str(name: &str) -> Option<Self> {
        match name {
            "utf-8" => Some(PositionEncoding::Utf8),
            "utf-16" => Some(PositionEncoding::Utf16),
            "utf-32" => Some(PositionEncoding::Utf32),
            _ => None,
        }
    }

    /// Picks the encoding to use from what the client offers: UTF-8 when offered (no conversion
    /// at all), else UTF-16, which every client must support. UTF-32 is used only when it is the
    /// sole offer.
    pub fn negotiate(offered: &[String]) -> Self {
        let offered: Vec<Self> = offered.iter().filter_map(|name| Self::from_lsp_str(name)).collect();
        if offered.contains(&PositionEncoding::Utf8) {
            PositionEncoding::Utf8
        } else if offered.is_empty() || offered.contains(&PositionEncoding::Utf16) {
            PositionEncoding::Utf16
        } else {
            PositionEncoding::Utf32
        }
    }
}

/// A position as an editor sends it: zero-based line, and column in `PositionEncoding` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineColumn {
    pub line: u32,
    pub column: u32,
}

/// Byte range `[start, end)` of line `line` without its terminator.
fn line_content_bytes(rope: &Rope, line: usize) -> (usize, usize) {
    let start = rope.line_to_byte(line);
    let mut end = if line + 1 < rope.len_lines() { rope.line_to_byte(line + 1) } else { rope.len_bytes() };
    // Strip `\n`, `\r\n` or `\r`.
    if end > start && rope.byte(end - 1) == b'\n' {
        end -= 1;
    }
    if end > start && rope.byte(end - 1) == b'\r' {
        end -= 1;
    }
    (start, end)
}

/// Converts an editor position to a byte offset. Following the LSP spec, a column past the end
/// of its line clamps to the line end, and a line past the end of the document clamps to the
/// document end. A column inside a character (half of a UTF-16 surrogate pair, the middle of a
/// UTF-8 sequence) rounds down to the character's start.
pub fn to_byte(rope: &Rope, position: LineColumn, encoding: PositionEncoding) -> usize {
    let line = position.line as usize;
    if line >= rope.len_lines() {
        return rope.len_bytes();
    }
    let (line_start, line_end) = line_content_bytes(rope, line);
    let column = position.column as usize;
    match encoding {
        PositionEncoding::Utf8 => {
            let byte = (line_start + column).min(line_end);
            // Round down to a character boundary.
            rope.char_to_byte(rope.byte_to_char(byte))
        }
        PositionEncoding::Utf16 => {
            let start_char = rope.byte_to_char(line_start);
            let end_char = rope.byte_to_char(line_end);
            let start_unit = rope.char_to_utf16_cu(start_char);
            let end_unit = rope.char_to_utf16_cu(end_char);
            let unit = (start_unit + column).min(end_unit);
            rope.char_to_byte(rope.utf16_cu_to_char(unit))
        }
        PositionEncoding::Utf32 => {
            let start_char = rope.byte_to_char(line_start);
            let end_char = rope.byte_to_char(line_end);
            rope.char_to_byte((start_char + column).min(end_char))
        }
    }
}

/// Converts a byte offset (clamped to the document and rounded down to a character boundary)
/// to an editor position.
pub fn from_byte(rope: &Rope, byte: usize, encoding: PositionEncoding) -> LineColumn {
    let byte = byte.min(rope.len_bytes());
    let char_index = rope.byte_to_char(byte);
    let line = rope.char_to_line(char_index);
    let line_start_char = rope.line_to_char(line);
    let column = match encoding {
        PositionEncoding::Utf8 => rope.char_to_byte(char_index) - rope.line_to_byte(line),
        PositionEncoding::Utf16 => rope.char_to_utf16_cu(char_index) - rope.char_to_utf16_cu(line_start_char),
        PositionEncoding::Utf32 => char_index - line_start_char,
    };
    LineColumn { line: line as u32, column: column as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PositionEncoding::{Utf8, Utf16, Utf32};

    fn at(line: u32, column: u32) -> LineColumn {
        LineColumn { line, column }
    }

    /// One row: text, position, encoding, expected byte offset.
    #[test]
    fn to_byte_table() {
        let rows: &[(&str, LineColumn, PositionEncoding, usize)] = &[
            // Empty document: everything clamps to 0.
            ("", at(0, 0), Utf16, 0),
            ("", at(0, 5), Utf8, 0),
            ("", at(3, 1), Utf32, 0),
            // ASCII.
            ("abc\ndef", at(1, 2), Utf16, 6),
            ("abc\ndef", at(0, 99), Utf16, 3),
            ("abc\ndef", at(9, 0), Utf16, 7),
            // Emoji: 4 UTF-8 bytes, 2 UTF-16 units, 1 code point.
            ("a😀b", at(0, 3), Utf16, 5),
            ("a😀b", at(0, 2), Utf32, 5),
            ("a😀b", at(0, 5), Utf8, 5),
            // Half a surrogate pair / half a UTF-8 sequence rounds down.
            ("a😀b", at(0, 2), Utf16, 1),
            ("a😀b", at(0, 3), Utf8, 1),
            // CJK: 3 UTF-8 bytes, 1 UTF-16 unit.
            ("漢字x", at(0, 2), Utf16, 6),
            ("漢字x", at(0, 6), Utf8, 6),
            // Combining mark: e + U+0301 are two code points.
            ("e\u{301}x", at(0, 2), Utf16, 3),
            ("e\u{301}x", at(0, 2), Utf32, 3),
            // CRLF: a column past the end stops before `\r`, the next line starts after `\n`.
            ("ab\r\ncd", at(0, 9), Utf16, 2),
            ("ab\r\ncd", at(1, 1), Utf16, 5),
            // Lone CR is a line break too.
            ("ab\rcd", at(1, 0), Utf16, 3),
            // Trailing newline: the empty last line exists.
            ("ab\n", at(1, 0), Utf16, 3),
            ("ab\n", at(1, 4), Utf16, 3),
        ];
        for (text, position, encoding, expected) in rows {
            let rope = Rope::from_str(text);
            assert_eq!(to_byte(&rope, *position, *encoding), *expected, "{text:?} {position:?} {encoding:?}");
        }
    }

    #[test]
    fn round_trip_every_boundary() {
        let text = "a😀b\r\n漢字e\u{301}\n\rlast 🎉";
        let rope = Rope::from_str(text);
        for encoding in [Utf8, Utf16, Utf32] {
            for (byte, _) in text.char_indices().chain([(text.len(), ' ')]) {
                let position = from_byte(&rope, byte, encoding);
                let back = to_byte(&rope, position, encoding);
                // A byte inside a line terminator maps to the line end; everything else round-trips.
                let inside_crlf =
                    byte > 0 && text.as_bytes()[byte - 1] == b'\r' && text.as_bytes().get(byte) == Some(&b'\n');
                if !inside_crlf {
                    assert_eq!(back, byte, "{encoding:?} byte {byte} -> {position:?}");
                }
            }
        }
    }

    #[test]
    fn negotiation_prefers_utf8_then_utf16() {
        let offer = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(PositionEncoding::negotiate(&offer(&["utf-16", "utf-8"])), Utf8);
        assert_eq!(PositionEncoding::negotiate(&offer(&["utf-32", "utf-16"])), Utf16);
        assert_eq!(PositionEncoding::negotiate(&offer(&["utf-32"])), Utf32);
        assert_eq!(PositionEncoding::negotiate(&offer(&[])), Utf16);
        assert_eq!(PositionEncoding::negotiate(&offer(&["latin-1"])), Utf16);
    }
}
