/** Runs `bin/membrane` as a real child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const MEMBRANE_BIN = fileURLToPath(new URL('../../../bin/membrane', import.meta.url));
export const CAPI_BIN = fileURLToPath(new URL('../../../bin/capi', import.meta.url));

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `membrane ARGS` to completion. */
export function runMembrane(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CommandResult> {
  return runBin(MEMBRANE_BIN, args, env);
}

/** Runs `capi ARGS` to completion, optionally feeding `stdin`. */
export function runCapi(args: string[], env: NodeJS.ProcessEnv = {}, stdin?: string | Buffer): Promise<CommandResult> {
  return runBin(CAPI_BIN, args, env, stdin);
}

function runBin(bin: string, args: string[], env: NodeJS.ProcessEnv, stdin?: string | Buffer): Promise<CommandResult> {
  return spawnBin(bin, args, env, stdin).result;
}

export interface RunningCommand {
  child: ChildProcess;
  /** Resolves once the command has exited and its output is complete. */
  result: Promise<CommandResult>;
}

/** Starts `membrane ARGS` without waiting for it, so that a test can watch or signal it while it runs. */
export function spawnMembrane(args: string[], env: NodeJS.ProcessEnv = {}): RunningCommand {
  return spawnBin(MEMBRANE_BIN, args, env);
}

function spawnBin(bin: string, args: string[], env: NodeJS.ProcessEnv, stdin?: string | Buffer): RunningCommand {
  const child = spawn(process.execPath, [bin, ...args], { env: { ...cleanEnv(), ...env }, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (stdin !== undefined) child.stdin!.end(stdin);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk) => (stdout += chunk));
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const result = (once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>).then(([code, signal]) => ({ code, signal, stdout, stderr }));
  return { child, result };
}

let isolatedHome: string | undefined;

/**
 * A HOME of this test process's own, so that capi profiles written by the
 * commands under test never touch the real ~/.capability.
 */
export function testHome(): string {
  if (isolatedHome === undefined) {
    const home = (isolatedHome = mkdtempSync(join(tmpdir(), 'membrane-home-')));
    process.once('exit', () => rmSync(home, { recursive: true, force: true }));
  }
  return isolatedHome;
}

/** The environment without any MEMBRANE_* or CAPI_* setting of the caller's shell, with an isolated HOME. */
export function cleanEnv(): NodeJS.ProcessEnv {
  return {
    ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('MEMBRANE_') && !name.startsWith('CAPI_'))),
    HOME: testHome(),
  };
}

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code and signal. */
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

/**
 * Starts `membrane serve ARGS` (or another command line that ends up
 * serving) and resolves once its "listening" log line appears. With
 * `processGroup`, the command leads a process group of its own, which a
 * test signals as a terminal signals its foreground group:
 * `process.kill(-child.pid, signal)`.
 */
export async function startServerProcess(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  command: { file: string; args: string[] } = { file: process.execPath, args: [MEMBRANE_BIN, 'serve'] },
  { processGroup = false }: { processGroup?: boolean } = {},
): Promise<ServerProcess> {
  const child = spawn(command.file, [...command.args, ...args], {
    cwd: REPO_ROOT,
    env: { ...cleanEnv(), MEMBRANE_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: processGroup,
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk) => {
      stdout += chunk;
      const listening = logLines(stdout).find((line) => line.msg === 'listening');
      if (listening !== undefined) resolve(String(listening.url));
    });
    void exited.then(([code]) => reject(new Error(`server exited with ${code} before listening:\n${stdout}\n${stderr}`)));
  });
  return { child, url, stdout: () => stdout, stderr: () => stderr, exited };
}

/** The JSON log lines in a process's output (other lines, such as the bootstrap banner, are skipped). */
export function logLines(output: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{') && line.endsWith('}'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** The root capabilities printed by a first `membrane serve` (the bootstrap banner). */
export function bannerRoots(output: string): { create: string; query: string; deleteSelf: string } | undefined {
  const find = (name: string): string | undefined => new RegExp(`^\\s*${name}:\\s+(cpblty://\\S+)$`, 'm').exec(output)?.[1];
  const create = find('create');
  const query = find('query');
  const deleteSelf = find('deleteSelf');
  return create && query && deleteSelf ? { create, query, deleteSelf } : undefined;
}

/** Peak resident set size of a process, in bytes (Linux /proc). */
export function peakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)![1]) * 1024;
}
