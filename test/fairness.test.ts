/**
 * Fairness between tenants and capabilities, against hostile holders:
 * uploads that trickle a byte at a time with a huge Content-Length hold
 * only their own tenant's (and capability's) share of the connections to
 * a target and of the in-flight bound; a request waiting for a connection
 * gives up with 503; a body below the minimum rate is cut off with 408,
 * but never for time in which Membrane itself was not reading it.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { call, tokenOf, type CallResult } from './helpers/client.js';
import { assertNothingHeld, startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';
import type { RootCapabilities } from '../src/service/membrane-service.js';

/** Each test ends within this, whatever the code under test does. */
const BOUNDED = { timeout: 30_000 };

/** A hostile upload: a head declaring `declared` bytes, then one byte every `everyMs`, until stopped; `answer` is what came back once the connection closed. */
interface Trickle {
  socket: Socket;
  answer: Promise<string>;
  stop(): void;
}

function trickle(port: number, capability: string, declared = 1_000_000_000, everyMs = 100, extraHead = ''): Trickle {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let answer = '';
  socket.on('data', (chunk) => (answer += chunk));
  socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nContent-Length: ${declared}\r\n${extraHead}\r\n`);
  const timer = setInterval(() => socket.writable && socket.write('x'), everyMs);
  const answered = new Promise<string>((resolve) => socket.on('close', () => resolve(answer)));
  return {
    socket,
    answer: answered.finally(() => clearInterval(timer)),
    stop: () => {
      clearInterval(timer);
      socket.destroy();
    },
  };
}

/** Polls until `condition` holds (the test's own timeout bounds the wait). */
async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(10);
}

/** The call's answer, or a failure if it takes longer than `ms` (so that a starved request fails the test instead of hanging it). */
async function within(ms: number, pending: Promise<CallResult>): Promise<CallResult> {
  const timeout = sleep(ms).then(() => {
    throw new Error(`no answer within ${ms} ms`);
  });
  return Promise.race([pending, timeout]);
}

let target: TestTarget;
before(async () => {
  target = await startTarget();
});
after(() => target.close());

async function tenants(membrane: TestMembrane): Promise<{ a: RootCapabilities; b: RootCapabilities }> {
  return { a: membrane.roots, b: (await membrane.service.createTenant())! };
}

async function exportFor(membrane: TestMembrane, roots: RootCapabilities, id: string, config: object): Promise<string> {
  const m = await membrane.control.createMembrane(roots.create, id);
  return membrane.control.export(m.export, config);
}

describe('connections to a target are shared fairly', () => {
  let membrane: TestMembrane;
  const trickles: Trickle[] = [];
  before(async () => {
    // 8 connections per target: 4 for one tenant, 2 for one capability. No minimum body rate: the uploads hold on.
    membrane = await startTestMembrane({ connectionsPerTarget: 8, minBodyRate: 0, queueTimeoutMs: 1_000 });
  });
  after(async () => {
    for (const upload of trickles) upload.stop();
    await membrane.stop();
  });

  test('one tenant’s trickling uploads leave another tenant’s capability on the same target answering, and wait for a connection no longer than the queue timeout', BOUNDED, async () => {
    const { a, b } = await tenants(membrane);
    const uploadA1 = await exportFor(membrane, a, 'a-upload-1', { uri: `${target.url}/a1`, method: 'POST' });
    const uploadA2 = await exportFor(membrane, a, 'a-upload-2', { uri: `${target.url}/a2`, method: 'POST' });
    const uploadA3 = await exportFor(membrane, a, 'a-upload-3', { uri: `${target.url}/a3`, method: 'POST' });
    const readB = await exportFor(membrane, b, 'b-read', { uri: `${target.url}/b` });
    // Tenant A's holders open 12 uploads on three capabilities: 4 reach the target (A's share), the rest wait.
    for (const capability of [uploadA1, uploadA2, uploadA3]) for (let i = 0; i < 4; i++) trickles.push(trickle(membrane.port, capability));
    await waitUntil(() => membrane.held().invocations === 12);
    assert.equal((await within(5_000, call(membrane.url, readB))).json.url, '/b');
    // Past the queue timeout, the uploads that found no connection have been refused; the 4 others still hold theirs.
    await waitUntil(() => membrane.held().invocations === 4);
    const answers = await Promise.all(trickles.map((upload) => Promise.race([upload.answer, sleep(50).then(() => 'holding')])));
    assert.equal(answers.filter((answer) => answer === 'holding').length, 4);
    for (const answer of answers.filter((text) => text !== 'holding')) {
      assert.match(answer, /^HTTP\/1\.1 503 /);
      assert.match(answer, /retry-after: 1/i);
      assert.match(answer, /no connection to the target became free within 1000 ms/);
    }
    // Tenant B's capability still answers at once.
    assert.equal((await within(5_000, call(membrane.url, readB))).status, 200);
    for (const upload of trickles) upload.stop();
    await assertNothingHeld(membrane);
  });
});

describe('re-exports share their original’s share', () => {
  let membrane: TestMembrane;
  const trickles: Trickle[] = [];
  before(async () => {
    // 8 connections per target: 4 for one tenant, 2 for one capability (and everything re-exported from it).
    membrane = await startTestMembrane({ connectionsPerTarget: 8, minBodyRate: 0, queueTimeoutMs: 60_000 });
  });
  after(async () => {
    for (const upload of trickles) upload.stop();
    await membrane.stop();
  });

  test('re-exporting a capability into other tenants does not multiply what its holders may hold of a target', BOUNDED, async () => {
    const a = membrane.roots;
    const tenantsOfTheHolder = [(await membrane.service.createTenant())!, (await membrane.service.createTenant())!];
    const shared = await exportFor(membrane, a, 'shared', { uri: `${target.url}/shared`, method: 'POST' });
    const other = await exportFor(membrane, a, 'other', { uri: `${target.url}/other` });
    const reExports = [];
    for (const [i, roots] of tenantsOfTheHolder.entries()) {
      for (const j of [1, 2]) {
        const m = await membrane.control.createMembrane(roots.create, `holder-${i}-${j}`);
        reExports.push(await membrane.control.export(m.export, { capability: shared }));
      }
    }
    // The holder trickles 2 uploads through each of its four re-exports (two in each of its tenants): 8 in all,
    // as many as the target's connections, and within each re-export's and each tenant's share were they counted apart.
    for (const capability of reExports) for (let i = 0; i < 2; i++) trickles.push(trickle(membrane.port, capability));
    await waitUntil(() => membrane.held().invocations === 8);
    // Only 2 of them (the original's share) got a connection: the tenant's other capability still answers.
    assert.equal((await within(5_000, call(membrane.url, other))).status, 200);
    for (const upload of trickles.splice(0)) upload.stop();
    await assertNothingHeld(membrane);
  });
});

describe('the in-flight bound is shared fairly', () => {
  let membrane: TestMembrane;
  const trickles: Trickle[] = [];
  before(async () => {
    // 8 in flight: 4 for one tenant, 2 for one capability.
    membrane = await startTestMembrane({ maxInFlight: 8, minBodyRate: 0 });
  });
  after(async () => {
    for (const upload of trickles) upload.stop();
    await membrane.stop();
  });

  test('beyond its capability’s share, then its tenant’s, a holder gets 503 naming which; another tenant is not refused', BOUNDED, async () => {
    const { a, b } = await tenants(membrane);
    const a1 = await exportFor(membrane, a, 'a-1', { uri: `${target.url}/a1`, method: 'POST' });
    const a2 = await exportFor(membrane, a, 'a-2', { uri: `${target.url}/a2`, method: 'POST' });
    const a3 = await exportFor(membrane, a, 'a-3', { uri: `${target.url}/a3`, method: 'POST' });
    const readB = await exportFor(membrane, b, 'b-1', { uri: `${target.url}/b` });
    for (let i = 0; i < 2; i++) trickles.push(trickle(membrane.port, a1));
    await waitUntil(() => membrane.held().invocations === 2);
    const capabilityFull = await call(membrane.url, a1, { body: 'x' });
    assert.equal(capabilityFull.status, 503);
    assert.equal(capabilityFull.json.message, 'too many invocations of this capability are in flight; try again shortly');
    assert.equal(capabilityFull.headers['retry-after'], '1');
    for (let i = 0; i < 2; i++) trickles.push(trickle(membrane.port, a2));
    await waitUntil(() => membrane.held().invocations === 4);
    const tenantFull = await call(membrane.url, a3, { body: 'x' });
    assert.equal(tenantFull.status, 503);
    assert.equal(tenantFull.json.message, "too many invocations of this tenant's capabilities are in flight; try again shortly");
    assert.equal((await call(membrane.url, readB)).status, 200);
    for (const upload of trickles) upload.stop();
    await assertNothingHeld(membrane);
  });
});

describe('the minimum body rate', () => {
  let membrane: TestMembrane;
  before(async () => {
    membrane = await startTestMembrane({ minBodyRate: 1_024, bodyRateWindowMs: 500 });
  });
  after(() => membrane.stop());

  test('a streamed upload trickling below the rate is cut off with a JSON 408 and the connection closed', BOUNDED, async () => {
    const capability = await exportFor(membrane, membrane.roots, 'rate-plain', { uri: `${target.url}/slow`, method: 'POST' });
    const before = target.requests.length;
    const answer = await trickle(membrane.port, capability, 1_000_000).answer;
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /connection: close/i);
    assert.match(answer, /"message":"the request body arrived more slowly than 1024 bytes per second \(over 0\.5 s\)"/);
    assert.equal(target.requests.length, before, 'the target never got a whole request');
    await assertNothingHeld(membrane);
  });

  test('an upload buffered for its signature, trickling below the rate, is cut off with 408 and nothing is sent', BOUNDED, async () => {
    const capability = await exportFor(membrane, membrane.roots, 'rate-signed', {
      uri: `${target.url}/signed`,
      method: 'POST',
      hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKID', secretAccessKey: 'secret', region: 'us-east-1', service: 'lambda' } },
    });
    const before = target.requests.length;
    assert.match(await trickle(membrane.port, capability, 1_000_000).answer, /^HTTP\/1\.1 408 /);
    assert.equal(target.requests.length, before);
    await assertNothingHeld(membrane);
  });

  test('padding a trickle with chunk framing (long chunk sizes, chunk extensions) buys nothing: body bytes are what count', BOUNDED, async () => {
    const capability = await exportFor(membrane, membrane.roots, 'rate-padded', { uri: `${target.url}/padded`, method: 'POST' });
    for (const framing of [`${'0'.repeat(2000)}1\r\nx\r\n`, `1;${'a'.repeat(2000)}\r\nx\r\n`]) {
      const socket = connect(membrane.port, '127.0.0.1');
      socket.on('error', () => undefined);
      let answer = '';
      socket.on('data', (chunk) => (answer += chunk));
      socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      // 20 KB a second on the wire, 10 bytes a second of body.
      const timer = setInterval(() => socket.writable && socket.write(framing), 100);
      await new Promise((resolve) => socket.on('close', resolve));
      clearInterval(timer);
      assert.match(answer, /^HTTP\/1\.1 408 /, framing.slice(-12));
    }
    await assertNothingHeld(membrane);
  });

  test('a control-plane body trickling below the rate is cut off with 408', BOUNDED, async () => {
    assert.match(await trickle(membrane.port, membrane.roots.create, 60_000).answer, /^HTTP\/1\.1 408 /);
  });

  test('a body held up because the target does not read it is not cut off, however long that takes', BOUNDED, async () => {
    // A target that reads nothing of a request for 2 s (four windows), then all of it.
    const gated = createServer((req, res) => {
      req.pause();
      setTimeout(() => {
        let length = 0;
        req.on('data', (chunk: Buffer) => (length += chunk.length));
        req.on('end', () => res.end(JSON.stringify({ length })));
        req.resume();
      }, 2_000);
    });
    await new Promise<void>((resolve) => gated.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = gated.address() as AddressInfo;
      const capability = await exportFor(membrane, membrane.roots, 'rate-backpressure', { uri: `http://127.0.0.1:${port}/big`, method: 'POST' });
      // More than the kernel's buffers on the way hold, so that Membrane has to stop reading it.
      const size = 64 * 1024 * 1024;
      const result = await call(membrane.url, capability, { body: Buffer.alloc(size, 0x61) });
      assert.equal(result.status, 200, result.text);
      assert.equal(result.json.length, size);
    } finally {
      gated.closeAllConnections();
      gated.close();
    }
  });
});

describe('a requester that leaves', () => {
  let membrane: TestMembrane;
  let gated: TestTarget;
  let release: () => void = () => undefined;
  before(async () => {
    // One connection to a target at a time: a second invocation waits for it.
    // A queue timeout longer than the test's: only the requester's leaving can end its wait.
    membrane = await startTestMembrane({ connectionsPerTarget: 1, tenantShare: 1, capabilityShare: 1, queueTimeoutMs: 60_000 });
    // Answers /hold only once released; everything else at once.
    gated = await startTarget({
      respond: (req, res) => {
        if (req.url !== '/hold') return void res.end(`done ${req.method}`);
        const gate = new Promise<void>((resolve) => (release = resolve));
        void gate.then(() => res.end('released'));
      },
    });
  });
  after(async () => {
    release();
    await membrane.stop();
    await gated.close();
  });

  for (const signed of [false, true]) {
    test(`while waiting for a connection${signed ? ', its signed body read,' : ''} gives back its place and is never sent`, BOUNDED, async () => {
      const m = await membrane.control.createMembrane(membrane.roots.create, `leaver-${signed}`);
      const holder = await membrane.control.export(m.export, { uri: `${gated.url}/hold` });
      const hmac = signed ? { hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKID', secretAccessKey: 'secret', region: 'us-east-1', service: 'lambda' } } } : {};
      const deleter = await membrane.control.export(m.export, { uri: `${gated.url}/delete`, method: 'DELETE', ...hmac });
      const holds = (): number => gated.requests.filter((request) => request.url === '/hold').length;
      const heldBefore = holds();
      const holding = call(membrane.url, holder);
      await waitUntil(() => holds() > heldBefore);
      const before = gated.requests.length;
      // The deleter's requester sends its request whole, then leaves while it waits for the one connection.
      const socket = connect(membrane.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(deleter)}\r\nContent-Length: 5\r\n\r\nhello`);
      await waitUntil(() => membrane.held().invocations === 2);
      socket.destroy();
      await waitUntil(() => membrane.held().invocations === 1);
      release();
      assert.equal((await holding).text, 'released');
      await assertNothingHeld(membrane);
      assert.equal(gated.requests.length, before, 'the target never got the request of the requester that left');
      // Its place is free again: the capability answers.
      assert.equal((await call(membrane.url, deleter, { body: 'again' })).text, 'done DELETE');
    });
  }
});

describe('a requester that pipelines and leaves', () => {
  let membrane: TestMembrane;
  let big: TestTarget;
  before(async () => {
    membrane = await startTestMembrane();
    // A megabyte for every request: more than the connections on the way hold for a requester that reads nothing.
    big = await startTarget({ respond: (_req, res) => res.end(Buffer.alloc(1 << 20, 0x62)) });
  });
  after(async () => {
    await membrane.stop();
    await big.close();
  });

  test('leaves nothing held: the invocations queued behind the first on its connection end with it', BOUNDED, async () => {
    const capability = await exportFor(membrane, membrane.roots, 'pipeliner', { uri: `${big.url}/big` });
    const socket = connect(membrane.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.pause(); // reads nothing
    socket.write(`GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\n\r\n`.repeat(8));
    await waitUntil(() => big.requests.length >= 8);
    socket.destroy();
    await assertNothingHeld(membrane);
    assert.equal((await call(membrane.url, capability)).text.length, 1 << 20);
  });
});

describe('memory for request bodies', () => {
  let membrane: TestMembrane;
  let slowAnswer: TestTarget;
  const trickles: Trickle[] = [];
  const aws4 = { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKID', secretAccessKey: 'secret', region: 'us-east-1', service: 'lambda' } };
  before(async () => {
    // All of the body memory for one signed body: a second one has to wait its turn.
    membrane = await startTestMembrane({ bodyMemoryLimit: 1 << 20, signedBodyLimit: 1 << 20, tenantShare: 1, capabilityShare: 1, minBodyRate: 0 });
    slowAnswer = await startTarget({ respond: (_req, res) => res.end(Buffer.alloc(16 << 20, 0x61)) });
  });
  after(async () => {
    for (const upload of trickles) upload.stop();
    await membrane.stop();
    await slowAnswer.close();
  });

  test('a signed body’s memory is given back once the target answers, while the answer is still being read', BOUNDED, async () => {
    const capability = await exportFor(membrane, membrane.roots, 'answered', { uri: `${slowAnswer.url}/big`, method: 'POST', hmac: aws4 });
    const socket = connect(membrane.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.pause(); // reads the 16 MiB answer not at all
    socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nContent-Length: 1000\r\n\r\n${'x'.repeat(1000)}`);
    await waitUntil(() => slowAnswer.requests.length === 1);
    await waitUntil(() => membrane.held().bodyBytes === 0);
    assert.equal(membrane.held().invocations, 1, 'the answer is still on its way');
    // So another signed body fits at once.
    assert.equal((await call(membrane.url, capability, { body: 'y'.repeat(1 << 19) })).status, 200);
    socket.destroy();
    await assertNothingHeld(membrane);
  });

  test('the control plane has memory of its own: invocations holding all of theirs leave create and export working', BOUNDED, async () => {
    const m = await membrane.control.createMembrane(membrane.roots.create, 'crowded');
    const signed = await membrane.control.export(m.export, { uri: `${target.url}/crowd`, method: 'POST', hmac: aws4 });
    trickles.push(trickle(membrane.port, signed, 1 << 20));
    await waitUntil(() => membrane.held().bodyBytes === 1 << 20);
    const refused = await call(membrane.url, signed, { body: 'z' });
    assert.equal(refused.status, 503);
    assert.equal(refused.json.message, 'too many request bodies are held in memory right now; try again shortly');
    assert.equal((await call(membrane.url, membrane.roots.create, { body: { id: 'still-possible' } })).status, 201);
    assert.equal((await call(membrane.url, m.export, { body: { uri: `${target.url}/still` } })).status, 201);
    for (const upload of trickles.splice(0)) upload.stop();
    await assertNothingHeld(membrane);
  });

  test('a body sent to revoke, query or deleteSelf is read and ignored, taking no memory', BOUNDED, async () => {
    const m = await membrane.control.createMembrane(membrane.roots.create, 'ignored-body');
    const socket = connect(membrane.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk));
    socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(m.revoke)}\r\nContent-Length: 50000\r\n\r\n${'{'.repeat(20_000)}`);
    await waitUntil(() => membrane.held().watchedBodies === 1);
    assert.equal(membrane.held().bodyBytes, 0);
    socket.write('}'.repeat(30_000));
    await waitUntil(() => answer.includes('\r\n\r\n{'));
    assert.match(answer, /^HTTP\/1\.1 202 /);
    socket.destroy();
    await assertNothingHeld(membrane);
  });
});
