// nib's JavaScript test runner, run by nib inside its sandbox from a private folder:
// `node runner.mjs` with `nib_spec.json` beside it. The candidate file registers its tests
// with `globalThis.__nib` instead of node:test; each test runs twice in a worker thread of its
// own, so a test that loops forever or allocates without bound is stopped at its limit and
// the others still run. One JSON line per test goes to stdout, prefixed with a mark.
//
// A failing equality assertion whose actual value is plain data reports that value as a
// JavaScript literal; an error whose name the code under test throws on purpose reports the
// name. nib writes the fix into the test and runs it again.

import fs from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import util from "node:util";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const MARK = "@@nib@@ ";
const EQUALITY = ["deepStrictEqual", "strictEqual", "deepEqual", "equal"];
const spec = JSON.parse(fs.readFileSync(new URL("./nib_spec.json", import.meta.url), "utf8"));

function silence() {
  for (const name of ["log", "info", "warn", "error", "debug", "trace", "dir", "table"]) {
    console[name] = () => {};
  }
  process.stdout.write = () => true;
  process.stderr.write = () => true;
}

/** `value` as a JavaScript literal that evaluates to an equal value, or null. */
function literal(value, depth = 0) {
  if (depth > 6) return null;
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  switch (typeof value) {
    case "number":
      if (!Number.isFinite(value)) return null;
      return Object.is(value, -0) ? "-0" : String(value);
    case "string":
      return JSON.stringify(value);
    case "boolean":
      return String(value);
    case "bigint":
      return `${value}n`;
    case "object":
      break;
    default:
      return null;
  }
  if (Array.isArray(value)) {
    const items = [];
    for (let index = 0; index < value.length; index++) {
      if (!(index in value)) return null;
      const item = literal(value[index], depth + 1);
      if (item === null) return null;
      items.push(item);
    }
    return `[${items.join(", ")}]`;
  }
  if (Object.getPrototypeOf(value) !== Object.prototype || Object.getOwnPropertySymbols(value).length > 0) {
    return null;
  }
  const entries = [];
  for (const [key, item] of Object.entries(value)) {
    const text = literal(item, depth + 1);
    if (text === null) return null;
    const name = /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? key : JSON.stringify(key);
    entries.push(`${name}: ${text}`);
  }
  return entries.length === 0 ? "{}" : `{ ${entries.join(", ")} }`;
}

function describe(error) {
  if (error?.code === "ERR_ASSERTION" && EQUALITY.includes(error.operator)) {
    const show = (value) => util.inspect(value, { depth: 3, breakLength: Infinity });
    return `AssertionError: expected ${show(error.expected)}, got ${show(error.actual)}`.slice(0, 500);
  }
  if (error instanceof Error) {
    return `${error.name}: ${error.message}`.split("\n")[0].slice(0, 500);
  }
  return `thrown: ${util.inspect(error, { depth: 2 })}`.split("\n")[0].slice(0, 500);
}

/** The line of the candidate file that was running when `error` was raised. */
function failingLine(error) {
  const stack = typeof error?.stack === "string" ? error.stack : "";
  const file = spec.candidate;
  const url = pathToFileURL(file).href;
  for (const line of stack.split("\n")) {
    if (!line.includes(url) && !line.includes(file)) continue;
    const match = /:(\d+):(\d+)\)?\s*$/.exec(line);
    if (match) return Number(match[1]);
  }
  return null;
}

/** What nib can write into the test so it holds on the current code, or null. */
function fixFor(error) {
  const line = failingLine(error);
  if (line === null) return null;
  if (error?.code === "ERR_ASSERTION") {
    if (!EQUALITY.includes(error.operator)) return null;
    const value = literal(error.actual);
    return value === null || value.length > 300 ? null : { line, value };
  }
  const name = error?.name;
  if (error instanceof Error && typeof name === "string" && spec.raised_on_purpose.includes(name)) {
    return { line, raises: name };
  }
  return null;
}

async function loadCandidates() {
  const tests = [];
  const add = (title, ...rest) => {
    tests.push({ title: String(title), fn: rest.find((item) => typeof item === "function") });
  };
  globalThis.__nib = { test: add, it: add };
  if (spec.candidate.endsWith(".cjs")) {
    createRequire(import.meta.url)(spec.candidate);
  } else {
    await import(pathToFileURL(spec.candidate).href);
  }
  return tests;
}

async function runOnce(test) {
  const started = performance.now();
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`ran past ${spec.limit_s} s`)), spec.limit_s * 1000);
  });
  try {
    await Promise.race([Promise.resolve().then(() => test.fn({})), limit]);
    return { seconds: (performance.now() - started) / 1000 };
  } catch (error) {
    return { error };
  } finally {
    clearTimeout(timer);
  }
}

/** In a worker: runs one test twice and posts its record. */
async function worker() {
  silence();
  await import("./nib_preload.mjs");
  let tests;
  try {
    tests = await loadCandidates();
  } catch (error) {
    parentPort.postMessage({ module_error: describe(error) });
    return;
  }
  const test = tests.find((candidate) => candidate.title === workerData.title);
  if (!test?.fn) {
    parentPort.postMessage({ outcome: "fail", error: "not found" });
    return;
  }
  const first = await runOnce(test);
  if (first.error !== undefined) {
    const record = { outcome: "fail", error: describe(first.error) };
    const fix = fixFor(first.error);
    if (fix) record.fix = fix;
    parentPort.postMessage(record);
    return;
  }
  const second = await runOnce(test);
  if (second.error !== undefined) {
    parentPort.postMessage({ outcome: "flaky", error: describe(second.error) });
  } else if (first.seconds > spec.limit_s) {
    parentPort.postMessage({ outcome: "slow", error: `took ${first.seconds.toFixed(1)} s` });
  } else {
    parentPort.postMessage({ outcome: "pass", seconds: first.seconds });
  }
}

function runInWorker(title) {
  return new Promise((resolve) => {
    const thread = new Worker(new URL(import.meta.url), {
      workerData: { title },
      resourceLimits: { maxOldGenerationSizeMb: spec.heap_mb },
      stdout: true,
      stderr: true,
    });
    thread.stdout.resume();
    thread.stderr.resume();
    let settled = false;
    const finish = (record) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      thread.terminate();
      resolve(record);
    };
    // Two runs, plus loading the code.
    const timer = setTimeout(
      () => finish({ outcome: "timeout", error: `ran past ${spec.limit_s} s` }),
      (2 * spec.limit_s + spec.load_s) * 1000,
    );
    thread.on("message", finish);
    thread.on("error", (error) => {
      const memory = error?.code === "ERR_WORKER_OUT_OF_MEMORY";
      finish({ outcome: "fail", error: memory ? "it ran out of memory (its limit)" : describe(error) });
    });
    thread.on("exit", () => finish({ outcome: "fail", error: "the test's thread ended without a result" }));
  });
}

async function main() {
  const report = (record) => fs.writeSync(1, MARK + JSON.stringify(record) + "\n");
  silence();
  for (const title of spec.titles) {
    const record = await runInWorker(title);
    if (record.module_error !== undefined) {
      report({ module_error: record.module_error });
      return;
    }
    report({ ...record, name: title });
  }
}

if (isMainThread) {
  await main();
  process.exit(0);
} else {
  await worker();
}
