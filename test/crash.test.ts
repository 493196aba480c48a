/**
 * Durability under load: ≥ 1000 concurrent exports and several revocations
 * fired at a real Membrane process, `kill -9` half way; after a restart on
 * the same data directory, every export that got a 201 works and every
 * revocation that got a 202 holds.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import { bannerRoots, startServerProcess, type ServerProcess } from './helpers/child.js';
import { call, ControlPlane, tokenOf } from './helpers/client.js';
import { tempDir } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

const EXPORTS = 1200;
const KILL_AFTER = 500;
const LIVE = 4;
const DOOMED = 5;

let dataDir: string;
let target: TestTarget;
const servers: ServerProcess[] = [];

before(async () => {
  dataDir = await tempDir();
  target = await startTarget();
});
after(async () => {
  for (const server of servers) server.child.kill('SIGKILL');
  await target.close();
  await rm(dataDir, { recursive: true, force: true });
});

test('every acknowledged export and revocation survives kill -9 in the middle of a burst', async () => {
  const env = { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' };
  const first = await startServerProcess(['--port', '0', '--data-dir', dataDir], env);
  servers.push(first);
  const roots = bannerRoots(first.stdout())!;
  const control = new ControlPlane(first.url);
  const live = [];
  for (let i = 0; i < LIVE; i++) live.push(await control.createMembrane(roots.create, `live-${i}`));
  const doomed = [];
  for (let i = 0; i < DOOMED; i++) {
    const m = await control.createMembrane(roots.create, `doomed-${i}`);
    doomed.push({ ...m, capability: await control.export(m.export, { uri: `${target.url}/doomed-${i}` }), revoked: false });
  }

  const agent = new Agent({ connections: 128 });
  const acknowledged: { capability: string; path: string }[] = [];
  let killed = false;
  const send = async (token: string, method: 'POST' | 'DELETE', body?: string): Promise<{ status: number; json: any } | undefined> => {
    try {
      const response = await request(first.url, { dispatcher: agent, method, headers: { authorization: `Bearer ${token}` }, body });
      return { status: response.statusCode, json: await response.body.json() };
    } catch {
      return undefined; // Cut off by the kill: not acknowledged, so no promise was made.
    }
  };
  const requests: Promise<void>[] = [];
  for (let i = 0; i < EXPORTS; i++) {
    const path = `/export-${i}`;
    requests.push(
      send(tokenOf(live[i % LIVE]!.export), 'POST', JSON.stringify({ uri: `${target.url}${path}` })).then((answer) => {
        if (answer?.status !== 201) return;
        acknowledged.push({ capability: answer.json.capability, path });
        if (acknowledged.length >= KILL_AFTER && !killed) {
          killed = true;
          first.child.kill('SIGKILL');
        }
      }),
    );
    if (i % 100 === 50 && i / 100 < DOOMED) {
      const victim = doomed[Math.floor(i / 100)]!;
      requests.push(send(tokenOf(victim.revoke), 'DELETE').then((answer) => void (answer?.status === 202 && (victim.revoked = true))));
    }
  }
  await Promise.all(requests);
  await agent.destroy();
  const [, signal] = await first.exited;
  assert.equal(signal, 'SIGKILL');
  assert.ok(killed, 'the burst ended before the kill');
  assert.ok(acknowledged.length >= KILL_AFTER && acknowledged.length < EXPORTS, `${acknowledged.length} acknowledged`);
  assert.ok(doomed.some((victim) => victim.revoked), 'no revocation was acknowledged before the kill');

  const second = await startServerProcess(['--port', '0', '--data-dir', dataDir], env);
  servers.push(second);
  assert.equal(bannerRoots(second.stdout()), undefined, 'a restart must not bootstrap again');
  const check = new Agent({ connections: 32 });
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < acknowledged.length) {
        const { capability, path } = acknowledged[next++]!;
        const result = await request(second.url, { dispatcher: check, headers: { authorization: `Bearer ${tokenOf(capability)}` } });
        const echo = (await result.body.json()) as { url: string };
        assert.equal(result.statusCode, 200, path);
        assert.equal(echo.url, path);
      }
    }),
  );
  await check.close();
  const after = new ControlPlane(second.url);
  for (const victim of doomed) {
    if (!victim.revoked) continue;
    assert.equal(await after.statusOf(victim.capability), 401);
    assert.equal((await call(second.url, victim.export, { body: { uri: `${target.url}/after-revoke` } })).status, 401);
  }
  second.child.kill('SIGTERM');
  assert.deepEqual(await second.exited, [0, null]);
});
