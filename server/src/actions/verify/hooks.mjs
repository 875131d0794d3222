// nib's module hook: the ES module under test is the editor's buffer text.

let target = null;
let source = null;

export async function initialize(data) {
  target = data.url;
  source = data.source;
}

export async function load(url, context, nextLoad) {
  const result = await nextLoad(url, context);
  if (url === target && result.format === "module") {
    return { ...result, source, shortCircuit: true };
  }
  return result;
}
