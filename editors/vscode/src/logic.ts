// The extension's logic that does not need VS Code: settings → the server's settings object,
// finding the server binary, and what the status bar says. Unit-tested with node:test.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** The languages nib has grammars for (VS Code language ids); the client starts for these. */
export const LANGUAGES = ['python', 'rust', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'java', 'c', 'cpp'];

/** Code action kinds nib lists (docs/lsp-extensions.md). */
export const DOCSTRING_KIND = 'refactor.rewrite.nib.docstring';
export const TESTS_KIND = 'refactor.nib.tests';

/** Reads one setting by its key below `nib.` (e.g. `completion.maxTokens`). */
export type SettingsReader = (key: string) => unknown;

/** nib's settings as the server reads them (docs/configuration.md), the `nib` section. */
export interface ServerSettings {
  modelPath: string;
  onnxRuntimePath: string;
  threads: number;
  requestTimeoutMs: number;
  completion: {
    enabled: boolean;
    maxTokens: number;
    contextTokens: number;
    prefillBudgetMs: number;
    languages: string[];
  };
  context: { workspace: boolean; maxFiles: number };
  python: { interpreter: string };
  tests: { verify: string; timeBudgetSeconds: number };
  docstring: { style: string };
  backend: string;
  remote: {
    url: string;
    model: string;
    apiKeyEnv: string;
    allowTokenEnv: boolean;
    fim: string;
    chat: string;
    contextLength: number;
    connectTimeoutMs: number;
    timeoutMs: number;
    maxConcurrentRequests: number;
    fallbackToLocal: boolean;
  };
}

/**
 * Expands `~/` and `${workspaceFolder}` in a path setting. An empty value stays empty: the
 * server reads `""` as "the default" (a `null` would keep the previous value instead).
 * `workspaceFolder` is only given for a trusted workspace: in Restricted Mode a user setting
 * such as `${workspaceFolder}/.venv/bin/python` must not name a file of a repository someone
 * else wrote, so the placeholder stays, and the server refuses the (relative) path.
 */
export function expandPath(value: string, workspaceFolder: string | undefined, home: string = os.homedir()): string {
  let text = value.trim();
  if (text === '') {
    return '';
  }
  if (workspaceFolder !== undefined) {
    text = text.split('${workspaceFolder}').join(workspaceFolder);
  }
  if (text === '~') {
    return home;
  }
  if (text.startsWith('~/')) {
    return path.join(home, text.slice(2));
  }
  return text;
}

/**
 * The server's settings from VS Code's `nib.*` settings: every key the server knows, with
 * concrete values only (so that a setting reset in VS Code resets it in the server too), and
 * none of the client's own keys (`serverPath`, `trace`), which the server would reject as
 * unknown. Values of the wrong type are passed through: the server names the key in a warning
 * and keeps its default, which is more useful than silently dropping them here.
 */
export function toServerSettings(read: SettingsReader, workspaceFolder?: string, home?: string): ServerSettings {
  const get = <T>(key: string, fallback: T): T => {
    const value = read(key);
    return value === undefined || value === null ? fallback : (value as T);
  };
  const pathSetting = (key: string): string => {
    const value = get<unknown>(key, '');
    return typeof value === 'string' ? expandPath(value, workspaceFolder, home) : (value as string);
  };
  return {
    modelPath: pathSetting('modelPath'),
    onnxRuntimePath: pathSetting('onnxRuntimePath'),
    threads: get('threads', 0),
    requestTimeoutMs: get('requestTimeoutMs', 30000),
    completion: {
      enabled: get('completion.enabled', true),
      maxTokens: get('completion.maxTokens', 64),
      contextTokens: get('completion.contextTokens', 1024),
      prefillBudgetMs: get('completion.prefillBudgetMs', 300),
      languages: get<string[]>('completion.languages', []),
    },
    context: { workspace: get('context.workspace', true), maxFiles: get('context.maxFiles', 20000) },
    python: { interpreter: pathSetting('python.interpreter') },
    tests: { verify: get('tests.verify', 'auto'), timeBudgetSeconds: get('tests.timeBudgetSeconds', 30) },
    docstring: { style: get('docstring.style', 'google') },
    backend: get('backend', 'local'),
    remote: {
      url: get('remote.url', ''),
      model: get('remote.model', ''),
      apiKeyEnv: get('remote.apiKeyEnv', ''),
      allowTokenEnv: get('remote.allowTokenEnv', false),
      fim: get('remote.fim', 'auto'),
      chat: get('remote.chat', 'auto'),
      contextLength: get('remote.contextLength', 4096),
      connectTimeoutMs: get('remote.connectTimeoutMs', 3000),
      timeoutMs: get('remote.timeoutMs', 15000),
      maxConcurrentRequests: get('remote.maxConcurrentRequests', 4),
      fallbackToLocal: get('remote.fallbackToLocal', false),
    },
  };
}

/**
 * Running generated tests runs the workspace's code: only in a trusted workspace. In an
 * untrusted one the server writes tests unverified, whatever the settings say.
 */
export function withWorkspaceTrust(settings: ServerSettings, trusted: boolean): ServerSettings {
  return trusted ? settings : { ...settings, tests: { ...settings.tests, verify: 'off' } };
}

/** What resolving the server path found: the command to run and how it was chosen. */
export interface ServerCommand {
  command: string;
  how: string;
  found: boolean;
}

export interface ResolveOptions {
  /** `nib.serverPath` as set (may be empty). */
  setting: string;
  /** nib checkouts to look in for `target/release/nib`, in order. */
  checkouts: string[];
  /** `PATH` of the extension host. */
  envPath: string | undefined;
  workspaceFolder?: string;
  home?: string;
  isExecutable?: (file: string) => boolean;
}

export function isExecutableFile(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * The `nib` binary: `nib.serverPath` when set (used as given, even when missing, so that the
 * error names it), else `target/release/nib` of a nib checkout (the one the extension was
 * built from), else `nib` on `PATH`.
 */
export function resolveServerPath(options: ResolveOptions): ServerCommand {
  const isExecutable = options.isExecutable ?? isExecutableFile;
  const setting = expandPath(options.setting, options.workspaceFolder, options.home);
  if (setting !== '' && !path.isAbsolute(setting)) {
    // A relative path would be found from wherever VS Code was started, often the workspace.
    return {
      command: setting,
      how: 'nib.serverPath must be an absolute path (~/ is expanded, and ${workspaceFolder} in a trusted workspace)',
      found: false,
    };
  }
  if (setting !== '') {
    return { command: setting, how: 'the nib.serverPath setting', found: isExecutable(setting) };
  }
  for (const checkout of options.checkouts) {
    const built = path.join(checkout, 'target', 'release', 'nib');
    if (isExecutable(built)) {
      return { command: built, how: `the nib checkout at ${checkout}`, found: true };
    }
  }
  for (const dir of (options.envPath ?? '').split(path.delimiter)) {
    if (dir === '') {
      continue;
    }
    const candidate = path.join(dir, 'nib');
    if (isExecutable(candidate)) {
      return { command: candidate, how: 'nib on PATH', found: true };
    }
  }
  const looked = options.checkouts.map((c) => path.join(c, 'target', 'release', 'nib'));
  return {
    command: 'nib',
    how: `not found (looked at ${[...looked, 'PATH'].join(', ')}; set nib.serverPath or run 'make setup')`,
    found: false,
  };
}

/** A program generated tests run with, as `nib/status` reports it. */
export interface Toolchain {
  program: string;
  source: string;
}

/** What **Generate unit tests** runs tests with (`nib/status`'s `verification`). */
export interface Verification {
  enabled: boolean;
  timeBudgetSeconds?: number;
  isolation?: boolean;
  /** Per toolchain (`python`, `node`, `typescript`, `go`, `cargo`): where it was found, or null. */
  toolchains: Record<string, Toolchain | null>;
}

/** The model state from `nib/status` (docs/lsp-extensions.md), plus the client's own states. */
export type Status = (
  | { state: 'starting' }
  | { state: 'unloaded' }
  | { state: 'loading'; model?: string }
  | { state: 'ready'; model?: string; name?: string; loadMs?: number; contextLength?: number }
  | { state: 'error'; message?: string }
  | { state: 'stopped'; message?: string }
) & { verification?: Verification };

export interface StatusView {
  text: string;
  tooltip: string;
  /** The accessible label: `nib: <state>` (tests and screen readers read it). */
  label: string;
  /** An error look (red background); a click on the item opens the log either way. */
  error: boolean;
}

/** Parses `nib/status` params; anything unexpected becomes `undefined` (ignored). */
export function parseStatus(params: unknown): Status | undefined {
  if (typeof params !== 'object' || params === null) {
    return undefined;
  }
  const p = params as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const verification = parseVerification(p.verification);
  const extra = verification ? { verification } : {};
  switch (p.state) {
    case 'unloaded':
      return { state: 'unloaded', ...extra };
    case 'loading':
      return { state: 'loading', model: str(p.model), ...extra };
    case 'ready':
      return {
        state: 'ready',
        model: str(p.model),
        name: str(p.name),
        loadMs: num(p.loadMs),
        contextLength: num(p.contextLength),
        ...extra,
      };
    case 'error':
      return { state: 'error', message: str(p.message), ...extra };
    default:
      return undefined;
  }
}

function parseVerification(value: unknown): Verification | undefined {
  if (typeof value !== 'object' || value === null) {
    return undefined;
  }
  const v = value as Record<string, unknown>;
  const toolchains: Record<string, Toolchain | null> = {};
  for (const name of ['python', 'node', 'typescript', 'go', 'cargo']) {
    const found = v[name] as Record<string, unknown> | null | undefined;
    if (found === null) {
      toolchains[name] = null;
    } else if (typeof found === 'object' && typeof found.program === 'string') {
      toolchains[name] = { program: found.program, source: typeof found.source === 'string' ? found.source : '' };
    }
  }
  return {
    enabled: v.enabled === true,
    timeBudgetSeconds: typeof v.timeBudgetSeconds === 'number' ? v.timeBudgetSeconds : undefined,
    isolation: typeof v.isolation === 'boolean' ? v.isolation : undefined,
    toolchains,
  };
}

/** Tooltip lines on generated tests: whether they are run, and with what. In an untrusted
 * workspace the extension itself turns running them off. */
export function verificationLines(verification: Verification, trusted: boolean): string[] {
  const lines: string[] = [];
  if (!trusted) {
    lines.push('Generated tests: written unverified (the workspace is not trusted).');
  } else if (!verification.enabled) {
    lines.push('Generated tests: written unverified (nib.tests.verify is off).');
  } else {
    const budget = verification.timeBudgetSeconds !== undefined ? `, at most ${verification.timeBudgetSeconds} s` : '';
    const isolation =
      verification.isolation === false ? ' (no network isolation here: user namespaces are not available)' : '';
    lines.push(`Generated tests: run in a sandbox before they are offered${budget}${isolation}.`);
  }
  const labels: Record<string, string> = {
    python: 'Python',
    node: 'Node.js',
    typescript: 'TypeScript compiler',
    go: 'Go',
    cargo: 'Cargo',
  };
  for (const [name, found] of Object.entries(verification.toolchains)) {
    lines.push(`${labels[name] ?? name}: ${found ? `${found.program} (${found.source})` : 'not found (tests unverified)'}`);
  }
  return lines;
}

function modelName(model: string | undefined): string {
  if (!model) {
    return 'the model';
  }
  return path.basename(model.replace(/[/\\]+$/, '')) || model;
}

/** What the status bar item shows for a state; `completions` is `nib.completion.enabled`,
 * `trusted` whether the workspace is trusted. */
export function statusView(status: Status, completions: boolean, trusted = true): StatusView {
  const view = describe(status, completions);
  if (status.verification) {
    // Before the last line ("Click to show the server log.").
    const lines = view.tooltip.split('\n');
    lines.splice(lines.length - 1, 0, ...verificationLines(status.verification, trusted));
    view.tooltip = lines.join('\n');
  }
  return { ...view, label: `nib: ${status.state}` };
}

function describe(status: Status, completions: boolean): Omit<StatusView, 'label'> {
  const off = completions ? '' : ' (completions off)';
  const offTip = completions
    ? 'Automatic completions are on.'
    : 'Automatic completions are off (nib: Toggle Inline Completions); Alt+\\ still asks for one.';
  const click = 'Click to show the server log.';
  switch (status.state) {
    case 'starting':
      return { text: '$(loading~spin) nib', tooltip: `nib: starting the server\n${click}`, error: false };
    case 'unloaded':
      return { text: '$(circle-outline) nib', tooltip: `nib: no model loaded yet\n${click}`, error: false };
    case 'loading':
      return {
        text: `$(loading~spin) nib: loading ${modelName(status.model)}`,
        tooltip: `nib: loading the model ${status.model ?? ''}\n${click}`,
        error: false,
      };
    case 'ready': {
      const name = status.name ?? modelName(status.model);
      const loaded = status.loadMs !== undefined ? `, loaded in ${status.loadMs} ms` : '';
      const context = status.contextLength !== undefined ? `, context ${status.contextLength} tokens` : '';
      return {
        text: completions ? '$(sparkle) nib' : '$(circle-slash) nib',
        tooltip: `nib: ${name} ready${loaded}${context}${off}\n${status.model ?? ''}\n${offTip}\n${click}`,
        error: false,
      };
    }
    case 'error':
      return {
        text: '$(error) nib: model error',
        tooltip: `nib: ${status.message ?? 'the model failed to load'}\n${click}`,
        error: true,
      };
    case 'stopped':
      return {
        text: '$(error) nib: server stopped',
        tooltip: `nib: ${status.message ?? 'the server is not running'}\n${click}`,
        error: true,
      };
  }
}

/** The error message for a failed code action request (LSP error codes from nib). */
export function actionErrorMessage(title: string, error: unknown): string {
  const e = error as { code?: number; message?: string } | undefined;
  if (e?.code === -32801) {
    return `nib: ${title}: the document changed while generating; try again.`;
  }
  if (e?.code === -32800) {
    return `nib: ${title}: cancelled.`;
  }
  const message = e?.message ?? String(error);
  return `nib: ${title} failed: ${message}`;
}
