//! LSP base protocol framing (`Content-Length` headers + JSON body) over byte streams.
//!
//! The reader never gives up on a bad message: garbage between messages, a bad header, a wrong
//! `Content-Length` or a body that is not JSON each become one `Malformed` frame (the server
//! answers it with a JSON-RPC parse error) and reading resumes at the next header. Only the end
//! of the stream ends it. This is why nib owns its transport: the frameworks we tried exit on
//! the first malformed body, and an editor then loses all server state.
//!
//! Memory is bounded by what arrives, never by what a header claims: a body's buffer grows as
//! its bytes come in (up to `MAX_BODY_BYTES`; larger bodies are skipped unread), and a line
//! longer than `MAX_HEADER_LINE_BYTES` is skipped in pieces rather than collected.

use std::io::{self, BufRead, Read, Write};

/// Bodies larger than this are skipped (and answered with an error) rather than buffered.
/// A document is the largest thing an editor sends; 64 MiB is far beyond any source file.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Header lines longer than this are skipped (`Content-Length: 12345` needs 30 bytes).
pub const MAX_HEADER_LINE_BYTES: usize = 8 * 1024;

/// The first bytes reserved for a body; the buffer grows as more arrive.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// One line of input: its bytes (with the `\n`), or the fact that it was too long to keep.
enum Line {
    Text(Vec<u8>),
    TooLong,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Body(Vec<u8>),
    Malformed(String),
    Eof,
}

pub struct MessageReader<R> {
    input: R,
    /// A header line found glued to garbage, to be read first next time.
    pending_line: Option<Vec<u8>>,
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where a header starts in `line`, if anywhere.
fn header_start(line: &[u8]) -> Option<usize> {
    let lower = line.to_ascii_lowercase();
    [&b"content-length:"[..], &b"content-type:"[..]]
        .iter()
        .filter_map(|name| lower.windows(name.len()).position(|window| window == *name))
        .min()
}

impl<R: BufRead> MessageReader<R> {
    pub fn new(input: R) -> Self {
        MessageReader { input, pending_line: None }
    }

    /// Reads one line including its `\n`; `None` at the end of the stream. A line longer than
    /// `MAX_HEADER_LINE_BYTES` is consumed up to its end without being kept.
    fn read_line(&mut self) -> io::Result<Option<Line>> {
        if let Some(line) = self.pending_line.take() {
            return Ok(Some(Line::Text(line)));
        }
        let mut line = Vec::new();
        let read = (&mut self.input).take(MAX_HEADER_LINE_BYTES as u64).read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(None);
        }
        if line.ends_with(b"\n") || read < MAX_HEADER_LINE_BYTES {
            return Ok(Some(Line::Text(line)));
        }
        loop {
            let buffer = self.input.fill_buf()?;
            if buffer.is_empty() {
                return Ok(Some(Line::TooLong));
            }
            match buffer.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.input.consume(end + 1);
                    return Ok(Some(Line::TooLong));
                }
                None => {
                    let skipped = buffer.len();
                    self.input.consume(skipped);
                }
            }
        }
    }

    pub fn read_frame(&mut self) -> io::Result<Frame> {
        // Find the first header line, skipping blank lines and reporting garbage once.
        let mut skipped_garbage = false;
        let first_line = loop {
            let line = match self.read_line()? {
                None => return Ok(Frame::Eof),
                Some(Line::TooLong) => {
                    skipped_garbage = true;
                    continue;
                }
                Some(Line::Text(line)) => line,
            };
            if trim_line_end(&line).iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match header_start(&line) {
                Some(0) if !skipped_garbage => break line,
                Some(start) => {
                    self.pending_line = Some(line[start..].to_vec());
                    return Ok(Frame::Malformed("unexpected bytes before a message header".into()));
                }
                None => skipped_garbage = true,
            }
        };
        let mut content_length: Option<Result<usize, String>> = None;
        let mut line = first_line;
        loop {
            let header = String::from_utf8_lossy(trim_line_end(&line)).into_owned();
            if header.is_empty() {
                break;
            }
            match header.split_once(':') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("content-length") => {
                    let value = value.trim();
                    content_length =
                        Some(value.parse::<usize>().map_err(|_| format!("invalid Content-Length `{value}`")));
                }
                Some(_) => {} // Content-Type and unknown headers are ignored.
                None => {
                    // Not a header: treat it as the start of the next message's garbage.
                    self.pending_line = Some(line);
                    return Ok(Frame::Malformed(format!("malformed header line `{}`", truncate(&header))));
                }
            }
            match self.read_line()? {
                Some(Line::Text(next)) => line = next,
                Some(Line::TooLong) => {
                    return Ok(Frame::Malformed(format!("a header line longer than {MAX_HEADER_LINE_BYTES} bytes")));
                }
                None => return Ok(Frame::Eof),
            }
        }
        let length = match content_length {
            None => return Ok(Frame::Malformed("missing Content-Length header".into())),
            Some(Err(message)) => return Ok(Frame::Malformed(message)),
            Some(Ok(length)) => length,
        };
        if length > MAX_BODY_BYTES {
            let skipped = io::copy(&mut io::Read::by_ref(&mut self.input).take(length as u64), &mut io::sink())?;
            if skipped < length as u64 {
                return Ok(Frame::Eof);
            }
            return Ok(Frame::Malformed(format!("message of {length} bytes exceeds the {MAX_BODY_BYTES}-byte limit")));
        }
        // Not `vec![0; length]`: the header alone must not decide how much memory is taken.
        let mut body = Vec::with_capacity(length.min(INITIAL_BODY_CAPACITY));
        (&mut self.input).take(length as u64).read_to_end(&mut body)?;
        if body.len() < length {
            return Ok(Frame::Eof);
        }
        Ok(Frame::Body(body))
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(60).collect()
}

pub fn write_frame(output: &mut impl Write, body: &[u8]) -> io::Result<()> {
    write!(output, "Content-Length: {}\r\n\r\n", body.len())?;
    output.write_all(body)?;
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut reader = MessageReader::new(input);
        let mut frames = Vec::new();
        loop {
            let frame = reader.read_frame().unwrap();
            let done = frame == Frame::Eof;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    fn body(text: &str) -> Frame {
        Frame::Body(text.as_bytes().to_vec())
    }

    #[test]
    fn reads_well_formed_messages() {
        let input = b"Content-Length: 2\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}Content-Length: 4\r\n\r\nnull";
        assert_eq!(frames(input), [body("{}"), body("null"), Frame::Eof]);
    }

    #[test]
    fn recovers_from_garbage_and_bad_headers() {
        let input = b"garbage\r\nmore garbage\r\nContent-Length: 2\r\n\r\n{}\
Content-Length: abc\r\n\r\n\
Content-Type: x\r\n\r\n\
Content-Length: 1\r\n\r\n[xyzContent-Length: 2\r\n\r\n[]";
        let got = frames(input);
        assert_eq!(got[0], Frame::Malformed("unexpected bytes before a message header".into()));
        assert_eq!(got[1], body("{}"));
        assert_eq!(got[2], Frame::Malformed("invalid Content-Length `abc`".into()));
        assert_eq!(got[3], Frame::Malformed("missing Content-Length header".into()));
        // A too-short Content-Length: the body is cut, the rest is garbage before the next header.
        assert_eq!(got[4], body("["));
        assert_eq!(got[5], Frame::Malformed("unexpected bytes before a message header".into()));
        assert_eq!(got[6], body("[]"));
        assert_eq!(got[7], Frame::Eof);
    }

    #[test]
    fn truncated_stream_is_eof() {
        assert_eq!(frames(b"Content-Length: 10\r\n\r\n{}"), [Frame::Eof]);
        assert_eq!(frames(b"Content-Len"), [Frame::Eof]);
    }

    #[test]
    fn overlong_lines_are_skipped_without_being_kept() {
        let mut input = vec![b'x'; 3 * MAX_HEADER_LINE_BYTES];
        input.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\n{}");
        // A header section with an endless header line in it.
        input.extend_from_slice(b"Content-Length: 2\r\nX-Junk: ");
        input.extend(vec![b'y'; 5 * MAX_HEADER_LINE_BYTES]);
        input.extend_from_slice(b"\r\n\r\n{}Content-Length: 4\r\n\r\nnull");
        let got = frames(&input);
        assert_eq!(got[0], Frame::Malformed("unexpected bytes before a message header".into()));
        assert_eq!(got[1], body("{}"), "garbage before a header, however long, is skipped");
        assert_eq!(got[2], Frame::Malformed(format!("a header line longer than {MAX_HEADER_LINE_BYTES} bytes")));
        assert_eq!(got[got.len() - 2], body("null"), "reading resumes: {got:?}");
        // Nothing over the limit was ever collected: lines come back in pieces of at most the limit.
        let mut reader = MessageReader::new(&input[..]);
        while let Some(line) = reader.read_line().unwrap() {
            if let Line::Text(text) = line {
                assert!(text.len() <= MAX_HEADER_LINE_BYTES);
            }
        }
    }

    #[test]
    fn a_body_shorter_than_its_content_length_is_the_end_of_the_stream() {
        // A claim just under the limit, with a 2-byte body and then the end of the stream
        // (that the claim takes no memory is checked on the real binary: protocol_fuzz.rs).
        let input = format!("Content-Length: {}\r\n\r\n{{}}", MAX_BODY_BYTES - 1);
        let mut reader = MessageReader::new(input.as_bytes());
        assert_eq!(reader.read_frame().unwrap(), Frame::Eof);
        let over = format!("Content-Length: {}\r\n\r\n{{}}", MAX_BODY_BYTES + 1);
        assert_eq!(frames(over.as_bytes()), [Frame::Eof], "a body over the limit is skipped, not buffered");
    }

    #[test]
    fn writes_frames() {
        let mut out = Vec::new();
        write_frame(&mut out, b"{\"a\":1}").unwrap();
        assert_eq!(out, b"Content-Length: 7\r\n\r\n{\"a\":1}");
    }
}
