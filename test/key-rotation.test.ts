/**
 * `membrane keys rotate`: every secret re-sealed under a new master key
 * while a server keeps serving, invocations, exports and queries going on
 * throughout; afterwards only the new key exists and everything still works.
 * Rotations exclude each other (a lock in the data directory), a lock left
 * by a rotation that died is taken over, and a rotation whose key file is
 * changed under it stops without removing any key.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { MasterKey } from '../src/secrets.js';
import { bannerRoots, runMembrane, spawnMembrane, startServerProcess, type RunningCommand, type ServerProcess } from './helpers/child.js';
import { call, ControlPlane } from './helpers/client.js';
import { tempDir } from './helpers/membrane.js';
import { startTarget } from './helpers/target.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

/** The key ids (hex) under which the store's sealed values are sealed, with counts. */
function sealedKeyIds(dataDir: string): Map<string, number> {
  const db = new Database(join(dataDir, 'membrane.db'), { readonly: true, fileMustExist: true });
  try {
    const counts = new Map<string, number>();
    for (const [table, column] of [['membranes', 'sealed_export_token'], ['membranes', 'sealed_revoke_token'], ['capabilities', 'sealed_config'], ['meta', 'value']]) {
      // Sealed values only (format version 1, then the key id): meta also holds a plain mark or two.
      const sealed = `${column} IS NOT NULL AND substr(${column}, 1, 1) = x'01' AND length(${column}) >= 37`;
      for (const row of db.prepare(`SELECT hex(substr(${column}, 2, 8)) AS id FROM ${table} WHERE ${sealed}`).all() as { id: string }[]) {
        counts.set(row.id.toLowerCase(), (counts.get(row.id.toLowerCase()) ?? 0) + 1);
      }
    }
    return counts;
  } finally {
    db.close();
  }
}

/**
 * Every file of the data directory (the store, its write-ahead log and
 * shared memory, the key file, the audit trail) searched, byte by byte,
 * for anything sealed under one of `retired`: a sealed value begins with
 * its format version (1) and the id of the key that sealed it. Returns
 * the files where one is found, with how many.
 */
async function sealedUnderRetiredKeys(dataDir: string, retired: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(dataDir)) {
    const bytes = await readFile(join(dataDir, name));
    for (const keyId of retired) {
      const header = Buffer.concat([Buffer.of(1), Buffer.from(keyId, 'hex')]);
      let count = 0;
      for (let at = bytes.indexOf(header); at !== -1; at = bytes.indexOf(header, at + 1)) count += 1;
      if (count > 0) found.push(`${name}: ${count} under ${keyId}`);
    }
  }
  return found;
}

/** The ids (hex) of the keys in the key file, current first. */
async function keyFileIds(dataDir: string): Promise<string[]> {
  const text = await readFile(join(dataDir, 'master.key'), 'utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => MasterKey.fromBase64(line, 'master.key').id.toString('hex'));
}

const lockPath = (dataDir: string): string => join(dataDir, 'keys-rotate.lock');
/** The lock's path, for a RegExp. */
const lockPattern = (dataDir: string): string => lockPath(dataDir).replace(/[.]/g, '\\.');

/** Polls until `condition` holds; fails if every one of `commands` has exited first. */
async function waitFor(condition: () => Promise<boolean> | boolean, commands: RunningCommand[]): Promise<void> {
  const exited = commands.map(() => false);
  commands.forEach((command, i) => void command.result.then(() => (exited[i] = true)));
  while (!(await condition())) {
    if (exited.every(Boolean)) throw new Error('the commands exited before the condition held');
    await sleep(5);
  }
}

interface Seeded {
  dataDir: string;
  server: ServerProcess;
  targetUrl: string;
  roots: { create: string; query: string; deleteSelf: string };
  control: ControlPlane;
  membranes: { export: string; revoke: string }[];
  /** Every exported capability, those exported under load included. */
  capabilities: string[];
  /** The query answer before any rotation. */
  listing: unknown;
}

/** A server on a new data directory with membranes and exports (header secrets, re-exports) in its store. */
async function seededServer(): Promise<Seeded> {
  const dataDir = await tempDir();
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
  const target = await startTarget();
  cleanup.push(() => target.close());
  const server = await startServer(dataDir);
  const roots = bannerRoots(server.stdout())!;
  const control = new ControlPlane(server.url);
  const membranes = [];
  const capabilities: string[] = [];
  for (let i = 0; i < 5; i++) {
    const m = await control.createMembrane(roots.create, `m${i}`);
    membranes.push(m);
    capabilities.push(await control.export(m.export, { uri: `${target.url}/c${i}`, headers: { 'X-Secret': `s${i}` } }));
    capabilities.push(await control.export(m.export, { capability: capabilities[0]! }));
  }
  const listing = (await call(server.url, roots.query, { path: '/?limit=100' })).json;
  return { dataDir, server, targetUrl: target.url, roots, control, membranes, capabilities, listing };
}

async function startServer(dataDir: string): Promise<ServerProcess> {
  const server = await startServerProcess(['--port', '0', '--data-dir', dataDir], { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' });
  cleanup.push(() => server.child.kill('SIGKILL'));
  return server;
}

/** Invocations, exports and queries in a loop until stopped, which resolves with the requests that failed. */
function startLoad(seeded: Seeded): { stop(): Promise<string[]> } {
  const { server, membranes, capabilities, roots, listing } = seeded;
  const failures: string[] = [];
  let running = true;
  const load = (async () => {
    let n = 0;
    while (running) {
      n += 1;
      try {
        const invoked = await call(server.url, capabilities[n % capabilities.length]!);
        if (invoked.status !== 200) failures.push(`invoke ${invoked.status}`);
        const exported = await call(server.url, membranes[n % membranes.length]!.export, { body: { uri: `${seeded.targetUrl}/during-${n}`, headers: { 'X-Secret': 'during' } } });
        if (exported.status === 201) capabilities.push(exported.json.capability);
        else failures.push(`export ${exported.status}`);
        const queried = await call(server.url, roots.query, { path: '/?limit=100' });
        if (queried.status !== 200 || JSON.stringify(queried.json) !== JSON.stringify(listing)) failures.push(`query ${queried.status}`);
      } catch (error) {
        failures.push(String(error));
      }
    }
  })();
  const stop = async (): Promise<string[]> => {
    running = false;
    await load;
    return failures;
  };
  // Stopped before the server is killed even when a test fails midway (cleanup runs last-in, first-out).
  cleanup.push(stop);
  return { stop };
}

/** Restarts the server on the same store; every capability invokes and the query answers as before. */
async function everythingWorksAfterRestart(seeded: Seeded): Promise<void> {
  seeded.server.child.kill('SIGTERM');
  await seeded.server.exited;
  const server = (seeded.server = await startServer(seeded.dataDir));
  for (const capability of seeded.capabilities) assert.equal((await call(server.url, capability)).status, 200);
  // The restarted server listens on another port, so compare tokens, not URIs.
  const tokens = (json: unknown): string => JSON.stringify(json).replace(/cpblty:\/\/[^/]+\//g, '');
  assert.equal(tokens((await call(server.url, seeded.roots.query, { path: '/?limit=100' })).json), tokens(seeded.listing));
}

/**
 * After a rotation that printed `stdout` (--json): the key file holds its
 * key alone, every sealed value is under it, the lock is gone, and
 * everything works on the running server and after a restart.
 */
async function assertRotatedTo(seeded: Seeded, stdout: string, retired: readonly string[]): Promise<void> {
  const { keyId } = JSON.parse(stdout) as { keyId: string };
  assert.deepEqual(await keyFileIds(seeded.dataDir), [keyId]);
  assert.deepEqual([...sealedKeyIds(seeded.dataDir).keys()], [keyId]);
  // Nowhere in the data directory (old row versions, freed pages, the write-ahead log) is anything left that a retired key opens.
  assert.deepEqual(await sealedUnderRetiredKeys(seeded.dataDir, retired), []);
  assert.ok(!existsSync(lockPath(seeded.dataDir)));
  for (const capability of seeded.capabilities) assert.equal(await seeded.control.statusOf(capability), 200);
  await everythingWorksAfterRestart(seeded);
}

const ROTATE = (dataDir: string): string[] => ['keys', 'rotate', '--data-dir', dataDir, '--json'];

/** Starts a rotation and resolves once it has put its new key first in the key file (the old one after it). */
async function rotationUnderWay(dataDir: string): Promise<RunningCommand> {
  const rotation = spawnMembrane(ROTATE(dataDir));
  await waitFor(async () => (await keyFileIds(dataDir)).length === 2, [rotation]);
  return rotation;
}

test('rotating the key file’s master key online: no request fails, every secret moves to the new key', async () => {
  const seeded = await seededServer();
  const { dataDir } = seeded;
  const oldKey = (await readFile(join(dataDir, 'master.key'), 'utf8')).trim();
  const retired = await keyFileIds(dataDir);
  const before = sealedKeyIds(dataDir);
  assert.equal(before.size, 1);

  // Load during the rotation: every request must succeed.
  const load = startLoad(seeded);
  const rotation = await runMembrane(ROTATE(dataDir));
  const failures = await load.stop();
  assert.equal(rotation.code, 0, rotation.stderr);
  const summary = JSON.parse(rotation.stdout) as { keyId: string; resealed: number; unreadable: number };
  assert.equal(summary.unreadable, 0);
  assert.ok(summary.resealed >= 5 * 2 + 5 + 2, String(summary.resealed));
  assert.deepEqual(failures, []);

  assert.notEqual((await readFile(join(dataDir, 'master.key'), 'utf8')).trim(), oldKey);
  // Only the new key remains, every sealed value is under it, and everything works.
  await assertRotatedTo(seeded, rotation.stdout, retired);
});

test('two overlapping rotations: the second fails at once naming the lock, the first completes, no key is lost', async () => {
  const seeded = await seededServer();
  const { dataDir } = seeded;
  const retired = await keyFileIds(dataDir);
  const load = startLoad(seeded);
  const rotations = [spawnMembrane(ROTATE(dataDir)), spawnMembrane(ROTATE(dataDir))];
  // Whichever takes the lock is stopped until the other has run into it, so the two overlap
  // however fast or slow this machine is.
  let holderPid: number | undefined;
  await waitFor(async () => {
    try {
      holderPid = (JSON.parse(await readFile(lockPath(dataDir), 'utf8')) as { pid: number }).pid;
      return true;
    } catch {
      return false;
    }
  }, rotations);
  const holder = rotations.find((rotation) => rotation.child.pid === holderPid);
  assert.ok(holder, `the lock names process ${holderPid}, neither rotation`);
  const other = rotations.find((rotation) => rotation !== holder)!;
  holder.child.kill('SIGSTOP');
  const refused = await other.result;
  holder.child.kill('SIGCONT');
  const done = await holder.result;
  const failures = await load.stop();

  assert.equal(refused.code, 1);
  assert.equal(refused.stdout, '');
  const lock = lockPattern(dataDir);
  assert.match(
    refused.stderr,
    new RegExp(`^membrane: another key rotation is running: the key rotation lock ${lock} is held by process ${holderPid} on \\S+ since \\S+; wait for it to end \\(if no rotation is running, remove ${lock} and run this again\\)\\n$`),
  );
  assert.equal(done.code, 0, done.stderr);
  assert.deepEqual(failures, []);

  await assertRotatedTo(seeded, done.stdout, retired);
});

test('a rotation killed while it holds the lock: a lock naming another host or no holder is refused, a stale one is taken over', async () => {
  const seeded = await seededServer();
  const { dataDir } = seeded;
  // Killed once its new key is first in the key file: what a crash in mid-rotation leaves.
  const killed = await rotationUnderWay(dataDir);
  killed.child.kill('SIGKILL');
  await killed.result;
  const keysLeft = await keyFileIds(dataDir);
  const stale = await readFile(lockPath(dataDir), 'utf8');
  const holder = JSON.parse(stale) as { pid: number; host: string };
  assert.equal(holder.pid, killed.child.pid);
  const lock = lockPattern(dataDir);

  // The same lock naming another host (a data directory on shared storage) cannot be judged: refused.
  await writeFile(lockPath(dataDir), JSON.stringify({ ...holder, host: 'elsewhere.invalid' }));
  const elsewhere = await runMembrane(ROTATE(dataDir));
  assert.equal(elsewhere.code, 1);
  assert.match(
    elsewhere.stderr,
    new RegExp(`^membrane: another key rotation may be running: the key rotation lock ${lock} is held by process ${holder.pid} on elsewhere\\.invalid since \\S+; if no rotation is running, remove ${lock} and run this again\\n$`),
  );
  // So is a lock file that names no holder.
  await writeFile(lockPath(dataDir), 'not a lock\n');
  const garbled = await runMembrane(ROTATE(dataDir));
  assert.equal(garbled.code, 1);
  assert.match(garbled.stderr, new RegExp(`^membrane: the key rotation lock ${lock} names no holder; if no rotation is running, remove ${lock} and run this again\\n$`));
  assert.deepEqual(await keyFileIds(dataDir), keysLeft);

  // The lock as the killed rotation left it: its process is gone, so the next rotation takes it over.
  await writeFile(lockPath(dataDir), stale);
  const rotation = await runMembrane(ROTATE(dataDir));
  assert.equal(rotation.code, 0, rotation.stderr);
  assert.match(
    rotation.stderr,
    new RegExp(`^membrane: warning: took over the key rotation lock ${lock}: process ${holder.pid}, which held it since \\S+, is no longer running\\n$`),
  );
  await assertRotatedTo(seeded, rotation.stdout, keysLeft);
});

test('a rotation whose key file is changed under it (by a writer ignoring the lock) stops and removes no key', async () => {
  const seeded = await seededServer();
  const rotation = await rotationUnderWay(seeded.dataDir);
  // Stopped while another key is put first in the file, as a rotation not taking the lock would.
  rotation.child.kill('SIGSTOP');
  const keyFile = join(seeded.dataDir, 'master.key');
  const changed = `${MasterKey.generate().toBase64()}\n${await readFile(keyFile, 'utf8')}`;
  await writeFile(`${keyFile}.test`, changed, { mode: 0o600 });
  await rename(`${keyFile}.test`, keyFile);
  rotation.child.kill('SIGCONT');
  const result = await rotation.result;

  assert.equal(result.code, 1);
  assert.match(result.stderr, /^membrane: \S+master\.key was changed by someone else while this rotation ran; it stops here and leaves the file as it is \(no key removed\)\n$/);
  assert.equal(await readFile(keyFile, 'utf8'), changed);
  assert.ok(!existsSync(lockPath(seeded.dataDir)));
  for (const capability of seeded.capabilities) assert.equal(await seeded.control.statusOf(capability), 200);
  await everythingWorksAfterRestart(seeded);
});

test('with MEMBRANE_MASTER_KEY, the new key goes first and everything is re-sealed under it', async () => {
  const dataDir = await tempDir();
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
  const k1 = Buffer.alloc(32, 1).toString('base64');
  const k2 = Buffer.alloc(32, 2).toString('base64');
  assert.equal((await runMembrane(['init', '--data-dir', dataDir, '--no-capi-profile'], { MEMBRANE_MASTER_KEY: k1 })).code, 0);
  const rotation = await runMembrane(['keys', 'rotate', '--data-dir', dataDir], { MEMBRANE_MASTER_KEY: `${k2},${k1}` });
  assert.equal(rotation.code, 0, rotation.stderr);
  assert.match(rotation.stdout, /^re-sealed \d+ values under master key [0-9a-f]{16}\n$/);
  assert.equal((await runMembrane(['tenant', 'create', '--data-dir', dataDir], { MEMBRANE_MASTER_KEY: k2 })).code, 0);
  const stale = await runMembrane(['tenant', 'create', '--data-dir', dataDir], { MEMBRANE_MASTER_KEY: k1 });
  assert.equal(stale.code, 1);
  assert.match(stale.stderr, /the master key does not match the store/);
});

test('a store written before freed space was zeroed: its first rotation rewrites it, and nothing a retired key opens stays behind', async () => {
  const seeded = await seededServer();
  const { dataDir } = seeded;
  const retired = await keyFileIds(dataDir);
  // What an earlier Membrane (without secure_delete) left: a sealed value deleted, its bytes still in the
  // database file's free space; and no mark that freed space is zeroed.
  const db = new Database(join(dataDir, 'membrane.db'));
  try {
    db.pragma('secure_delete = OFF');
    const sealed = db.prepare("SELECT value FROM meta WHERE key = 'key-check'").pluck().get() as Buffer;
    for (let i = 0; i < 20; i++) db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(`leftover-${i}`, sealed);
    db.prepare("DELETE FROM meta WHERE key LIKE 'leftover-%' OR key = 'freed-space-zeroed'").run();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
  assert.notDeepEqual(await sealedUnderRetiredKeys(dataDir, retired), [], 'the leftover bytes are in the database file');
  const sealedNow = [...sealedKeyIds(dataDir)];
  assert.equal(sealedNow.length, 1);

  const load = startLoad(seeded);
  const rotation = await runMembrane(ROTATE(dataDir));
  assert.equal(rotation.code, 0, rotation.stderr);
  assert.deepEqual(await load.stop(), []);
  await assertRotatedTo(seeded, rotation.stdout, retired);
});
