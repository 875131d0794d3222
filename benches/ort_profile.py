#!/usr/bin/env python3
"""Where a decode step's time goes, per operator: sums ONNX Runtime's per-node profile (written
by nib when `NIB_ORT_PROFILE=PREFIX` is set, docs/configuration.md) over the runs shorter than
`--longest-us` (the decode steps; prefill chunks take far longer), per run.

    python3 benches/ort_profile.py PREFIX [--longest-us 60000]

Profiling adds about 10 us to every node, so small operators look slower than they are; the
run totals are those of the profiled runs."""
import argparse
import bisect
import collections
import glob
import json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("--longest-us", type=float, default=60000)
    args = parser.parse_args()
    path = sorted(glob.glob(args.prefix + "*.json"))[-1]
    events = json.load(open(path))
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    starts = [run["ts"] for run in runs]
    per_op, nodes = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        at = bisect.bisect_right(starts, event["ts"]) - 1
        if at < 0 or runs[at]["dur"] >= args.longest_us:
            continue
        op = event["args"].get("op_name")
        per_op[op] += event["dur"]
        nodes[op] += 1
    steps = [run["dur"] for run in runs if run["dur"] < args.longest_us]
    if not steps:
        raise SystemExit(f"{path}: no run shorter than {args.longest_us} us")
    print(f"{path}: {len(steps)} runs, median {sorted(steps)[len(steps) // 2]} us, "
          f"nodes {sum(per_op.values()) / len(steps):.0f} us per run")
    for op, total in per_op.most_common():
        print(f"{op:40s} {total / len(steps):8.0f} us per run  {nodes[op] / len(steps):5.0f} nodes")


if __name__ == "__main__":
    main()
