"""nib's test runner: imports a test module and runs the named tests, each twice, inside nib's
sandbox. Written to a private temporary folder and run as `python runner.py spec.json`.

The code under test is imported as the editor shows it: modules listed in `overlays` are
compiled from their buffer text (with their real file name), everything else from disk.

With `fix`, a test that fails only because of a wrong plain-data expected value gets the
observed value instead, and a call that raises an exception the code raises on purpose becomes
an expected-exception check; the fixed test text is reported. One JSON line per test goes to
the original stdout; the tests' own output goes nowhere.
"""

import ast
import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import signal
import sys
import textwrap
import time
import traceback

MARK = "@@nib@@ "


class TestTimeout(BaseException):
    """Raised in a test that runs past its limit (not an Exception: tests cannot swallow it)."""


class BufferLoader(importlib.machinery.SourceFileLoader):
    """Compiles an open buffer's text under the module's real file name (no bytecode cache)."""

    def __init__(self, fullname, path, source):
        super().__init__(fullname, path)
        self.source = source

    def get_code(self, fullname):
        return compile(self.source, self.path, "exec", dont_inherit=True)


class Overlays(importlib.abc.MetaPathFinder):
    def __init__(self, overlays):
        self.overlays = overlays

    def find_spec(self, fullname, path=None, target=None):
        entry = self.overlays.get(fullname)
        if entry is None:
            return None
        loader = BufferLoader(fullname, entry["path"], entry["source"])
        locations = [os.path.dirname(entry["path"])] if entry["package"] else None
        return importlib.util.spec_from_file_location(
            fullname, entry["path"], loader=loader, submodule_search_locations=locations
        )


def is_plain(value, depth=0):
    """Plain data whose repr reads back as an equal value."""
    if depth > 6:
        return False
    if value is None or type(value) in (bool, int, str, bytes):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) in (list, tuple, set, frozenset):
        return all(is_plain(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(is_plain(k, depth + 1) and is_plain(v, depth + 1) for k, v in value.items())
    return False


def faithful_repr(value):
    if not is_plain(value):
        return None
    text = repr(value)
    if len(text) > 300:
        return None
    try:
        if eval(text, {"__builtins__": {"set": set, "frozenset": frozenset}}) != value:
            return None
    except Exception:
        return None
    return text


def alarm(_signum, _frame):
    raise TestTimeout()


def run_once(function, limit):
    """None when it passed, else (exception, traceback)."""
    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        function()
        return None
    except BaseException as error:  # noqa: BLE001 - everything a test raises is its result
        return error, error.__traceback__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def describe(error):
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    return text.splitlines()[-1][:500] if text else type(error).__name__


def failing_statement(tree_function, tb, filename):
    """The test's top-level statement that was running when it failed, and the test's frame."""
    frame_line = None
    frame = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename and tb.tb_frame.f_code.co_name == tree_function.name:
            frame_line = tb.tb_lineno
            frame = tb.tb_frame
        tb = tb.tb_next
    if frame_line is None:
        return None, None
    for statement in tree_function.body:
        if statement.lineno <= frame_line <= statement.end_lineno:
            return statement, frame
    return None, frame


def splice(lines, node, replacement):
    """`lines` (the module's) with `node`'s source replaced by `replacement`."""
    first, last = node.lineno - 1, node.end_lineno - 1
    head = lines[first][: node.col_offset]
    tail = lines[last][node.end_col_offset :]
    return lines[:first] + (head + replacement + tail).split("\n") + lines[last + 1 :]


def raising_name(error, on_purpose):
    """The name to expect for `error` when the code raises it (or a base class) on purpose."""
    for klass in type(error).__mro__:
        if klass.__name__ in on_purpose and klass not in (BaseException, Exception, object):
            return klass.__name__, klass
    return None, None


class Module:
    """The candidate module: its source lines, tree and namespace."""

    def __init__(self, path, name, lines):
        self.path = path
        self.lines = lines
        self.namespace = {"__name__": name, "__file__": path, "__builtins__": builtins}
        exec(compile("\n".join(self.lines), path, "exec"), self.namespace)

    def function(self, name, klass=None):
        tree = ast.parse("\n".join(self.lines))
        scope = tree.body
        if klass:
            scope = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == klass)
        return next(n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)

    def source_of(self, node):
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        return "\n".join(self.lines[start - 1 : node.end_lineno])

    def reload(self):
        """Re-executes the edited module in its namespace (line numbers stay the file's)."""
        exec(compile("\n".join(self.lines), self.path, "exec"), self.namespace)


def fix_once(module, node, error, tb, spec):
    """Edits the test so it holds on the current code; True when something changed."""
    statement, frame = failing_statement(node, tb, module.path)
    if not isinstance(statement, ast.Assert) or frame is None:
        return False
    test = statement.test
    call = test.left if isinstance(test, ast.Compare) else test
    scope = dict(frame.f_globals)
    scope.update(frame.f_locals)
    call_source = ast.get_source_segment("\n".join(module.lines), call)
    if isinstance(error, AssertionError) and isinstance(test, ast.Compare) and len(test.ops) == 1:
        if not isinstance(test.ops[0], (ast.Eq, ast.Is)):
            return False
        try:
            observed = eval(compile(ast.Expression(call), module.path, "eval"), scope)
        except BaseException:  # noqa: BLE001
            return False
        text = faithful_repr(observed)
        if text is None:
            return False
        operator = "is" if observed is None or type(observed) is bool else "=="
        module.lines = splice(module.lines, test, f"{call_source} {operator} {text}")
        return True
    if isinstance(error, (AssertionError, TestTimeout)):
        return False
    name, klass = raising_name(error, spec["raised_on_purpose"])
    if name is None:
        return False
    if getattr(builtins, name, None) is not klass:
        target = sys.modules.get(spec["module_under_test"])
        if target is None or getattr(target, name, None) is not klass:
            return False
        module.namespace[name] = klass
        spec.setdefault("needs_import", set()).add(name)
    indent = " " * statement.col_offset
    expects = "pytest.raises" if spec["style"] == "pytest" else "self.assertRaises"
    replacement = f"with {expects}({name}):\n{indent}    {call_source}"
    module.lines = splice(module.lines, statement, replacement)
    return True


def run_test(module, name, klass, spec):
    """Runs one test twice; with `fix`, edits it first until it holds (a few rounds at most)."""
    limit = spec["limit_s"]
    spec["needs_import"] = set()
    fixed = False
    for _ in range(4):
        function = test_callable(module, name, klass)
        started = time.monotonic()
        failure = run_once(function, limit)
        if failure is None:
            seconds = time.monotonic() - started
            second = run_once(test_callable(module, name, klass), limit)
            if second is not None:
                return {"outcome": "flaky", "error": describe(second[0])}
            if seconds > limit:
                return {"outcome": "slow", "error": f"took {seconds:.1f} s"}
            result = {"outcome": "pass", "seconds": round(seconds, 3)}
            if fixed:
                result["text"] = module.source_of(module.function(name, klass))
                result["imports"] = sorted(spec["needs_import"])
            return result
        error, tb = failure
        if isinstance(error, TestTimeout):
            return {"outcome": "timeout", "error": f"ran past {limit} s"}
        if not spec["fix"] or not fix_once(module, module.function(name, klass), error, tb, spec):
            return {"outcome": "fail", "error": describe(error)}
        fixed = True
        module.reload()
    return {"outcome": "fail", "error": "still failing after fixes"}


def test_callable(module, name, klass):
    if klass:
        import unittest

        case = module.namespace[klass](name)

        def method():
            result = unittest.TestResult()
            case.run(result)
            problems = result.errors + result.failures
            if problems:
                raise AssertionError(problems[0][1].strip().splitlines()[-1])
            if result.skipped:
                raise AssertionError("skipped")

        return method
    function = module.namespace[name]
    arguments = ()
    if getattr(function, "__code__", None) and function.__code__.co_argcount == 1:
        # An async unittest candidate (`async def test_x(self)`), run as a function.
        import unittest

        arguments = (unittest.TestCase(),)
    if spec_style() == "unittest":
        # Candidates for a unittest project call `self.assertRaises`: give them a TestCase.
        import unittest

        module.namespace.setdefault("self", unittest.TestCase())
    if getattr(function, "__code__", None) and function.__code__.co_flags & 0x180:
        import asyncio

        return lambda: asyncio.run(function(*arguments))
    return lambda: function(*arguments)


SPEC = {}


def broken_test(lines, error, names):
    """The test whose lines hold a compile error of the candidate file: (name, first, end)."""
    at = (error.lineno or 0) - 1
    for first in range(min(at, len(lines) - 1), -1, -1):
        header = re.match(r"(\s*)(?:async\s+)?def\s+(\w+)", lines[first])
        if header and header.group(2) in names:
            name, indent = header.group(2), len(header.group(1))
            end = first + 1
            while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
                end += 1
            return (name, first, end) if at < end else None
    return None


def load_tests(spec, report):
    """Loads the candidate file. A candidate that does not compile (an indentation or syntax
    error in the test's own lines) fails with that error and is blanked out, keeping the line
    numbers, so the others still run; any other failure to load is the module's error."""
    path = spec["test_module"]
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    names = {test["name"] for test in spec["tests"]}
    while True:
        try:
            return Module(path, "nib_tests_under_run", lines)
        except SyntaxError as error:
            broken = broken_test(lines, error, names) if error.filename == path else None
            if broken is None:
                raise
            name, first, end = broken
            report({"name": name, "outcome": "fail", "error": describe(error)})
            names.discard(name)
            spec["tests"] = [test for test in spec["tests"] if test["name"] != name]
            lines[first:end] = [""] * (end - first)


def spec_style():
    return SPEC.get("style")


def start(spec):
    """Sends the code's own output nowhere and imports it as the editor shows it; returns how
    to report one record (a JSON line on the original stdout)."""
    results = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    sys.stdout = open(os.devnull, "w")
    sys.dont_write_bytecode = True
    sys.path[:0] = spec["paths"]
    sys.meta_path.insert(0, Overlays(spec["overlays"]))
    return lambda record: results.write(MARK + json.dumps(record) + "\n")


def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    SPEC.update(spec)
    report = start(spec)
    try:
        import pytest  # noqa: F401

        report({"pytest": True})
    except Exception:  # noqa: BLE001
        report({"pytest": False})
    try:
        module = load_tests(spec, report)
    except BaseException as error:  # noqa: BLE001
        report({"module_error": describe(error)})
        return
    for test in spec["tests"]:
        try:
            record = run_test(module, test["name"], test.get("class"), spec)
        except BaseException as error:  # noqa: BLE001
            record = {"outcome": "fail", "error": describe(error)}
        record["name"] = test["name"]
        report(record)


if __name__ == "__main__":
    main()
