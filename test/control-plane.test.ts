/**
 * Every kind of capability in DESIGN.md's table, with its methods, shapes
 * and status codes, and every error status of the Errors section, against
 * a real server.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { call, tokenOf } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

const URI = /^cpblty:\/\/localhost:\d+\/#CPBLTY1-[A-Za-z0-9_-]{86}$/;
const ACCEPTED = { statusCode: 202, message: 'Accepted' };

let membrane: TestMembrane;
let target: TestTarget;

before(async () => {
  membrane = await startTestMembrane();
  target = await startTarget();
});
after(async () => {
  await membrane.stop();
  await target.close();
});

const UNAUTHORIZED_MESSAGE = 'a valid capability token is required (Authorization: Bearer CPBLTY1-…)';

/** Writes raw bytes to the server and returns everything it answers until it closes the connection. */
async function rawExchange(...writes: (string | (() => Promise<unknown>))[]): Promise<string> {
  const socket = connect(membrane.port, '127.0.0.1');
  let response = '';
  socket.on('data', (chunk) => (response += chunk));
  const closed = new Promise((resolve) => socket.on('close', resolve));
  for (const write of writes) {
    if (typeof write === 'string') socket.write(write);
    else await write();
  }
  await closed;
  return response;
}

function assertError(result: { status: number; json: any; headers: any }, status: number, reason: string, message?: RegExp): void {
  assert.equal(result.status, status, JSON.stringify(result.json));
  assert.deepEqual(Object.keys(result.json).sort(), ['error', 'message']);
  assert.equal(result.json.error, reason);
  assert.equal(typeof result.json.message, 'string');
  assert.match(String(result.headers['content-type']), /^application\/json/);
  if (message !== undefined) assert.match(result.json.message, message);
}

describe('tenant root capabilities', () => {
  test('bootstrap gives three distinct capability URIs on the configured authority', () => {
    const { create, query, deleteSelf } = membrane.roots;
    for (const uri of [create, query, deleteSelf]) assert.match(uri, URI);
    assert.equal(new Set([create, query, deleteSelf]).size, 3);
    assert.ok(create.startsWith(`cpblty://${membrane.authority}/#`));
  });

  test('create: POST {"id"} answers 201 {id, capabilities: {export, revoke}}', async () => {
    const result = await call(membrane.url, membrane.roots.create, { body: { id: 'shape' } });
    assert.equal(result.status, 201);
    assert.deepEqual(Object.keys(result.json).sort(), ['capabilities', 'id']);
    assert.equal(result.json.id, 'shape');
    assert.deepEqual(Object.keys(result.json.capabilities).sort(), ['export', 'revoke']);
    assert.match(result.json.capabilities.export, URI);
    assert.match(result.json.capabilities.revoke, URI);
    assert.equal(result.headers['cache-control'], 'no-store');
  });

  test('create accepts ids of 1 and 512 characters, including non-ASCII', async () => {
    for (const id of ['x', 'é'.repeat(512), '🦊 fox', 'a/b?c#d']) {
      const result = await call(membrane.url, membrane.roots.create, { body: { id } });
      assert.equal(result.status, 201, `${id}: ${result.text}`);
      assert.equal(result.json.id, id);
    }
  });

  test('create refuses bad bodies with 400 naming the problem', async () => {
    const cases: [unknown, RegExp][] = [
      [{}, /missing field membrane\.id/],
      [{ id: '' }, /membrane\.id must not be empty/],
      [{ id: 'x'.repeat(513) }, /membrane\.id must be at most 512 characters/],
      [{ id: 7 }, /membrane\.id must be a string/],
      [{ id: 'ok', extra: true }, /unknown field membrane\.extra/],
      [{ id: 'bell\u0007' }, /control characters/],
      [[], /membrane must be an object/],
      ['"id"', /membrane must be an object/],
    ];
    for (const [body, message] of cases) {
      assertError(await call(membrane.url, membrane.roots.create, { body }), 400, 'Bad Request', message);
    }
  });

  test('create with a duplicate live id answers 409', async () => {
    await membrane.control.createMembrane(membrane.roots.create, 'dup');
    assertError(await call(membrane.url, membrane.roots.create, { body: { id: 'dup' } }), 409, 'Conflict', /"dup" already exists/);
  });

  test('create refuses invalid JSON, invalid UTF-8, a byte order mark and an empty body', async () => {
    const bodies: [string | Buffer, RegExp][] = [
      ['{"id":', /not valid JSON/],
      ['{"id":"a"} trailing', /not valid JSON/],
      [Buffer.from([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), /not valid UTF-8/],
      [Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"id":"bom"}')]), /not valid JSON/],
      ['', /empty/],
    ];
    for (const [body, message] of bodies) {
      assertError(await call(membrane.url, membrane.roots.create, { method: 'POST', body }), 400, 'Bad Request', message);
    }
  });

  test('a control-plane body over the limit answers 413 before it is read', async () => {
    const big = JSON.stringify({ id: 'x'.repeat(70_000) });
    assertError(await call(membrane.url, membrane.roots.create, { body: big }), 413, 'Payload Too Large');
  });

  test('413 is sent on Content-Length alone, without waiting for the body', async () => {
    const socket = connect(membrane.port, '127.0.0.1');
    socket.write(
      `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(membrane.roots.create)}\r\n` +
        `Content-Length: 100000000\r\n\r\n{"id":`,
    );
    let response = '';
    socket.on('data', (chunk) => (response += chunk));
    await new Promise((resolve) => socket.on('close', resolve));
    assert.match(response, /^HTTP\/1\.1 413 /);
    assert.match(response, /connection: close/i);
    assert.match(response, /"error":"Payload Too Large"/);
  });

  test('query: GET answers 200 {membranes: [{id, capabilities}], completed}', async () => {
    const created = await membrane.control.createMembrane(membrane.roots.create, 'query-shape');
    const result = await call(membrane.url, membrane.roots.query, { path: '/?id=query-shape' });
    assert.equal(result.status, 200);
    assert.deepEqual(result.json, { membranes: [{ id: 'query-shape', capabilities: created }], completed: true });
  });

  test('deleteSelf: 202 {statusCode, message} for GET, POST and DELETE; root capabilities then die', async () => {
    for (const method of ['GET', 'POST', 'DELETE']) {
      const tenant = (await membrane.service.createTenant())!;
      const m = await membrane.control.createMembrane(tenant.create, 'doomed');
      const exported = await membrane.control.export(m.export, { uri: `${target.url}/x` });
      assert.equal(await membrane.control.statusOf(exported), 200);
      const result = await call(membrane.url, tenant.deleteSelf, { method });
      assert.equal(result.status, 202);
      assert.deepEqual(result.json, ACCEPTED);
      for (const dead of [tenant.create, tenant.query, tenant.deleteSelf, m.export, exported]) {
        assert.equal((await call(membrane.url, dead, { method: 'POST', body: { id: 'again' } })).status, 401);
      }
      // The membrane's revoke capability stays idempotent.
      assert.deepEqual((await call(membrane.url, m.revoke)).json, ACCEPTED);
    }
  });

  test('deleteSelf leaves other tenants alone', async () => {
    const doomed = (await membrane.service.createTenant())!;
    const other = (await membrane.service.createTenant())!;
    const m = await membrane.control.createMembrane(other.create, 'survivor');
    const exported = await membrane.control.export(m.export, { uri: `${target.url}/x` });
    assert.equal((await call(membrane.url, doomed.deleteSelf, { method: 'DELETE' })).status, 202);
    assert.equal(await membrane.control.statusOf(exported), 200);
    assert.equal((await call(membrane.url, other.query)).status, 200);
  });

  test('a tenant cannot see or reuse another tenant’s membranes', async () => {
    const a = (await membrane.service.createTenant())!;
    const b = (await membrane.service.createTenant())!;
    await membrane.control.createMembrane(a.create, 'shared-name');
    await membrane.control.createMembrane(b.create, 'shared-name');
    const result = await call(membrane.url, b.query, { path: '/?limit=10' });
    assert.deepEqual(result.json.membranes.map((m: { id: string }) => m.id), ['shared-name']);
  });
});

describe('membrane capabilities', () => {
  test('export: POST config answers 201 {capability}', async () => {
    const m = await membrane.control.createMembrane(membrane.roots.create, 'exporter');
    const result = await call(membrane.url, m.export, { body: { uri: `${target.url}/x` } });
    assert.equal(result.status, 201);
    assert.deepEqual(Object.keys(result.json), ['capability']);
    assert.match(result.json.capability, URI);
  });

  test('revoke: 202 for GET, POST and DELETE, and 202 again when repeated', async () => {
    for (const method of ['GET', 'POST', 'DELETE']) {
      const m = await membrane.control.createMembrane(membrane.roots.create, `revoked-${method}`);
      for (let i = 0; i < 2; i++) {
        const result = await call(membrane.url, m.revoke, { method });
        assert.equal(result.status, 202);
        assert.deepEqual(result.json, ACCEPTED);
      }
      assert.equal((await call(membrane.url, m.export, { body: { uri: `${target.url}/x` } })).status, 401);
    }
  });

  test('an export whose body is still arriving when its membrane is revoked exports nothing: 401', async () => {
    const m = await membrane.control.createMembrane(membrane.roots.create, 'racing');
    const body = JSON.stringify({ uri: `${target.url}/late` });
    const response = await rawExchange(
      `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenOf(m.export)}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.slice(0, 5)}`,
      async () => assert.equal((await call(membrane.url, m.revoke, { method: 'DELETE' })).status, 202),
      body.slice(5),
    );
    assert.match(response, /^HTTP\/1\.1 401 /);
    assert.ok(response.endsWith(JSON.stringify({ error: 'Unauthorized', message: UNAUTHORIZED_MESSAGE })));
  });

  test('a revoked membrane vanishes from query and its id can be reused', async () => {
    const first = await membrane.control.createMembrane(membrane.roots.create, 'reused');
    await membrane.control.revoke(first.revoke);
    assert.deepEqual((await call(membrane.url, membrane.roots.query, { path: '/?id=reused' })).json, {
      membranes: [],
      completed: true,
    });
    const second = await membrane.control.createMembrane(membrane.roots.create, 'reused');
    assert.notEqual(second.export, first.export);
    assert.deepEqual((await call(membrane.url, membrane.roots.query, { path: '/?id=reused' })).json.membranes, [
      { id: 'reused', capabilities: second },
    ]);
    // The old revoke capability still answers 202 but does not touch the new membrane.
    assert.equal((await call(membrane.url, first.revoke)).status, 202);
    assert.equal((await call(membrane.url, second.export, { body: { uri: `${target.url}/x` } })).status, 201);
  });
});

describe('methods', () => {
  test('each kind answers 405 with Allow to methods it does not accept', async () => {
    const m = await membrane.control.createMembrane(membrane.roots.create, 'methods');
    const cases: [string, string[], string][] = [
      [membrane.roots.create, ['GET', 'PUT', 'DELETE', 'PATCH'], 'POST'],
      [membrane.roots.query, ['POST', 'PUT', 'DELETE'], 'GET'],
      [membrane.roots.deleteSelf, ['PUT', 'PATCH'], 'GET, POST, DELETE'],
      [m.export, ['GET', 'PUT', 'DELETE'], 'POST'],
      [m.revoke, ['PUT', 'PATCH'], 'GET, POST, DELETE'],
    ];
    for (const [capability, methods, allow] of cases) {
      for (const method of methods) {
        const result = await call(membrane.url, capability, { method });
        assertError(result, 405, 'Method Not Allowed', new RegExp(`not ${method}`));
        assert.equal(result.headers.allow, allow);
      }
    }
    // Nothing above had an effect.
    assert.equal((await call(membrane.url, membrane.roots.query)).status, 200);
    assert.equal((await call(membrane.url, m.export, { body: { uri: `${target.url}/x` } })).status, 201);
  });

  test('CONNECT is refused with a JSON 405', async () => {
    const socket = connect(membrane.port, '127.0.0.1');
    socket.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    let response = '';
    socket.on('data', (chunk) => (response += chunk));
    await new Promise((resolve) => socket.on('close', resolve));
    assert.match(response, /^HTTP\/1\.1 405 /);
    assert.match(response, /"error":"Method Not Allowed"/);
  });
});

describe('uniform 401', () => {
  test('missing, malformed, unknown and revoked tokens get identical answers', async () => {
    const m = await membrane.control.createMembrane(membrane.roots.create, 'to-revoke');
    const exported = await membrane.control.export(m.export, { uri: `${target.url}/x` });
    await membrane.control.revoke(m.revoke);
    const unknown = `CPBLTY1-${'A'.repeat(86)}`;
    const attempts: (Record<string, string> | undefined)[] = [
      undefined,
      { authorization: 'Bearer' },
      { authorization: 'Bearer not-a-token' },
      { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` },
      { authorization: `Bearer ${unknown.slice(0, -1)}` },
      { authorization: `Bearer ${unknown}x` },
      { authorization: `Bearer CPBLTY2-${'A'.repeat(86)}` },
      { authorization: `Bearer ${unknown}` },
      { authorization: `Bearer ${tokenOf(m.export)}` },
      { authorization: `Bearer ${tokenOf(exported)}` },
    ];
    const answers = [];
    for (const headers of attempts) {
      for (const method of ['GET', 'POST']) {
        const result = await call(membrane.url, undefined, { method, headers: headers ?? {}, body: method === 'POST' ? '{}' : undefined });
        assert.equal(result.status, 401);
        assert.equal(result.headers['www-authenticate'], 'Bearer');
        answers.push(result.text);
      }
    }
    assert.equal(new Set(answers).size, 1);
    assertError(await call(membrane.url, undefined), 401, 'Unauthorized');
  });

  test('the scheme name is case-insensitive', async () => {
    const result = await call(membrane.url, undefined, { headers: { authorization: `bearer ${tokenOf(membrane.roots.query)}` } });
    assert.equal(result.status, 200);
  });

  test('two Authorization headers are refused with the same 401, not guessed between', async () => {
    const token = tokenOf(membrane.roots.query);
    for (const second of [token, `CPBLTY1-${'B'.repeat(86)}`]) {
      const response = await rawExchange(
        `GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nAuthorization: Bearer ${second}\r\nConnection: close\r\n\r\n`,
      );
      assert.match(response, /^HTTP\/1\.1 401 /);
      assert.match(response, /www-authenticate: Bearer/i);
      assert.ok(response.endsWith(JSON.stringify({ error: 'Unauthorized', message: UNAUTHORIZED_MESSAGE })));
    }
  });

  test('the request path never matters, only the token', async () => {
    for (const path of ['/', '/anything', '/healthz', '/a/b/../c?x=1']) {
      assert.equal((await call(membrane.url, membrane.roots.query, { path: path.replace('?x=1', '') })).status, 200);
    }
  });
});

describe('health', () => {
  test('GET /healthz without Authorization answers 200', async () => {
    const result = await call(membrane.url, undefined, { path: '/healthz' });
    assert.equal(result.status, 200);
    assert.deepEqual(result.json, { status: 'ok' });
  });
});

describe('malformed HTTP', () => {
  test('a request Node cannot parse gets a JSON 400 and the server carries on', async () => {
    const socket = connect(membrane.port, '127.0.0.1');
    socket.write('GET /a b HTTP/1.1\r\nHost: x\r\n\r\n');
    let response = '';
    socket.on('data', (chunk) => (response += chunk));
    await new Promise((resolve) => socket.on('close', resolve));
    assert.match(response, /^HTTP\/1\.1 400 /);
    assert.match(response, /"error":"Bad Request"/);
    assert.equal((await call(membrane.url, undefined, { path: '/healthz' })).status, 200);
  });
});
