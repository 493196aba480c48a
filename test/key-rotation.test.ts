/**
 * `membrane keys rotate`: every secret re-sealed under a new master key
 * while a server keeps serving, invocations, exports and queries going on
 * throughout; afterwards only the new key exists and everything still works.
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { bannerRoots, runMembrane, startServerProcess, type ServerProcess } from './helpers/child.js';
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
      for (const row of db.prepare(`SELECT hex(substr(${column}, 2, 8)) AS id FROM ${table} WHERE ${column} IS NOT NULL`).all() as { id: string }[]) {
        counts.set(row.id.toLowerCase(), (counts.get(row.id.toLowerCase()) ?? 0) + 1);
      }
    }
    return counts;
  } finally {
    db.close();
  }
}

test('rotating the key file’s master key online: no request fails, every secret moves to the new key', async () => {
  const dataDir = await tempDir();
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
  const target = await startTarget();
  cleanup.push(() => target.close());
  const env = { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' };
  const start = async (): Promise<ServerProcess> => {
    const server = await startServerProcess(['--port', '0', '--data-dir', dataDir], env);
    cleanup.push(() => server.child.kill('SIGKILL'));
    return server;
  };
  let server = await start();
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
  const oldKey = (await readFile(join(dataDir, 'master.key'), 'utf8')).trim();
  const before = sealedKeyIds(dataDir);
  assert.equal(before.size, 1);

  // Load during the rotation: every request must succeed.
  const failures: string[] = [];
  let running = true;
  const load = (async () => {
    let n = 0;
    while (running) {
      n += 1;
      const invoked = await call(server.url, capabilities[n % capabilities.length]!);
      if (invoked.status !== 200) failures.push(`invoke ${invoked.status}`);
      const exported = await call(server.url, membranes[n % membranes.length]!.export, { body: { uri: `${target.url}/during-${n}`, headers: { 'X-Secret': 'during' } } });
      if (exported.status === 201) capabilities.push(exported.json.capability);
      else failures.push(`export ${exported.status}`);
      const queried = await call(server.url, roots.query, { path: '/?limit=100' });
      if (queried.status !== 200 || JSON.stringify(queried.json) !== JSON.stringify(listing)) failures.push(`query ${queried.status}`);
    }
  })();
  const rotation = await runMembrane(['keys', 'rotate', '--data-dir', dataDir, '--json']);
  running = false;
  await load;
  assert.equal(rotation.code, 0, rotation.stderr);
  const summary = JSON.parse(rotation.stdout) as { keyId: string; resealed: number; unreadable: number };
  assert.equal(summary.unreadable, 0);
  assert.ok(summary.resealed >= 5 * 2 + 5 + 2, String(summary.resealed));
  assert.deepEqual(failures, []);

  // Only the new key remains, and every sealed value is under it.
  const newKey = (await readFile(join(dataDir, 'master.key'), 'utf8')).trim();
  assert.equal(newKey.split('\n').length, 1);
  assert.notEqual(newKey, oldKey);
  assert.deepEqual([...sealedKeyIds(dataDir).keys()], [summary.keyId]);

  // Everything works, on the running server and after a restart.
  for (const capability of capabilities) assert.equal(await control.statusOf(capability), 200);
  server.child.kill('SIGTERM');
  await server.exited;
  server = await start();
  for (const capability of capabilities) assert.equal((await call(server.url, capability)).status, 200);
  // The restarted server listens on another port, so compare tokens, not URIs.
  const tokens = (json: unknown): string => JSON.stringify(json).replace(/cpblty:\/\/[^/]+\//g, '');
  assert.equal(tokens((await call(server.url, roots.query, { path: '/?limit=100' })).json), tokens(listing));
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
