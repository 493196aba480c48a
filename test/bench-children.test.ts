/**
 * A benchmark harness leaves no process behind. A small harness
 * (test/fixtures/bench-harness.ts) starts a target, a Membrane server and a
 * load generator through bench/subjects.ts and bench/load.ts, as the real
 * benchmarks do, and ends in each way a harness can end; every process it
 * started (its descendants in /proc, launchers included, found while it
 * runs) must then be gone within a few seconds.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from './helpers/child.js';
import { tempDir } from './helpers/membrane.js';

const HARNESS = join(REPO_ROOT, 'dist', 'test', 'fixtures', 'bench-harness.js');

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

interface ProcessEntry {
  pid: number;
  parent: number;
  state: string;
  /** Start time in clock ticks since boot: with the pid, names one process even if the pid is reused. */
  startedAt: string;
  command: string;
}

function readProcess(pid: number): ProcessEntry | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    return { pid, state: fields[0]!, parent: Number(fields[1]), startedAt: fields[19]!, command };
  } catch {
    return undefined;
  }
}

/** Every process below `root` in the process tree, now. */
function descendants(root: number): ProcessEntry[] {
  const all = readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map((entry) => readProcess(Number(entry)))
    .filter((entry) => entry !== undefined);
  const found: ProcessEntry[] = [];
  const parents = [root];
  while (parents.length > 0) {
    const parent = parents.pop()!;
    for (const entry of all.filter((candidate) => candidate.parent === parent)) {
      found.push(entry);
      parents.push(entry.pid);
    }
  }
  return found;
}

/** Whether the process still runs (a zombie has ended; a reused pid is another process). */
function running(entry: ProcessEntry): boolean {
  const now = readProcess(entry.pid);
  return now !== undefined && now.startedAt === entry.startedAt && now.state !== 'Z';
}

/** Starts the harness and resolves once it and everything it starts are running, with those processes. */
async function startHarness(ending: 'wait' | 'throw' | 'exit'): Promise<{ harness: ChildProcess; started: ProcessEntry[]; exited: Promise<[number | null, NodeJS.Signals | null]> }> {
  const temporary = await tempDir('membrane-bench-children-');
  const harness = spawn(process.execPath, [HARNESS, ending], { env: { ...process.env, TMPDIR: temporary }, stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = once(harness, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  let output = '';
  harness.stdout!.on('data', (chunk) => (output += chunk));
  harness.stderr!.on('data', (chunk) => (output += chunk));
  cleanup.push(async () => {
    harness.kill('SIGKILL');
    await rm(temporary, { recursive: true, force: true });
  });
  await new Promise<void>((resolve, reject) => {
    harness.stdout!.on('data', () => output.includes('ready\n') && resolve());
    void exited.then(() => reject(new Error(`the harness exited before it was ready:\n${output}`)));
  });
  // The load generator starts after "ready"; wait until it is in the tree too.
  for (let tries = 0; tries < 100; tries++) {
    const started = descendants(harness.pid!);
    if (['target.js', 'membrane serve', 'fixed-rate.js'].every((name) => started.some((entry) => entry.state !== 'Z' && entry.command.includes(name) && !entry.command.includes('tether.js')))) {
      cleanup.push(() => {
        for (const entry of started) if (running(entry)) process.kill(entry.pid, 'SIGKILL');
      });
      return { harness, started, exited };
    }
    await sleep(50);
  }
  throw new Error(`the harness did not start its processes:\n${descendants(harness.pid!).map((entry) => entry.command).join('\n')}`);
}

/** Asserts that every process in `started` ends within ten seconds. */
async function assertAllEnd(started: readonly ProcessEntry[]): Promise<void> {
  // A launcher, and the process it started, for each of the target, the server and the load generator.
  assert.ok(started.length >= 6, started.map((entry) => entry.command).join('\n'));
  for (let tries = 0; tries < 200 && started.some(running); tries++) await sleep(50);
  assert.deepEqual(
    started.filter(running).map((entry) => entry.command),
    [],
    'still running after the harness ended',
  );
}

describe('every process a benchmark starts ends with its harness', () => {
  test('on SIGTERM (the harness exits 143)', async () => {
    const { harness, started, exited } = await startHarness('wait');
    harness.kill('SIGTERM');
    assert.deepEqual(await exited, [143, null]);
    await assertAllEnd(started);
  });

  test('on SIGINT (the harness exits 130)', async () => {
    const { harness, started, exited } = await startHarness('wait');
    harness.kill('SIGINT');
    assert.deepEqual(await exited, [130, null]);
    await assertAllEnd(started);
  });

  test('when the harness is killed with SIGKILL and runs no code of its own', async () => {
    const { harness, started, exited } = await startHarness('wait');
    harness.kill('SIGKILL');
    assert.deepEqual(await exited, [null, 'SIGKILL']);
    await assertAllEnd(started);
  });

  test('on an uncaught error (the harness exits 1)', async () => {
    const { harness, started, exited } = await startHarness('throw');
    harness.stdin!.end('go\n');
    assert.deepEqual(await exited, [1, null]);
    await assertAllEnd(started);
  });

  test('on a normal exit (the harness exits 0)', async () => {
    const { harness, started, exited } = await startHarness('exit');
    harness.stdin!.end('go\n');
    assert.deepEqual(await exited, [0, null]);
    await assertAllEnd(started);
  });
});
