"""nib's call explorer: finds calls of the function under test whose results are known because
they were run, before the model writes anything. Written to a private temporary folder beside
`nib_runner.py` and run as `python explore.py spec.json` inside nib's sandbox.

The calls come from the code itself:
- the examples in the function's docstring (`>>> ...`), with the setup lines before them;
- inputs built from the signature: the defaults, the type hints, the parameter names, and the
  constants the function's body compares against.

Each call runs once under a time limit with line tracing of the module under test. A call that
returns plain data (or an iterator of it) becomes `assert call == observed`; a call that raises
an exception the code raises on purpose becomes an expected-exception test; any other error
drops the call. The docstring's examples come first, then the calls that reach lines and
branches no earlier call reached. One JSON line per test goes to the original stdout.

With `doctest` in the spec it runs the function's docstring examples instead (the module as
an Add docstring edit would leave it) and reports how many ran and failed.
"""

import ast
import doctest
import importlib
import inspect
import json
import random
import re
import signal
import sys
import time
import types

import nib_runner as runner

# Most calls tried, and the most tests written.
MAX_CALLS = 160
MAX_TESTS = 6
MIN_TESTS = 3
# Each call's time limit, in seconds.
CALL_LIMIT = 0.5

STRINGS = ["hello world", "", "Hello, World! 42", "snake_case_name", "CamelCaseName", "  padded  ", "a-b_c.d", "line one\nline two", "héllo wörld"]
INTS = [3, 0, 1, -2, 10, 255]
FLOATS = [1.5, 0.0, -2.25, 100.0]
LISTS = [[1, 2, 3], [], ["a", "b", "c"], [3, 1, 2, 1], [[1, 2], [3]]]
DICTS = [{"a": 1, "b": 2}, {}]
POOLS = {
    "str": STRINGS,
    "int": INTS,
    "float": FLOATS,
    "bool": [True, False],
    "bytes": [b"hello", b"", b"\x00\xff"],
    "list": LISTS,
    "tuple": [(1, 2), ()],
    "set": [{1, 2}, set()],
    "dict": DICTS,
    "None": [None],
    "any": ["hello world", 3, [1, 2, 3], None],
}
# Parameter names that say what they hold, when no default or type hint does.
NAMED = [
    (r"^(n|num|number|count|size|width|height|length|len|limit|index|idx|i|j|k|start|end|stop|step|depth|level|pos|offset|times|base|precision|digits|places|year|month|day)$|^(max|min|num|n)_|_(count|size|len|width|index|limit)$", "int"),
    (r"^(x|y|z|value|val|amount|price|rate|ratio|factor|scale|ndigits)$", "float"),
    (r"^(is|has|use|allow|strict|ignore|keep|skip|include|exclude|case|reverse|force|verbose|quiet|enabled?)(_|$)", "bool"),
    (r"^(items|values|seq|sequence|lst|list|iterable|elements|words|lines|xs|ys|data|parts|pieces|tokens|numbers|nums|args|src_list)$|s_list$", "list"),
    (r"^(d|dct|dict|mapping|map|kwargs|options|opts|params|headers|table)$", "dict"),
    (r"^(b|buf|buffer|raw|payload)$|bytes", "bytes"),
    (r"^(s|text|string|name|word|line|prefix|suffix|sep|separator|delim|delimiter|char|chars|pattern|title|label|msg|message|key|url|path|filename|fmt|format|encoding|src|input_str)$|_(str|text|name|string)$", "str"),
]
# The kinds tried, in this order, for a parameter nothing else describes.
PROBED = ["str", "int", "list", "float", "dict", "bool", "None"]


def kind_of_annotation(annotation):
    """The pool for a type hint: a class or the text of one (`from __future__ import annotations`)."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    text = text.replace("typing.", "")
    if text.startswith("Optional[") or text.endswith("| None"):
        text = text[len("Optional[") :] if text.startswith("Optional[") else text[: -len("| None")]
    head = re.split(r"[\[|, ]", text.strip(), maxsplit=1)[0]
    aliases = {
        "str": "str", "int": "int", "float": "float", "bool": "bool", "bytes": "bytes",
        "list": "list", "List": "list", "Sequence": "list", "Iterable": "list", "Collection": "list",
        "tuple": "tuple", "Tuple": "tuple", "set": "set", "Set": "set", "frozenset": "set",
        "dict": "dict", "Dict": "dict", "Mapping": "dict", "None": "None", "Any": "any",
    }
    return aliases.get(head)


def kind_of_value(value):
    if value is None:
        return None
    name = type(value).__name__
    return name if name in POOLS else None


def kind_of_name(name):
    for pattern, kind in NAMED:
        if re.search(pattern, name):
            return kind
    return None


def unique(values):
    seen, out = [], []
    for value in values:
        key = (type(value), repr(value))
        if key not in seen:
            seen.append(key)
            out.append(value)
    return out


def function_node(source, function):
    """The function's definition in the buffer's syntax tree."""
    tree = ast.parse(source)
    line = function.__code__.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function.__name__:
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if first <= line <= node.end_lineno:
                return node
    return None


def body_constants(node):
    """The string and number constants in the function's body (not its docstring)."""
    strings, numbers = [], []
    docstring = ast.get_docstring(node, clean=False)
    for child in ast.walk(node):
        if not isinstance(child, ast.Constant) or isinstance(child.value, bool):
            continue
        if isinstance(child.value, str) and child.value != docstring and len(child.value) <= 40:
            strings.append(child.value)
        elif isinstance(child.value, (int, float)) and abs(child.value) < 10**6:
            numbers.append(child.value)
    strings = unique(strings)[:10]
    # A constant the code looks for, alone and inside other text.
    strings = strings + [f"abc{s}def" for s in strings if s.strip()][:6]
    numbers = unique(numbers + [n + 1 for n in numbers if isinstance(n, int)] + [n - 1 for n in numbers if isinstance(n, int)])[:10]
    return strings, numbers


def declared_kind(parameter, examples):
    """What the parameter holds by its type hint, default, the docstring's examples or its
    name; None when none of them says."""
    kind = kind_of_annotation(parameter.annotation)
    if kind is None and parameter.default is not inspect.Parameter.empty:
        kind = kind_of_value(parameter.default)
    if kind is None:
        kind = next((kind_of_value(v) for v in examples.get(parameter.name, []) if kind_of_value(v)), None)
    if kind is None:
        kind = kind_of_name(parameter.name.lower())
    return kind


def pool_for(parameter, kinds, constants, examples):
    """Values to try for the parameter: the docstring's, then each kind's pool with the body's
    constants of that kind first."""
    strings, numbers = constants
    values = list(examples.get(parameter.name, []))
    for kind in kinds:
        pool = list(POOLS[kind])
        if kind == "str":
            pool = pool[:1] + strings + pool[1:]
        elif kind in ("int", "float"):
            pool = pool[:1] + [n for n in numbers if kind == "float" or isinstance(n, int)] + pool[1:]
        elif kind == "any":
            pool = pool + strings[:3] + numbers[:3]
        values += pool
    if parameter.default is not inspect.Parameter.empty and not isinstance(parameter.default, (str, int, float)):
        values = [v for v in values if v is not parameter.default]
    return unique(values)[:16]


def example_arguments(function, docstring_calls):
    """The literal arguments the docstring's examples pass: parameter name -> values."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return {}
    found = {}
    for call in docstring_calls:
        for node in ast.walk(ast.parse(call.text, mode="eval")):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == function.__name__):
                continue
            try:
                positional = [ast.literal_eval(a) for a in node.args]
                keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
                bound = signature.bind_partial(*positional, **keywords)
            except (ValueError, TypeError, SyntaxError):
                continue
            for name, value in bound.arguments.items():
                if runner.faithful_repr(value) is not None:
                    found.setdefault(name, []).append(value)
    return found


def probe_kinds(function, parameter, base, namespace, path):
    """The kinds of value the parameter takes without a TypeError or AttributeError, found by
    calling the function with one value of each (the others at `base`)."""
    viable = []
    for kind in PROBED:
        choices = dict(base, **{parameter.name: POOLS[kind][0]})
        call = Call(f"{function.__name__}(**{choices!r})")
        _, _, error = evaluate(call, namespace, path)
        if not isinstance(error, (TypeError, AttributeError, runner.TestTimeout)):
            viable.append(kind)
    return viable or ["any"]


class Call:
    """One call of the function: how a test writes it, and what it gave."""

    def __init__(self, text, setup=(), source="synthesized", slug=""):
        self.text = text
        self.setup = list(setup)
        self.source = source
        self.slug = slug
        self.expected = None  # the observed value's repr, or the exception's name
        self.raises = None
        self.iterator = False
        # The call is a check that must hold (`f(x) == y`): asserted as it is.
        self.check = False
        self.arcs = set()


def call_text(name, positional, keywords):
    parts = [runner.faithful_repr(v) for v in positional] + [f"{k}={runner.faithful_repr(v)}" for k, v in keywords]
    if any(part is None for part in parts):
        return None
    return f"{name}({', '.join(parts)})"


def slug_of(value):
    if isinstance(value, str):
        words = re.findall(r"[a-z0-9]+", value.lower())[:3]
        return "_".join(words) if words else ("empty_string" if value == "" else "blank_string")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return ("negative_" if value < 0 else "") + str(abs(value)).replace(".", "_")
    if value is None:
        return "none"
    if isinstance(value, (list, tuple, set, dict, bytes)):
        return ("empty_" if not value else "") + type(value).__name__
    return "value"


def synthesized_calls(function, constants, examples, namespace, path, rng):
    """Calls from the signature as (call text, test name slug): the defaults, then each
    parameter varied through its pool, then random combinations."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    parameters = [
        p for p in signature.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    required = [p for p in parameters if p.default is inspect.Parameter.empty]
    kinds = {p.name: declared_kind(p, examples) for p in parameters}
    guess = {p.name: (examples.get(p.name) or POOLS[kinds[p.name] or "any"])[0] for p in required}
    for p in parameters:
        if kinds[p.name] is None:
            kinds[p.name] = probe_kinds(function, p, {k: v for k, v in guess.items() if k != p.name}, namespace, path)
        elif isinstance(kinds[p.name], str):
            kinds[p.name] = [kinds[p.name]]
    pools = {p.name: pool_for(p, kinds[p.name], constants, examples) for p in parameters}

    def make(choices):
        positional, keywords = [], []
        for p in parameters:
            if p.name not in choices:
                continue
            if p.kind == inspect.Parameter.KEYWORD_ONLY or p.default is not inspect.Parameter.empty:
                keywords.append((p.name, choices[p.name]))
            else:
                positional.append(choices[p.name])
        return call_text(function.__name__, positional, keywords)

    base = {p.name: pools[p.name][0] for p in required if pools[p.name]}
    if len(base) < len(required):
        return []
    calls = [(make(base), "defaults" if required == [] else slug_of(next(iter(base.values()))))]
    for p in parameters:
        for value in pools[p.name]:
            if p.name in base and value is base[p.name]:
                continue
            choices = dict(base, **{p.name: value})
            calls.append((make(choices), slug_of(value)))
    for _ in range(40):
        choices = {p.name: rng.choice(pools[p.name]) for p in required}
        for p in parameters:
            if p.default is not inspect.Parameter.empty and pools[p.name] and rng.random() < 0.3:
                choices[p.name] = rng.choice(pools[p.name])
        calls.append((make(choices), slug_of(next(iter(choices.values()), None))))
    seen, out = set(), []
    for text, slug in calls:
        if text and text not in seen:
            seen.add(text)
            out.append((text, slug))
    return out[:MAX_CALLS]


def docstring_calls(function):
    """The docstring's examples that call the function, each with the setup lines before it."""
    try:
        examples = doctest.DocTestParser().get_examples(inspect.getdoc(function) or "")
    except ValueError:
        return []
    setup, calls = [], []
    for example in examples:
        source = example.source.strip()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
            for expression in printed(tree.body[0].value):
                text = ast.get_source_segment(source, expression)
                if text and "  " in text:
                    text = ast.unparse(expression)  # a continuation line's indentation
                named = any(isinstance(n, ast.Name) and n.id == function.__name__ for n in ast.walk(expression))
                if named and text and "\n" not in text:
                    call = Call(text, needed(setup, expression), "docstring", "example")
                    # `f(x) == y` in an example is a check of its own: the test asserts it.
                    call.check = isinstance(expression, (ast.Compare, ast.BoolOp)) or (
                        isinstance(expression, ast.UnaryOp) and isinstance(expression.op, ast.Not)
                    )
                    calls.append(call)
        elif all(isinstance(s, (ast.Assign, ast.Import, ast.ImportFrom)) for s in tree.body) and "\n" not in source:
            setup.append(source)
    return calls


def needed(setup, expression):
    """The setup lines that bind a name the expression uses (an assignment, an import)."""
    used = {n.id for n in ast.walk(expression) if isinstance(n, ast.Name)}
    kept = []
    for line in setup:
        bound = set()
        for node in ast.walk(ast.parse(line)):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, ast.alias):
                bound.add((node.asname or node.name).split(".")[0])
        if bound & used:
            kept.append(line)
            used |= {n.id for n in ast.walk(ast.parse(line)) if isinstance(n, ast.Name)}
    return kept


def printed(expression):
    """The expressions an example shows: the arguments of a `print(...)`, else itself."""
    if isinstance(expression, ast.Call) and getattr(expression.func, "id", None) == "print":
        return expression.args
    return [expression]


class Tracer:
    """The (line, next line) arcs run in the module under test's file."""

    def __init__(self, path):
        self.path = path
        self.arcs = set()

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != self.path:
            return None
        last = [-frame.f_code.co_firstlineno]

        def local(frame, event, arg):
            if event in ("line", "return"):
                line = frame.f_lineno if event == "line" else -frame.f_lineno
                self.arcs.add((last[0], line))
                last[0] = line
            return local

        return local


def evaluate(call, namespace, path):
    """Runs the call (its setup first) under the time limit; the arcs it ran and its result."""
    scope = dict(namespace)
    tracer = Tracer(path)
    signal.signal(signal.SIGALRM, runner.alarm)
    signal.setitimer(signal.ITIMER_REAL, CALL_LIMIT)
    sys.settrace(tracer)
    try:
        for line in call.setup:
            exec(compile(line, "<setup>", "exec"), scope)
        value = eval(compile(call.text, "<call>", "eval"), scope)
        if isinstance(value, (types.GeneratorType, map, filter, zip, enumerate, reversed)):
            value = list(value)
            call.iterator = True
        return tracer.arcs, value, None
    except BaseException as error:  # noqa: BLE001 - everything a call raises is its result
        return tracer.arcs, None, error
    finally:
        sys.settrace(None)
        signal.setitimer(signal.ITIMER_REAL, 0)


def settle(call, arcs, value, error, on_purpose):
    """Fills in what the call's test asserts; False when it cannot be a test."""
    call.arcs = arcs
    if error is not None:
        if isinstance(error, (runner.TestTimeout, KeyboardInterrupt, SystemExit, RecursionError, MemoryError)):
            return False
        name, _ = runner.raising_name(error, on_purpose)
        call.raises = name
        return name is not None
    call.expected = runner.faithful_repr(value)
    if call.check:
        return value is True
    return call.expected is not None


def choose(calls):
    """The docstring's examples, then greedily the calls that run arcs no chosen call ran (at
    most one expected-exception test per exception and one that returns None), then calls
    with results not seen yet, up to `MIN_TESTS`."""
    chosen, covered, raised = [], set(), set()
    nones = 0
    for call in calls:
        if call.source == "docstring" and len(chosen) < MAX_TESTS - 1:
            chosen.append(call)
            covered |= call.arcs
    rest = [c for c in calls if c.source != "docstring"]
    while len(chosen) < MAX_TESTS:
        def gain(call):
            return len(call.arcs - covered)
        candidates = [
            c for c in rest
            if gain(c) > 0 and (c.raises is None or c.raises not in raised) and not (c.expected == "None" and nones)
        ]
        if not candidates:
            break
        best = max(candidates, key=lambda c: (gain(c), -len(c.text)))
        chosen.append(best)
        covered |= best.arcs
        rest.remove(best)
        if best.raises:
            raised.add(best.raises)
        if best.expected == "None":
            nones += 1
    # Straight-line code: a few more calls with other results (they catch changed constants).
    results = {c.expected for c in chosen}
    for call in rest:
        if len(chosen) >= MIN_TESTS:
            break
        if call.expected is not None and call.expected not in results and call.expected != "None":
            chosen.append(call)
            results.add(call.expected)
    return chosen


def test_text(call, function_name, style):
    name = f"test_{function_name}_{call.slug or 'call'}"
    name = re.sub(r"\W", "_", name)[:60].rstrip("_")
    lines = [f"def {name}():"] + [f"    {line}" for line in call.setup]
    if call.raises:
        expects = "pytest.raises" if style == "pytest" else "self.assertRaises"
        lines += [f"    with {expects}({call.raises}):", f"        {call.text}"]
    elif call.check:
        lines.append(f"    assert {call.text}")
    else:
        subject = f"list({call.text})" if call.iterator else call.text
        operator = "is" if call.expected in ("None", "True", "False") else "=="
        lines.append(f"    assert {subject} {operator} {call.expected}")
    return name, "\n".join(lines)


def explore(spec, report):
    module = importlib.import_module(spec["module_under_test"])
    function = getattr(module, spec["function"], None)
    if not inspect.isfunction(function) or inspect.iscoroutinefunction(function):
        return
    path = function.__code__.co_filename
    overlay = spec["overlays"].get(spec["module_under_test"])
    source = overlay["source"] if overlay else inspect.getsource(module)
    node = function_node(source, function)
    constants = body_constants(node) if node else ([], [])
    rng = random.Random(0)
    namespace = vars(module)
    calls = docstring_calls(function)
    examples = example_arguments(function, calls)
    for text, slug in synthesized_calls(function, constants, examples, namespace, path, rng):
        calls.append(Call(text, (), "synthesized", slug))
    deadline = time.monotonic() + spec["budget_s"]
    settled, tried = [], 0
    for call in calls:
        if time.monotonic() > deadline:
            break
        tried += 1
        arcs, value, error = evaluate(call, namespace, path)
        if settle(call, arcs, value, error, spec["raised_on_purpose"]):
            settled.append(call)
    for call in choose(settled):
        name, text = test_text(call, function.__name__, spec["style"])
        report({
            "name": name, "text": text, "source": call.source, "call": call.text, "setup": call.setup,
            "expected": call.expected, "raises": call.raises, "iterator": call.iterator, "check": call.check,
        })
    report({"tried": tried, "usable": len(settled)})


def run_doctest(spec, report):
    """Runs the examples in the function's docstring (the module as the edit would leave it)."""
    module = importlib.import_module(spec["module_under_test"])
    function = getattr(module, spec["function"])
    finder = doctest.DocTestFinder(recurse=False)
    checker = doctest.DocTestRunner(verbose=False, optionflags=doctest.ELLIPSIS)
    failures = []
    for test in finder.find(function, spec["function"], globs=dict(vars(module))):
        checker.run(test, out=failures.append)
    summary = checker.summarize(verbose=False)
    report({"doctest": {"attempted": summary.attempted, "failed": summary.failed, "output": "".join(failures)[-2000:]}})


def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    report = runner.start(spec)
    try:
        if spec.get("doctest"):
            return run_doctest(spec, report)
        explore(spec, report)
    except BaseException as error:  # noqa: BLE001 - the model writes the tests instead
        report({"error": runner.describe(error)})


if __name__ == "__main__":
    main()
