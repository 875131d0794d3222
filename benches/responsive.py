#!/usr/bin/env python3
"""Ghost text during a long code action: "Add docstrings to all functions" runs on a
20-function Python file through the real LSP server (`target/release/nib`, default model), and
an explicitly invoked inline completion is sent 1.5 s into it.

Measured (request sent → reply received):
- the action's duration and the duration of each of its steps (time between consecutive
  `$/progress` reports, one per function);
- the completion's latency while the action runs;
- the same completion's own cost once the action has ended, in a copy of the file (the KV
  cache then holds an action prompt, as it does while the action runs, and the typing-through
  cache cannot answer it).

The engine's scheduler runs a waiting completion before the action's next generation, so the
latency should stay within one step plus the completion's own cost (issue 18). Used by
benches/run.py; on its own:

    .venv/bin/python benches/responsive.py [--smoke]     # prints the JSON result
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import replay  # noqa: E402

FUNCTIONS = 20
DELAY_S = 1.5


def source(functions: int) -> str:
    """A Python module of small undocumented functions (written here, varied enough that each
    docstring is its own question)."""
    bodies = [
        ("add", "a, b", "return a + b"),
        ("scale", "values, factor", "return [v * factor for v in values]"),
        ("clamp", "x, low, high", "return max(low, min(high, x))"),
        ("mean", "values", "return sum(values) / len(values) if values else 0.0"),
        ("initials", "name", "return ''.join(part[0].upper() for part in name.split())"),
        ("is_even", "n", "return n % 2 == 0"),
        ("word_count", "text", "return len(text.split())"),
        ("merge", "left, right", "result = dict(left)\n    result.update(right)\n    return result"),
        ("first_or", "items, default", "return items[0] if items else default"),
        ("percent", "part, whole", "return 100.0 * part / whole if whole else 0.0"),
    ]
    lines = []
    for index in range(functions):
        name, params, body = bodies[index % len(bodies)]
        lines += [f"def {name}_{index}({params}):", f"    {body}", "", ""]
    lines += ["def total_price(prices, tax):", "    subtotal = sum(prices)", "    return "]
    return "\n".join(lines)


def during_action(workdir: str, smoke: bool = False) -> dict:
    functions = 4 if smoke else FUNCTIONS
    text = source(functions)
    path = os.path.join(workdir, "responsive_sample.py")
    with open(path, "w") as f:
        f.write(text)
    uri = "file://" + path
    copy_uri = "file://" + os.path.join(workdir, "responsive_sample_copy.py")
    server = replay.Server(os.path.join(workdir, "responsive-server.log"), capabilities={
        "window": {"workDoneProgress": True},
        "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
        "textDocument": {"inlineCompletion": {}, "synchronization": {},
                         "codeAction": {"resolveSupport": {"properties": ["edit"]}}},
    })
    last_line = text.count("\n")
    cursor = {"line": last_line, "character": len("    return ")}

    def completion(in_uri: str) -> int:
        return server.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": in_uri}, "position": cursor, "context": {"triggerKind": 1}})

    try:
        server.wait_ready()
        for open_uri in (uri, copy_uri):
            server.notify("textDocument/didOpen", {"textDocument": {
                "uri": open_uri, "languageId": "python", "version": 1, "text": text}})
        listed = server.wait(server.request("textDocument/codeAction", {
            "textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0},
                                                   "end": {"line": 0, "character": 0}},
            "context": {"diagnostics": [], "only": ["source"]}}), 30)[1]["result"]
        action = next(a for a in listed if a["kind"] == "source.nib.docstrings")
        action_sent = time.perf_counter()
        resolve = server.request("codeAction/resolve", action)
        time.sleep(DELAY_S)
        completion_sent = time.perf_counter()
        during = completion(uri)
        completion_received, completion_reply = server.wait(during, 300)
        action_received, action_reply = server.wait(resolve, 600)
        # The same completion on an otherwise idle server.
        alone_sent = time.perf_counter()
        alone_received, alone_reply = server.wait(completion(copy_uri), 60)
        with server.lock:
            reports = [t for t, n in server.notifications
                       if n["method"] == "$/progress" and n["params"]["value"].get("kind") == "report"
                       and n["params"]["token"].startswith("nib/action/")]
    finally:
        server.close()
    for reply in (completion_reply, action_reply, alone_reply):
        if "error" in reply:
            raise RuntimeError(f"the responsiveness bench got an error reply: {reply['error']}")
    edges = [action_sent, *reports, action_received]
    steps_ms = [(b - a) * 1e3 for a, b in zip(edges, edges[1:])]
    return {
        "functions": functions,
        "documented": len(action_reply["result"]["edit"]["documentChanges"][0]["edits"]),
        "actionS": action_received - action_sent,
        "stepMs": {"median": statistics.median(steps_ms), "max": max(steps_ms), "n": len(steps_ms)},
        "completionSentAfterS": completion_sent - action_sent,
        "completionDuringMs": (completion_received - completion_sent) * 1e3,
        "completionAnsweredBeforeActionEnd": completion_received < action_received,
        "completionAloneMs": (alone_received - alone_sent) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="4 functions instead of 20")
    args = ap.parse_args()
    workdir = os.path.join(replay.REPO, ".cache", "bench")
    os.makedirs(workdir, exist_ok=True)
    print(json.dumps(during_action(workdir, args.smoke), indent=1))


if __name__ == "__main__":
    main()
