/**
 * Every process a benchmark starts ends with the harness that started it:
 * when the harness exits normally, on an uncaught error, on SIGINT or
 * SIGTERM (the harness then exits with 130 or 143, running its exit
 * handlers), and when it is killed outright. Each process is started
 * through the launcher in tether.ts, which ends it once the harness is gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const LAUNCHER = fileURLToPath(new URL('./tether.js', import.meta.url));

export interface Tethered {
  /** The launcher; its standard output and error are the process's. */
  launcher: ChildProcess;
  /** The process's own id (not the launcher's), once it has started. */
  pid: Promise<number>;
  /** Resolves with the process's exit status (128 + N for signal N). */
  exited: Promise<number>;
}

let exitOnSignals = false;

/**
 * SIGINT and SIGTERM end the harness through `process.exit`, so that its
 * exit handlers (temporary directories) run; the launchers notice it is gone.
 */
function exitOnSignalsOnce(): void {
  if (exitOnSignals) return;
  exitOnSignals = true;
  process.on('SIGINT', () => process.exit(130));
  process.on('SIGTERM', () => process.exit(143));
}

/** Starts `file args` through the launcher, with standard output and error piped to this process. */
export function startTethered(file: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Tethered {
  exitOnSignalsOnce();
  const launcher = spawn(process.execPath, [LAUNCHER, file, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  const exited = once(launcher, 'exit').then(([code]) => code as number);
  const pid = new Promise<number>((resolve, reject) => {
    launcher.once('message', (message: { pid: number }) => {
      // The channel is the tether: it stays open, but need not keep this process running.
      launcher.channel?.unref();
      resolve(message.pid);
    });
    void exited.then((code) => reject(new Error(`${file} did not start (${code})`)));
  });
  pid.catch(() => undefined);
  return { launcher, pid, exited };
}

/** Runs `file args` to completion through the launcher; resolves with its standard output, rejects unless it exits 0. */
export async function runTethered(file: string, args: readonly string[]): Promise<string> {
  const { launcher } = startTethered(file, args);
  let stdout = '';
  let stderr = '';
  launcher.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  launcher.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [code] = (await once(launcher, 'close')) as [number | null];
  if (code !== 0) throw new Error(`${file} ${args.join(' ')} exited with ${code}:\n${stderr}`);
  return stdout;
}

/** Sends a signal to a process by id; nothing when it has already ended. */
export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}
