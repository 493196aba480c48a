/**
 * What request bodies cost a real `membrane serve` process with its
 * default settings, whatever holders send: a body of small chunks
 * buffered for its signature costs about what it weighs; a body of small
 * chunks relayed unsigned goes to the target in few large chunks (not one
 * write per chunk); a wave of maximal signed uploads that stall
 * before their end is refused early (503, `Retry-After`) beyond the memory
 * budget and its shares; and a body in one-byte chunks (each costing the
 * HTTP parser as much as a large one) is cut off at once. Throughout, the process lives, its peak RSS stays
 * under 600 MB, and `/healthz` answers within a second.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { bannerRoots, peakRss, runMembrane, startServerProcess, type ServerProcess } from './helpers/child.js';
import { ControlPlane, tokenOf } from './helpers/client.js';
import { tempDir } from './helpers/membrane.js';

const BOUNDED = { timeout: 60_000 };
const MIB = 1024 * 1024;
/** The default signed-body limit. */
const SIGNED_LIMIT = 6 * MIB;
const AWS4 = { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKID', secretAccessKey: 'secret', region: 'us-east-1', service: 'lambda' } };

let server: ServerProcess;
let dataDir: string;
let control: ControlPlane;
let target: Server;
let targetUrl: string;
/** Per request path: how many chunks of body the target's parser handed over, and how many bytes. */
const received = new Map<string, { chunks: number; bytes: number }>();
let health: { stop: () => Promise<string[]> };

/** Polls /healthz every 100 ms, each with a one-second deadline; `stop` returns every failure seen. */
function watchHealth(url: string): { stop: () => Promise<string[]> } {
  const failures: string[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const started = Date.now();
      try {
        const response = await request(`${url}/healthz`, { headersTimeout: 1_000, bodyTimeout: 1_000 });
        await response.body.text();
        if (response.statusCode !== 200) failures.push(`status ${response.statusCode}`);
      } catch (error) {
        failures.push(`${(error as Error).message} after ${Date.now() - started} ms`);
      }
      await sleep(100);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return failures;
    },
  };
}

before(async () => {
  dataDir = await tempDir();
  server = await startServerProcess(['--port', '0', '--data-dir', dataDir, '--no-capi-profile'], { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' });
  control = new ControlPlane(server.url);
  target = createServer((req, res) => {
    const tally = { chunks: 0, bytes: 0 };
    received.set(req.url!, tally);
    req.on('data', (chunk: Buffer) => {
      tally.chunks += 1;
      tally.bytes += chunk.length;
    });
    req.on('end', () => res.end(JSON.stringify(tally)));
  });
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
  targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
  health = watchHealth(server.url);
});
after(async () => {
  const failures = await health.stop();
  server.child.kill('SIGKILL');
  target.closeAllConnections();
  target.close();
  await rm(dataDir, { recursive: true, force: true });
  assert.deepEqual(failures, [], 'every /healthz answered 200 within a second');
  assert.equal(server.child.exitCode, null, 'the server was alive until the end');
});

/** A chunked body of `count` chunks of `size` bytes, as raw bytes. */
function chunked(count: number, size: number): Buffer {
  const chunk = Buffer.from(`${size.toString(16)}\r\n${'x'.repeat(size)}\r\n`);
  const body = Buffer.alloc(chunk.length * count + 5);
  for (let i = 0; i < count; i++) chunk.copy(body, i * chunk.length);
  body.write('0\r\n\r\n', chunk.length * count);
  return body;
}

/** Sends a raw request and resolves with the raw answer once the server closes the connection. */
function rawExchange(head: string, body: Buffer): Promise<string> {
  const port = Number(new URL(server.url).port);
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(answer));
    socket.write(head);
    socket.write(body);
  });
}

let membranes = 0;
async function capability(create: string, config: object): Promise<string> {
  membranes += 1;
  const m = await control.createMembrane(create, `memory-${membranes}`);
  return control.export(m.export, config);
}

const chunkedHead = (capability: string): string =>
  `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;

test('a body of a million one-byte chunks is cut off with 400 as soon as it is clear, signed or not, costing next to nothing', BOUNDED, async (t) => {
  const roots = bannerRoots(server.stdout())!;
  const baseline = peakRss(server.child.pid!);
  for (const [path, hmac] of [['/ones-signed', { hmac: AWS4 }], ['/ones-plain', {}]] as const) {
    const capabilityOf = await capability(roots.create, { uri: `${targetUrl}${path}`, method: 'POST', ...hmac });
    const answer = await rawExchange(chunkedHead(capabilityOf), chunked(1_000_000, 1));
    assert.match(answer, /^HTTP\/1\.1 400 /, path);
    assert.match(answer, /connection: close/i, path);
    assert.match(answer, /"message":"the request body arrives in too many small chunks \(more than 100 a second beyond one for every 32 bytes\)"/, path);
    assert.ok(received.get(path) === undefined || received.get(path)!.bytes < 1_000_000, 'the target never got the whole body');
  }
  const growth = peakRss(server.child.pid!) - baseline;
  t.diagnostic(`peak RSS grew by ${Math.round(growth / MIB)} MiB`);
  // Kept as a list of the parser's chunks, a million of them took over 400 MB.
  assert.ok(growth < 100 * MIB, `peak RSS grew by ${Math.round(growth / MIB)} MiB`);
});

test('a signed body in small chunks (64 bytes, twice the smallest average allowed) costs about what it weighs', BOUNDED, async (t) => {
  const roots = bannerRoots(server.stdout())!;
  const signed = await capability(roots.create, { uri: `${targetUrl}/signed`, method: 'POST', hmac: AWS4 });
  const baseline = peakRss(server.child.pid!);
  const answer = await rawExchange(chunkedHead(signed), chunked(90_000, 64));
  assert.match(answer, /^HTTP\/1\.1 200 /);
  assert.equal(received.get('/signed')!.bytes, 90_000 * 64);
  const growth = peakRss(server.child.pid!) - baseline;
  t.diagnostic(`peak RSS grew by ${Math.round(growth / MIB)} MiB`);
  assert.ok(growth < 100 * MIB, `peak RSS grew by ${Math.round(growth / MIB)} MiB for a 5.5 MiB body`);
});

test('an unsigned body of 64-byte chunks reaches the target joined into few chunks', BOUNDED, async (t) => {
  const roots = bannerRoots(server.stdout())!;
  const plain = await capability(roots.create, { uri: `${targetUrl}/plain`, method: 'POST' });
  const answer = await rawExchange(chunkedHead(plain), chunked(90_000, 64));
  assert.match(answer, /^HTTP\/1\.1 200 /);
  const tally = received.get('/plain')!;
  assert.equal(tally.bytes, 90_000 * 64);
  t.diagnostic(`${tally.chunks} chunks reached the target`);
  // Relayed as they came, they were 90 000 writes to the target (and 90 000 chunks for it to parse).
  assert.ok(tally.chunks < 1_000, `${tally.chunks} chunks reached the target`);
});

test('a wave of maximal signed uploads that stall is refused beyond the memory budget and its shares, early', BOUNDED, async (t) => {
  // Three tenants with three capabilities each, 25 uploads on each capability.
  const tenants = [bannerRoots(server.stdout())!.create];
  for (let i = 0; i < 2; i++) {
    const created = await runMembrane(['tenant', 'create', '--data-dir', dataDir, '--json']);
    assert.equal(created.code, 0, created.stderr);
    tenants.push(JSON.parse(created.stdout).create);
  }
  const capabilities: string[] = [];
  for (const create of tenants) for (let i = 0; i < 3; i++) capabilities.push(await capability(create, { uri: `${targetUrl}/wave`, method: 'POST', hmac: AWS4 }));
  const port = Number(new URL(server.url).port);
  const sockets: Socket[] = [];
  const answers: Promise<string>[] = [];
  for (const signed of capabilities) {
    for (let i = 0; i < 25; i++) {
      const socket = connect(port, '127.0.0.1');
      sockets.push(socket);
      socket.on('error', () => undefined);
      let answer = '';
      socket.on('data', (chunk) => (answer += chunk));
      answers.push(new Promise((resolve) => socket.on('close', () => resolve(answer))));
      socket.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(signed)}\r\nContent-Length: ${SIGNED_LIMIT}\r\n\r\n`);
    }
  }
  // The refusals come before any of the body is sent: 204 of them.
  let answered = 0;
  for (const answer of answers) void answer.then(() => (answered += 1));
  const deadline = Date.now() + 20_000;
  while (answered < answers.length - 21 && Date.now() < deadline) await sleep(50);
  await sleep(200); // and no more than that
  const early = await Promise.all(answers.map((answer) => Promise.race([answer, sleep(10).then(() => undefined)])));
  const refused = early.filter((answer) => answer !== undefined) as string[];
  for (const answer of refused) {
    assert.match(answer, /^HTTP\/1\.1 503 /);
    assert.match(answer, /retry-after: 1/i);
    assert.match(answer, /"message":"(too many request bodies are held in memory right now|this tenant's capabilities hold their share of the memory for request bodies|this capability holds its share of the memory for request bodies); try again shortly"/);
  }
  // 128 MiB of body memory: 32 MiB (5 uploads) per capability, 64 MiB (10) per tenant, 21 in all.
  const admitted = sockets.filter((_, i) => early[i] === undefined);
  assert.equal(admitted.length, 21);
  // The admitted ones send all but their last byte, and stall there.
  const almost = Buffer.alloc(SIGNED_LIMIT - 1, 0x61);
  await Promise.all(admitted.map((socket) => new Promise<void>((resolve) => socket.write(almost, () => resolve()))));
  await sleep(1_000);
  const peak = peakRss(server.child.pid!);
  t.diagnostic(`peak RSS ${Math.round(peak / MIB)} MiB`);
  assert.ok(peak < 600 * MIB, `peak RSS ${Math.round(peak / MIB)} MiB`);
  for (const socket of sockets) socket.destroy();
});
