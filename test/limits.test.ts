/** Limits against slow, greedy or floody clients: head and idle timeouts, in-flight bound, per-target connections. */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { call, tokenOf } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

/** Sends `head`, then `trickle` one byte every `everyMs`, and returns what the server answered before closing. */
function slowClient(port: number, head: string, trickle = '', everyMs = 200): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    let timer: NodeJS.Timeout | undefined;
    socket.on('data', (chunk) => (answer += chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearInterval(timer);
      resolve(answer);
    });
    socket.write(head);
    let sent = 0;
    timer = setInterval(() => {
      if (socket.destroyed) return;
      if (sent < trickle.length) socket.write(trickle[sent++]!);
    }, everyMs);
  });
}

describe('slow clients', () => {
  let membrane: TestMembrane;
  before(async () => {
    membrane = await startTestMembrane({ headersTimeoutMs: 1_000, idleTimeoutMs: 1_500, targetTimeoutMs: 1_000 });
  });
  after(() => membrane.stop());

  test('a head trickled in slower than the head timeout is cut off with a JSON 408', async () => {
    const answer = await slowClient(membrane.port, 'GET / HTTP/1.1\r\n', 'X-Slow: '.padEnd(200, 'a'), 100);
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /"error":"Request Timeout"/);
  });

  test('a body that stalls is cut off once the connection is idle, with a JSON 408', async () => {
    const head = `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(membrane.roots.create)}\r\nContent-Length: 100\r\n\r\n{"id":`;
    const answer = await slowClient(membrane.port, head);
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /"message":"the connection was idle too long"/);
    assert.equal((await call(membrane.url, undefined, { path: '/healthz' })).status, 200);
  });

  test('an idle keep-alive connection is closed quietly', async () => {
    const answer = await slowClient(membrane.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.equal(answer.match(/HTTP\/1\.1/g)!.length, 1);
  });
});

describe('in-flight bound and per-target connections', () => {
  let membrane: TestMembrane;
  let slow: TestTarget;
  let release: () => void = () => undefined;
  let gate = Promise.resolve();
  let concurrent = 0;
  let maxConcurrent = 0;

  before(async () => {
    membrane = await startTestMembrane({ maxInFlight: 3, connectionsPerTarget: 2 });
    slow = await startTarget({
      respond: (_req, res) => {
        concurrent += 1;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        void gate.then(() => {
          concurrent -= 1;
          res.end('done');
        });
      },
    });
  });
  after(async () => {
    release();
    await membrane.stop();
    await slow.close();
  });

  test('beyond the in-flight bound invocations get 503 with Retry-After; below it they proceed', async () => {
    gate = new Promise((resolve) => (release = resolve));
    const { export: exportCap } = await membrane.control.createMembrane(membrane.roots.create, 'bounded');
    const capability = await membrane.control.export(exportCap, { uri: `${slow.url}/slow` });
    const held = [call(membrane.url, capability), call(membrane.url, capability), call(membrane.url, capability)];
    while (slow.requests.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const refused = await call(membrane.url, capability);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.deepEqual(refused.json, { error: 'Service Unavailable', message: 'too many invocations are in flight; try again shortly' });
    // The control plane is not bounded by invocations.
    assert.equal((await call(membrane.url, membrane.roots.query)).status, 200);
    release();
    for (const result of await Promise.all(held)) assert.equal(result.text, 'done');
    // At most two connections to the one target at a time: the third request waited for one.
    assert.equal(maxConcurrent, 2);
    assert.equal((await call(membrane.url, capability)).text, 'done');
  });
});
