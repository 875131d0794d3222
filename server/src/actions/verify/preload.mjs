// nib's JavaScript preload: makes the module under test load from the editor's buffer text
// instead of the file on disk, and TypeScript load through the project's compiler. ES modules
// and TypeScript go through module hooks (hooks.mjs); CommonJS through the `.js`/`.cjs`
// loaders. Reads `nib_spec.json` beside it. Imported by runner.mjs (and its workers), and by
// `node --import` for the final run under node:test.

import fs from "node:fs";
import { createRequire, register } from "node:module";

const spec = JSON.parse(fs.readFileSync(new URL("./nib_spec.json", import.meta.url), "utf8"));

// Stack lines of compiled TypeScript point into the TypeScript (its inline source maps).
process.setSourceMapsEnabled(true);
register(new URL("./nib_hooks.mjs", import.meta.url), {
  data: { url: spec.target_url, source: spec.source, compiler: spec.compiler },
});

if (spec.commonjs) {
  const Module = createRequire(import.meta.url)("node:module");
  for (const extension of [".js", ".cjs"]) {
    const original = Module._extensions[extension];
    if (typeof original !== "function") continue;
    Module._extensions[extension] = function (module, filename) {
      if (filename === spec.target_path) {
        return module._compile(spec.source, filename);
      }
      return original.call(this, module, filename);
    };
  }
}
