// nib's module hooks: the module under test is the editor's buffer text, and TypeScript
// (`.ts`, `.tsx`, `.mts`) is compiled to JavaScript by the project's own compiler: its
// `typescript` package, or the `esbuild` that tsx brings. Specifiers TypeScript accepts and
// node does not (`./price` for `./price.ts`, `./price.js` for `./price.ts`) resolve to the
// TypeScript file. Compiled code carries an inline source map, so stack lines are the
// TypeScript's own.

import fs from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const TYPESCRIPT = /\.(ts|tsx|mts)$/;
const EXTENSIONS = [".ts", ".tsx", ".mts", "/index.ts", "/index.tsx"];

let target = null;
let source = null;
let compile = null;

export async function initialize(data) {
  target = data.url;
  source = data.source;
  if (data.compiler) compile = compiler(data.compiler);
}

/** A function from (TypeScript text, file name) to JavaScript, from the project's compiler. */
function compiler({ kind, path }) {
  const load = createRequire(import.meta.url);
  if (kind === "esbuild") {
    const esbuild = load(path);
    return (text, file) =>
      esbuild.transformSync(text, {
        loader: file.endsWith(".tsx") ? "tsx" : "ts",
        format: "esm",
        target: "es2022",
        sourcemap: "inline",
        sourcefile: file,
        jsx: "automatic",
      }).code;
  }
  const ts = load(path);
  const options = {
    module: ts.ModuleKind.ESNext,
    target: ts.ScriptTarget.ES2022,
    inlineSourceMap: true,
    jsx: ts.JsxEmit.ReactJSX,
    esModuleInterop: true,
  };
  return (text, file) => ts.transpileModule(text, { compilerOptions: options, fileName: file }).outputText;
}

export async function resolve(specifier, context, nextResolve) {
  const path = ["./", "../", "/"].some((start) => specifier.startsWith(start));
  if (compile && path && context.parentURL?.startsWith("file:")) {
    const base = fileURLToPath(new URL(specifier, context.parentURL));
    if (!isFile(base)) {
      for (const stem of new Set([base, base.replace(/\.(m?)js$/, "")])) {
        for (const extension of EXTENSIONS) {
          const url = pathToFileURL(stem + extension).href;
          if (url === target || isFile(stem + extension)) return { url, shortCircuit: true };
        }
      }
    }
  }
  return nextResolve(specifier, context);
}

function isFile(path) {
  return fs.statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}

export async function load(url, context, nextLoad) {
  if (compile && url.startsWith("file:") && TYPESCRIPT.test(url) && !url.includes("/node_modules/")) {
    const file = fileURLToPath(url);
    const text = url === target ? source : fs.readFileSync(file, "utf8");
    return { format: "module", source: compile(text, file), shortCircuit: true };
  }
  const result = await nextLoad(url, context);
  if (url === target && result.format === "module") {
    return { ...result, source, shortCircuit: true };
  }
  return result;
}
