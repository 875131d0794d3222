#!/usr/bin/env python3
"""Quality of **Generate unit tests** on real code nib's authors did not write.

The corpus is boltons 26.2.0 (PyPI wheel, pinned by hash, downloaded once into
.cache/tests-quality/): its package is copied into a scratch workspace, as if it were the
user's project, and every public top-level function of `boltons/strutils.py` gets the action
through the real `nib` server on the default model, once per system:

- `verified`: nib as built (`nib.tests.verify` "auto", the workspace interpreter .venv/bin/python);
- `unverified`: the same binary with `nib.tests.verify` "off" (written, never run);
- `--old-nib PATH`: another nib binary (for example an older build), verification off.

For each function the harness applies the edit (the test file nib chose, created fresh), then
runs it as a user would, `.venv/bin/pytest <test file>` from the workspace root, and records:
tests written, tests passing, and the mutation score: simple single-point mutants of the
function (operator swap, integer constant + 1, negated condition; at most --mutants per
function, chosen with a seeded random generator) are written into the module one at a time,
and a mutant counts as killed when a test that passed on the original fails (or the run
times out). Time per function is the wall time of `codeAction/resolve`.

The load average (1 min) is sampled before each function and reported: on a shared machine
the times are measured under that load.

Usage: .venv/bin/python benches/tests_quality.py [--functions N] [--mutants 8] [--old-nib PATH]
       [--nib PATH] [--budget SECONDS] [--systems verified,unverified] [--details out.jsonl] [--write-doc]
       [--module boltons/iterutils.py]
"""

import argparse
import ast
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from demo import Client  # noqa: E402  (the demo's minimal LSP client)
NIB = os.path.join(ROOT, "target", "release", "nib")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PYTEST = os.path.join(ROOT, ".venv", "bin", "pytest")
MODEL = os.path.join(ROOT, "models", "smollm2-135m-instruct")
CACHE = os.path.join(ROOT, ".cache", "tests-quality")
WHEEL = "boltons-26.2.0-py3-none-any.whl"
WHEEL_SHA256 = "41942cbce440211bbcf2487ccdc356964ad674f95a01068b8a0dd7a1d1fed036"
MODULE = "boltons/strutils.py"
DOC = os.path.join(ROOT, "docs", "quality.md")
LOADS = []  # 1-minute load averages, one before each function
BEGIN, END = "<!-- tests_quality.py: begin -->", "<!-- tests_quality.py: end -->"


def corpus_wheel():
    """The pinned wheel, downloaded once with pip (hash checked)."""
    path = os.path.join(CACHE, WHEEL)
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        requirement = os.path.join(CACHE, "requirements.txt")
        with open(requirement, "w") as handle:
            handle.write(f"boltons==26.2.0 --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run(
            [PYTHON, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "--require-hashes", "-r", requirement, "-d", CACHE],
            check=True,
        )
    with open(path, "rb") as handle:
        if hashlib.sha256(handle.read()).hexdigest() != WHEEL_SHA256:
            sys.exit(f"{path}: unexpected sha256")
    return path


def make_workspace(parent, name):
    root = os.path.join(parent, name)
    with zipfile.ZipFile(corpus_wheel()) as wheel:
        for member in wheel.namelist():
            if member.startswith("boltons/"):
                wheel.extract(member, root)
    return root


def functions(source, limit):
    tree = ast.parse(source)
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    return found[:limit] if limit else found


def start_nib(binary, workspace, options):
    # Every binary measured uses this checkout's ONNX Runtime (an older build may not find it).
    runtime = os.path.join(ROOT, ".venv", "lib")
    for folder, _, names in os.walk(runtime):
        for name in names:
            if name.startswith("libonnxruntime.so"):
                os.environ.setdefault("ORT_DYLIB_PATH", os.path.join(folder, name))
    client = Client([binary])
    client.request("initialize", {
        "processId": os.getpid(),
        "rootUri": f"file://{workspace}",
        "capabilities": {
            "window": {"workDoneProgress": True},
            "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True, "resourceOperations": ["create"]}},
            "textDocument": {"codeAction": {"resolveSupport": {"properties": ["edit"]}}},
        },
        "initializationOptions": {"modelPath": MODEL, "threads": 2, **options},
    })
    client.notify("initialized", {})
    status = client.wait_for_status()
    if status["state"] != "ready":
        sys.exit(f"the model did not load: {status.get('message')}")
    return client


def write_tests(client, workspace, source, function):
    """(test file path, inserted text, seconds, error)."""
    uri = f"file://{os.path.join(workspace, MODULE)}"
    line = function.lineno - 1
    actions = client.request("textDocument/codeAction", {
        "textDocument": {"uri": uri},
        "range": {"start": {"line": line, "character": 5}, "end": {"line": line, "character": 5}},
        "context": {"diagnostics": []},
    })
    action = next(a for a in actions if a["kind"] == "refactor.nib.tests")
    started = time.monotonic()
    try:
        resolved = client.request("codeAction/resolve", action)
    except RuntimeError as error:
        return None, "", time.monotonic() - started, str(error)
    seconds = time.monotonic() - started
    changes = resolved["edit"]["documentChanges"]
    edit = next(c for c in changes if "edits" in c)
    path = edit["textDocument"]["uri"].removeprefix("file://")
    return path, edit["edits"][0]["newText"], seconds, None


def run_pytest(workspace, test_file, timeout=60):
    """{test id: passed?}, or None when the run timed out."""
    try:
        run = subprocess.run(
            [PYTEST, "-q", "-rA", "--tb=no", "-p", "no:cacheprovider", test_file],
            cwd=workspace, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    except subprocess.TimeoutExpired:
        return None
    outcomes = {}
    for line in run.stdout.splitlines():
        for word, passed in (("PASSED ", True), ("FAILED ", False), ("ERROR ", False)):
            if line.startswith(word):
                outcomes[line[len(word):].split(" - ")[0].strip()] = passed
    return outcomes


def mutants(source, function, limit, seed):
    """Mutated module texts of `function`: single-point changes, at most `limit`."""
    lines = source.split("\n")
    start = (function.decorator_list[0].lineno if function.decorator_list else function.lineno) - 1
    end = function.end_lineno
    indent = ""
    swaps = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
             ast.Mod: ast.FloorDiv, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
             ast.IsNot: ast.Is, ast.And: ast.Or, ast.Or: ast.And}
    points = []
    for node in ast.walk(function):
        if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in swaps:
            points.append(("op", node))
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in swaps:
            points.append(("compare", node))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            points.append(("constant", node))
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
            points.append(("negate", node))
    random.Random(seed).shuffle(points)
    texts = []
    for kind, node in points[:limit]:
        original = {}
        if kind == "op":
            original["op"] = node.op
            node.op = swaps[type(node.op)]()
        elif kind == "compare":
            original["ops"] = list(node.ops)
            node.ops = [swaps[type(node.ops[0])]()] + node.ops[1:]
        elif kind == "constant":
            original["value"] = node.value
            node.value = node.value + 1
        else:
            original["test"] = node.test
            node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
        mutated = ast.unparse(function)
        for key, value in original.items():
            setattr(node, key, value)
        body = "\n".join(indent + line for line in mutated.split("\n"))
        texts.append((kind, "\n".join(lines[:start] + [body] + lines[end:])))
    return texts


def measure(system, binary, options, parent, limit, mutant_limit, details):
    workspace = make_workspace(parent, system)
    module_path = os.path.join(workspace, MODULE)
    with open(module_path) as handle:
        source = handle.read()
    client = start_nib(binary, workspace, options)
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": f"file://{module_path}", "languageId": "python", "version": 1, "text": source}})
    records = []
    for function in functions(source, limit):
        LOADS.append(os.getloadavg()[0])
        test_file, text, seconds, error = write_tests(client, workspace, source, function)
        record = {"system": system, "function": function.name, "seconds": round(seconds, 2), "error": error,
                  "written": 0, "passed": 0, "mutants": 0, "killed": 0}
        if test_file:
            with open(test_file, "w") as handle:
                handle.write(text)
            outcomes = run_pytest(workspace, test_file) or {}
            written = max(len(outcomes), text.count("def test"))
            passing = {test for test, passed in outcomes.items() if passed}
            record.update(written=written, passed=len(passing), tests=text)
            candidates = mutants(source, function, mutant_limit, function.name)
            record["mutants"] = len(candidates)
            for _, mutated in candidates:
                with open(module_path, "w") as handle:
                    handle.write(mutated)
                after = run_pytest(workspace, test_file, timeout=30)
                if after is None or any(not after.get(test, False) for test in passing) and passing:
                    record["killed"] += 1
            with open(module_path, "w") as handle:
                handle.write(source)
            os.remove(test_file)
        else:
            record["mutants"] = len(mutants(source, function, mutant_limit, function.name))
        records.append(record)
        print(f"{system:10} {function.name:28} written {record['written']} passed {record['passed']} "
              f"killed {record['killed']}/{record['mutants']} {record['seconds']} s {error or ''}", flush=True)
        if details:
            details.write(json.dumps(record) + "\n")
    client.request("shutdown", None)
    client.notify("exit", None)
    return records


def summarize(records):
    written = sum(r["written"] for r in records)
    passed = sum(r["passed"] for r in records)
    mutants = sum(r["mutants"] for r in records)
    killed = sum(r["killed"] for r in records)
    with_tests = sum(1 for r in records if r["passed"] > 0)
    return {
        "functions": len(records),
        "written": written,
        "pass_share": passed / written if written else 0.0,
        "functions_with_passing": with_tests / len(records) if records else 0.0,
        "mutation_score": killed / mutants if mutants else 0.0,
        "median_seconds": statistics.median(r["seconds"] for r in records) if records else 0.0,
        "passed": passed, "killed": killed, "mutants": mutants, "with_tests": with_tests,
    }


def table(summaries, command, started):
    rows = [
        BEGIN,
        f"- date: {time.strftime('%Y-%m-%d', time.gmtime(started))}",
        f"- machine: {os.cpu_count()} CPUs (os.cpu_count), nib threads 2",
        "- model: SmolLM2-135M-Instruct (int4), `models/smollm2-135m-instruct`",
        f"- corpus: boltons 26.2.0 `{MODULE}`, public top-level functions",
        f"- command: `{command}`",
        f"- run time: {time.time() - started:.0f} s",
        f"- load average (1 min, before each function): median {statistics.median(LOADS or [0]):.1f}, "
        f"range {min(LOADS or [0]):.1f}–{max(LOADS or [0]):.1f} on {os.cpu_count()} CPUs",
        "",
        "| system | functions | tests written | tests passing when run (share) | functions with ≥ 1 passing test | mutants killed (score) | median s per function |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, s in summaries.items():
        rows.append(
            f"| {system} | {s['functions']} | {s['written']} | {s['passed']} ({100 * s['pass_share']:.0f} %) | "
            f"{s['with_tests']} ({100 * s['functions_with_passing']:.0f} %) | {s['killed']}/{s['mutants']} "
            f"({100 * s['mutation_score']:.0f} %) | {s['median_seconds']:.1f} |"
        )
    rows.append(END)
    return "\n".join(rows)


def main():
    global MODULE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=0, help="first N functions (0: all)")
    parser.add_argument("--mutants", type=int, default=8)
    parser.add_argument("--old-nib", help="another nib binary to measure, verification off")
    parser.add_argument("--budget", type=int, help="nib.tests.timeBudgetSeconds for both systems (default: nib's)")
    parser.add_argument("--nib", default=NIB, help="the nib binary measured as verified and unverified")
    parser.add_argument("--systems", default="verified,unverified")
    parser.add_argument("--details", help="one JSON line per function and system")
    parser.add_argument("--write-doc", action="store_true", help=f"replace the block in {DOC}")
    parser.add_argument("--module", default="boltons/strutils.py", help="the corpus: a module of the boltons wheel")
    args = parser.parse_args()
    MODULE = args.module
    started = time.time()
    systems = {
        "verified": (args.nib, {"python": {"interpreter": PYTHON}}),
        "unverified": (args.nib, {"tests": {"verify": "off"}}),
    }
    if args.budget:
        for _, options in systems.values():
            options.setdefault("tests", {})["timeBudgetSeconds"] = args.budget
    chosen = {name: systems[name] for name in args.systems.split(",") if name}
    if args.old_nib:
        chosen["old"] = (args.old_nib, {})
    details = open(args.details, "w") if args.details else None
    summaries = {}
    with tempfile.TemporaryDirectory(prefix="nib-tests-quality-") as parent:
        for system, (binary, options) in chosen.items():
            records = measure(system, binary, options, parent, args.functions, args.mutants, details)
            summaries[system] = summarize(records)
    command = "benches/tests_quality.py " + " ".join(sys.argv[1:])
    block = table(summaries, f".venv/bin/python {command.strip()}", started)
    print(block)
    if args.write_doc:
        with open(DOC) as handle:
            doc = handle.read()
        if BEGIN in doc:
            doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip() + "\n\n" + block + "\n"
        with open(DOC, "w") as handle:
            handle.write(doc)


if __name__ == "__main__":
    main()
