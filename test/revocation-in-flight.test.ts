/**
 * Revocation ends what is in flight: a stream being answered is cut, an
 * upload being relayed or buffered for signing, and an invocation waiting
 * for a connection, are answered 401, on this node, before the revoke's
 * 202 is sent; delegated capabilities below the revoked membrane too.
 * Nothing of the revoked invocations stays tracked.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { call, tokenOf } from './helpers/client.js';
import { assertNothingHeld, startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

/** Each test ends within this, whatever the code under test does. */
const BOUNDED = { timeout: 20_000 };

let membrane: TestMembrane;
let events: TestTarget;
let uploads: TestTarget;
/** Connections the event-stream target has seen close. */
let streamsClosed = 0;

before(async () => {
  // One place per target at a time, so that a second invocation waits for a connection.
  membrane = await startTestMembrane({ connectionsPerTarget: 1, tenantShare: 1, capabilityShare: 1 });
  // Server-sent events, one every 20 ms, for as long as the requester listens.
  events = await startTarget({
    respond: (req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let n = 0;
      const timer = setInterval(() => res.write(`data: ${n++}\n\n`), 20);
      req.socket.on('close', () => {
        clearInterval(timer);
        streamsClosed += 1;
      });
    },
  });
  uploads = await startTarget();
  uploads.requests.length = 0;
});
after(async () => {
  await membrane.stop();
  await events.close();
  await uploads.close();
});

let run = 0;
async function exported(config: (url: string) => object, target: TestTarget): Promise<{ capability: string; revoke: string; exportCapability: string }> {
  run += 1;
  const m = await membrane.control.createMembrane(membrane.roots.create, `in-flight-${run}`);
  return { capability: await membrane.control.export(m.export, config(target.url)), revoke: m.revoke, exportCapability: m.export };
}

/** Opens an upload of `declared` bytes and sends `first` of them; resolves with the raw answer once the connection closes. */
function startUpload(capability: string, declared: number, first: string): { socket: Socket; answer: Promise<string> } {
  const socket = connect(membrane.port, '127.0.0.1');
  socket.on('error', () => undefined);
  let answer = '';
  socket.on('data', (chunk) => (answer += chunk));
  socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nContent-Length: ${declared}\r\n\r\n${first}`);
  return { socket, answer: once(socket, 'close').then(() => answer) };
}

async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(10);
}

describe('revoking a membrane ends the invocations in flight below it', () => {
  test('a server-sent event stream is cut, and the target’s connection closed, when its membrane is revoked', BOUNDED, async () => {
    const { capability, revoke } = await exported((url) => ({ uri: `${url}/events` }), events);
    const response = await request(membrane.url, { headers: { authorization: `Bearer ${tokenOf(capability)}` } });
    assert.equal(response.statusCode, 200);
    let received = '';
    let ended: 'end' | 'error' | undefined;
    response.body.on('data', (chunk: Buffer) => (received += chunk));
    response.body.on('end', () => (ended = 'end'));
    response.body.on('error', () => (ended = 'error'));
    await waitFor(() => received.includes('data: 3'));
    const closedBefore = streamsClosed;
    await membrane.control.revoke(revoke);
    await waitFor(() => ended !== undefined && streamsClosed > closedBefore);
    assert.equal(ended, 'error', 'the stream was cut, not ended as if complete');
    await assertNothingHeld(membrane);
  });

  test('a delegated stream is cut when a membrane above it on its chain is revoked', BOUNDED, async () => {
    const { capability, revoke } = await exported((url) => ({ uri: `${url}/events` }), events);
    const partner = await membrane.control.createMembrane(membrane.roots.create, `partner-${run}`);
    const delegated = await membrane.control.export(partner.export, { capability });
    const response = await request(membrane.url, { headers: { authorization: `Bearer ${tokenOf(delegated)}` } });
    let received = '';
    const done = new Promise<string>((resolve) => {
      response.body.on('data', (chunk: Buffer) => (received += chunk));
      response.body.on('end', () => resolve('end'));
      response.body.on('error', () => resolve('error'));
    });
    await waitFor(() => received.includes('data: 2'));
    await membrane.control.revoke(revoke);
    assert.equal(await done, 'error');
    assert.equal(await membrane.control.statusOf(delegated), 401);
  });

  test('a streamed upload is answered 401 and the target never gets the rest', BOUNDED, async () => {
    const { capability, revoke } = await exported((url) => ({ uri: `${url}/upload`, method: 'POST' }), uploads);
    const before = uploads.requests.length;
    const upload = startUpload(capability, 100_000, 'x'.repeat(1000));
    await waitFor(() => membrane.held().invocations === 1 && membrane.held().watchedBodies === 1);
    await membrane.control.revoke(revoke);
    const answer = await upload.answer;
    assert.match(answer, /^HTTP\/1\.1 401 /);
    assert.match(answer, /connection: close/i);
    assert.match(answer, /"error":"Unauthorized"/);
    await assertNothingHeld(membrane);
    assert.equal(uploads.requests.length, before, 'the target saw no complete request');
  });

  test('an upload being buffered for its signature is answered 401 and nothing is sent', BOUNDED, async () => {
    const { capability, revoke } = await exported(
      (url) => ({ uri: `${url}/signed`, method: 'POST', hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKID', secretAccessKey: 'secret', region: 'us-east-1', service: 'lambda' } } }),
      uploads,
    );
    const before = uploads.requests.length;
    const upload = startUpload(capability, 100_000, 'x'.repeat(1000));
    await waitFor(() => membrane.held().bodyBytes === 100_000);
    await membrane.control.revoke(revoke);
    assert.match(await upload.answer, /^HTTP\/1\.1 401 /);
    await assertNothingHeld(membrane);
    assert.equal(uploads.requests.length, before);
  });

  test('an invocation waiting for a connection to its target is answered 401 when revoked', BOUNDED, async () => {
    const { capability, revoke } = await exported((url) => ({ uri: `${url}/events` }), events);
    // The one connection to the event target is held by this stream, of another membrane.
    const holder = await exported((url) => ({ uri: `${url}/events` }), events);
    const stream = await request(membrane.url, { headers: { authorization: `Bearer ${tokenOf(holder.capability)}` } });
    stream.body.on('error', () => undefined);
    stream.body.resume();
    await waitFor(() => membrane.held().invocations === 1);
    const waiting = call(membrane.url, capability);
    await waitFor(() => membrane.held().invocations === 2);
    await membrane.control.revoke(revoke);
    const answer = await waiting;
    assert.equal(answer.status, 401);
    assert.deepEqual(answer.json, { error: 'Unauthorized', message: 'a valid capability token is required (Authorization: Bearer CPBLTY1-…)' });
    await membrane.control.revoke(holder.revoke);
    await assertNothingHeld(membrane);
  });

  test('an invocation of a capability the revocation does not touch goes on', BOUNDED, async () => {
    const kept = await exported((url) => ({ uri: `${url}/events` }), events);
    const revoked = await exported((url) => ({ uri: `${url}/other` }), uploads);
    const response = await request(membrane.url, { headers: { authorization: `Bearer ${tokenOf(kept.capability)}` } });
    let received = '';
    response.body.on('data', (chunk: Buffer) => (received += chunk));
    await waitFor(() => received.includes('data: 1'));
    await membrane.control.revoke(revoked.revoke);
    const length = received.length;
    await waitFor(() => received.length > length + 20);
    await membrane.control.revoke(kept.revoke);
    await assertNothingHeld(membrane);
  });
});
