#!/usr/bin/env python3
"""nib's demo: drives the real `nib` language server over stdio, like an editor, on the sample
project in examples/shop, and prints what an editor would show.

Standard library only. Run through `make demo` (which builds nib and the default model first).
"""

import json
import os
import subprocess
import sys
import threading
import time
import queue
import shutil
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIB = os.path.join(ROOT, "target", "release", "nib")
SHOP = os.path.join(ROOT, "examples", "shop")
DIM, BOLD, RESET = ("\033[2m", "\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


class Client:
    """A minimal LSP client: framing, requests with ids, notifications kept aside."""

    def __init__(self, command):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.messages = queue.Queue()
        self.next_id = 0
        self.notifications = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        stream = self.process.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    self.messages.put(None)
                    return
                line = line.strip()
                if not line:
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.messages.put(json.loads(stream.read(length)))

    def send(self, message):
        body = json.dumps(message).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def notify(self, method, params):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method, params, timeout=300):
        self.next_id += 1
        request_id = self.next_id
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.time() + timeout
        while True:
            message = self.messages.get(timeout=max(0.1, deadline - time.time()))
            if message is None:
                raise RuntimeError("nib exited")
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise RuntimeError(message["error"]["message"])
                return message["result"]
            self._other(message)

    def _other(self, message):
        if "method" in message and "id" in message:  # a request from the server
            result = [{}] if message["method"] == "workspace/configuration" else None
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": result})
        else:
            self.notifications.append(message)
            if message.get("method") == "window/showMessage":
                print(f"  [nib says] {message['params']['message']}")

    def wait_for_status(self, timeout=300):
        deadline = time.time() + timeout
        while True:
            for message in self.notifications:
                if message.get("method") == "nib/status" and message["params"]["state"] in ("ready", "error"):
                    return message["params"]
            message = self.messages.get(timeout=max(0.1, deadline - time.time()))
            if message is None:
                raise RuntimeError("nib exited")
            self._other(message)


def uri(path):
    return "file://" + path


def show_ghost(label, document_text, line, character, ghost):
    lines = document_text.split("\n")
    before = lines[line][:character]
    print(f"{BOLD}{label}{RESET}")
    for number in range(max(0, line - 3), line):
        print(f"  {number + 1:3} | {lines[number]}")
    ghost_lines = ghost.split("\n") if ghost else [""]
    print(f"  {line + 1:3} | {before}{DIM}{ghost_lines[0]}{RESET}{lines[line][character:]}")
    for extra in ghost_lines[1:]:
        print(f"      | {DIM}{extra}{RESET}")
    if not ghost:
        print("      (no suggestion)")


def inline_completion(client, path, line, character):
    started = time.perf_counter()
    result = client.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": uri(path)},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 2},
        },
    )
    elapsed = (time.perf_counter() - started) * 1000
    items = result.get("items", []) if result else []
    return (items[0]["insertText"] if items else ""), elapsed


def inspect_until(client, params, ready, interval, timeout=30):
    """Asks `nib/inspect` with `params` every `interval` s until `ready(answer)`, for at most
    `timeout` s; returns the last answer and whether it was ready."""
    deadline = time.perf_counter() + timeout
    while True:
        state = client.request("nib/inspect", params)
        if ready(state) or time.perf_counter() >= deadline:
            return state, ready(state)
        time.sleep(interval)


def wait_for_prewarm(client, path, line):
    """Waits until the pre-warm of `path` up to `line` has run with the workspace's definitions
    in its prompt (the index answers after the open, and its answer warms the prompt again);
    returns the tokens the KV cache then holds."""
    def warmed(state):
        prewarm = state.get("prewarm") or {}
        return (prewarm.get("uri") == uri(path) and prewarm.get("line") == line and prewarm.get("warmed")
                and not prewarm.get("running") and prewarm.get("withWorkspaceContext"))
    state, _ = inspect_until(client, {"textDocument": {"uri": uri(path)}}, warmed, interval=0.05)
    return state["engine"].get("cachedTokens", 0)


def run_written_tests(test_path, text):
    """Applies the tests to a scratch copy of the project and runs them, as the user would."""
    with tempfile.TemporaryDirectory(prefix="nib-demo-") as scratch:
        for name in os.listdir(SHOP):
            if name.endswith(".py"):
                shutil.copy(os.path.join(SHOP, name), scratch)
        module = os.path.splitext(os.path.basename(test_path))[0]
        with open(os.path.join(scratch, os.path.basename(test_path)), "w") as file:
            file.write(text)
        run = subprocess.run([sys.executable, "-m", "unittest", "-v", module], cwd=scratch,
                             capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        summary = [line for line in run.stderr.splitlines() if line.startswith(("Ran ", "OK", "FAILED"))]
        print(f"   running them (python -m unittest {module}): {' — '.join(summary)}\n")


def wait_for_grounded_import(client, path, line, character):
    """Waits until the import nib would offer at (line, character) is the one the workspace
    index proposed for the file (the index answers for a new file on its own thread, in less time
    than a user takes to type `from `); returns whether it did, and the milliseconds waited."""
    started = time.perf_counter()
    params = {"textDocument": {"uri": uri(path)}, "position": {"line": line, "character": character},
              "prompt": True}
    grounded_there = lambda state: bool((state.get("prompt") or {}).get("grounded"))
    _, grounded = inspect_until(client, params, grounded_there, interval=0.02)
    return grounded, (time.perf_counter() - started) * 1000


def grounded_import(client):
    """A new file that uses the project's functions before importing them: on the `from` line
    nib offers the import the index proves right, without running the model."""
    path = os.path.join(SHOP, "receipt.py")
    text = ('"""A receipt."""\n\nfrom \n\n\ndef line_total(price, quantity, percent=0):\n'
            '    return with_tax(apply_discount(price * quantity, percent))\n')
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri(path), "languageId": "python", "version": 1, "text": text}})
    grounded, waited = wait_for_grounded_import(client, path, 2, 5)
    generated = lambda: client.request("nib/inspect", {"textDocument": {"uri": uri(path)}})["engine"]["stats"]["generatedTokens"]
    before = generated()
    ghost, ms = inline_completion(client, path, 2, 5)
    show_ghost("5. A missing import in a new file (receipt.py, not saved)", text, 2, 5, ghost)
    for number, line in enumerate(text.split("\n")[3:7], start=4):
        print(f"  {number:3} | {line}")
    source = (f"from the workspace index (the names the code below uses, defined in pricing.py; it answered "
              f"{waited:.0f} ms after the open)" if grounded else
              f"from the model: the workspace index had not answered {waited / 1000:.0f} s after the open")
    print(f"   {ms:.0f} ms, {source}; the model generated {generated() - before} tokens for it\n")
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri(path)}})


def main():
    if not os.path.exists(NIB):
        sys.exit("nib is not built: run `make demo`")
    print(f"{BOLD}nib demo{RESET}: the real language server, the default model, the sample project in examples/shop\n")
    client = Client([NIB])
    client.request(
        "initialize",
        {
            "processId": os.getpid(),
            "rootUri": uri(SHOP),
            "capabilities": {
                "general": {"positionEncodings": ["utf-16"]},
                "textDocument": {"inlineCompletion": {}},
                "window": {"workDoneProgress": True},
                # Like VS Code: versioned edits and file creation (nib fits its edits to these).
                "workspace": {"workspaceEdit": {"documentChanges": True, "resourceOperations": ["create"]}},
            },
        },
    )
    client.notify("initialized", {})
    started = time.perf_counter()
    status = client.wait_for_status()
    if status["state"] != "ready":
        sys.exit(f"the model did not load: {status.get('message')}")
    print(f"model {status['name']} ready in {(time.perf_counter() - started) * 1000:.0f} ms "
          f"(context {status['contextLength']} tokens)\n")

    texts = {}
    for name in ("pricing.py", "cart.py"):
        path = os.path.join(SHOP, name)
        with open(path) as file:
            texts[path] = file.read()
        opened = time.perf_counter()
        client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri(path), "languageId": "python", "version": 1, "text": texts[path]}})

    cart = os.path.join(SHOP, "cart.py")
    text = texts[cart]
    lines = text.split("\n")
    line = next(i for i, l in enumerate(lines) if "def count_items" in l) + 1
    # The editor shows cart.py with the cursor in count_items (VS Code and Neovim send
    # nib/didFocus): nib pre-warms the KV cache with the prompt up to that line, at background
    # priority (any real request would cancel it); the demo waits as a user reads.
    client.notify("nib/didFocus", {"textDocument": {"uri": uri(cart)},
                                   "position": {"line": line, "character": 8}})
    warmed = wait_for_prewarm(client, cart, line)
    print(f"{BOLD}0. Pre-warm{RESET}: {(time.perf_counter() - opened) * 1000:.0f} ms after cart.py was opened and "
          f"focused at line {line + 1}, the KV cache holds {warmed} tokens of the prompt up to it (background priority)\n")
    ghost, first_ms = inline_completion(client, cart, line, 8)
    show_ghost("1. Ghost text at an empty method body, the first request in the file", text, line, 8, ghost)
    stats = client.request("nib/inspect", {"textDocument": {"uri": uri(cart)}})["engine"]["stats"]["last"]
    print(f"   {first_ms:.0f} ms: {stats['reusedTokens']} of {stats['promptTokens']} prompt tokens already "
          f"in the KV cache from the pre-warm, {stats['prefilledTokens']} prefilled, "
          f"{stats['generatedTokens']} generated\n")

    ghost_again, warm_ms = inline_completion(client, cart, line, 8)
    print(f"{BOLD}2. The same request again{RESET}: {warm_ms:.1f} ms (served from the suggestion cache)\n")

    if ghost:
        typed = ghost[: min(4, len(ghost))]
        version = 2
        lines[line] = lines[line][:8] + typed + lines[line][8:]
        text = "\n".join(lines)
        client.notify("textDocument/didChange", {
            "textDocument": {"uri": uri(cart), "version": version},
            "contentChanges": [{"range": {"start": {"line": line, "character": 8}, "end": {"line": line, "character": 8}},
                                "text": typed}]})
        rest, typed_ms = inline_completion(client, cart, line, 8 + len(typed))
        show_ghost(f"3. After typing {typed!r} along the suggestion (typing-through, no model run)", text, line, 8 + len(typed), rest)
        print(f"   {typed_ms:.1f} ms\n")

    # Accept the suggestion, then start a new method: the prompt shares its start with the
    # previous one, so only the new tokens are prefilled.
    lines = text.split("\n")
    lines[line] = " " * 8 + ghost.split("\n")[0] if ghost else lines[line]
    lines[line + 1:line + 1] = ["", "    def is_empty(self):", "        return "]
    text = "\n".join(lines)
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri(cart), "version": 3}, "contentChanges": [{"text": text}]})
    ghost, ms = inline_completion(client, cart, line + 3, 15)
    show_ghost("4. A new method, mid-line", text, line + 3, 15, ghost)
    stats = client.request("nib/inspect", {"textDocument": {"uri": uri(cart)}})["engine"]["stats"]
    last = stats["last"]
    print(f"   {ms:.0f} ms: {last['reusedTokens']} of {last['promptTokens']} prompt tokens reused from the KV cache, "
          f"{last['prefilledTokens']} prefilled, {last['generatedTokens']} generated\n")

    grounded_import(client)

    # Code actions on pricing.py: listing is instant, generation happens on resolve.
    pricing = os.path.join(SHOP, "pricing.py")
    lines = texts[pricing].split("\n")
    line = next(i for i, l in enumerate(lines) if l.startswith("def with_tax"))
    actions = client.request("textDocument/codeAction", {
        "textDocument": {"uri": uri(pricing)},
        "range": {"start": {"line": line + 1, "character": 4}, "end": {"line": line + 1, "character": 4}},
        "context": {"diagnostics": []}})
    print(f"{BOLD}6. Code actions offered in with_tax{RESET}: " + ", ".join(a["title"] for a in actions) + "\n")
    for action in actions:
        seen = len(client.notifications)
        started = time.perf_counter()
        try:
            resolved = client.request("codeAction/resolve", action)
        except RuntimeError as error:
            print(f"   {action['title']}: {error}\n")
            continue
        elapsed = time.perf_counter() - started
        changes = resolved["edit"]["documentChanges"]
        edit = changes[-1]
        target = edit["textDocument"]["uri"]
        new_text = edit["edits"][0]["newText"]
        if action["kind"].startswith("source."):
            count = sum(len(change.get("edits", [])) for change in changes)
            print(f"{BOLD}9. {action['title']}{RESET} ({elapsed:.1f} s): {count} docstring(s) in one edit of "
                  f"{os.path.relpath(target[len('file://'):], ROOT)}, all checked together\n")
        elif "docstring" in action["kind"]:
            print(f"{BOLD}7. {action['title']}{RESET} ({elapsed:.1f} s):")
            at = edit["edits"][0]["range"]["start"]["line"]
            for number, text in enumerate(lines[line:at], start=line + 1):
                print(f"  {number:3} | {text}")
            for text in new_text.rstrip("\n").split("\n"):
                print(f"      | {DIM}{text}{RESET}")
            print(f"  {at + 1:3} | {lines[at]}\n")
        else:
            created = any(c.get("kind") == "create" for c in changes)
            name = os.path.relpath(target[len("file://"):], ROOT)
            print(f"{BOLD}8. {action['title']}{RESET} ({elapsed:.1f} s): {'creates' if created else 'appends to'} {name}")
            steps = [n["params"]["value"].get("message") for n in client.notifications[seen:]
                     if n.get("method") == "$/progress" and n["params"]["value"].get("kind") == "report"]
            if steps:
                print("   progress: " + "; ".join(dict.fromkeys(s for s in steps if s)))
            for text in new_text.rstrip("\n").split("\n"):
                print(f"      | {DIM}{text}{RESET}")
            print("   (the demo prints the edit; an editor applies it)")
            run_written_tests(target[len("file://"):], new_text)

    stats = client.request("nib/inspect", {"textDocument": {"uri": uri(cart)}})["engine"]["stats"]
    client.request("shutdown", None)
    client.notify("exit", None)
    client.process.wait(timeout=30)
    print(f"engine totals: {stats['generations']} generations, {stats['cacheHits']} KV-cache hits, "
          f"{stats['reusedTokens']} tokens reused, {stats['prefilledTokens']} prefilled")
    if stats.get("decodeMs") and stats.get("decodeRuns"):
        tokens_per_s = stats["generatedTokens"] / (stats["decodeMs"] / 1000)
        known = stats.get("knownRows", 0)
        known = f"; {known} tokens needed no pass, their logits kept from an earlier one" if known else ""
        beside = stats.get("sideBySideTokens", 0)
        beside = (f"; {beside} tokens of the docstring's answers decoded side by side, one token of each per pass"
                  if beside else "")
        print(f"decoding: {stats['generatedTokens']} tokens at {tokens_per_s:.0f} tokens/s in "
              f"{stats['decodeRuns']} forward passes (prompt lookup drafted {stats['draftTokens']} tokens, "
              f"{stats['acceptedDraftTokens']} accepted{known}{beside}; the output the same as plain decoding)")


if __name__ == "__main__":
    main()
