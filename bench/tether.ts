/**
 * Runs one process for a benchmark harness and ends it when the harness
 * ends, however the harness ends: Node cannot ask the kernel to signal a
 * child when its parent dies (PR_SET_PDEATHSIG), so this launcher holds an
 * IPC channel from the harness instead, and the kernel closes that channel
 * when the harness exits, even when it is killed with SIGKILL.
 *
 *   node tether.js FILE ARGS…   (spawned by bench/children.ts, with an IPC channel)
 *
 * It starts FILE with ARGS (standard output and error are its own, standard
 * input is closed) and sends `{"pid": N}` over the channel. When the
 * channel closes, it sends the process SIGTERM (nginx stops its workers
 * only when asked; SIGKILL would orphan them), and SIGKILL if it still runs
 * five seconds later; SIGINT and SIGTERM sent to the launcher are passed on
 * the same way. It exits once the process has, with its status (128 + the
 * signal's number when a signal ended it).
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';

const GRACE_MS = 5_000;

const [file, ...args] = process.argv.slice(2);
if (file === undefined || process.send === undefined) {
  process.stderr.write('usage: node tether.js FILE ARGS… (with an IPC channel to the harness)\n');
  process.exit(2);
}
const send = process.send.bind(process);

const child = spawn(file, args, { stdio: ['ignore', 'inherit', 'inherit'] });
child.on('spawn', () => send({ pid: child.pid }));
child.on('error', (error) => {
  process.stderr.write(`tether: ${file}: ${error.message}\n`);
  process.exit(127);
});
child.on('exit', (code, signal) => process.exit(code ?? 128 + (signal === null ? 0 : constants.signals[signal])));

let killing: NodeJS.Timeout | undefined;
/** Passes a request to stop on to the process, and makes sure it ends. */
function stop(signal: NodeJS.Signals): void {
  child.kill(signal);
  killing ??= setTimeout(() => child.kill('SIGKILL'), GRACE_MS);
}

process.on('disconnect', () => stop('SIGTERM'));
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
