//! End-to-end tests of the LSP core against the real binary: lifecycle, bad input, document
//! sync in every position encoding, syntax scopes and configuration.

mod common;

use common::{Random, TestServer, fixture_model};
use serde_json::{Value, json};

fn options() -> Value {
    json!({ "modelPath": fixture_model() })
}

#[test]
fn initialize_negotiates_encodings_and_shuts_down_cleanly() {
    for (offered, expected) in [
        (&["utf-16", "utf-8"][..], "utf-8"),
        (&["utf-32", "utf-16"][..], "utf-16"),
        (&["utf-32"][..], "utf-32"),
        (&[][..], "utf-16"),
    ] {
        let mut server = TestServer::spawn(&[]);
        let result = server.initialize(options(), offered);
        assert_eq!(result["capabilities"]["positionEncoding"], expected, "offered {offered:?}");
        assert_eq!(result["serverInfo"]["name"], "nib");
        server.shutdown();
    }
}

/// The server restarts itself once with transparent huge pages for malloc's memory
/// (`engine::allocator::restart_with_huge_pages`), and leaves a user's own setting of the
/// tunable as it is.
#[test]
fn the_server_runs_with_huge_pages_unless_the_user_set_them() {
    let modes = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !modes.contains("[always]") && !modes.contains("[madvise]") {
        eprintln!("skipping: transparent huge pages are off here ({modes:?})");
        return;
    }
    // The process's environment as it started (glibc parses GLIBC_TUNABLES in place, ending
    // each setting it reads with a NUL: so the settings are looked for, not the whole value).
    let environment = |env: &[(&str, &str)]| {
        let mut server = TestServer::spawn(env);
        server.initialize(options(), &["utf-16"]);
        let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).unwrap();
        server.shutdown();
        String::from_utf8_lossy(&environ).into_owned()
    };
    assert!(environment(&[]).contains("GLIBC_TUNABLES=glibc.malloc.hugetlb=1"));
    let theirs = environment(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")]);
    assert!(theirs.contains("GLIBC_TUNABLES=glibc.malloc.arena_max=4") && theirs.contains("glibc.malloc.hugetlb=1"));
    let off = environment(&[("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")]);
    assert!(off.contains("GLIBC_TUNABLES=glibc.malloc.hugetlb=0") && !off.contains("hugetlb=1"), "{off}");
}

#[test]
fn lifecycle_errors_and_exit_codes() {
    let mut server = TestServer::spawn(&[]);
    let early = server.request("nib/inspect", json!({ "textDocument": { "uri": "file:///x.py" } }));
    assert_eq!(early.unwrap_err()["code"], -32002);
    server.initialize(options(), &["utf-16"]);
    let again = server.request("initialize", json!({ "capabilities": {} }));
    assert_eq!(again.unwrap_err()["code"], -32600);
    assert_eq!(server.request("shutdown", Value::Null), Ok(Value::Null));
    let after = server.request("nib/inspect", json!({ "textDocument": { "uri": "file:///x.py" } }));
    assert_eq!(after.unwrap_err()["code"], -32600);
    server.notify("exit", Value::Null);
    assert_eq!(server.wait_exit().map(|status| status.code()), Some(Some(0)));

    // `exit` without `shutdown` exits with 1, as the spec asks.
    let mut server = TestServer::start(options(), &["utf-16"]);
    server.notify("exit", Value::Null);
    assert_eq!(server.wait_exit().map(|status| status.code()), Some(Some(1)));

    // Closing stdin ends the server cleanly.
    let mut server = TestServer::start(options(), &["utf-16"]);
    assert_eq!(server.wait_exit().map(|status| status.code()), Some(Some(0)));
}

#[test]
fn bad_input_gets_error_replies_and_the_server_stays_up() {
    let mut server = TestServer::start(options(), &["utf-16"]);
    let uri = "file:///w/a.py";
    server.open(uri, "python", "x = 1\n");

    // Not JSON: a parse error with a null id.
    server.send_raw(b"Content-Length: 9\r\n\r\n{\"id\": 1,");
    let reply = server.wait_for("a parse error", |m| m["error"]["code"] == -32700);
    assert_eq!(reply["id"], Value::Null);
    // Garbage between messages, then a bad header.
    server.send_raw(b"\x00\xffnot a header\r\nContent-Length: x\r\n\r\n");
    server.wait_for("a parse error for garbage", |m| m["error"]["code"] == -32700);
    server.wait_for("a parse error for the header", |m| m["error"]["code"] == -32700);
    // Unknown method.
    assert_eq!(server.request("nib/frobnicate", json!({})).unwrap_err()["code"], -32601);
    // Wrong parameter types and negative positions.
    let wrong = server.request("nib/inspect", json!({ "textDocument": 7 }));
    assert_eq!(wrong.unwrap_err()["code"], -32602);
    let negative = server
        .request("nib/inspect", json!({ "textDocument": { "uri": uri }, "position": { "line": -1, "character": 0 } }));
    assert_eq!(negative.unwrap_err()["code"], -32602);
    // A line past the end of the document is an error; a column past the end clamps.
    let past = server
        .request("nib/inspect", json!({ "textDocument": { "uri": uri }, "position": { "line": 9, "character": 0 } }));
    assert_eq!(past.unwrap_err()["code"], -32602);
    let clamped = server.inspect(uri, Some((0, 999)));
    assert_eq!(clamped["text"], "x = 1\n");
    // Unopened documents.
    let unopened = server.request("nib/inspect", json!({ "textDocument": { "uri": "file:///nope.py" } }));
    assert_eq!(unopened.unwrap_err()["code"], -32602);
    server.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": "file:///nope.py", "version": 2 }, "contentChanges": [{ "text": "y" }] }),
    );
    // Version regressions are ignored, the text kept.
    server.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 1 }, "contentChanges": [{ "text": "lost" }] }),
    );
    assert_eq!(server.inspect(uri, None)["text"], "x = 1\n");
    server.shutdown();
}

#[test]
fn python_method_is_the_scope_at_a_position_inside_it() {
    let mut server = TestServer::start(options(), &["utf-16"]);
    let uri = "file:///w/shop.py";
    let text = "import os\n\nclass Cart:\n    def total(self, tax):\n        s = sum(self.items)\n        return s * tax\n\nx = 1\n";
    server.open(uri, "python", text);
    let inside = server.inspect(uri, Some((4, 12)));
    assert_eq!(inside["scope"]["kind"], "method");
    assert_eq!(inside["scope"]["name"], "total");
    assert_eq!(inside["scope"]["range"]["start"], json!({ "line": 3, "character": 4 }));
    // End of the method's last line: the pitfall tree-sitter lookups fall into.
    let end_of_line = server.inspect(uri, Some((5, 22)));
    assert_eq!(end_of_line["scope"]["name"], "total");
    assert_eq!(server.inspect(uri, Some((7, 1)))["scope"], Value::Null);
    assert_eq!(inside["parseErrorCount"], 0);
    assert_eq!(inside["lineCount"], 9);
    server.shutdown();
}

#[test]
fn invalid_settings_warn_by_key_and_keep_defaults() {
    let mut server = TestServer::spawn(&[]);
    server.initialize(json!({ "modelPath": fixture_model(), "completion": { "maxTokens": "lots" } }), &["utf-16"]);
    let warning = server.wait_for("a settings warning", |m| m["method"] == "window/showMessage");
    assert_eq!(warning["params"]["type"], 2);
    assert!(warning["params"]["message"].as_str().unwrap().contains("nib.completion.maxTokens"), "{warning}");
    // Pushed settings.
    server
        .notify("workspace/didChangeConfiguration", json!({ "settings": { "nib": { "docstring": { "style": 3 } } } }));
    let warning = server.wait_for("a pushed-settings warning", |m| m["method"] == "window/showMessage");
    assert!(warning["params"]["message"].as_str().unwrap().contains("nib.docstring.style"), "{warning}");
    // Pulled settings (the notification carries none).
    server.settings = json!({ "threads": -4, "modelPath": fixture_model() });
    server.notify("workspace/didChangeConfiguration", json!({ "settings": null }));
    let warning = server.wait_for("a pulled-settings warning", |m| m["method"] == "window/showMessage");
    assert!(warning["params"]["message"].as_str().unwrap().contains("nib.threads"), "{warning}");
    server.shutdown();
}

#[test]
fn the_status_says_what_generated_tests_would_run_with() {
    let python = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|folder| folder.join("python3"))
        .find(|path| path.is_file())
        .expect("python3 on PATH");
    let mut server = TestServer::spawn(&[]);
    server.initialize(
        json!({ "modelPath": fixture_model(), "python": { "interpreter": python }, "tests": { "timeBudgetSeconds": 45 } }),
        &["utf-16"],
    );
    let status = server.wait_for_status(|s| s["verification"].is_object());
    let verification = &status["verification"];
    assert_eq!(verification["enabled"], true, "{status}");
    assert_eq!(verification["timeBudgetSeconds"], 45, "{status}");
    assert_eq!(verification["python"]["program"], json!(python), "{status}");
    assert_eq!(verification["python"]["source"], "nib.python.interpreter", "{status}");
    // Not probed yet: asking for the status starts no program (`security::no_network_system_call_and_no_program_run_under_strace`).
    assert!(verification["isolation"].is_null(), "{status}");
    // A settings change is reported: verification off, an interpreter that does not exist.
    server.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "nib": { "modelPath": fixture_model(), "tests": { "verify": "off" },
                                       "python": { "interpreter": "/nonexistent/python3" } } } }),
    );
    let status = server.wait_for_status(|s| s["verification"]["enabled"] == false);
    assert_eq!(status["verification"]["python"], Value::Null, "no silent replacement: {status}");
    server.shutdown();
}

/// Reference model of a document, written independently of the server's rope code.
struct Reference {
    text: String,
}

impl Reference {
    /// Byte ranges of lines without terminators, split at `\n`, `\r\n` and `\r`.
    fn lines(&self) -> Vec<(usize, usize)> {
        let bytes = self.text.as_bytes();
        let mut lines = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    lines.push((start, i));
                    start = i + 1;
                }
                b'\r' => {
                    lines.push((start, i));
                    if bytes.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        lines.push((start, bytes.len()));
        lines
    }

    fn units(c: char, encoding: &str) -> usize {
        match encoding {
            "utf-8" => c.len_utf8(),
            "utf-16" => c.len_utf16(),
            _ => 1,
        }
    }

    /// A random position: usually on a character boundary, sometimes past the line end, past
    /// the last line, or inside a character's code units (which rounds down to its start).
    /// Returns the LSP position and the byte offset it means (after clamping).
    /// `near`: a line at most two below it (short deletions keep the document growing).
    fn random_position(&self, random: &mut Random, encoding: &str, near: Option<usize>) -> ((usize, usize), usize) {
        let lines = self.lines();
        // Past the last line (clamps to the end); rarely as a range end, which deletes the rest.
        if random.below(if near.is_some() { 400 } else { 25 }) == 0 {
            return ((lines.len() + random.below(3), random.below(5)), self.text.len());
        }
        let line = match near {
            Some(line) => (line + random.below(3)).min(lines.len() - 1),
            None => random.below(lines.len()),
        };
        let (start, end) = lines[line];
        let chars: Vec<(usize, char)> = self.text[start..end].char_indices().collect();
        if random.below(10) == 0 {
            let total: usize = chars.iter().map(|(_, c)| Self::units(*c, encoding)).sum();
            return ((line, total + 1 + random.below(5)), end);
        }
        let wide: Vec<usize> = (0..chars.len()).filter(|&i| Self::units(chars[i].1, encoding) > 1).collect();
        if !wide.is_empty() && random.below(10) == 0 {
            let count = *random.pick(&wide);
            let before: usize = chars[..count].iter().map(|(_, c)| Self::units(*c, encoding)).sum();
            let inside = 1 + random.below(Self::units(chars[count].1, encoding) - 1);
            return ((line, before + inside), start + chars[count].0);
        }
        let count = random.below(chars.len() + 1);
        let column = chars[..count].iter().map(|(_, c)| Self::units(*c, encoding)).sum();
        let byte = chars.get(count).map_or(end, |(offset, _)| start + offset);
        ((line, column), byte)
    }
}

/// Random incremental edits compared with the reference through `nib/inspect`, the tree with
/// a fresh parse every 100 edits. `NIB_SYNC_EDITS` sets the number of edits per encoding
/// (`make reliability` runs 100,000 each; docs/reliability.md).
fn random_edits(encoding: &'static str, seed: u64, initial: &str) {
    let edits: usize = std::env::var("NIB_SYNC_EDITS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let started = std::time::Instant::now();
    let mut longest = 0;
    let mut server = TestServer::start(options(), &[encoding]);
    let uri = format!("file:///w/prop_{}.py", encoding.replace('-', ""));
    server.open(&uri, "python", initial);
    let mut reference = Reference { text: initial.to_string() };
    let mut random = Random::new(seed);
    let pieces = [
        "x",
        "😀",
        "漢字",
        "e\u{301}",
        "\r\n",
        "\n",
        "\r",
        "def f(a):\n    return a\n",
        "    ",
        "(",
        ")",
        ":",
        "\"\"\"",
        "🎉🎉",
        "",
        "a\u{308}\u{301}",
        "日本語のテキスト",
        "👩‍👩‍👧",
        "\t}\r\n",
    ];
    let mut version = 1;
    for step in 0..edits {
        let (mut a_position, mut a_byte) = reference.random_position(&mut random, encoding, None);
        // Mostly insertions, else replacements of up to a few lines; past 64 KB mostly the latter.
        let insertion = random.below(4) < if reference.text.len() > 65_536 { 1 } else { 3 };
        let (mut b_position, mut b_byte) = if insertion {
            (a_position, a_byte)
        } else {
            reference.random_position(&mut random, encoding, Some(a_position.0))
        };
        if (b_position.0, b_position.1) < (a_position.0, a_position.1) {
            std::mem::swap(&mut a_position, &mut b_position);
            std::mem::swap(&mut a_byte, &mut b_byte);
        }
        let b_byte = b_byte.max(a_byte);
        let insert = random.pick(&pieces).to_string();
        reference.text.replace_range(a_byte..b_byte, &insert);
        longest = longest.max(reference.text.len());
        version += 1;
        server.notify(
            "textDocument/didChange",
            json!({
                "textDocument": { "uri": uri, "version": version },
                "contentChanges": [{
                    "range": {
                        "start": { "line": a_position.0, "character": a_position.1 },
                        "end": { "line": b_position.0, "character": b_position.1 },
                    },
                    "text": insert,
                }],
            }),
        );
        if step % 100 == 99 || step + 1 == edits {
            let state =
                server.request("nib/inspect", json!({ "textDocument": { "uri": uri }, "checkTree": true })).unwrap();
            assert_eq!(state["text"].as_str().unwrap(), reference.text, "{encoding}: diverged by step {step}");
            assert_eq!(state["version"], version);
            assert_eq!(state["treeMatchesFreshParse"], true, "{encoding}: tree diverged by step {step}");
        }
    }
    eprintln!(
        "{encoding}: {edits} edits, zero divergence, in {:.1} s (document up to {longest} bytes)",
        started.elapsed().as_secs_f64()
    );
    server.shutdown();
}

#[test]
fn random_edits_utf16_python_with_emoji_and_crlf() {
    random_edits("utf-16", 0x5eed_0016, "# 😀 héllo\r\ndef main():\r\n    print('漢字')\r\n");
}

#[test]
fn random_edits_utf8() {
    random_edits("utf-8", 0x5eed_0008, "a = 'e\u{301}'\n\ndef g(x):\n    return x\n");
}

#[test]
fn random_edits_utf32() {
    random_edits("utf-32", 0x5eed_0032, "");
}
