//! LSP base protocol framing (`Content-Length` headers + JSON body) over byte streams.
//!
//! The reader never gives up on a bad message: garbage between messages, a bad header, a wrong
//! `Content-Length` or a body that is not JSON each become one `Malformed` frame (the server
//! answers it with a JSON-RPC parse error) and reading resumes at the next header. Only the end
//! of the stream ends it. This is why nib owns its transport: the frameworks we tried exit on
//! the first malformed body, and an editor then loses all server state.

use std::io::{self, BufRead, Read, Write};

/// Bodies larger than this are skipped (and answered with an error) rather than buffered.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

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

    /// Reads one line including its `\n`; `None` at the end of the stream.
    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        if let Some(line) = self.pending_line.take() {
            return Ok(Some(line));
        }
        let mut line = Vec::new();
        let read = self.input.read_until(b'\n', &mut line)?;
        Ok((read > 0).then_some(line))
    }

    pub fn read_frame(&mut self) -> io::Result<Frame> {
        // Find the first header line, skipping blank lines and reporting garbage once.
        let mut skipped_garbage = false;
        let first_line = loop {
            let Some(line) = self.read_line()? else {
                return Ok(Frame::Eof);
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
                Some(next) => line = next,
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
        let mut body = vec![0; length];
        match self.input.read_exact(&mut body) {
            Ok(()) => Ok(Frame::Body(body)),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(Frame::Eof),
            Err(error) => Err(error),
        }
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
    fn writes_frames() {
        let mut out = Vec::new();
        write_frame(&mut out, b"{\"a\":1}").unwrap();
        assert_eq!(out, b"Content-Length: 7\r\n\r\n{\"a\":1}");
    }
}
