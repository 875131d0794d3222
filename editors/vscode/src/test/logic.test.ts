// Unit tests for the extension logic that needs no VS Code (node:test, on the compiled JS).
// The package.json contributions are checked against docs/configuration.md here too, so a
// setting added to the server's docs cannot be forgotten in the extension.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import {
  actionErrorMessage,
  expandPath,
  parseStatus,
  resolveServerPath,
  statusView,
  toServerSettings,
  withWorkspaceTrust,
} from '../logic';

const extensionDir = path.resolve(__dirname, '..', '..');
const repo = path.resolve(extensionDir, '..', '..');
const manifest = JSON.parse(fs.readFileSync(path.join(extensionDir, 'package.json'), 'utf8'));
const properties: Record<string, { default: unknown }> = manifest.contributes.configuration.properties;

/** A reader over a flat `{ "completion.maxTokens": 32 }` map, like `getConfiguration('nib').get`. */
const reader = (values: Record<string, unknown>) => (key: string) => values[key];

/** The contributed defaults, as VS Code's configuration returns them when nothing is set. */
const defaults = () =>
  reader(Object.fromEntries(Object.entries(properties).map(([key, p]) => [key.replace(/^nib\./, ''), p.default])));

test('contributed defaults map to exactly the server defaults of docs/configuration.md', () => {
  assert.deepEqual(toServerSettings(defaults(), '/ws', '/home/u'), {
    modelPath: '',
    onnxRuntimePath: '',
    threads: 0,
    requestTimeoutMs: 30000,
    completion: { enabled: true, maxTokens: 64, contextTokens: 1024, prefillBudgetMs: 300, languages: [] },
    context: { workspace: true, maxFiles: 20000 },
    python: { interpreter: '' },
    tests: { verify: 'auto', timeBudgetSeconds: 30 },
    docstring: { style: 'google' },
    backend: 'local',
    remote: {
      url: '',
      model: '',
      apiKeyEnv: '',
      allowTokenEnv: false,
      fim: 'auto',
      chat: 'auto',
      contextLength: 4096,
      connectTimeoutMs: 3000,
      timeoutMs: 15000,
      maxConcurrentRequests: 4,
      fallbackToLocal: false,
    },
  });
});

test('every setting in docs/configuration.md is contributed, with a description', () => {
  const doc = fs.readFileSync(path.join(repo, 'docs', 'configuration.md'), 'utf8');
  const documented = [...doc.matchAll(/^\| `(nib\.[A-Za-z.]+)` \|/gm)].map((m) => m[1]);
  assert.ok(documented.length >= 10, `found only ${documented.length} settings in the docs`);
  for (const key of documented) {
    assert.ok(properties[key], `${key} is documented for the server but not contributed`);
    const p = properties[key] as { markdownDescription?: string; description?: string };
    assert.ok((p.markdownDescription ?? p.description ?? '').length > 20, `${key} has no description`);
  }
  // And the server gets every documented key, nested the way config.rs reads it.
  const sent = toServerSettings(defaults()) as unknown as Record<string, unknown>;
  for (const key of documented) {
    const value = key
      .slice('nib.'.length)
      .split('.')
      .reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], sent);
    assert.notEqual(value, undefined, `${key} is not passed to the server`);
  }
});

test('client-only settings are not sent to the server (it would reject them as unknown)', () => {
  const sent = JSON.stringify(
    toServerSettings(reader({ serverPath: '/x/nib', logLevel: 'debug', 'trace.server': 'verbose' })),
  );
  assert.ok(!/serverPath|logLevel|trace/.test(sent), sent);
});

test('user values are passed through, paths expanded', () => {
  const settings = toServerSettings(
    reader({
      modelPath: '~/models/big',
      onnxRuntimePath: '${workspaceFolder}/lib/libonnxruntime.so',
      threads: 3,
      'completion.enabled': false,
      'completion.maxTokens': 16,
      'completion.languages': ['python'],
      'python.interpreter': '${workspaceFolder}/.venv/bin/python',
      'docstring.style': 'numpy',
    }),
    '/ws',
    '/home/u',
  );
  assert.equal(settings.modelPath, '/home/u/models/big');
  assert.equal(settings.onnxRuntimePath, '/ws/lib/libonnxruntime.so');
  assert.equal(settings.threads, 3);
  assert.deepEqual(settings.completion, {
    enabled: false,
    maxTokens: 16,
    contextTokens: 1024,
    prefillBudgetMs: 300,
    languages: ['python'],
  });
  assert.equal(settings.python.interpreter, '/ws/.venv/bin/python');
  assert.equal(settings.docstring.style, 'numpy');
});

test('a wrong type is passed through for the server to name in its warning', () => {
  const settings = toServerSettings(reader({ 'completion.maxTokens': 'lots', modelPath: 3 }));
  assert.equal(settings.completion.maxTokens, 'lots');
  assert.equal(settings.modelPath, 3);
});

test('a workspace cannot choose programs, libraries, models or where code and keys are sent', () => {
  // Path settings may be overridden by a trusted workspace only; the server and key settings
  // not at all (docs/security.md).
  const scopes: Record<string, string> = {
    'nib.serverPath': 'machine-overridable',
    'nib.modelPath': 'machine-overridable',
    'nib.onnxRuntimePath': 'machine-overridable',
    'nib.python.interpreter': 'machine-overridable',
    'nib.remote.url': 'machine',
    'nib.remote.apiKeyEnv': 'machine',
    'nib.remote.allowTokenEnv': 'application',
  };
  for (const [key, scope] of Object.entries(scopes)) {
    assert.equal((properties[key] as { scope?: string }).scope, scope, key);
  }
  const untrusted = manifest.capabilities?.untrustedWorkspaces;
  assert.equal(untrusted?.supported, 'limited');
  for (const key of [...Object.keys(scopes), 'nib.backend', 'nib.remote.model']) {
    assert.ok(untrusted.restrictedConfigurations.includes(key), `${key} is not restricted in untrusted workspaces`);
  }
});

test('in Restricted Mode ${workspaceFolder} is not expanded and a relative server path is refused', () => {
  const settings = toServerSettings(
    reader({ 'python.interpreter': '${workspaceFolder}/.venv/bin/python', onnxRuntimePath: '${workspaceFolder}/x.so' }),
    undefined,
    '/home/u',
  );
  // Left as written: the server refuses a path that is not absolute.
  assert.equal(settings.python.interpreter, '${workspaceFolder}/.venv/bin/python');
  assert.equal(settings.onnxRuntimePath, '${workspaceFolder}/x.so');
  for (const setting of ['${workspaceFolder}/bin/nib', 'bin/nib', './nib']) {
    const found = resolveServerPath({ setting, checkouts: [], envPath: '', isExecutable: () => true });
    assert.equal(found.found, false, setting);
    assert.match(found.how, /must be an absolute path/);
  }
});

test('expandPath', () => {
  assert.equal(expandPath('', '/ws', '/h'), '');
  assert.equal(expandPath('  ', '/ws', '/h'), '');
  assert.equal(expandPath('~', '/ws', '/h'), '/h');
  assert.equal(expandPath('~/a/b', '/ws', '/h'), '/h/a/b');
  assert.equal(expandPath('${workspaceFolder}/m', '/ws', '/h'), '/ws/m');
  assert.equal(expandPath('${workspaceFolder}/m', undefined, '/h'), '${workspaceFolder}/m');
  assert.equal(expandPath('/abs/~/x', '/ws', '/h'), '/abs/~/x');
});

test('server path: setting, then checkout build, then PATH', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nib-vscode-test-'));
  try {
    const exe = (file: string) => {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, '#!/bin/sh\n', { mode: 0o755 });
      return file;
    };
    const checkout = path.join(dir, 'checkout');
    const onPath = exe(path.join(dir, 'bin', 'nib'));
    fs.writeFileSync(path.join(dir, 'bin', 'not-exec'), '', { mode: 0o644 });
    const envPath = ['', path.join(dir, 'empty'), path.join(dir, 'bin')].join(path.delimiter);

    // Nothing built yet: PATH.
    let found = resolveServerPath({ setting: '', checkouts: [checkout], envPath });
    assert.deepEqual(found, { command: onPath, how: 'nib on PATH', found: true });

    // The checkout's build wins over PATH.
    const built = exe(path.join(checkout, 'target', 'release', 'nib'));
    found = resolveServerPath({ setting: '', checkouts: [path.join(dir, 'other'), checkout], envPath });
    assert.equal(found.command, built);
    assert.ok(found.found && found.how.includes(checkout), found.how);

    // The setting wins over both, expanded; a missing file is reported, not replaced.
    found = resolveServerPath({ setting: '~/x/nib', checkouts: [checkout], envPath, home: dir });
    assert.deepEqual(found, { command: path.join(dir, 'x', 'nib'), how: 'the nib.serverPath setting', found: false });

    // Nothing anywhere: a message that says where it looked and what to do.
    found = resolveServerPath({ setting: '', checkouts: [path.join(dir, 'none')], envPath: path.join(dir, 'empty') });
    assert.equal(found.found, false);
    assert.match(found.how, /none\/target\/release\/nib, PATH; set nib.serverPath or run 'make setup'/);
    // A file without the executable bit is not a server.
    found = resolveServerPath({ setting: '', checkouts: [], envPath: path.join(dir, 'bin', 'not-exec', '..') });
    assert.equal(found.command, onPath);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('nib/status params are parsed; junk is ignored', () => {
  assert.deepEqual(parseStatus({ state: 'loading', model: '/m/smollm2' }), { state: 'loading', model: '/m/smollm2' });
  assert.deepEqual(parseStatus({ state: 'ready', model: '/m', name: 'SmolLM2', loadMs: 812, contextLength: 8192 }), {
    state: 'ready',
    model: '/m',
    name: 'SmolLM2',
    loadMs: 812,
    contextLength: 8192,
  });
  assert.deepEqual(parseStatus({ state: 'error', message: 'no model' }), { state: 'error', message: 'no model' });
  assert.deepEqual(parseStatus({ state: 'ready', loadMs: 'soon' }), { state: 'ready', model: undefined, name: undefined, loadMs: undefined, contextLength: undefined });
  for (const junk of [null, undefined, 3, 'ready', [], { state: 'dancing' }, {}]) {
    assert.equal(parseStatus(junk), undefined, JSON.stringify(junk));
  }
});

test('status bar text for each state', () => {
  const loading = statusView({ state: 'loading', model: '/models/smollm2-135m-instruct/' }, true);
  assert.equal(loading.text, '$(loading~spin) nib: loading smollm2-135m-instruct');
  assert.equal(loading.label, 'nib: loading');
  assert.equal(loading.error, false);

  const ready = statusView({ state: 'ready', model: '/m/smollm2', name: 'SmolLM2-135M', loadMs: 640 }, true);
  assert.equal(ready.text, '$(sparkle) nib');
  assert.match(ready.tooltip, /^nib: SmolLM2-135M ready, loaded in 640 ms\n/);
  assert.equal(ready.label, 'nib: ready');

  const off = statusView({ state: 'ready', model: '/m/smollm2' }, false);
  assert.equal(off.text, '$(circle-slash) nib');
  assert.match(off.tooltip, /^nib: smollm2 ready \(completions off\)/);

  const error = statusView({ state: 'error', message: 'model not found: /x' }, true);
  assert.equal(error.error, true);
  assert.equal(error.label, 'nib: error');
  assert.match(error.tooltip, /model not found: \/x\nClick to show the server log\.$/);

  const stopped = statusView({ state: 'stopped' }, true);
  assert.equal(stopped.error, true);
  assert.equal(stopped.text, '$(error) nib: server stopped');

  for (const state of ['starting', 'unloaded'] as const) {
    const view = statusView({ state }, true);
    assert.equal(view.error, false);
    assert.equal(view.label, `nib: ${state}`);
  }
});

test('the status tooltip says what generated tests run with', () => {
  const params = {
    state: 'ready',
    model: '/m/smollm2',
    verification: {
      enabled: true,
      timeBudgetSeconds: 30,
      isolation: true,
      python: { program: '/ws/.venv/bin/python', source: "the workspace's .venv" },
      node: null,
      typescript: { program: '/ws/node_modules/typescript/lib/typescript.js', source: 'typescript' },
      go: { program: '/usr/bin/go', source: 'PATH' },
      cargo: null,
    },
  };
  const status = parseStatus(params);
  assert.ok(status?.verification);
  const tooltip = statusView(status, true, true).tooltip;
  assert.match(tooltip, /\nGenerated tests: run in a sandbox before they are offered, at most 30 s\.\n/);
  assert.match(tooltip, /\nPython: \/ws\/\.venv\/bin\/python \(the workspace's \.venv\)\n/);
  assert.match(tooltip, /\nNode\.js: not found \(tests unverified\)\n/);
  assert.match(tooltip, /\nTypeScript compiler: \/ws\/node_modules\/typescript\/lib\/typescript\.js \(typescript\)\n/);
  assert.match(tooltip, /\nGo: \/usr\/bin\/go \(PATH\)\n/);
  assert.match(tooltip, /\nClick to show the server log\.$/);
  assert.match(statusView(status, true, false).tooltip, /Generated tests: written unverified \(the workspace is not trusted\)/);
  const off = parseStatus({ ...params, verification: { ...params.verification, enabled: false, isolation: false } });
  assert.match(statusView(off!, true, true).tooltip, /written unverified \(nib\.tests\.verify is off\)/);
  assert.doesNotMatch(statusView(parseStatus({ state: 'ready' })!, true).tooltip, /Generated tests/);
});

test('code action errors say what happened', () => {
  assert.match(actionErrorMessage('Add docstring', { code: -32801, message: 'content modified' }), /document changed/);
  assert.match(actionErrorMessage('Add docstring', { code: -32800 }), /cancelled/);
  assert.equal(
    actionErrorMessage('Generate unit tests', { code: -32803, message: 'no complete test' }),
    'nib: Generate unit tests failed: no complete test',
  );
  assert.equal(actionErrorMessage('Add docstring', 'boom'), 'nib: Add docstring failed: boom');
});

test('generated tests are run only in a trusted workspace', () => {
  const settings = toServerSettings(defaults(), '/ws', '/home/u');
  assert.equal(withWorkspaceTrust(settings, true).tests.verify, 'auto');
  assert.equal(withWorkspaceTrust(settings, false).tests.verify, 'off');
  assert.equal(withWorkspaceTrust(settings, false).tests.timeBudgetSeconds, 30, 'other test settings stay');
  assert.equal(settings.tests.verify, 'auto', 'the settings object itself is not changed');
});
