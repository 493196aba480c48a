/**
 * Invoking exported capabilities: method, header and query rules, bodies,
 * target failures, TLS toward targets, connection pooling.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { call, tokenOf } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { createPki, type Pki } from './helpers/pki.js';
import { startTarget, unusedPort, type TestTarget } from './helpers/target.js';

let membrane: TestMembrane;
let target: TestTarget;
let exportCap: string;

before(async () => {
  membrane = await startTestMembrane({ targetTimeoutMs: 3_000 });
  target = await startTarget();
  exportCap = (await membrane.control.createMembrane(membrane.roots.create, 'invoker')).export;
});
after(async () => {
  await membrane.stop();
  await target.close();
});

const exportConfig = (config: Record<string, unknown>): Promise<string> => membrane.control.export(exportCap, config);

/** Header pairs as the target received them, names lower-cased. */
function receivedPairs(rawHeaders: string[]): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) pairs.push([rawHeaders[i]!.toLowerCase(), rawHeaders[i + 1]!]);
  return pairs;
}

/** Sends a raw HTTP/1.1 request and returns the raw response. */
async function rawRequest(port: number, head: string, body = ''): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(head + body);
  let response = '';
  socket.on('data', (chunk) => (response += chunk));
  await new Promise((resolve) => socket.on('close', resolve));
  return response;
}

describe('method', () => {
  test('the requester’s method is used when the config fixes none', async () => {
    const capability = await exportConfig({ uri: `${target.url}/m` });
    for (const method of ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const result = await call(membrane.url, capability, { method });
      assert.equal(result.json.method, method);
    }
  });

  test('the config’s method overrides the requester’s', async () => {
    const capability = await exportConfig({ uri: `${target.url}/m`, method: 'PUT' });
    for (const method of ['GET', 'POST', 'DELETE']) {
      assert.equal((await call(membrane.url, capability, { method })).json.method, 'PUT');
    }
  });

  test('a fixed method stays fixed: the requester’s method-override headers never reach the target', async () => {
    const fixed = await exportConfig({ uri: `${target.url}/m`, method: 'POST' });
    const overrides = { 'X-HTTP-Method-Override': 'DELETE', 'X-HTTP-Method': 'DELETE', 'X_HTTP_METHOD_OVERRIDE': 'DELETE', 'X-Method-Override': 'DELETE', 'X-Other': 'kept' };
    const received = await call(membrane.url, fixed, { method: 'POST', headers: overrides });
    assert.equal(received.json.method, 'POST');
    const names = receivedPairs(received.json.rawHeaders).map(([name]) => name);
    for (const name of ['x-http-method-override', 'x-http-method', 'x_http_method_override', 'x-method-override']) assert.ok(!names.includes(name), name);
    assert.ok(names.includes('x-other'));
    // When the holder chooses the method anyway, the headers are theirs to send.
    const free = await exportConfig({ uri: `${target.url}/m` });
    const passed = receivedPairs((await call(membrane.url, free, { method: 'POST', headers: overrides })).json.rawHeaders);
    assert.ok(passed.some(([name, value]) => name === 'x-http-method-override' && value === 'DELETE'));
  });

  test('HEAD passes through without a body', async () => {
    const capability = await exportConfig({ uri: `${target.url}/head` });
    const result = await call(membrane.url, capability, { method: 'HEAD' });
    assert.equal(result.status, 200);
    assert.equal(result.text, '');
    assert.equal(target.requests.at(-1)!.method, 'HEAD');
  });
});

describe('HEAD on one side only', () => {
  test('a capability fixed to HEAD answers a GET with headers and an empty body, and the connection survives', async () => {
    const sized = await startTarget({
      respond: (req, res) => {
        res.writeHead(200, { 'content-length': '1000', 'x-method': req.method! });
        res.end(req.method === 'HEAD' ? undefined : Buffer.alloc(1000));
      },
    });
    try {
      const capability = await exportConfig({ uri: `${sized.url}/head`, method: 'HEAD' });
      for (let i = 0; i < 3; i++) {
        const result = await call(membrane.url, capability, { method: 'GET' });
        assert.equal(result.status, 200);
        assert.equal(result.headers['x-method'], 'HEAD');
        assert.equal(result.text, '');
      }
      const toGet = await exportConfig({ uri: `${sized.url}/get`, method: 'GET' });
      const head = await call(membrane.url, toGet, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-length'], '1000');
      assert.equal(head.text, '');
      assert.equal((await call(membrane.url, toGet)).text.length, 1000);
    } finally {
      await sized.close();
    }
  });
});

describe('headers toward the target', () => {
  test('hop-by-hop, Connection-named, Authorization, Host and Expect headers never reach the target', async () => {
    const capability = await exportConfig({ uri: `${target.url}/h` });
    const response = await rawRequest(
      membrane.port,
      'POST /whatever HTTP/1.1\r\n' +
        'Host: membrane.example\r\n' +
        `Authorization: Bearer ${tokenOf(capability)}\r\n` +
        'Connection: X-Drop-Me, x-drop-too\r\n' +
        'Connection: close\r\n' +
        'X-Drop-Me: 1\r\n' +
        'X-Drop-Too: 2\r\n' +
        'Keep-Alive: timeout=5\r\n' +
        'Proxy-Authorization: Basic eDp5\r\n' +
        'Proxy-Connection: keep-alive\r\n' +
        'TE: trailers\r\n' +
        'Trailer: X-T\r\n' +
        'Upgrade: websocket\r\n' +
        'X-Keep: kept\r\n' +
        'x-repeated: one\r\n' +
        'X-Repeated: two\r\n' +
        'Content-Length: 5\r\n\r\n',
      'hello',
    );
    assert.match(response, /^HTTP\/1\.1 200 /);
    const received = target.requests.at(-1)!;
    const names = receivedPairs(received.rawHeaders).map(([name]) => name);
    for (const dropped of ['x-drop-me', 'x-drop-too', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'upgrade', 'authorization']) {
      assert.ok(!names.includes(dropped), `${dropped} reached the target: ${names}`);
    }
    assert.equal(received.headers.host, `127.0.0.1:${target.port}`);
    assert.equal(received.headers['x-keep'], 'kept');
    assert.deepEqual(
      receivedPairs(received.rawHeaders).filter(([name]) => name === 'x-repeated').map(([, value]) => value),
      ['one', 'two'],
    );
    assert.equal(received.body.toString(), 'hello');
  });

  test('Expect: 100-continue is answered by Membrane and not forwarded', async () => {
    const capability = await exportConfig({ uri: `${target.url}/expect` });
    const response = await rawRequest(
      membrane.port,
      `PUT / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n`,
      'abc',
    );
    assert.match(response, /HTTP\/1\.1 200 /);
    const received = target.requests.at(-1)!;
    assert.equal(received.headers.expect, undefined);
    assert.equal(received.body.toString(), 'abc');
  });

  test('config headers are added and win over the requester’s, whatever the case', async () => {
    const capability = await exportConfig({
      uri: `${target.url}/h`,
      headers: { 'X-Api-Key': 'from-config', Authorization: 'Bearer upstream-secret', 'x-multi': 'config' },
    });
    const result = await call(membrane.url, capability, {
      // X_Api_Key is X-Api-Key to servers that pass headers on as variables (CGI, PHP): it may not shadow the config's either.
      headers: { 'x-api-key': 'from-requester', X_Api_Key: 'from-requester', 'X-MULTI': ['a', 'b'], 'x-other': 'requester' },
    });
    const pairs = receivedPairs(result.json.rawHeaders);
    assert.deepEqual(pairs.filter(([name]) => name.replace(/_/g, '-') === 'x-api-key'), [['x-api-key', 'from-config']]);
    assert.deepEqual(pairs.filter(([name]) => name === 'x-multi'), [['x-multi', 'config']]);
    assert.deepEqual(pairs.filter(([name]) => name === 'authorization'), [['authorization', 'Bearer upstream-secret']]);
    assert.deepEqual(pairs.filter(([name]) => name === 'x-other'), [['x-other', 'requester']]);
  });
});

describe('query', () => {
  test('without allowQuery the requester’s query string is dropped', async () => {
    const plain = await exportConfig({ uri: `${target.url}/q` });
    const fixed = await exportConfig({ uri: `${target.url}/q?fixed=1` });
    assert.equal((await call(membrane.url, plain, { path: '/x?secret=1' })).json.url, '/q');
    assert.equal((await call(membrane.url, fixed, { path: '/x?secret=1' })).json.url, '/q?fixed=1');
  });

  test('with allowQuery it is appended, with & when the uri has a query', async () => {
    const plain = await exportConfig({ uri: `${target.url}/q`, allowQuery: true });
    const fixed = await exportConfig({ uri: `${target.url}/q?fixed=1`, allowQuery: true });
    assert.equal((await call(membrane.url, plain, { path: '/x?a=1&b=%20&a=2&c' })).json.url, '/q?a=1&b=%20&a=2&c');
    assert.equal((await call(membrane.url, fixed, { path: '/x?a=1' })).json.url, '/q?fixed=1&a=1');
    assert.equal((await call(membrane.url, fixed, { path: '/x' })).json.url, '/q?fixed=1');
    assert.equal((await call(membrane.url, fixed, { path: '/x?' })).json.url, '/q?fixed=1');
    assert.equal((await call(membrane.url, plain, { path: '/x' })).json.url, '/q');
  });

  test('a raw # in the request target is refused with 400, and nothing is sent', async () => {
    const capability = await exportConfig({ uri: `${target.url}/q`, allowQuery: true });
    const before = target.requests.length;
    for (const path of ['/x?a=1#b=2', '/x#frag', '/#']) {
      const answer = await rawRequest(membrane.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nConnection: close\r\n\r\n`);
      assert.match(answer, /^HTTP\/1\.1 400 /, path);
      assert.match(answer, /"message":"the request target must not contain \\"#\\""/, path);
    }
    assert.equal(target.requests.length, before);
  });

  test('a requester’s query may not name a parameter the config’s uri fixes, however it is spelled', async () => {
    const capability = await exportConfig({ uri: `${target.url}/q?region=eu&mode=fast`, allowQuery: true });
    const before = target.requests.length;
    for (const query of ['region=us', 'page=2&region=us', 'REGION=us', 'reg%69on=us', 'region%5B%5D=us', 'region[0]=us', 'region', 'a=1;region=us', 'Mode=slow']) {
      const refused = await call(membrane.url, capability, { path: `/x?${query}` });
      assert.equal(refused.status, 400, query);
      assert.equal(refused.json.message, 'the query string names a parameter the capability fixes; it cannot be given again', query);
    }
    assert.equal(target.requests.length, before);
    assert.equal((await call(membrane.url, capability, { path: '/x?page=2&regions=all' })).json.url, '/q?region=eu&mode=fast&page=2&regions=all');
    // The spellings PHP reads as the same name: leading spaces dropped, `.`, spaces and an unclosed `[` as `_`, cut at NUL.
    const user = await exportConfig({ uri: `${target.url}/u?user_id=5`, allowQuery: true });
    const beforeUser = target.requests.length;
    for (const query of ['+user_id=6', '%20user_id=6', 'user_id%00=6', 'user_id%00x=6', 'user.id=6', 'user+id=6', 'user%20id=6', 'user[id=6', 'USER.ID=6']) {
      assert.equal((await call(membrane.url, user, { path: `/x?${query}` })).status, 400, query);
    }
    assert.equal(target.requests.length, beforeUser);
    assert.equal((await call(membrane.url, user, { path: '/x?user_ids=6&id=7' })).json.url, '/u?user_id=5&user_ids=6&id=7');
  });

  test('a fixed parameter cannot be given again through malformed escapes, double encoding or Unicode case folding', async () => {
    const capability = await exportConfig({ uri: `${target.url}/f?session=abc&user_id=5&offset=0&id=1`, method: 'POST', allowQuery: true });
    const before = target.requests.length;
    const spellings = [
      'session%00%=x', // a malformed escape after the NUL: read as "session" by PHP
      'user%2Eid%00%=7',
      '_method%00%=DELETE',
      '%C5%BFession=x', // ſ: "session" to Python's casefold, Java's equalsIgnoreCase, Go's EqualFold
      'o%EF%AC%80set=9', // ﬀ
      '%C4%B1d=2', // ı
      '%C4%B0d=2', // İ
      '%2573ession=x', // decoded twice
      '%252573ession=x', // three times
      '%EF%BD%93ession=x', // fullwidth ｓ
    ];
    for (const query of spellings) {
      assert.equal((await call(membrane.url, capability, { method: 'POST', path: `/x?${query}` })).status, 400, query);
    }
    assert.equal(target.requests.length, before);
    assert.equal((await call(membrane.url, capability, { method: 'POST', path: '/x?page=2&sessionid=3&q=session&ids=4' })).json.url, '/f?session=abc&user_id=5&offset=0&id=1&page=2&sessionid=3&q=session&ids=4');
  });

  test('a capability with a fixed method refuses a requester’s _method parameter, however it is spelled', async () => {
    const fixed = await exportConfig({ uri: `${target.url}/m`, method: 'POST', allowQuery: true });
    const before = target.requests.length;
    for (const query of ['_method=DELETE', '_METHOD=DELETE', '_method[]=DELETE', '%5Fmethod=DELETE', 'a=1&_method=PUT']) {
      const refused = await call(membrane.url, fixed, { method: 'POST', path: `/x?${query}` });
      assert.equal(refused.status, 400, query);
    }
    assert.equal(target.requests.length, before);
    // Where the holder chooses the method anyway, the parameter is theirs to send.
    const free = await exportConfig({ uri: `${target.url}/m`, allowQuery: true });
    assert.equal((await call(membrane.url, free, { method: 'POST', path: '/x?_method=DELETE' })).json.url, '/m?_method=DELETE');
  });

  test('the requester’s path never reaches the target, nor headers that would name another path', async () => {
    const capability = await exportConfig({ uri: `${target.url}/only/this`, allowQuery: true });
    const received = await call(membrane.url, capability, { path: '/../../etc/passwd?x=1', headers: { 'X-Original-URL': '/admin', 'X-Rewrite-URL': '/admin' } });
    assert.equal(received.json.url, '/only/this?x=1');
    const names = receivedPairs(received.json.rawHeaders).map(([name]) => name);
    assert.ok(!names.includes('x-original-url') && !names.includes('x-rewrite-url'), names.join(' '));
  });
});

describe('responses', () => {
  test('an answer of one-byte chunks reaches the requester joined into few chunks, every byte in order', async () => {
    const dribbling = await startTarget({
      respond: (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        for (let i = 0; i < 100_000; i++) res.write(Buffer.of(i % 251));
        res.end();
      },
    });
    try {
      const capability = await exportConfig({ uri: `${dribbling.url}/bytes` });
      const { chunks, body } = await new Promise<{ chunks: number; body: Buffer }>((resolve, reject) => {
        const request = httpRequest(membrane.url, { headers: { authorization: `Bearer ${tokenOf(capability)}` } }, (response) => {
          const parts: Buffer[] = [];
          response.on('data', (part: Buffer) => parts.push(part));
          response.on('end', () => resolve({ chunks: parts.length, body: Buffer.concat(parts) }));
        });
        request.on('error', reject);
        request.end();
      });
      assert.equal(body.length, 100_000);
      assert.ok(body.every((byte, i) => byte === i % 251));
      // Written as they came, they were 100 000 writes to the requester, each a chunk for it to parse.
      assert.ok(chunks < 1_000, `${chunks} chunks`);
    } finally {
      await dribbling.close();
    }
  });

  test('status, headers (minus hop-by-hop) and body come back as the target sent them', async () => {
    const custom = await startTarget({
      respond: (_req, res) => {
        res.writeHead(418, [
          'X-Custom', 'yes',
          'Set-Cookie', 'a=1',
          'Set-Cookie', 'b=2',
          'Connection', 'X-Secret-Hop',
          'X-Secret-Hop', 'no',
          'Keep-Alive', 'timeout=1',
          'Proxy-Authenticate', 'Basic',
          'Content-Type', 'text/plain',
        ]);
        res.end('short and stout');
      },
    });
    try {
      const capability = await exportConfig({ uri: `${custom.url}/teapot` });
      const result = await call(membrane.url, capability);
      assert.equal(result.status, 418);
      assert.equal(result.text, 'short and stout');
      assert.equal(result.headers['x-custom'], 'yes');
      assert.deepEqual(result.headers['set-cookie'], ['a=1', 'b=2']);
      assert.equal(result.headers['x-secret-hop'], undefined);
      assert.equal(result.headers['proxy-authenticate'], undefined);
      assert.notEqual(result.headers['keep-alive'], 'timeout=1');
    } finally {
      await custom.close();
    }
  });

  test('redirects are passed back, not followed', async () => {
    const redirecting = await startTarget({
      respond: (_req, res) => {
        res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' });
        res.end();
      },
    });
    try {
      const capability = await exportConfig({ uri: `${redirecting.url}/r` });
      const result = await call(membrane.url, capability);
      assert.equal(result.status, 302);
      assert.equal(result.headers.location, 'http://169.254.169.254/latest/meta-data/');
      assert.equal(redirecting.requests.length, 1);
    } finally {
      await redirecting.close();
    }
  });
});

describe('bodies', () => {
  test('a 20 MB chunked request body arrives intact', async () => {
    const capability = await exportConfig({ uri: `${target.url}/upload` });
    const hash = createHash('sha256');
    let sent = 0;
    const total = 20 * 1024 * 1024;
    const body = new Readable({
      read() {
        if (sent >= total) return this.push(null);
        const chunk = randomBytes(Math.min(256 * 1024, total - sent));
        sent += chunk.length;
        hash.update(chunk);
        this.push(chunk);
      },
    });
    const response = await request(membrane.url, {
      method: 'PUT',
      headers: { authorization: `Bearer ${tokenOf(capability)}` },
      body,
    });
    const echo = (await response.body.json()) as { bodyLength: number; bodySha256: string };
    assert.equal(echo.bodyLength, total);
    assert.equal(echo.bodySha256, hash.digest('hex'));
  });

  test('a binary request body with Content-Length arrives intact', async () => {
    const capability = await exportConfig({ uri: `${target.url}/upload` });
    const payload = randomBytes(100_000);
    const result = await call(membrane.url, capability, { method: 'POST', body: payload });
    assert.equal(result.json.bodyLength, payload.length);
    assert.equal(result.json.bodySha256, createHash('sha256').update(payload).digest('hex'));
  });

  test('a large response arrives intact', async () => {
    const payload = randomBytes(8 * 1024 * 1024);
    const big = await startTarget({ respond: (_req, res) => res.end(payload) });
    try {
      const capability = await exportConfig({ uri: `${big.url}/big` });
      const response = await request(membrane.url, { headers: { authorization: `Bearer ${tokenOf(capability)}` } });
      const received = Buffer.from(await response.body.arrayBuffer());
      assert.ok(received.equals(payload));
    } finally {
      await big.close();
    }
  });
});

describe('target failures', () => {
  function assertNoLeak(text: string, port: number): void {
    assert.ok(!text.includes('127.0.0.1'), text);
    assert.ok(!text.includes(String(port)), text);
    assert.ok(!/\bat \w|Error:|ECONN|UND_ERR/.test(text), text);
  }

  test('refused connection: 502 without addresses', async () => {
    const port = await unusedPort();
    const capability = await exportConfig({ uri: `http://127.0.0.1:${port}/nothing` });
    const result = await call(membrane.url, capability);
    assert.equal(result.status, 502);
    assert.deepEqual(result.json, { error: 'Bad Gateway', message: 'the target refused the connection' });
    assertNoLeak(result.text, port);
  });

  test('unresolvable host: 502', async () => {
    const capability = await exportConfig({ uri: 'http://no-such-host.invalid/x' });
    const result = await call(membrane.url, capability);
    assert.equal(result.status, 502);
    assert.equal(result.json.error, 'Bad Gateway');
    assert.ok(!result.text.includes('no-such-host'));
  });

  test('reset before answering: 502', async () => {
    const { result, port } = await invokeMisbehaving((socket) => socket.once('data', () => socket.resetAndDestroy()));
    assert.equal(result.status, 502);
    assertNoLeak(result.text, port);
  });

  test('garbage instead of HTTP: 502', async () => {
    const { result, port } = await invokeMisbehaving((socket) => socket.once('data', () => socket.end('SSH-2.0-OpenSSH\r\n\r\n')));
    assert.equal(result.status, 502);
    assertNoLeak(result.text, port);
  });

  test('silent target: 504 after the config’s timeoutMs', async () => {
    const { result, port } = await invokeMisbehaving(() => undefined, { timeoutMs: 200 });
    assert.equal(result.status, 504);
    assert.deepEqual(result.json, { error: 'Gateway Timeout', message: 'the target did not answer in time' });
    assertNoLeak(result.text, port);
  });

  test('a timeoutMs above the server’s own is capped by it (3 s here)', async () => {
    const { result } = await invokeMisbehaving(() => undefined, { timeoutMs: 3_600_000 });
    assert.equal(result.status, 504);
  });

  test('a target that dies mid-body cuts the stream to the requester', async () => {
    const server = await rawServer((socket) =>
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial');
        setTimeout(() => socket.destroy(), 50);
      }),
    );
    const capability = await exportConfig({ uri: `http://127.0.0.1:${server.port}/cut` });
    const response = await request(membrane.url, { headers: { authorization: `Bearer ${tokenOf(capability)}` } });
    assert.equal(response.statusCode, 200);
    await assert.rejects(response.body.text());
    server.close();
    assert.equal((await call(membrane.url, undefined, { path: '/healthz' })).status, 200);
  });
});

describe('early answers and pipelining', () => {
  test('a target that answers before reading the upload: the answer arrives and the connection closes', async () => {
    const early = await startTarget({ respond: () => undefined });
    const eager = await rawServer((socket) =>
      socket.once('data', () => socket.write('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope')),
    );
    try {
      const capability = await exportConfig({ uri: `http://127.0.0.1:${eager.port}/upload` });
      const socket = connect(membrane.port, '127.0.0.1');
      let response = '';
      socket.on('data', (chunk) => (response += chunk));
      socket.on('error', () => undefined);
      const closed = new Promise((resolve) => socket.on('close', resolve));
      socket.write(`PUT / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\nContent-Length: 52428800\r\n\r\n`);
      const chunk = Buffer.alloc(64 * 1024);
      const pump = (): void => {
        while (!socket.destroyed && socket.write(chunk));
        if (!socket.destroyed) socket.once('drain', pump);
      };
      pump();
      await closed;
      assert.match(response, /^HTTP\/1\.1 413 /);
      assert.match(response, /connection: close/i);
      assert.ok(response.endsWith('nope'));
      assert.equal((await call(membrane.url, undefined, { path: '/healthz' })).status, 200);
    } finally {
      eager.close();
      await early.close();
    }
  });

  test('a malformed request pipelined behind a streaming answer: the answer completes, then the connection closes', async () => {
    const slow = await startTarget({
      respond: (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('0123456789');
        setTimeout(() => res.end('abcdefghij'), 200);
      },
    });
    try {
      const capability = await exportConfig({ uri: `${slow.url}/slow` });
      const socket = connect(membrane.port, '127.0.0.1');
      let response = '';
      socket.on('data', (chunk) => (response += chunk));
      const closed = new Promise((resolve) => socket.on('close', resolve));
      socket.write(`GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(capability)}\r\n\r\n`);
      // Once the answer is streaming, send garbage on the same connection.
      await new Promise<void>((resolve) => {
        const check = (): void => (response.includes('0123456789') ? resolve() : void socket.once('data', check));
        check();
      });
      socket.write('NOT HTTP AT ALL\r\n\r\n');
      await closed;
      assert.match(response, /^HTTP\/1\.1 200 /);
      assert.equal(response.match(/HTTP\/1\.1/g)!.length, 1, response);
      assert.match(response, /0123456789[\s\S]*abcdefghij/);
    } finally {
      await slow.close();
    }
  });
});

describe('connections to targets', () => {
  test('are pooled and kept alive', async () => {
    const pooled = await startTarget();
    try {
      const capability = await exportConfig({ uri: `${pooled.url}/pool` });
      for (let i = 0; i < 30; i++) assert.equal(await membrane.control.statusOf(capability), 200);
      assert.equal(pooled.connections, 1);
    } finally {
      await pooled.close();
    }
  });
});

describe('TLS toward targets', () => {
  let pki: Pki;
  let tlsTarget: TestTarget;
  let mtlsTarget: TestTarget;

  before(async () => {
    pki = await createPki();
    tlsTarget = await startTarget({ tls: { cert: pki.serverCert, key: pki.serverKey } });
    mtlsTarget = await startTarget({
      tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert, requestCert: true, rejectUnauthorized: true },
    });
  });
  after(async () => {
    await tlsTarget.close();
    await mtlsTarget.close();
  });

  test('an untrusted certificate is a 502', async () => {
    const capability = await exportConfig({ uri: `${tlsTarget.url}/tls` });
    const result = await call(membrane.url, capability);
    assert.equal(result.status, 502);
    assert.deepEqual(result.json, { error: 'Bad Gateway', message: 'the TLS handshake with the target failed' });
  });

  test('tls.ca replaces the trust store', async () => {
    const capability = await exportConfig({ uri: `${tlsTarget.url}/tls`, tls: { ca: pki.caCert } });
    assert.equal((await call(membrane.url, capability)).status, 200);
  });

  test('tls.rejectUnauthorized false accepts an untrusted certificate', async () => {
    const capability = await exportConfig({ uri: `${tlsTarget.url}/tls`, tls: { rejectUnauthorized: false } });
    assert.equal((await call(membrane.url, capability)).status, 200);
  });

  test('tls.cert and tls.key present a client certificate', async () => {
    const without = await exportConfig({ uri: `${mtlsTarget.url}/mtls`, tls: { ca: pki.caCert } });
    assert.equal((await call(membrane.url, without)).status, 502);
    const withCert = await exportConfig({
      uri: `${mtlsTarget.url}/mtls`,
      tls: { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey },
    });
    assert.equal((await call(membrane.url, withCert)).status, 200);
    assert.equal(mtlsTarget.requests.at(-1)!.clientCertificate, 'membrane-test-client');
  });
});

interface RawServer {
  port: number;
  /** Closes the server and every connection it accepted. */
  close(): void;
}

/** A TCP server that speaks whatever `onConnection` makes it speak. */
async function rawServer(onConnection: (socket: Socket) => void): Promise<RawServer> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Invokes a new capability for a misbehaving raw target once. */
async function invokeMisbehaving(
  onConnection: (socket: Socket) => void,
  config: Record<string, unknown> = {},
): Promise<{ result: Awaited<ReturnType<typeof call>>; port: number }> {
  const server = await rawServer(onConnection);
  try {
    const capability = await exportConfig({ uri: `http://127.0.0.1:${server.port}/misbehaving`, ...config });
    return { result: await call(membrane.url, capability), port: server.port };
  } finally {
    server.close();
  }
}
