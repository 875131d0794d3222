#!/usr/bin/env python3
"""Repository-level completion quality: nib with context from the whole repository against nib
with context from the holed file only, on the same model and the same holes.

Projects are real multi-file pure-Python packages not written here: the ones `make setup`
installs, pinned, into `.venv` (requests, click, httpx, urllib3, _pytest, pluggy, anyio, h11,
packaging, gguf; versions are read from their `dist-info` and printed in the report). Each
project is copied into a scratch folder that is nib's workspace; a hole is cut in one of its
files (the holed text is what is on disk, so the answer never leaks), and `nib complete --json`
fills it twice:

  without  only the holed file open, no workspace (nib before issue 21)
  with     `--workspace <project>`: the workspace index of the whole project, the holed file
           open (retrieval: definitions of names near the cursor and of imports, similar chunks)

Holes are `line` and `rest` holes as in quality.py, kept only where the code of the expected
text (its identifiers, not its strings or comments) uses a name that another file of the
project defines at module level and the holed file neither defines nor mentions anywhere else
(the holes repository context can help with, as CrossCodeEval selects them). Reported per system: exact
match, first-line exact match, edit similarity; for `with`, retrieval recall: the share of
those cross-file names of the expected text that appear in the retrieved context.

Usage (from the repository root):
  .venv/bin/python benches/repo_quality.py [--holes 40] [--seed 0] [--threads 2]
  .venv/bin/python benches/repo_quality.py --projects held-out --holes 24   # other packages
  .venv/bin/python benches/repo_quality.py --smoke     # 2 holes, prints only
"""
import argparse, ast, datetime, io, json, os, random, re, shutil, statistics, sys, tempfile, time
import tokenize
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

ROOT = quality.ROOT
PROJECTS = ("requests", "click", "httpx", "urllib3", "_pytest", "pluggy", "anyio", "h11", "packaging", "gguf")
# Packages `make setup` installs (dependencies of the model tooling) that were not looked at
# while retrieval was worked on: `--projects held-out` checks a change on them.
HELD_OUT = ("httpcore", "fsspec", "tqdm", "filelock", "idna", "huggingface_hub")
SYSTEMS = ("without", "with", "baseline")
WORKSPACE_SYSTEMS = ("with", "baseline")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BEGIN, END = "<!-- repo_quality.py: begin -->", "<!-- repo_quality.py: end -->"


def site_packages():
    return Path(next((ROOT / ".venv" / "lib").glob("python*/site-packages")))


def version_of(name, packages):
    """The version in the package's dist-info (`_pytest` is `pytest`'s)."""
    dist = {"_pytest": "pytest"}.get(name, name).replace("-", "_").lower()
    for info in packages.glob("*.dist-info"):
        stem, _, version = info.name[:-len(".dist-info")].partition("-")
        if stem.lower() == dist:
            return version
    return "?"


def defined_names(source):
    """Module-level functions, classes and assignments (what another module imports)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {name for name in names if len(name) > 2 and not name.startswith("__")}


def defined_methods(source):
    """Public methods of module-level classes (what code reaches through an object)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {item.name for node in tree.body if isinstance(node, ast.ClassDef) for item in node.body
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            and len(item.name) > 2 and not item.name.startswith("_")}


def code_names(text):
    """The identifiers of `text` that are code: names outside strings and comments (as far as
    the tokenizer gets through a partial line)."""
    names = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.NAME:
                names.add(token.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return names


def project_holes(project, rng, per_project, needed_kind="module"):
    """Cross-file holes of one project: (file relative path, hole dict). `needed_kind`
    "module": the expected code uses a module-level name of another file; "methods": it calls
    (`.name`) a public method of a class of another file, a name the holed file neither
    defines nor mentions."""
    files = sorted(p for p in project.rglob("*.py") if "__pycache__" not in p.parts)
    sources = {p: p.read_text(encoding="utf-8", errors="replace") for p in files}
    names_of = defined_methods if needed_kind == "methods" else defined_names
    defined = {p: names_of(s) for p, s in sources.items()}
    holes = []
    for path in rng.sample(files, len(files)):
        source = sources[path]
        elsewhere = set().union(*(names for other, names in defined.items() if other != path)) - defined[path]
        if needed_kind == "methods":
            elsewhere -= defined_names(source)
        for kind in ("line", "rest"):
            try:
                sites = quality.candidates(kind, source)
            except (SyntaxError, ValueError):
                continue
            useful = []
            for holed, line, col, expected in sites:
                needed = sorted(code_names(expected) & elsewhere - set(IDENT.findall(holed)))
                if needed_kind == "methods":
                    needed = [name for name in needed if re.search(rf"\.\s*{name}\b", expected)]
                if needed:
                    useful.append((holed, line, col, expected, needed))
            if useful:
                holed, line, col, expected, needed = rng.choice(useful)
                holes.append(dict(kind=kind, project=project.name, file=str(path.relative_to(project)),
                                  line=line, col=col, holed=holed, expected=expected, needed=needed))
        if len(holes) >= per_project:
            break
    return holes[:per_project]


def run_nib(hole, workdir, system, args):
    """`nib complete --json` in the project copy, with or without the workspace index."""
    project = Path(workdir) / hole["project"]
    path = project / hole["file"]
    original = path.read_text(encoding="utf-8", errors="replace")
    path.write_text(hole["holed"], encoding="utf-8")
    try:
        line_text = hole["holed"].split("\n")[hole["line"]]
        utf16_col = len(line_text[:hole["col"]].encode("utf-16-le")) // 2
        nib = args.baseline_nib if system == "baseline" else args.nib
        cmd = [str(nib), "complete", "--json", "--file", hole["file"], "--line", str(hole["line"]),
               "--character", str(utf16_col), "--model", str(args.model)] + args.nib_flags
        if system in WORKSPACE_SYSTEMS:
            cmd += ["--workspace", "."]
        proc, wall = quality.run(cmd, project)
    finally:
        path.write_text(original, encoding="utf-8")
    if proc.returncode != 0:
        return dict(text="", error=proc.stderr.strip().splitlines()[-1:], wall=wall, retrieved="", sources=[])
    out = json.loads(proc.stdout)
    s = out["stats"]
    return dict(text=out["text"], wall=wall, model_ms=s["prefillMs"] + s["decodeMs"],
                prompt_tokens=s["promptTokens"], retrieved=out.get("retrieved", ""), sources=out["sources"],
                grounded=out.get("grounded"))


def summarize(rows, systems):
    table = []
    for system in systems:
        rs = [r[system] for r in rows]
        ok = [r for r in rs if "error" not in r]
        ran = [r for r in ok if not r.get("grounded")]  # answers the model generated
        recall = None
        if system in WORKSPACE_SYSTEMS:
            needed = [(name, r[system]["retrieved"]) for r in rows for name in r["needed"]]
            found = sum(bool(re.search(rf"\b{re.escape(n)}\b", text)) for n, text in needed)
            recall = 100 * found / max(len(needed), 1)
        table.append(dict(system=system, n=len(rs), errors=len(rs) - len(ok),
                          exact=100 * sum(r["exact"] for r in rs) / max(len(rs), 1),
                          first=100 * sum(r["first_line"] for r in rs) / max(len(rs), 1),
                          similarity=statistics.fmean(r["similarity"] for r in rs) if rs else float("nan"),
                          prompt=statistics.fmean(r["prompt_tokens"] for r in ran) if ran else float("nan"),
                          model_ms=statistics.median(r["model_ms"] for r in ran) if ran else float("nan"),
                          recall=recall,
                          grounded=100 * sum(bool(r.get("grounded")) for r in rs) / max(len(rs), 1),
                          grounded_exact=sum(bool(r.get("grounded")) and r["exact"] for r in rs),
                          grounded_n=sum(bool(r.get("grounded")) for r in rs)))
    return table


def markdown(table):
    lines = ["| system | holes | errors | exact match % | first line exact % | mean edit sim. | "
             "retrieval recall % | import lines offered (exact) | mean prompt tokens | median prefill+decode ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        recall = "—" if t["recall"] is None else f"{t['recall']:.0f}"
        lines.append(f"| {t['system']} | {t['n']} | {t['errors']} | {t['exact']:.1f} | {t['first']:.1f} | "
                     f"{t['similarity']:.3f} | {recall} | {t['grounded_n']} ({t['grounded_exact']}) | "
                     f"{t['prompt']:.0f} | {t['model_ms']:.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=quality.DEFAULT_MODEL)
    ap.add_argument("--holes", type=int, default=40, help="holes in all (spread over the projects)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--nib", type=Path, default=quality.NIB)
    ap.add_argument("--out", type=Path, help="markdown report (default: docs/quality.md; --smoke: none)")
    ap.add_argument("--details", type=Path, help="also write every hole and both answers as JSON lines")
    ap.add_argument("--smoke", action="store_true", help="2 holes; exit 1 if a call fails")
    ap.add_argument("--systems", default="without,with",
                    help="systems to run, comma-separated: without, with, baseline (default: without,with)")
    ap.add_argument("--baseline-nib", type=Path,
                    help="the `baseline` system: `with` run by this nib binary (an earlier build), same holes")
    ap.add_argument("--needed", choices=("module", "methods"), default="module",
                    help="which cross-file names a hole must need: module-level names (default) or methods "
                         "called through an object")
    ap.add_argument("--projects", default=",".join(PROJECTS),
                    help="installed packages to cut holes in, comma-separated (default: the ten above; "
                         "HELD_OUT names packages not looked at while retrieval was tuned)")
    ap.add_argument("--retrieval-only", action="store_true",
                    help="generate one token per hole: only retrieval recall is meaningful (fast)")
    args = ap.parse_args()
    systems = [system for system in SYSTEMS if system in args.systems.split(",")]
    if "baseline" in systems and not args.baseline_nib:
        sys.exit("the baseline system needs --baseline-nib")
    total = 2 if args.smoke else args.holes
    out = args.out or (None if args.smoke else ROOT / "docs" / "quality.md")
    args.model = args.model.resolve()
    args.nib_flags = ["--threads", str(args.threads)] if args.threads else []
    if args.retrieval_only:
        args.nib_flags += ["--max-tokens", "1"]
    if not args.nib.exists() or not (args.model / "model.onnx").exists():
        sys.exit(f"need {args.nib} (make build) and {args.model}/model.onnx (make model)")
    packages = site_packages()
    names = HELD_OUT if args.projects == "held-out" else tuple(args.projects.split(","))
    projects = [packages / name for name in names if (packages / name).is_dir()]
    if not projects:
        sys.exit(f"none of {', '.join(names)} is installed in {packages} (make setup)")

    rng = random.Random(args.seed)
    per_project = -(-total // len(projects))
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="nib-repo-quality-") as workdir:
        holes = []
        for project in projects:
            copy = Path(workdir) / project.name
            shutil.copytree(project, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
            holes += project_holes(copy, rng, per_project, args.needed)
        holes = holes[:total]
        for i, hole in enumerate(holes, 1):
            row = dict(hole)
            for system in systems:
                row[system] = quality.score(run_nib(hole, workdir, system, args), hole["expected"])
            rows.append(row)
            print(f"[{i}/{len(holes)}] {hole['project']}/{hole['file']}:{hole['line'] + 1} {hole['kind']:4}"
                  f" needs {','.join(hole['needed'][:3])}  "
                  + "  ".join(f"{s} {'=' if row[s]['exact'] else ' '} {row[s]['similarity']:.2f}" for s in systems),
                  flush=True)
    elapsed = time.perf_counter() - started
    table = summarize(rows, systems)
    print("\n" + markdown(table) + f"\n\n{len(rows)} holes in {elapsed:.0f} s")
    if args.details:
        quality.write_details(args.details, rows)
    if out:
        info = json.loads((args.model / "nib.json").read_text())
        command = quality.command_line()
        versions = ", ".join(f"{p.name} {version_of(p.name, packages)}" for p in projects)
        report = (f"- date: {datetime.date.today()}\n- machine: {quality.machine()}\n"
                  f"- model: {info.get('name')} ({info.get('precision')}), `{os.path.relpath(args.model, ROOT)}`\n"
                  f"- projects (from `.venv`, installed by `make setup`): {versions}; seed {args.seed}\n"
                  f"- command: `{command}`\n- run time: {elapsed:.0f} s for {len(rows)} holes\n\n"
                  f"{markdown(table)}\n")
        text = out.read_text() if out.exists() else "# Completion quality\n"
        if BEGIN not in text:
            text += f"\n## Repository context\n\n{BEGIN}\n{END}\n"
        head, rest = text.split(BEGIN, 1)
        out.write_text(f"{head}{BEGIN}\n{report}{END}{rest.split(END, 1)[1]}")
        print(f"wrote {out}")
    errors = sum("error" in r[s] for r in rows for s in systems)
    return 1 if args.smoke and errors else 0


if __name__ == "__main__":
    sys.exit(main())
