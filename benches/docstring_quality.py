#!/usr/bin/env python3
"""How often **Add docstring**'s Returns sentence contradicts what the function returned, on
real code nib's authors did not write, and what the check makes of those sentences.

The corpus is the one of `benches/tests_quality.py`: boltons 26.2.0 (PyPI wheel, pinned by
hash), its package copied into a scratch workspace as the user's project. The docstrings of the
module's top-level functions are removed first (nib offers Add docstring where there is none),
and every public top-level function gets the action through the real `nib` server on the default
model, `nib.tests.verify` "auto": nib calls the function in the sandbox for doctest examples and
checks the Returns sentence against what the calls returned.

The baseline is the same pipeline without the check, on the same model: the check only acts
on an answer after the model wrote it, so the first answer it turned down is exactly the
sentence nib wrote before the check existed. The server logs each sentence it turns down
(`description of the return value not used: ...`); for each function the harness records the
sentences turned down, with the reason, and the Returns sentence and examples the docstring
got. The records are printed for a human to judge.

Usage: .venv/bin/python benches/docstring_quality.py [--module boltons/strutils.py] [--functions N]
       [--nib PATH] [--details out.jsonl]
"""

import argparse
import ast
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tests_quality  # noqa: E402  (the corpus and the server start)

DOCSTRING_KIND = "refactor.rewrite.nib.docstring"
TURNED_DOWN = re.compile(r'description of the return value not used: (?P<why>.*?) sentence="(?P<sentence>.*?)"$')


def without_docstrings(source):
    """`source` with the docstrings of its top-level functions removed (`pass` where the
    docstring was the whole body)."""
    lines = source.split("\n")
    tree = ast.parse(source)
    for function in reversed([node for node in tree.body if isinstance(node, ast.FunctionDef)]):
        first = function.body[0]
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            continue
        indent = lines[first.lineno - 1][: first.col_offset]
        replacement = [f"{indent}pass"] if len(function.body) == 1 else []
        lines[first.lineno - 1: first.end_lineno] = replacement
    return "\n".join(lines)


def returns_and_examples(docstring):
    """The Google-style Returns sentence and the example lines of an inserted docstring."""
    lines = [line.strip() for line in docstring.split("\n")]
    returns = None
    if "Returns:" in lines:
        returns = lines[lines.index("Returns:") + 1]
    examples = []
    if "Examples:" in lines:
        for line in lines[lines.index("Examples:") + 1:]:
            if line.startswith('"""') or not line:
                break
            examples.append(line)
    return returns, examples


def document(client, module_path, function):
    """(docstring text or None, seconds, error)."""
    line = function.lineno - 1
    actions = client.request("textDocument/codeAction", {
        "textDocument": {"uri": f"file://{module_path}"},
        "range": {"start": {"line": line, "character": 5}, "end": {"line": line, "character": 5}},
        "context": {"diagnostics": []},
    })
    action = next((a for a in actions if a["kind"] == DOCSTRING_KIND), None)
    if action is None:
        return None, 0.0, "not offered"
    started = time.monotonic()
    try:
        resolved = client.request("codeAction/resolve", action)
    except RuntimeError as error:
        return None, time.monotonic() - started, str(error)
    edit = resolved["edit"]["documentChanges"][-1]
    return edit["edits"][0]["newText"], time.monotonic() - started, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", default=tests_quality.MODULE)
    parser.add_argument("--functions", type=int, default=0, help="only the first N functions")
    parser.add_argument("--nib", default=tests_quality.NIB)
    parser.add_argument("--details", help="write one JSON record per function here")
    args = parser.parse_args()
    parent = tempfile.mkdtemp(prefix="nib-docstring-quality-")
    workspace = tests_quality.make_workspace(parent, "checked")
    module_path = os.path.join(workspace, args.module)
    with open(module_path) as handle:
        source = without_docstrings(handle.read())
    with open(module_path, "w") as handle:
        handle.write(source)
    log_path = os.path.join(parent, "server.log")
    wrapper = os.path.join(parent, "nib-logged")
    with open(wrapper, "w") as handle:
        handle.write(f"#!/bin/sh\nNIB_LOG=info exec {args.nib} \"$@\" 2>>{log_path}\n")
    os.chmod(wrapper, 0o755)
    client = tests_quality.start_nib(wrapper, workspace, {})
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": f"file://{module_path}", "languageId": "python", "version": 1, "text": source}})
    details = open(args.details, "w") if args.details else None
    records = []
    for function in tests_quality.functions(source, args.functions):
        log_start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        docstring, seconds, error = document(client, module_path, function)
        with open(log_path, errors="replace") as handle:
            handle.seek(log_start)
            turned_down = [m.groupdict() for m in map(TURNED_DOWN.search, handle.read().splitlines()) if m]
        returns, examples = returns_and_examples(docstring or "")
        record = {"function": function.name, "seconds": round(seconds, 2), "error": error, "returns": returns,
                  "examples": examples, "turnedDown": turned_down}
        records.append(record)
        mark = f"{len(turned_down)} turned down" if turned_down else ""
        print(f"{function.name:28} {seconds:5.1f} s  returns: {returns!r}  examples: {len(examples) // 2} {mark} "
              f"{error or ''}", flush=True)
        for down in turned_down:
            print(f"{'':30}not used: {down['sentence']!r} ({down['why']})")
        if details:
            details.write(json.dumps(record) + "\n")
    client.request("shutdown", None)
    client.notify("exit", None)
    documented = [r for r in records if r["returns"]]
    with_examples = [r for r in documented if r["examples"]]
    checked_down = [r for r in records if r["turnedDown"]]
    print(f"\n{args.module}: {len(records)} functions, {len(documented)} docstrings with a Returns sentence, "
          f"{len(with_examples)} of them with examples from running the code; the check turned down the first "
          f"Returns sentence of {len(checked_down)} "
          f"({sum(len(r['turnedDown']) for r in checked_down)} sentences in all)")


if __name__ == "__main__":
    main()
