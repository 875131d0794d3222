//! A scripted HTTP/1.1 server on 127.0.0.1 for the tests that play a hostile or broken
//! completions server (redirects, endless keep-alives, huge bodies, slow answers). Each
//! connection runs `handler` on its own thread with the parsed request; every request is
//! recorded. Not a mock of a real engine: the remote suite runs llama.cpp's server for that.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

type Handler = dyn Fn(&Request, &mut TcpStream) + Send + Sync;

pub struct HttpStub {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
    stopped: Arc<AtomicBool>,
}

impl HttpStub {
    pub fn start(handler: impl Fn(&Request, &mut TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (recorded, stop) = (Arc::clone(&requests), Arc::clone(&stopped));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let (handler, recorded) = (Arc::clone(&handler), Arc::clone(&recorded));
                std::thread::spawn(move || {
                    while let Some(request) = read_request(&mut stream) {
                        recorded.lock().unwrap().push(request.clone());
                        handler(&request, &mut stream);
                        if request.header("connection") == Some("close") {
                            return;
                        }
                    }
                });
            }
        });
        HttpStub { port, requests, stopped }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // Wakes the accept loop.
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok().filter(|n| *n > 0)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length: usize =
        headers.iter().find(|(name, _)| name == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// Writes a complete response with a JSON (or any) body.
pub fn respond(stream: &mut TcpStream, status: &str, extra_headers: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// The `GET /models` answer listing one model.
pub fn models(stream: &mut TcpStream, name: &str) {
    respond(stream, "200 OK", "", &format!(r#"{{"object":"list","data":[{{"id":"{name}"}}]}}"#));
}

/// Starts a server-sent-events response; then send events with `event`.
pub fn start_events(stream: &mut TcpStream) {
    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
    let _ = stream.flush();
}

/// Sends one chunk of an event stream; false once the client is gone.
pub fn event(stream: &mut TcpStream, text: &str) -> bool {
    write!(stream, "{:x}\r\n{text}\r\n", text.len()).and_then(|()| stream.flush()).is_ok()
}

/// One completion piece as an event.
pub fn piece(text: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
    format!("data: {{\"choices\":[{{\"text\":{},\"finish_reason\":{finish}}}]}}\n\n", serde_json::json!(text))
}

/// A complete streamed answer: `text` in one piece, then `[DONE]`.
pub fn complete_stream(stream: &mut TcpStream, text: &str) {
    start_events(stream);
    event(stream, &piece(text, Some("stop")));
    event(stream, "data: [DONE]\n\n");
    let _ = write!(stream, "0\r\n\r\n");
    let _ = stream.flush();
}

/// Sends `: keep-alive` comments every 100 ms until the client hangs up (or `limit` passes).
pub fn keep_alive_forever(stream: &mut TcpStream, limit: Duration) {
    start_events(stream);
    let started = std::time::Instant::now();
    while started.elapsed() < limit && event(stream, ": keep-alive\n\n") {
        std::thread::sleep(Duration::from_millis(100));
    }
}
