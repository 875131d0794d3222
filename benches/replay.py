#!/usr/bin/env python3
"""End-to-end latency: a typing session (benches/typist.py) replayed against the real LSP
server (`target/release/nib`, default model) over stdio JSON-RPC, as an editor drives it.

Per keystroke: `didChange` (incremental), then `textDocument/inlineCompletion` (automatic
trigger) at the cursor; a request still unanswered when the next keystroke comes is cancelled
with `$/cancelRequest` first, like VS Code does. Each reply is classified from the server's own
log (`NIB_LOG=nib=debug`; every line names the request id):

- `typing-through`: answered from the typing-through cache (`typing-through hit`);
- `kv-hit`: a generation that reused at least half of its prompt from the KV cache;
- `cold`: a generation that prefilled more than half of its prompt;
- `cancelled`: superseded by the next keystroke (error -32800);
- `none`: nothing to complete at the cursor (`nothing to complete here`).

Also: peak and current RSS of the server (`/proc/PID/status` VmHWM/VmRSS) idle after the model
loaded and after the replay, and latency vs number of open buffers. Used by benches/run.py;
on its own:

    .venv/bin/python benches/replay.py [--smoke]     # prints the JSON result
    .venv/bin/python benches/replay.py --part open-pause   # only the first completion after open
    .venv/bin/python benches/replay.py --part open-pause --pause 3   # ... after a 3 s pause
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import typist  # noqa: E402

REPO = typist.REPO
NIB = os.path.join(REPO, "target", "release", "nib")
# More `nib.*` settings for every server the bench starts (`--settings`).
SETTINGS: dict = {}


class Server:
    """The real nib binary over stdio; a reader thread timestamps every message."""

    def __init__(self, log_path: str, threads: int = 2, capabilities: dict | None = None):
        env = dict(os.environ, NIB_LOG="nib=debug")
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([NIB, "serve", "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, cwd=REPO)
        self.next_id = 0
        self.lock = threading.Condition()
        self.replies: dict[int, tuple[float, dict]] = {}
        self.notifications: list[tuple[float, dict]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        root = "file://" + REPO
        init = self.request("initialize", {
            "processId": os.getpid(), "rootUri": root,
            "workspaceFolders": [{"uri": root, "name": "nib"}],
            "capabilities": {"general": {"positionEncodings": ["utf-16"]},
                             **(capabilities or {"textDocument": {"inlineCompletion": {}, "synchronization": {}}})},
            "initializationOptions": {"nib": {"threads": threads, **SETTINGS}},
        })
        self.wait(init, 60)
        self.notify("initialized", {})

    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.proc.stdin.flush()

    def _read(self) -> None:
        stream = self.proc.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            message = json.loads(stream.read(length))
            now = time.perf_counter()
            if "method" in message and "id" in message:  # a request from the server
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            elif "method" in message:
                with self.lock:
                    self.notifications.append((now, message))
                    self.lock.notify_all()
            else:
                with self.lock:
                    self.replies[message["id"]] = (now, message)
                    self.lock.notify_all()

    def request(self, method: str, params: dict) -> int:
        self.next_id += 1
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def notify(self, method: str, params: dict) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait(self, request_id: int, timeout: float) -> tuple[float, dict]:
        with self.lock:
            if not self.lock.wait_for(lambda: request_id in self.replies, timeout):
                raise RuntimeError(f"no reply to request {request_id} within {timeout} s")
            return self.replies[request_id]

    def wait_ready(self, timeout: float = 120) -> dict:
        def ready():
            for _, n in self.notifications:
                if n["method"] == "nib/status" and n["params"].get("state") in ("ready", "error"):
                    return n["params"]
            return None
        with self.lock:
            if not self.lock.wait_for(lambda: ready() is not None, timeout):
                raise RuntimeError("the model did not load")
            status = ready()
        if status["state"] != "ready":
            raise RuntimeError(f"the model failed to load: {status}")
        return status

    def memory_mb(self) -> dict:
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    fields[key] = int(value.split()[0]) / 1024
        return fields

    def close(self) -> None:
        try:
            self.wait(self.request("shutdown", None), 30)
            self.notify("exit", None)
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()  # reaped, so run.py counts its CPU time as the bench's own
            self.log.close()

    def workspace_context(self) -> dict:
        """What the workspace index did during the run, from the server log: files indexed and
        retrievals answered (the KV hit rate is measured with repository context on)."""
        files, retrievals = 0, 0
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "workspace indexed" in line:
                    found = re.search(r"\bfiles=(\d+)", line)
                    files = int(found.group(1)) if found else files
                elif ": retrieved" in line and "nib::index" in line:
                    retrievals += 1
        return {"indexedFiles": files, "retrievals": retrievals}

    def log_records(self) -> dict[int, dict]:
        """Completion log lines by request id: kind plus the logged counters."""
        records = {}
        pattern = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "inline_completion" not in line:
                    continue
                kind = next((k for k in ("typing-through hit", "nothing to complete here", "completion")
                             if f": {k}" in line), None)
                if kind is None:
                    continue
                fields = {k: v.strip('"') for k, v in pattern.findall(line)}
                if "id" not in fields:
                    continue
                fields["kind"] = kind
                records[int(fields["id"])] = fields
        return records


def inline_request(server: Server, uri: str, line: int, character: int) -> int:
    return server.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
        "context": {"triggerKind": 2}})


def classify(reply: dict, record: dict | None) -> str:
    if "error" in reply:
        return "cancelled" if reply["error"].get("code") == -32800 else "error"
    if record is None:
        return "other"
    if record["kind"] == "typing-through hit":
        return "typing-through"
    if record["kind"] == "nothing to complete here":
        return "none"
    reused, prefilled = int(record["reused"]), int(record["prefilled"])
    return "kv-hit" if reused >= prefilled else "cold"


def replay(session: dict, workdir: str) -> dict:
    server = Server(os.path.join(workdir, "replay-server.log"))
    try:
        status = server.wait_ready()
        uri = "file://" + os.path.join(REPO, session["source"])
        server.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": session["initialText"]}})
        # nib/inspect answers after didOpen is processed: the idle measurement point.
        server.wait(server.request("nib/inspect", {"textDocument": {"uri": uri}}), 30)
        idle = server.memory_mb()
        version = 1
        sent: dict[int, float] = {}
        pending = None
        start = time.perf_counter()
        for index, event in enumerate(session["events"]):
            delay = start + event["t"] / 1e3 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            version += 1
            l0, c0, l1, c1 = event["range"]
            server.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": {"line": l0, "character": c0},
                                              "end": {"line": l1, "character": c1}}, "text": event["text"]}]})
            if pending is not None and pending not in server.replies:
                server.notify("$/cancelRequest", {"id": pending})
            pending = inline_request(server, uri, *event["cursor"])
            sent[pending] = time.perf_counter()
            if (index + 1) % 100 == 0:
                print(f"replay: {index + 1}/{len(session['events'])} keystrokes", file=sys.stderr, flush=True)
        for request_id in sent:
            server.wait(request_id, 60)
        check = server.wait(server.request("nib/inspect", {"textDocument": {"uri": uri}}), 30)[1]["result"]
        if check["text"] != session["finalText"]:
            raise RuntimeError("the server's document differs from the typed file after the replay")
        after = server.memory_mb()
        engine = check["engine"]["stats"]
    finally:
        server.close()
    records = server.log_records()
    context = server.workspace_context()
    requests = []
    for request_id, sent_at in sent.items():
        received, reply = server.replies[request_id]
        record = records.get(request_id)
        item = {"id": request_id, "class": classify(reply, record), "ms": (received - sent_at) * 1e3}
        if record and record["kind"] == "completion":
            # A server older than the tokenize time in its log shows null there (A/B runs).
            tokenize_ms = float(record["tokenize_ms"]) if "tokenize_ms" in record else None
            item.update(mode=record.get("mode"), reused=int(record["reused"]), prefilled=int(record["prefilled"]),
                        generated=int(record["generated"]), tokenizeMs=tokenize_ms,
                        prefillMs=float(record["prefill_ms"]), decodeMs=float(record["decode_ms"]))
        requests.append(item)
    return {"status": status, "memoryIdleMb": idle, "memoryAfterMb": after, "engineStats": engine,
            "keystrokes": len(session["events"]), "typedChars": session["typedChars"],
            "durationS": session["events"][-1]["t"] / 1e3, "requests": requests, "workspaceContext": context}


def repo_sources(limit: int, exclude: str) -> list[str]:
    """Real source files of this repository (Python first, then Rust), for extra buffers."""
    out = subprocess.run(["git", "ls-files", "*.py", "*.rs"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    out.sort(key=lambda p: (not p.endswith(".py"), p))
    return [p for p in out if p != exclude and os.path.getsize(os.path.join(REPO, p)) < 200_000][:limit]


def buffers_scaling(counts: list[int], workdir: str) -> list[dict]:
    """For each number of other open buffers: the first completion after they opened (the
    cross-file context changes, so the prompt head is new) and three keystrokes after it."""
    session = typist.record()
    server = Server(os.path.join(workdir, "buffers-server.log"))
    results = []
    try:
        server.wait_ready()
        uri = "file://" + os.path.join(REPO, session["source"])
        line, col = session["start"]
        server.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": session["initialText"]}})
        version, opened = 1, 0
        others = repo_sources(max(counts), session["source"])
        for count in counts:
            for path in others[opened:count]:
                language = "python" if path.endswith(".py") else "rust"
                server.notify("textDocument/didOpen", {"textDocument": {
                    "uri": "file://" + os.path.join(REPO, path), "languageId": language, "version": 1,
                    "text": open(os.path.join(REPO, path), encoding="utf-8", errors="replace").read()}})
            opened = count
            ids = []
            # The cursor's line starts empty: a request there, then three keystrokes the model
            # will not have suggested (so they run the model, not the typing-through cache).
            for step, ch in enumerate(["", "q", "z", "j"]):
                if ch:
                    version += 1
                    server.notify("textDocument/didChange", {
                        "textDocument": {"uri": uri, "version": version},
                        "contentChanges": [{"range": {"start": {"line": line, "character": col + step - 1},
                                                      "end": {"line": line, "character": col + step - 1}},
                                            "text": ch}]})
                t = time.perf_counter()
                request_id = inline_request(server, uri, line, col + step)
                received, reply = server.wait(request_id, 120)
                ids.append((request_id, (received - t) * 1e3, reply))
            # Back to the empty line for the next count.
            version += 1
            server.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": {"line": line, "character": col},
                                              "end": {"line": line, "character": col + 3}}, "text": ""}]})
            results.append({"buffers": count, "requests": ids})
            print(f"replay: {count} other buffers done", file=sys.stderr, flush=True)
        memory = server.memory_mb()
    finally:
        server.close()
    records = server.log_records()
    table = []
    for entry in results:
        rows = []
        for request_id, ms, reply in entry["requests"]:
            record = records.get(request_id) or {}
            rows.append({"ms": ms, "class": classify(reply, record or None),
                         "promptTokens": int(record.get("reused", 0)) + int(record.get("prefilled", 0)),
                         "prefilled": int(record.get("prefilled", 0)), "generated": int(record.get("generated", 0)),
                         "prefillMs": float(record.get("prefill_ms", 0)), "decodeMs": float(record.get("decode_ms", 0))})
        table.append({"buffers": entry["buffers"], "first": rows[0], "keystrokes": rows[1:]})
    return {"rows": table, "memoryMb": memory}


def open_and_pause(files: int, workdir: str, pause: float = 1.0) -> dict:
    """The first completion after opening a file and pausing `pause` s (what the pre-warm on open
    buys), for `files` real Python files of this repository, one after the other on one server:
    the request is made at a new empty line typed at the end of the file, `pause` s after that
    edit."""
    server = Server(os.path.join(workdir, "open-pause-server.log"))
    rows = []
    try:
        server.wait_ready()
        for path in [p for p in repo_sources(40, "") if p.endswith(".py")][:files]:
            text = open(os.path.join(REPO, path), encoding="utf-8", errors="replace").read()
            uri = "file://" + os.path.join(REPO, path)
            server.notify("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": "python", "version": 1, "text": text}})
            line = text.count("\n")
            end = len(text.rsplit("\n", 1)[-1])
            server.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": 2},
                "contentChanges": [{"range": {"start": {"line": line, "character": end},
                                              "end": {"line": line, "character": end}}, "text": "\n"}]})
            time.sleep(pause)
            t = time.perf_counter()
            request_id = inline_request(server, uri, line + 1, 0)
            received, reply = server.wait(request_id, 120)
            rows.append((request_id, (received - t) * 1e3, reply, path))
        memory = server.memory_mb()
    finally:
        server.close()
    records = server.log_records()
    out = []
    for request_id, ms, reply, path in rows:
        record = records.get(request_id) or {}
        out.append({"path": path, "ms": ms, "class": classify(reply, record or None),
                    "reused": int(record.get("reused", 0)), "prefilled": int(record.get("prefilled", 0)),
                    "capped": int(record.get("capped", 0))})
    return {"rows": out, "p50": percentile([r["ms"] for r in out], 0.5), "memoryMb": memory}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarize(result: dict) -> dict:
    reqs = result["requests"]
    by = {}
    for r in reqs:
        by.setdefault(r["class"], []).append(r)
    out = {"counts": {k: len(v) for k, v in by.items()}}
    for cls in ("cold", "kv-hit", "typing-through"):
        ms = [r["ms"] for r in by.get(cls, [])]
        out[cls] = {"n": len(ms), "p50": percentile(ms, 0.5), "p95": percentile(ms, 0.95)}
    single = [r["ms"] for r in by.get("kv-hit", []) if r.get("mode") == "SingleLine"]
    out["kv-hit-single-line"] = {"n": len(single), "p50": percentile(single, 0.5), "p95": percentile(single, 0.95)}
    generations = by.get("cold", []) + by.get("kv-hit", [])
    answered = generations + by.get("typing-through", [])
    out["kvHitRate"] = len(by.get("kv-hit", [])) / len(generations) if generations else float("nan")
    # While typing: everything after the first request (which necessarily starts cold).
    later = [r for r in generations if r["id"] != reqs[0]["id"]]
    out["kvHitRateWhileTyping"] = (sum(r["class"] == "kv-hit" for r in later) / len(later)) if later else float("nan")
    out["typingThroughRate"] = len(by.get("typing-through", [])) / len(answered) if answered else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few keystrokes at 10x speed")
    ap.add_argument("--workdir", default=os.path.join(REPO, ".cache", "bench"))
    ap.add_argument("--part", choices=["all", "replay", "buffers", "open-pause"], default="all",
                    help="run one part only (the typing replay, open buffers, or the first completion after open)")
    ap.add_argument("--pause", type=float, default=1.0,
                    help="open-pause: seconds between the edit and the request (default 1)")
    ap.add_argument("--settings", type=json.loads, default={},
                    help='more nib settings as JSON, e.g. \'{"completion": {"prefillBudgetMs": 300}}\'')
    a = ap.parse_args()
    SETTINGS.update(a.settings)
    os.makedirs(a.workdir, exist_ok=True)
    result = {}
    if a.part in ("all", "replay"):
        session = typist.record(chars=40, speed=0.1) if a.smoke else typist.record()
        result = replay(session, a.workdir)
        result["summary"] = summarize(result)
    if a.part in ("all", "buffers"):
        result["buffers"] = buffers_scaling([0, 1] if a.smoke else [0, 4, 16, 64], a.workdir)
    if a.part in ("all", "open-pause"):
        result["openPause"] = open_and_pause(1 if a.smoke else 5, a.workdir, a.pause)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
