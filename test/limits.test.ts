/** Limits against slow, greedy or floody clients: head and idle timeouts, in-flight bound, per-target connections. */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
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

/** Waits for the audit line of an invocation of `capability` that `matches`. */
async function invocationLine(membrane: TestMembrane, capability: string, matches: (line: { status: number }) => boolean): Promise<{ status: number }> {
  const id = membrane.audit.idOfUri(capability);
  for (;;) {
    const text = await readFile(join(membrane.dataDir, 'audit.log'), 'utf8');
    const line = text
      .trim()
      .split('\n')
      .map((entry) => JSON.parse(entry) as { action: string; capability: string; status: number })
      .find((entry) => entry.action === 'capability.invoke' && entry.capability === id && matches(entry));
    if (line !== undefined) return line;
    await sleep(50);
  }
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

  test('a requester that leaves in the middle of a signed upload is recorded as a 400, not as a server error', async () => {
    const target = await startTarget();
    try {
      const { export: exportCap } = await membrane.control.createMembrane(membrane.roots.create, 'leaver');
      const signed = await membrane.control.export(exportCap, {
        uri: `${target.url}/upload`,
        method: 'POST',
        // AWS4-HMAC-SHA256 covers the body, so Membrane reads it whole before forwarding.
        hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'leaver-secret', region: 'us-east-1', service: 'lambda' } },
      });
      const socket = connect(membrane.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(signed)}\r\nContent-Length: 1000\r\n\r\n0123456789`);
      await sleep(50);
      socket.destroy();
      const line = await invocationLine(membrane, signed, () => true);
      assert.equal(line.status, 400);
      assert.equal(target.requests.length, 0);
    } finally {
      await target.close();
    }
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
    // One tenant, one capability: the shares are the whole bounds here (shares have tests of their own).
    membrane = await startTestMembrane({ maxInFlight: 3, connectionsPerTarget: 2, tenantShare: 1, capabilityShare: 1 });
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
    // Refused invocations are recorded like any other.
    assert.equal((await invocationLine(membrane, capability, (line) => line.status === 503)).status, 503);
    // The control plane is not bounded by invocations.
    assert.equal((await call(membrane.url, membrane.roots.query)).status, 200);
    release();
    for (const result of await Promise.all(held)) assert.equal(result.text, 'done');
    // At most two connections to the one target at a time: the third request waited for one.
    assert.equal(maxConcurrent, 2);
    assert.equal((await call(membrane.url, capability)).text, 'done');
  });
});
