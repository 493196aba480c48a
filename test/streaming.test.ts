/**
 * A 256 MiB response relayed to a slow reader through a real Membrane
 * process: it arrives intact, and the process's peak memory grows by far
 * less than the body (backpressure, no buffering of the whole body). While
 * the reader pauses, the target could write everything; a relay that
 * buffered would grow by the whole body. What growth there is, is garbage
 * awaiting collection (the same ~40 MiB for 64 MiB as for 256 MiB).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { bannerRoots, peakRss, startServerProcess, type ServerProcess } from './helpers/child.js';
import { ControlPlane, tokenOf } from './helpers/client.js';
import { tempDir } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

const SIZE = 256 * 1024 * 1024;
const BLOCK = Buffer.alloc(1024 * 1024, 0x5a);

let server: ServerProcess;
let target: TestTarget;
let dataDir: string;

before(async () => {
  dataDir = await tempDir();
  server = await startServerProcess(['--port', '0', '--data-dir', dataDir], { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' });
  target = await startTarget({
    respond: (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) });
      let sent = 0;
      const pump = (): void => {
        while (sent < SIZE) {
          sent += BLOCK.length;
          if (!res.write(BLOCK)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    },
  });
});
after(async () => {
  server.child.kill('SIGKILL');
  await target.close();
  await rm(dataDir, { recursive: true, force: true });
});

test('a 256 MiB response streams to a slow reader with flat memory', async () => {
  const roots = bannerRoots(server.stdout())!;
  const control = new ControlPlane(server.url);
  const m = await control.createMembrane(roots.create, 'stream');
  const capability = await control.export(m.export, { uri: `${target.url}/big` });
  const small = await control.export(m.export, { uri: `${target.url}/big`, method: 'HEAD' });
  assert.equal(await control.statusOf(small), 200);
  const baseline = peakRss(server.child.pid!);

  const response = await request(server.url, { headers: { authorization: `Bearer ${tokenOf(capability)}` }, highWaterMark: 16 * 1024 });
  assert.equal(response.statusCode, 200);
  const hash = createHash('sha256');
  let received = 0;
  let paused = false;
  for await (const chunk of response.body) {
    hash.update(chunk);
    received += chunk.length;
    if (!paused && received > 1024 * 1024) {
      paused = true;
      // Stop reading while the target writes as fast as it can.
      await sleep(1500);
    }
  }
  assert.equal(received, SIZE);
  const expected = createHash('sha256');
  for (let i = 0; i < SIZE / BLOCK.length; i++) expected.update(BLOCK);
  assert.equal(hash.digest('hex'), expected.digest('hex'));

  const growth = peakRss(server.child.pid!) - baseline;
  assert.ok(growth < SIZE / 4, `peak RSS grew by ${Math.round(growth / 1024 / 1024)} MiB relaying ${SIZE / 1024 / 1024} MiB`);
});
