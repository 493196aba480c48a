/** Membrane's own SDK against real servers, over HTTP and over HTTPS with a private CA. */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { InvalidCapabilityError, Membrane, MembraneConnectionError, MembraneHttpError, request, requestReply, verifyCap1, type ClientOptions } from '../src/sdk/index.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { createPki, type Pki } from './helpers/pki.js';
import { startTarget, type TestTarget } from './helpers/target.js';

let pki: Pki;
let target: TestTarget;
before(async () => {
  pki = await createPki();
  target = await startTarget();
});
after(() => target.close());

for (const transport of ['http', 'https'] as const) {
  describe(`SDK over ${transport}`, () => {
    let membrane: TestMembrane;
    let options: ClientOptions;
    let client: Membrane;

    before(async () => {
      membrane = await startTestMembrane(transport === 'https' ? { tlsCert: pki.serverCertPath, tlsKey: pki.serverKeyPath } : {});
      options = transport === 'https' ? { ca: pki.caCert } : { scheme: 'http' };
      client = new Membrane(options);
    });
    after(() => membrane.stop());

    test('create, export, invoke with request and requestReply', async () => {
      const created = await client.create(membrane.roots.create, { id: 'sdk' });
      assert.equal(created.id, 'sdk');
      assert.match(created.capabilities.export, /^cpblty:\/\//);
      const { capability } = await client.export(created.capabilities.export, {
        uri: `${target.url}/sdk?fixed=1`,
        headers: { 'X-Injected': 'secret' },
        allowQuery: true,
      });
      const echo = await requestReply<{ method: string; url: string; rawHeaders: string[] }>(capability, {
        ...options,
        method: 'PUT',
        query: { page: '2', q: 'a b' },
        headers: { 'x-from-caller': 'yes', Authorization: 'Bearer ignored' },
        body: 'hello',
      });
      assert.equal(echo.method, 'PUT');
      assert.equal(echo.url, '/sdk?fixed=1&page=2&q=a%20b');
      assert.ok(echo.rawHeaders.includes('X-Injected') && echo.rawHeaders.includes('secret'));
      assert.ok(echo.rawHeaders.includes('x-from-caller'));

      const payload = randomBytes(2 * 1024 * 1024);
      const response = await request(capability, { ...options, method: 'POST', body: Readable.from([payload.subarray(0, 1 << 20), payload.subarray(1 << 20)]) });
      assert.equal(response.status, 200);
      assert.equal(response.headers['x-target'], 'echo');
      const chunks: Buffer[] = [];
      for await (const chunk of response.body) chunks.push(chunk as Buffer);
      const streamed = JSON.parse(Buffer.concat(chunks).toString()) as { bodyLength: number; bodySha256: string };
      assert.equal(streamed.bodyLength, payload.length);
      assert.equal(streamed.bodySha256, createHash('sha256').update(payload).digest('hex'));
    });

    test('re-export, query by id and with a limit, queryAll over every page', async () => {
      const tenant = (await membrane.service.createTenant())!;
      const ids = Array.from({ length: 25 }, (_, i) => `m${String(i).padStart(2, '0')}`);
      for (const id of [...ids].reverse()) await client.create(tenant.create, { id });
      const first = await client.query(tenant.query, { limit: 10 });
      assert.equal(first.membranes.length, 10);
      assert.equal(first.completed, false);
      const one = await client.query(tenant.query, { id: 'm07' });
      assert.deepEqual(one.membranes.map((m) => m.id), ['m07']);
      assert.equal(one.completed, true);
      const seen: string[] = [];
      for await (const m of client.queryAll(tenant.query, { limit: 10 })) seen.push(m.id);
      assert.deepEqual(seen, ids);
      const defaultPaging: string[] = [];
      for await (const m of client.queryAll(tenant.query)) defaultPaging.push(m.id);
      assert.deepEqual(defaultPaging, ids);

      const a = await client.create(tenant.create, { id: 'owner' });
      const b = await client.create(tenant.create, { id: 'delegate' });
      const original = (await client.export(a.capabilities.export, { uri: `${target.url}/chain` })).capability;
      const delegated = (await client.export(b.capabilities.export, { capability: original })).capability;
      assert.equal((await requestReply<{ url: string }>(delegated, options)).url, '/chain');
    });

    test('revoke and deleteSelf; dead capabilities raise MembraneHttpError 401', async () => {
      const tenant = (await membrane.service.createTenant())!;
      const m = await client.create(tenant.create, { id: 'doomed' });
      const { capability } = await client.export(m.capabilities.export, { uri: `${target.url}/x` });
      await client.revoke(m.capabilities.revoke);
      await client.revoke(m.capabilities.revoke);
      const error = await requestReply(capability, options).catch((e: unknown) => e);
      assert.ok(error instanceof MembraneHttpError);
      assert.equal(error.status, 401);
      assert.equal(error.error, 'Unauthorized');
      assert.match(error.message, /valid capability token is required/);
      await client.deleteSelf(tenant.deleteSelf);
      await assert.rejects(client.query(tenant.query), (e: unknown) => e instanceof MembraneHttpError && e.status === 401);
    });

    test('errors carry the status and the server’s error and message', async () => {
      const m = await client.create(membrane.roots.create, { id: 'conflict' });
      await assert.rejects(client.create(membrane.roots.create, { id: 'conflict' }), (e: unknown) => {
        assert.ok(e instanceof MembraneHttpError);
        assert.deepEqual([e.status, e.error, e.message], [409, 'Conflict', 'a membrane with id "conflict" already exists']);
        return true;
      });
      await assert.rejects(client.export(m.capabilities.export, { uri: 'ftp://x/' }), (e: unknown) => {
        assert.ok(e instanceof MembraneHttpError);
        assert.deepEqual([e.status, e.error, e.message], [400, 'Bad Request', 'config.uri must use the http or https scheme']);
        return true;
      });
      await assert.rejects(client.query(membrane.roots.query, { limit: 0 }), (e: unknown) => e instanceof MembraneHttpError && e.status === 400);
      // An exported capability's error status comes from its target, as it is.
      const failing = await startTarget({ respond: (_req, res) => res.writeHead(503, { 'content-type': 'text/plain' }).end('down for maintenance') });
      try {
        const { capability } = await client.export(m.capabilities.export, { uri: `${failing.url}/x` });
        await assert.rejects(requestReply(capability, options), (e: unknown) => {
          assert.ok(e instanceof MembraneHttpError);
          assert.deepEqual([e.status, e.error, e.message], [503, 'Service Unavailable', 'down for maintenance']);
          return true;
        });
        assert.equal((await request(capability, options)).status, 503);
      } finally {
        await failing.close();
      }
    });

    test('a string that is not a capability URI is refused before any request', async () => {
      for (const bad of ['', 'CPBLTY1-abc', `https://localhost/#CPBLTY1-${'A'.repeat(86)}`, 'cpblty://x/#nope']) {
        await assert.rejects(requestReply(bad, options), InvalidCapabilityError);
        await assert.rejects(client.create(bad, { id: 'x' }), InvalidCapabilityError);
      }
    });

    test('an answer other than the contract’s success (a redirect, a 204) is an error, not a silent success', async () => {
      for (const [status, headers] of [[301, { location: 'https://elsewhere.example/' }], [204, {}], [200, { 'content-type': 'application/json' }]] as const) {
        const impostor = await startTarget({ respond: (_req, res) => res.writeHead(status, headers).end(status === 200 ? '{"unexpected":true}' : undefined) });
        try {
          const wrong = new Membrane({ address: impostor.url });
          for (const call of [
            () => wrong.revoke(membrane.roots.query),
            () => wrong.deleteSelf(membrane.roots.query),
            () => wrong.create(membrane.roots.create, { id: 'x' }),
            () => wrong.export(membrane.roots.create, { uri: 'https://x.example/' }),
            () => wrong.query(membrane.roots.query),
          ]) {
            await assert.rejects(call(), (e: unknown) => e instanceof MembraneHttpError && e.status === status, `status ${status}`);
          }
        } finally {
          await impostor.close();
        }
      }
    });

    test('address overrides the authority', async () => {
      const viaAddress = new Membrane({ ...options, address: membrane.url });
      const bogus = membrane.roots.query.replace(/^cpblty:\/\/[^/]+\//, 'cpblty://unreachable.invalid:1/');
      assert.deepEqual((await viaAddress.query(bogus, { id: 'sdk' })).membranes.map((m) => m.id), ['sdk']);
    });
  });
}

describe('SDK transport choices', () => {
  test('https is the default, and an untrusted certificate is a connection error', async () => {
    const membrane = await startTestMembrane({ tlsCert: pki.serverCertPath, tlsKey: pki.serverKeyPath });
    try {
      await assert.rejects(new Membrane().query(membrane.roots.query), (e: unknown) => e instanceof MembraneConnectionError && /no answer from https:\/\/localhost:\d+/.test(e.message));
      await assert.rejects(new Membrane({ scheme: 'http' }).query(membrane.roots.query), MembraneConnectionError);
      assert.equal((await new Membrane({ ca: pki.caCert }).query(membrane.roots.query)).completed, true);
    } finally {
      await membrane.stop();
    }
  });

  test('a capability URI whose authority is not host[:port] is refused', async () => {
    await assert.rejects(requestReply(`cpblty://[::1/#CPBLTY1-${'A'.repeat(86)}`), InvalidCapabilityError);
  });

  test('verifyCap1 is exported by the SDK', () => {
    assert.equal(typeof verifyCap1, 'function');
  });
});
