#!/usr/bin/env python3
"""Deterministic typing sessions for the end-to-end latency bench (benches/replay.py).

A real source file is typed character by character into the place it came from: the document
starts as the file without the typed region (the code after it stays below the cursor), and
each keystroke becomes one LSP `didChange`. The pauses come from a seeded model of a typist:

- between keys: log-normal, median 115 ms (about 100 words per minute in bursts);
- after a space or punctuation: + log-normal, median 60 ms;
- after finishing a line: log-normal, median 650 ms (reading the ghost text, thinking);
- now and then (2 % of keys) a longer pause of 1-3 s;
- typos (1.5 % of letters): a neighbouring letter, a 250 ms pause, a backspace;
- Enter inserts the newline plus the next line's indentation in one change, as an editor's
  auto-indent (with the typist's Tab/Backspace folded in) would.

    .venv/bin/python benches/typist.py [--source FILE] [--start-line N] [--chars N] [--seed N]

prints the recording as JSON (the bench builds it in memory the same way; same seed, same
session).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SOURCE = "models/nib_convert/runtime.py"
DEFAULT_START_LINE = 37  # `def forward` of OrtDecoder: a method body in the middle of a class
NEIGHBOURS = dict(zip("abcdefghijklmnopqrstuvwxyz", "sniwrdfgujlkbmipwtaryvecth"))


def lognormal(rng: random.Random, median_ms: float, sigma: float) -> float:
    return median_ms * math.exp(rng.gauss(0.0, sigma))


def record(source: str = DEFAULT_SOURCE, start_line: int = DEFAULT_START_LINE, chars: int = 700,
           seed: int = 9, speed: float = 1.0) -> dict:
    """The session: initial text, the cursor's start, and timed changes (LSP ranges, 0-based
    line/character; the file is ASCII, so UTF-16 columns are byte columns)."""
    text = open(os.path.join(REPO, source), encoding="utf-8").read()
    lines = text.splitlines(keepends=True)
    if not text.isascii():
        raise SystemExit(f"{source}: the typing model handles ASCII files only")
    end_line = start_line
    while end_line < len(lines) and sum(len(l) for l in lines[start_line:end_line]) < chars:
        end_line += 1
    typed = "".join(lines[start_line:end_line])
    # The region is typed from the start of its first line's indentation; the document keeps
    # an empty line there for the cursor.
    indent = len(typed) - len(typed.lstrip(" "))
    body = typed[indent:].rstrip("\n")
    initial = "".join(lines[:start_line]) + typed[:indent] + "\n" + "".join(lines[end_line:])
    rng = random.Random(seed)
    events = []
    t = 0.0
    line, col = start_line, indent
    i = 0

    def emit(change_text: str, start: tuple[int, int], end: tuple[int, int], cursor: tuple[int, int]):
        events.append({"t": round(t, 1), "range": [start[0], start[1], end[0], end[1]], "text": change_text,
                       "cursor": list(cursor)})

    while i < len(body):
        ch = body[i]
        t += lognormal(rng, 115, 0.35) * speed
        if ch == "\n":
            # Enter with auto-indent: newline plus the next line's indentation at once.
            j = i + 1
            while j < len(body) and body[j] == " ":
                j += 1
            new_indent = j - i - 1
            emit("\n" + " " * new_indent, (line, col), (line, col), (line + 1, new_indent))
            line, col = line + 1, new_indent
            i = j
            t += lognormal(rng, 650, 0.5) * speed
            continue
        if ch.isalpha() and ch.lower() in NEIGHBOURS and rng.random() < 0.015:
            wrong = NEIGHBOURS[ch.lower()]
            emit(wrong, (line, col), (line, col), (line, col + 1))
            t += lognormal(rng, 250, 0.3) * speed
            emit("", (line, col), (line, col + 1), (line, col))
            t += lognormal(rng, 115, 0.35) * speed
        emit(ch, (line, col), (line, col), (line, col + 1))
        col += 1
        i += 1
        if ch in " ,.:()[]=":
            t += lognormal(rng, 60, 0.4) * speed
        if rng.random() < 0.02:
            t += rng.uniform(1000, 3000) * speed
    return {"source": source, "startLine": start_line, "typedChars": len(body), "seed": seed,
            "initialText": initial, "start": [start_line, indent], "events": events,
            "finalText": text}


def apply(text: str, event: dict) -> str:
    """Applies one recorded change to `text` (used by the self-check below)."""
    lines = text.split("\n")
    l0, c0, l1, c1 = event["range"]
    offset = lambda l, c: sum(len(x) + 1 for x in lines[:l]) + c  # noqa: E731
    return text[:offset(l0, c0)] + event["text"] + text[offset(l1, c1):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=DEFAULT_SOURCE)
    ap.add_argument("--start-line", type=int, default=DEFAULT_START_LINE)
    ap.add_argument("--chars", type=int, default=700)
    ap.add_argument("--seed", type=int, default=9)
    a = ap.parse_args()
    session = record(a.source, a.start_line, a.chars, a.seed)
    print(json.dumps(session, indent=1))


if __name__ == "__main__":
    main()
