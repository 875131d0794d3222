// nib for VS Code: starts the nib language server, shows its model state in the status bar,
// passes settings, and adds commands for nib's code actions. Ghost text comes from
// vscode-languageclient's inline completion support; the lightbulb/Refactor menu lists nib's
// code actions through the standard code action provider.

import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import {
  CodeAction as LspCodeAction,
  CodeActionRequest,
  CodeActionResolveRequest,
  CodeActionTriggerKind,
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';

import {
  DOCSTRING_KIND,
  LANGUAGES,
  Status,
  TESTS_KIND,
  actionErrorMessage,
  parseStatus,
  resolveServerPath,
  statusView,
  toServerSettings,
  withWorkspaceTrust,
} from './logic';

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;
let status: Status = { state: 'starting' };
let extensionPath = '';

/** The folder `${workspaceFolder}` expands to: only in a trusted workspace (see `expandPath`). */
function workspaceFolder(): string | undefined {
  return vscode.workspace.isTrusted ? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath : undefined;
}

function serverSettings() {
  const config = vscode.workspace.getConfiguration('nib');
  return withWorkspaceTrust(toServerSettings((key) => config.get(key), workspaceFolder()), vscode.workspace.isTrusted);
}

function completionsEnabled(): boolean {
  return vscode.workspace.getConfiguration('nib').get<boolean>('completion.enabled', true);
}

function setStatus(next: Status): void {
  status = next;
  const view = statusView(status, completionsEnabled(), vscode.workspace.isTrusted);
  statusItem.text = view.text;
  statusItem.tooltip = view.tooltip;
  statusItem.accessibilityInformation = { label: view.label };
  statusItem.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  statusItem.show();
}

/** nib checkouts whose `target/release/nib` may be used: the one the .vsix was built from
 * (recorded by `make vscode-package`), and the one around the extension's source folder. */
function checkouts(): string[] {
  const found: string[] = [];
  try {
    const info = JSON.parse(fs.readFileSync(path.join(extensionPath, 'out', 'checkout.json'), 'utf8'));
    if (typeof info.checkout === 'string') {
      found.push(info.checkout);
    }
  } catch {
    // Not built by the package script (e.g. run from the source folder).
  }
  found.push(path.resolve(extensionPath, '..', '..'));
  return found;
}

async function startClient(): Promise<void> {
  setStatus({ state: 'starting' });
  const server = resolveServerPath({
    setting: vscode.workspace.getConfiguration('nib').get<string>('serverPath', ''),
    checkouts: checkouts(),
    envPath: process.env.PATH,
    workspaceFolder: workspaceFolder(),
  });
  output.info(`starting ${server.command} (${server.how})`);
  if (!server.found) {
    const message = `nib: the server binary was not found: ${server.command} (${server.how}).`;
    output.error(message);
    setStatus({ state: 'stopped', message });
    const choice = await vscode.window.showErrorMessage(message, 'Open Settings', 'Show Log');
    if (choice === 'Open Settings') {
      void vscode.commands.executeCommand('workbench.action.openSettings', 'nib.serverPath');
    } else if (choice === 'Show Log') {
      output.show(true);
    }
    return;
  }
  const env = { ...process.env };
  env.NIB_LOG ??= vscode.workspace.getConfiguration('nib').get<string>('logLevel', 'warn');
  const serverOptions: ServerOptions = { command: server.command, args: [], options: { env } };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.flatMap((language) => [
      { scheme: 'file', language },
      { scheme: 'untitled', language },
    ]),
    outputChannel: output,
    initializationOptions: serverSettings(),
    middleware: {
      workspace: {
        // The server pulls `nib` when a didChangeConfiguration carries no settings: answer
        // with the same object initializationOptions carried.
        configuration: async (params, token, next) => {
          const answers = await next(params, token);
          if (!Array.isArray(answers)) {
            return answers;
          }
          return params.items.map((item, i) => (item.section === 'nib' ? serverSettings() : answers[i]));
        },
      },
    },
  };
  const created = new LanguageClient('nib', 'nib', serverOptions, clientOptions);
  client = created;
  created.onNotification('nib/status', (params: unknown) => {
    const parsed = parseStatus(params);
    if (parsed) {
      setStatus(parsed);
    }
  });
  created.onDidChangeState((event) => {
    if (event.newState === State.Stopped && client === created) {
      setStatus({ state: 'stopped', message: 'the server stopped (see the log)' });
    } else if (event.newState === State.Running && status.state === 'stopped') {
      setStatus({ state: 'starting' });
    }
  });
  try {
    await created.start();
  } catch (error) {
    const message = `nib: the server failed to start: ${error instanceof Error ? error.message : String(error)}`;
    output.error(message);
    setStatus({ state: 'stopped', message });
  }
}

async function stopClient(): Promise<void> {
  const running = client;
  client = undefined;
  if (running) {
    try {
      await running.stop(5000);
    } catch (error) {
      output.warn(`stopping the server: ${String(error)}`);
    }
  }
}

function pushSettings(): void {
  if (client?.isRunning()) {
    void client.sendNotification(DidChangeConfigurationNotification.type, { settings: { nib: serverSettings() } });
  }
}

/** Runs nib's code action of `kind` at the cursor: list, resolve (the model runs, with the
 * server's cancellable progress), apply the edit, and show a new test file. */
async function runAction(kind: string, title: string): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !LANGUAGES.includes(editor.document.languageId)) {
    void vscode.window.showInformationMessage(`nib: ${title}: open a file in one of ${LANGUAGES.join(', ')} first.`);
    return;
  }
  const running = client;
  if (!running?.isRunning()) {
    void vscode.window.showErrorMessage(`nib: ${title}: the server is not running.`, 'Show Log').then((choice) => {
      if (choice) {
        output.show(true);
      }
    });
    return;
  }
  const document = editor.document;
  const c2p = running.code2ProtocolConverter;
  try {
    const actions = await running.sendRequest(CodeActionRequest.type, {
      textDocument: c2p.asTextDocumentIdentifier(document),
      range: c2p.asRange(editor.selection),
      context: { diagnostics: [], only: [kind], triggerKind: CodeActionTriggerKind.Invoked },
    });
    const action = (actions ?? []).find((a): a is LspCodeAction => 'kind' in a && a.kind === kind);
    if (!action) {
      const why =
        kind === DOCSTRING_KIND
          ? 'no undocumented function, method or class at the cursor'
          : 'no function, method or class at the cursor';
      void vscode.window.showInformationMessage(`nib: ${title}: ${why}.`);
      return;
    }
    const resolved = await running.sendRequest(CodeActionResolveRequest.type, action);
    if (!resolved.edit) {
      void vscode.window.showWarningMessage(`nib: ${title}: the server returned no edit.`);
      return;
    }
    const edit = await running.protocol2CodeConverter.asWorkspaceEdit(resolved.edit);
    if (!(await vscode.workspace.applyEdit(edit))) {
      void vscode.window.showErrorMessage(`nib: ${title}: VS Code did not apply the edit.`);
      return;
    }
    // Show the other file a "Generate unit tests" edit created or extended.
    const other = edit.entries().find(([uri]) => uri.toString() !== document.uri.toString());
    if (other) {
      await vscode.window.showTextDocument(other[0], { viewColumn: vscode.ViewColumn.Beside, preview: false });
    }
  } catch (error) {
    output.warn(`${title}: ${String(error)}`);
    void vscode.window.showErrorMessage(actionErrorMessage(title, error));
  }
}

async function toggleCompletions(): Promise<void> {
  const config = vscode.workspace.getConfiguration('nib');
  const inspected = config.inspect<boolean>('completion.enabled');
  const target =
    inspected?.workspaceFolderValue !== undefined
      ? vscode.ConfigurationTarget.WorkspaceFolder
      : inspected?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
  const enabled = !completionsEnabled();
  await config.update('completion.enabled', enabled, target);
  vscode.window.setStatusBarMessage(`nib: inline completions ${enabled ? 'on' : 'off'}`, 3000);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  extensionPath = context.extensionPath;
  // `{ log: true }`: vscode-languageclient 11 needs a LogOutputChannel.
  output = vscode.window.createOutputChannel('nib', { log: true });
  statusItem = vscode.window.createStatusBarItem('nib.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'nib';
  statusItem.command = 'nib.showLog';
  context.subscriptions.push(output, statusItem);
  void vscode.commands.executeCommand('setContext', 'nib.languages', LANGUAGES);

  context.subscriptions.push(
    vscode.commands.registerCommand('nib.docstring', () => runAction(DOCSTRING_KIND, 'Add docstring')),
    vscode.commands.registerCommand('nib.tests', () => runAction(TESTS_KIND, 'Generate unit tests')),
    vscode.commands.registerCommand('nib.toggleCompletions', toggleCompletions),
    vscode.commands.registerCommand('nib.showLog', () => output.show(true)),
    vscode.commands.registerCommand('nib.restartServer', async () => {
      await stopClient();
      await startClient();
    }),
    // Trust granted while running: tests may now be verified.
    vscode.workspace.onDidGrantWorkspaceTrust(() => pushSettings()),
    // A focused editor: nib warms its model cache for that file at the cursor
    // (docs/lsp-extensions.md).
    vscode.window.onDidChangeActiveTextEditor((editor) => {
      if (editor && client?.isRunning()) {
        void client.sendNotification('nib/didFocus', {
          textDocument: { uri: editor.document.uri.toString() },
          position: client.code2ProtocolConverter.asPosition(editor.selection.active),
        });
      }
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration('nib.serverPath') || event.affectsConfiguration('nib.logLevel')) {
        await stopClient();
        await startClient();
      } else if (event.affectsConfiguration('nib')) {
        pushSettings();
        setStatus(status);
      }
    }),
    // Trust changes what the restricted settings and `${workspaceFolder}` mean: start afresh.
    vscode.workspace.onDidGrantWorkspaceTrust(async () => {
      await stopClient();
      await startClient();
    }),
    { dispose: () => void stopClient() },
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  await stopClient();
}
