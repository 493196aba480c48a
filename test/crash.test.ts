/**
 * Durability: `kill -9` a real Membrane process in the middle of a burst of
 * exports; after a restart on the same data directory, every export that
 * got a 201 works, and a revocation that got a 202 holds.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import { bannerRoots, startServerProcess, type ServerProcess } from './helpers/child.js';
import { ControlPlane, tokenOf } from './helpers/client.js';
import { tempDir } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

const BURST = 600;
const KILL_AFTER = 250;

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

test('every acknowledged export and revocation survives kill -9', async () => {
  const env = { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' };
  const first = await startServerProcess(['--port', '0', '--data-dir', dataDir], env);
  servers.push(first);
  const roots = bannerRoots(first.stdout())!;
  const control = new ControlPlane(first.url);
  const m = await control.createMembrane(roots.create, 'burst');
  const doomed = await control.createMembrane(roots.create, 'doomed');
  const doomedCapability = await control.export(doomed.export, { uri: `${target.url}/doomed` });

  const agent = new Agent({ connections: 64 });
  const acknowledged: { capability: string; path: string }[] = [];
  let revocationAcknowledged = false;
  let killed = false;
  const attempts = Array.from({ length: BURST }, async (_, i) => {
    const path = `/export-${i}`;
    try {
      if (i === BURST / 2) {
        const response = await request(first.url, {
          dispatcher: agent,
          method: 'DELETE',
          headers: { authorization: `Bearer ${tokenOf(doomed.revoke)}` },
        });
        await response.body.dump();
        if (response.statusCode === 202) revocationAcknowledged = true;
        return;
      }
      const response = await request(first.url, {
        dispatcher: agent,
        method: 'POST',
        headers: { authorization: `Bearer ${tokenOf(m.export)}` },
        body: JSON.stringify({ uri: `${target.url}${path}` }),
      });
      const body = (await response.body.json()) as { capability: string };
      if (response.statusCode === 201) {
        acknowledged.push({ capability: body.capability, path });
        if (acknowledged.length >= KILL_AFTER && !killed) {
          killed = true;
          first.child.kill('SIGKILL');
        }
      }
    } catch {
      // Cut off by the kill: not acknowledged, so no promise was made.
    }
  });
  await Promise.all(attempts);
  await agent.destroy();
  const [, signal] = await first.exited;
  assert.equal(signal, 'SIGKILL');
  assert.ok(killed, 'the burst ended before the kill');
  assert.ok(acknowledged.length >= KILL_AFTER && acknowledged.length < BURST, `${acknowledged.length} acknowledged`);

  const second = await startServerProcess(['--port', '0', '--data-dir', dataDir], env);
  servers.push(second);
  assert.equal(bannerRoots(second.stdout()), undefined, 'a restart must not bootstrap again');
  const after = new ControlPlane(second.url);
  for (const { capability, path } of acknowledged) {
    const result = await request(second.url, { headers: { authorization: `Bearer ${tokenOf(capability)}` } });
    const echo = (await result.body.json()) as { url: string };
    assert.equal(result.statusCode, 200);
    assert.equal(echo.url, path);
  }
  if (revocationAcknowledged) assert.equal(await after.statusOf(doomedCapability), 401);
  assert.equal((await after.statusOf(roots.query)), 200);
  second.child.kill('SIGTERM');
  assert.deepEqual(await second.exited, [0, null]);
});
