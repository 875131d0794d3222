#!/usr/bin/env python3
"""Completion quality harness: nib's pipeline against a naive prefix-only prompt.

Cuts holes out of real source files (the CPython standard library this interpreter ships),
asks `nib complete` to fill each one (nib's real pipeline: path header, imports, prefix window,
early stop, post-processing, parse check) and, on the same model, `nib generate` with a naive
prompt (the last ~3000 bytes before the cursor, cut at a line start; greedy; then only cut at
the first newline for line holes, or at the first line indented less than the block for block
holes). Reports exact match, edit similarity and latency per hole kind:

  line   a simple one-line statement removed after its indentation (cursor after the indent)
  rest   the end of a one-line statement removed from a token start to the end of the line
  block  a function's code body removed (after the docstring, if any); the first body line
         keeps its indentation and the cursor sits after it
  rust-block  the same in Rust: a function's body (2-12 lines) removed, leaving one line of the
         body's indentation between `{` and `}`; the corpus is the Rust sources of the crates
         nib's Cargo.lock pins, as cargo unpacked them
  word   the end of a one-line statement removed from the middle of a name of 4 or more
         characters (half of it typed): a completion typed inside a word

Every nib answer in multi-line mode is also checked for block balance: `nib complete --json`
reports the file's tree-sitter parse errors before and after inserting the answer, and the
report gives the share of multi-line answers that add parse errors (the goal is 0).

Usage (from the repository root):
  .venv/bin/python benches/quality.py [--holes 20] [--seed 0] [--threads 2] [--model DIR]
      [--kinds line,rest,block,rust-block,word] [--systems nib,naive] [--nib PATH]
  .venv/bin/python benches/quality.py --smoke        # 1 hole per kind, writes nothing

Holes are chosen deterministically (seeded) from a sorted file list; each holed file keeps its
name in a temporary directory that is nib's working directory (the path header is relative).
"""
import argparse, ast, datetime, io, json, os, random, re, shlex, statistics, subprocess, sys
import sysconfig, tempfile, time, tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIB = ROOT / "target" / "release" / "nib"
DEFAULT_MODEL = ROOT / "models" / "smollm2-135m-instruct"
KINDS = ("line", "rest", "block", "rust-block", "word")  # new kinds last: the others keep their holes
NAIVE_PREFIX_BYTES = 3000
MAX_TOKENS = {"line": 32, "rest": 32, "block": 64, "rust-block": 64, "word": 32}  # nib's own caps: 32 one line, 64 a block
COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
            ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match)


def corpus_files():
    """The interpreter's own stdlib modules: sorted, no tests, no tiny or huge files."""
    lib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"])
    return [p for p in sorted(lib.glob("*.py"))
            if not p.name.startswith(("test", "__")) and 4_000 <= p.stat().st_size <= 120_000]


def rust_corpus_files():
    """The Rust sources of the crates Cargo.lock pins, as cargo unpacked them: sorted, no tests,
    no build scripts, no tiny or huge files."""
    lock = (ROOT / "Cargo.lock").read_text()
    pinned = set(re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', lock))
    registry = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "registry" / "src"
    files = []
    for index in sorted(registry.glob("*")):
        for name, version in sorted(pinned):
            src = index / f"{name}-{version}" / "src"
            files += [p for p in sorted(src.rglob("*.rs")) if "test" not in p.name
                      and 4_000 <= p.stat().st_size <= 120_000]
    return files


RUST_FN = re.compile(r"^(\s*)(pub(\([^)]*\))? )?(const )?(async )?(unsafe )?fn \w+[^;]*\{\s*$")


def rust_candidates(source):
    """Rust function bodies of 2-12 lines whose `}` sits alone at the `fn`'s indentation."""
    lines, found = source.split("\n"), []
    for n, text in enumerate(lines):
        match = RUST_FN.match(text)
        if not match:
            continue
        indent = match.group(1)
        close = next((m for m in range(n + 1, min(n + 14, len(lines)))
                      if lines[m] == indent + "}"), None)
        if close is None or not 2 <= close - n - 1 <= 12:
            continue
        body = lines[n + 1:close]
        first = body[0]
        body_indent = len(first) - len(first.lstrip())
        if not first.strip() or body_indent <= len(indent) or any(
                l.strip() and len(l) - len(l.lstrip()) < body_indent for l in body):
            continue
        expected = "\n".join([first[body_indent:]] + body[1:])
        holed = lines[:n + 1] + [first[:body_indent]] + lines[close:]
        found.append(("\n".join(holed), n + 1, body_indent, expected))
    return found


def simple_lines(tree, lines):
    """0-based numbers of lines holding exactly one whole simple statement."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(node, COMPOUND) \
                and node.lineno == node.end_lineno:
            text = lines[node.lineno - 1]
            indent = len(text) - len(text.lstrip())
            if node.col_offset == indent and 8 <= len(text.strip()) <= 100 \
                    and node.end_col_offset == len(text.rstrip()):
                out.append(node.lineno - 1)
    return sorted(set(out))


def candidates(kind, source):
    """All holes of `kind` in `source`: (holed text, line, column, expected completion)."""
    if kind == "rust-block":
        return rust_candidates(source)
    tree, lines = ast.parse(source), source.split("\n")
    found = []
    if kind == "block":
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body = body[1:]  # keep the docstring: the hole is the code under it
            if not body:
                continue
            first, last = body[0].lineno - 1, node.end_lineno - 1
            text = lines[first]
            indent = len(text) - len(text.lstrip())
            if first <= node.lineno - 1 or body[0].col_offset != indent or not 2 <= last - first + 1 <= 12:
                continue
            expected = "\n".join([text[indent:]] + lines[first + 1:last + 1])
            holed = lines[:first] + [text[:indent]] + lines[last + 1:]
            found.append(("\n".join(holed), first, indent, expected))
    else:
        for n in simple_lines(tree, lines):
            text = lines[n]
            indent = len(text) - len(text.lstrip())
            if kind == "line":
                cuts = [indent]
            else:
                try:
                    toks = list(tokenize.generate_tokens(io.StringIO(text.strip() + "\n").readline))
                except (tokenize.TokenError, SyntaxError):
                    continue
                first_line = [t for t in toks if t.start[0] == 1]
                if kind == "word":  # inside a name of 4 or more characters: half of it typed
                    cuts = sorted({indent + t.start[1] + len(t.string) // 2 for t in first_line
                                   if t.type == tokenize.NAME and len(t.string) >= 4})
                else:  # token starts after the first token, leaving at least 3 characters
                    cuts = sorted({indent + t.start[1] for t in toks[1:] if t.start[0] == 1
                                   and t.type not in (tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.COMMENT)
                                   and len(text[indent + t.start[1]:].strip()) >= 3})
            for cut in cuts:
                holed = lines[:n] + [text[:cut]] + lines[n + 1:]
                found.append(("\n".join(holed), n, cut, text[cut:]))
    return found


def pick_holes(kind, count, files, rng):
    """`count` holes of `kind`: a seeded random file, then a seeded random site in it."""
    holes, tries = [], 0
    while len(holes) < count and tries < 50 * count:
        tries += 1
        path = rng.choice(files)
        try:
            sites = candidates(kind, path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if sites:
            holed, line, col, expected = rng.choice(sites)
            holes.append(dict(kind=kind, file=path.name, line=line, col=col, holed=holed, expected=expected))
    return holes


def normalize(text):
    """Trailing whitespace does not count: per line, and at the end."""
    return "\n".join(l.rstrip() for l in text.split("\n")).rstrip()


def edit_similarity(a, b):
    """1 - Levenshtein(a, b) / max(len(a), len(b)); 1.0 for two empty strings."""
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1 - prev[-1] / max(len(a), len(b))


def run(cmd, cwd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return proc, (time.perf_counter() - start) * 1000


def run_nib(hole, workdir, args):
    """nib's real pipeline via `nib complete --json`."""
    path = Path(workdir) / hole["file"]
    path.write_text(hole["holed"], encoding="utf-8")
    utf16_col = len(hole["holed"].split("\n")[hole["line"]][:hole["col"]].encode("utf-16-le")) // 2
    cmd = [str(args.nib), "complete", "--json", "--file", hole["file"], "--line", str(hole["line"]),
           "--character", str(utf16_col), "--model", str(args.model)] + args.nib_flags
    proc, wall = run(cmd, workdir)
    if proc.returncode != 0:
        return dict(text="", error=proc.stderr.strip().splitlines()[-1:], wall=wall)
    out = json.loads(proc.stdout)
    s = out["stats"]
    errors = out.get("parseErrors") or {}
    return dict(text=out["text"], mode=out["mode"], model_ms=s["prefillMs"] + s["decodeMs"],
                errors_before=errors.get("before"), errors_after=errors.get("after"),
                prefill_ms=s["prefillMs"], decode_ms=s["decodeMs"], prompt_tokens=s["promptTokens"],
                generated=s["generatedTokens"], wall=wall)


STATS = re.compile(r"(\d+) prompt tokens in ([\d.]+) ms, (\d+) tokens in ([\d.]+) ms")


def naive_prompt(before):
    """The last NAIVE_PREFIX_BYTES bytes before the cursor, starting at a line start."""
    data = before.encode("utf-8")
    if len(data) > NAIVE_PREFIX_BYTES:
        data = data[len(data) - NAIVE_PREFIX_BYTES:]
        data = data[data.index(b"\n") + 1:] if b"\n" in data else data
    return data.decode("utf-8", errors="ignore")


def run_naive(hole, workdir, args):
    """Greedy `nib generate` on the prefix only, then the minimum post-processing."""
    lines = hole["holed"].split("\n")
    before = "\n".join(lines[:hole["line"]] + [lines[hole["line"]][:hole["col"]]])
    cmd = [str(args.nib), "generate", "--stream", "--prompt", naive_prompt(before), "--max-tokens",
           str(MAX_TOKENS[hole["kind"]]), "--model", str(args.model)] + args.nib_flags
    proc, wall = run(cmd, workdir)
    if proc.returncode != 0:
        return dict(text="", error=proc.stderr.strip().splitlines()[-1:], wall=wall)
    raw = proc.stdout[:-1] if proc.stdout.endswith("\n") else proc.stdout  # println's newline
    if hole["kind"] == "block":  # keep lines until the first one indented less than the block
        kept = raw.split("\n")[:1]
        for line in raw.split("\n")[1:]:
            if line.strip() and len(line) - len(line.lstrip()) < hole["col"]:
                break
            kept.append(line)
        text = "\n".join(kept)
    else:
        text = raw.split("\n")[0]
    p_tok, p_ms, g_tok, d_ms = (float(x) for x in STATS.search(proc.stderr).groups())
    return dict(text=text, model_ms=p_ms + d_ms, prefill_ms=p_ms, decode_ms=d_ms,
                prompt_tokens=p_tok, generated=g_tok, wall=wall)


def score(result, expected):
    got, want = normalize(result["text"]), normalize(expected)
    result["exact"] = got == want
    result["first_line"] = got.split("\n")[0] == want.split("\n")[0]
    result["similarity"] = edit_similarity(got, want)
    return result


def summarize(rows, systems):
    """One row per (kind, system): n, EM %, first-line EM %, edit sim., latencies, tokens."""
    table = []
    for kind in KINDS:
        for system in systems:
            rs = [r[system] for r in rows if r["kind"] == kind]
            ok = [r for r in rs if "error" not in r]
            if not rs:
                continue
            med = lambda key: statistics.median(r[key] for r in ok) if ok else float("nan")
            mean = lambda key: statistics.fmean(r[key] for r in ok) if ok else float("nan")
            table.append([kind, system, len(rs), len(rs) - len(ok),
                          100 * sum(r["exact"] for r in rs) / len(rs),
                          100 * sum(r["first_line"] for r in rs) / len(rs),
                          statistics.fmean(r["similarity"] for r in rs), med("model_ms"),
                          med("prefill_ms"), med("decode_ms"), med("wall"), mean("prompt_tokens"),
                          mean("generated")])
    return table


HEADER = ["kind", "system", "n", "errors", "exact match %", "first line exact %", "mean edit sim.",
          "median prefill+decode ms", "median prefill ms", "median decode ms",
          "median wall ms (incl. model load)", "mean prompt tokens", "mean generated tokens"]


def balance_table(rows):
    """Per kind: nib's multi-line answers (non-empty), and how many add parse errors."""
    lines = ["| kind | multi-line answers | adding parse errors | share |", "|---|---|---|---|"]
    total = worse = 0
    for kind in KINDS:
        multi = [r["nib"] for r in rows if r["kind"] == kind and r["nib"].get("mode") == "MultiLine"
                 and r["nib"]["text"].strip() and r["nib"].get("errors_after") is not None]
        added = sum(r["errors_after"] > r["errors_before"] for r in multi)
        if multi:
            lines.append(f"| {kind} | {len(multi)} | {added} | {100 * added / len(multi):.0f} % |")
        total, worse = total + len(multi), worse + added
    lines.append(f"| all | {total} | {worse} | {100 * worse / max(total, 1):.0f} % |")
    return "\n".join(lines)


def markdown(table):
    formats = ["{}", "{}", "{}", "{}", "{:.0f}", "{:.0f}", "{:.3f}"] + ["{:.0f}"] * 4 + ["{:.0f}", "{:.1f}"]
    fmt = lambda row: [f.format(v) for f, v in zip(formats, row)]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(fmt(row)) + " |" for row in table]
    return "\n".join(lines)


BEGIN, END = "<!-- quality.py: begin -->", "<!-- quality.py: end -->"


def write_report(out, report):
    """Replaces the generated part of `out` (between the markers), keeping hand-written text."""
    text = out.read_text() if out.exists() else f"# Completion quality\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    out.write_text(f"{head}{BEGIN}\n{report}{END}{rest.split(END, 1)[1]}")


def write_details(path, rows):
    """Every hole and its answers as JSON lines (without the holed source)."""
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "holed"}) + "\n" for r in rows))


def command_line():
    """This run's command as the report names it, relative to the repository root."""
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT)]
                    + [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{len(os.sched_getaffinity(0))} CPUs (nproc), {cpu}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model directory")
    ap.add_argument("--holes", type=int, default=20, help="holes per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="inference threads (default: nib's)")
    ap.add_argument("--out", type=Path, help="markdown report (default: docs/quality.md; --smoke: none)")
    ap.add_argument("--details", type=Path, help="also write every hole and answer as JSON lines")
    ap.add_argument("--smoke", action="store_true", help="1 hole per kind; exit 1 if a call fails")
    ap.add_argument("--kinds", default=",".join(KINDS), help="hole kinds, comma-separated")
    ap.add_argument("--systems", default="nib,naive", help="nib, naive or both")
    ap.add_argument("--nib", type=Path, default=NIB, help="the nib binary (default: this checkout's)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    systems = [s for s in args.systems.split(",") if s]
    if set(kinds) - set(KINDS) or set(systems) - {"nib", "naive"} or "nib" not in systems:
        sys.exit(f"--kinds takes {', '.join(KINDS)}; --systems takes nib (required) and naive")
    holes_per_kind = 1 if args.smoke else args.holes
    out = args.out or (None if args.smoke else ROOT / "docs" / "quality.md")
    args.model = args.model.resolve()
    args.nib_flags = ["--threads", str(args.threads)] if args.threads else []
    if not args.nib.exists() or not (args.model / "model.onnx").exists():
        sys.exit(f"need {args.nib} (make build) and {args.model}/model.onnx (make model)")

    rng, files, rust_files = random.Random(args.seed), corpus_files(), rust_corpus_files()
    holes = [h for kind in KINDS for h in pick_holes(kind, holes_per_kind,
                                                     rust_files if kind == "rust-block" else files, rng)
             if kind in kinds]
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="nib-quality-") as workdir:
        for i, hole in enumerate(holes, 1):
            row = dict(hole, nib=score(run_nib(hole, workdir, args), hole["expected"]))
            if "naive" in systems:
                row["naive"] = score(run_naive(hole, workdir, args), hole["expected"])
            rows.append(row)
            print(f"[{i}/{len(holes)}] {hole['kind']:5} {hole['file']}:{hole['line'] + 1}  "
                  + "  ".join(f"{s} {'=' if row[s]['exact'] else ' '} {row[s]['similarity']:.2f}" for s in systems),
                  flush=True)
    elapsed = time.perf_counter() - started
    table = summarize(rows, systems)
    balance = balance_table(rows)
    print("\n" + markdown(table) + "\n\n" + balance + f"\n\n{len(holes)} holes in {elapsed:.0f} s")
    if args.details:
        write_details(args.details, rows)
    if out:
        info = json.loads((args.model / "nib.json").read_text())
        command = command_line()
        report = (f"- date: {datetime.date.today()}\n- machine: {machine()}\n"
                  f"- model: {info.get('name')} ({info.get('precision')}), `{os.path.relpath(args.model, ROOT)}`\n"
                  f"- corpus: CPython {sys.version.split()[0]} standard library, {len(files)} files; "
                  f"Rust: {len(rust_files)} files of the crates Cargo.lock pins; seed {args.seed}\n"
                  f"- command: `{command}`\n- run time: {elapsed:.0f} s for {len(holes)} holes\n\n"
                  f"{markdown(table)}\n\nBlock balance: nib's non-empty multi-line answers that leave "
                  f"the file with more tree-sitter parse errors than before.\n\n{balance}\n")
        write_report(out, report)
        print(f"wrote {out}")
    errors = sum("error" in r[s] for r in rows for s in systems)
    return 1 if args.smoke and errors else 0


if __name__ == "__main__":
    sys.exit(main())
