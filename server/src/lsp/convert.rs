//! Conversions between LSP positions/ranges and nib's byte offsets, through `crate::position`
//! with the encoding negotiated at `initialize`.

use std::ops::Range;

use ls_types::{Position, Range as LspRange};
use ropey::Rope;

use crate::position::{self, LineColumn, PositionEncoding};

pub fn line_column(position: Position) -> LineColumn {
    LineColumn { line: position.line, column: position.character }
}

pub fn to_byte(rope: &Rope, position: Position, encoding: PositionEncoding) -> usize {
    position::to_byte(rope, line_column(position), encoding)
}

pub fn to_position(rope: &Rope, byte: usize, encoding: PositionEncoding) -> Position {
    let at = position::from_byte(rope, byte, encoding);
    Position { line: at.line, character: at.column }
}

pub fn to_range(rope: &Rope, bytes: Range<usize>, encoding: PositionEncoding) -> LspRange {
    LspRange { start: to_position(rope, bytes.start, encoding), end: to_position(rope, bytes.end, encoding) }
}

/// The byte offset of a position in a request. A column past the end of its line clamps to the
/// line end (LSP: "defaults back to the line length"); a line past the end of the document is
/// an error, since nothing sensible can be answered there.
pub fn request_byte(
    rope: &Rope,
    position: Position,
    encoding: PositionEncoding,
) -> Result<usize, crate::lsp::jsonrpc::ResponseError> {
    if position.line as usize >= rope.len_lines() {
        return Err(crate::lsp::jsonrpc::ResponseError::invalid_params(format!(
            "position line {} is past the end of the document ({} lines)",
            position.line,
            rope.len_lines()
        )));
    }
    Ok(to_byte(rope, position, encoding))
}
