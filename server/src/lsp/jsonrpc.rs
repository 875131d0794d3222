//! JSON-RPC 2.0 messages as LSP uses them: classification of incoming bodies, constructors for
//! outgoing ones, and the error codes nib answers with.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// Error codes from the JSON-RPC and LSP specifications.
pub mod code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    pub const SERVER_NOT_INITIALIZED: i32 = -32002;
    pub const REQUEST_FAILED: i32 = -32803;
    pub const CONTENT_MODIFIED: i32 = -32801;
    pub const REQUEST_CANCELLED: i32 = -32800;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: i32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ResponseError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        ResponseError { code, message: message.into(), data: None }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }

    pub fn request_failed(message: impl Into<String>) -> Self {
        Self::new(code::REQUEST_FAILED, message)
    }

    pub fn cancelled() -> Self {
        Self::new(code::REQUEST_CANCELLED, "request cancelled")
    }
}

/// An incoming message after classification.
#[derive(Debug)]
pub enum Incoming {
    Request {
        id: RequestId,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    Response {
        id: RequestId,
        result: Result<Value, ResponseError>,
    },
    /// Not a usable message; answered with `error` (and `id` when one could be read).
    Invalid {
        id: Option<RequestId>,
        error: ResponseError,
    },
}

impl Incoming {
    pub fn parse(body: &[u8]) -> Incoming {
        // Editors written in JavaScript can send lone UTF-16 surrogates (`"\ud800"`), which
        // serde rejects; they become U+FFFD (also one UTF-16 unit, so positions stay right)
        // rather than losing the whole message, a document change perhaps.
        let parsed = serde_json::from_slice(body).or_else(|error| match replace_lone_surrogates(body) {
            Some(repaired) => serde_json::from_slice(&repaired).map_err(|_| error),
            None => Err(error),
        });
        let value: Value = match parsed {
            Ok(value) => value,
            Err(error) => {
                return Incoming::Invalid {
                    id: None,
                    error: ResponseError::new(code::PARSE_ERROR, format!("invalid JSON: {error}")),
                };
            }
        };
        let Value::Object(mut object) = value else {
            return Incoming::Invalid {
                id: None,
                error: ResponseError::new(code::INVALID_REQUEST, "a message must be a JSON object"),
            };
        };
        let id = match object.remove("id") {
            None | Some(Value::Null) => None,
            Some(raw) => match serde_json::from_value::<RequestId>(raw) {
                Ok(id) => Some(id),
                Err(_) => {
                    return Incoming::Invalid {
                        id: None,
                        error: ResponseError::new(code::INVALID_REQUEST, "`id` must be a number or a string"),
                    };
                }
            },
        };
        let params = object.remove("params").unwrap_or(Value::Null);
        match (object.remove("method"), id) {
            (Some(Value::String(method)), Some(id)) => Incoming::Request { id, method, params },
            (Some(Value::String(method)), None) => Incoming::Notification { method, params },
            (Some(_), id) => {
                Incoming::Invalid { id, error: ResponseError::new(code::INVALID_REQUEST, "`method` must be a string") }
            }
            (None, Some(id)) => {
                let result = match (object.remove("result"), object.remove("error")) {
                    (_, Some(error)) => Err(serde_json::from_value(error)
                        .unwrap_or_else(|_| ResponseError::new(code::INTERNAL_ERROR, "malformed error in response"))),
                    (Some(result), None) => Ok(result),
                    (None, None) => Ok(Value::Null),
                };
                Incoming::Response { id, result }
            }
            (None, None) => Incoming::Invalid {
                id: None,
                error: ResponseError::new(code::INVALID_REQUEST, "a message needs a `method` or an `id`"),
            },
        }
    }
}

/// `body` with every `\uXXXX` escape of an unpaired surrogate replaced by `\uFFFD`, or `None`
/// when it has none. Escapes are only read inside strings, where JSON allows backslashes.
fn replace_lone_surrogates(body: &[u8]) -> Option<Vec<u8>> {
    let escape_at = |i: usize| -> Option<u16> {
        let hex = body.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(body.len());
    let (mut i, mut in_string, mut replaced) = (0, false, false);
    while i < body.len() {
        match body[i] {
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                let pair = escape_at(i).zip(escape_at(i + 6));
                match escape_at(i) {
                    Some(0xD800..=0xDBFF) if pair.is_some_and(|(_, low)| (0xDC00..=0xDFFF).contains(&low)) => {
                        out.extend_from_slice(&body[i..i + 12]);
                        i += 12;
                    }
                    Some(0xD800..=0xDFFF) => {
                        out.extend_from_slice(b"\\uFFFD");
                        replaced = true;
                        i += 6;
                    }
                    _ => {
                        out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                        i += 2;
                    }
                }
                continue;
            }
            _ => {}
        }
        out.push(body[i]);
        i += 1;
    }
    replaced.then_some(out)
}

pub fn response(id: Option<&RequestId>, result: Result<Value, ResponseError>) -> Value {
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": error }),
    }
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

pub fn request(id: &RequestId, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let kind = |text: &str| match Incoming::parse(text.as_bytes()) {
            Incoming::Request { id, method, .. } => format!("request {id} {method}"),
            Incoming::Notification { method, .. } => format!("notification {method}"),
            Incoming::Response { id, result } => format!("response {id} ok={}", result.is_ok()),
            Incoming::Invalid { id, error } => format!("invalid {id:?} {}", error.code),
        };
        assert_eq!(kind(r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#), "request 1 a");
        assert_eq!(kind(r#"{"jsonrpc":"2.0","id":"x","method":"a"}"#), r#"request "x" a"#);
        assert_eq!(kind(r#"{"jsonrpc":"2.0","method":"b","params":{}}"#), "notification b");
        assert_eq!(kind(r#"{"jsonrpc":"2.0","id":3,"result":null}"#), "response 3 ok=true");
        assert_eq!(kind(r#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m"}}"#), "response 3 ok=false");
        assert_eq!(kind(r#"{"id":1,"method":7}"#), "invalid Some(Number(1)) -32600");
        assert_eq!(kind(r#"{"id":[1],"method":"a"}"#), "invalid None -32600");
        assert_eq!(kind("[1,2]"), "invalid None -32600");
        assert_eq!(kind("{\"id\":"), "invalid None -32700");
        assert_eq!(kind("\u{fffd}\u{0}"), "invalid None -32700");
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let text = |body: &str| match Incoming::parse(body.as_bytes()) {
            Incoming::Notification { params, .. } => params["t"].as_str().unwrap().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(r#"{"method":"m","params":{"t":"a\ud800b"}}"#), "a\u{fffd}b");
        assert_eq!(text(r#"{"method":"m","params":{"t":"\udc00\ud83d\ude00\ud83d"}}"#), "\u{fffd}😀\u{fffd}");
        // An escaped backslash followed by `ud800` is plain text, not an escape.
        assert_eq!(text(r#"{"method":"m","params":{"t":"\\ud800 \ud800"}}"#), "\\ud800 \u{fffd}");
        assert!(matches!(Incoming::parse(br#"{"id":1,"method":"m","params":"\ud800"}"#), Incoming::Request { .. }));
    }
}
