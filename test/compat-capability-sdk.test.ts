/**
 * The original client, capability-sdk 0.12.2 from npm, unmodified, against
 * a real Membrane over TLS with a private CA passed through its
 * `tls.trustedCA`.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { verifyCap1 } from '../src/signing/cap1.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { createPki, type Pki } from './helpers/pki.js';
import { startTarget, type TestTarget } from './helpers/target.js';

type Callback = (error: any, response?: any) => void;
interface OldMembrane {
  create(capability: string, membrane: { id: string }, callback: Callback): void;
  export(capability: string, config: object, callback: Callback): void;
  query(capability: string, query: object, callback: Callback): void;
  revoke(capability: string, callback: Callback): void;
  deleteSelf(capability: string, callback: Callback): void;
}
interface OldSdk {
  version: string;
  Membrane: new (config?: object) => OldMembrane;
  request(capability: string, options: object, callback?: (response: IncomingMessage) => void): import('node:http').ClientRequest;
  requestReply(capability: string, options: object, data: string | undefined, callback: Callback): void;
}

const CapabilitySDK = createRequire(import.meta.url)('capability-sdk') as OldSdk;

/** Calls a callback-style SDK method, resolving with `{error, response}` as the SDK reports them. */
function outcome(call: (callback: Callback) => void): Promise<{ error: any; response: any }> {
  return new Promise((resolve) => call((error, response) => resolve({ error, response })));
}

async function ok<T = any>(call: (callback: Callback) => void): Promise<T> {
  const { error, response } = await outcome(call);
  assert.equal(error, undefined, JSON.stringify(error));
  return response as T;
}

let pki: Pki;
let membrane: TestMembrane;
let target: TestTarget;
let sdk: OldMembrane;

before(async () => {
  pki = await createPki();
  membrane = await startTestMembrane({ tlsCert: pki.serverCertPath, tlsKey: pki.serverKeyPath });
  target = await startTarget({
    respond: (req, res, received) => {
      const isCap1 = String(req.headers.authorization ?? '').startsWith('CAP1-HMAC-SHA512');
      void (isCap1 ? verifyCap1(req, (id) => (id === 'old-sdk' ? 'b2xkLXNkay1rZXk' : undefined)) : Promise.resolve(undefined)).then((verified) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: received.body.toString(), cap1Verified: verified }));
      });
    },
  });
  sdk = new CapabilitySDK.Membrane({ tls: { trustedCA: { [membrane.authority]: pki.caCert } } });
});
after(async () => {
  await membrane.stop();
  await target.close();
});

test('it is the original 0.12.2', () => {
  assert.equal(CapabilitySDK.version, '0.12.2');
});

test('create, export (uri with headers and allowQuery; re-export; hmac), query, invoke, revoke, deleteSelf', async () => {
  const tenant = (await membrane.service.createTenant())!;
  const alice = await ok((cb) => sdk.create(tenant.create, { id: 'alice' }, cb));
  assert.equal(alice.id, 'alice');
  assert.deepEqual(Object.keys(alice.capabilities).sort(), ['export', 'revoke']);
  const bob = await ok((cb) => sdk.create(tenant.create, { id: 'bob' }, cb));
  await ok((cb) => sdk.create(tenant.create, { id: 'carol' }, cb));

  const exported = await ok((cb) =>
    sdk.export(alice.capabilities.export, { uri: `${target.url}/orders?region=eu`, headers: { 'X-Api-Key': 'k-123' }, allowQuery: true, method: 'POST' }, cb),
  );
  assert.match(exported.capability, /^cpblty:\/\/localhost:\d+\/#CPBLTY1-/);
  const reExported = await ok((cb) => sdk.export(bob.capabilities.export, { capability: exported.capability }, cb));
  const signed = await ok((cb) =>
    sdk.export(alice.capabilities.export, { uri: `${target.url}/signed`, hmac: { 'cap1-hmac-sha512': { key: 'b2xkLXNkay1rZXk', keyId: 'old-sdk' } } }, cb),
  );
  const aws = await ok((cb) =>
    sdk.export(
      alice.capabilities.export,
      { uri: `${target.url}/2015-03-31/functions/f/invocations`, hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret', region: 'us-east-1', service: 'lambda' } } },
      cb,
    ),
  );

  const byId = await ok((cb) => sdk.query(tenant.query, { id: 'bob' }, cb));
  assert.deepEqual(byId, { membranes: [{ id: 'bob', capabilities: bob.capabilities }], completed: true });
  const limited = await ok((cb) => sdk.query(tenant.query, { limit: 2 }, cb));
  assert.deepEqual(limited.membranes.map((m: { id: string }) => m.id), ['alice', 'bob']);
  assert.equal(limited.completed, false);
  const rest = await ok((cb) => sdk.query(tenant.query, { lastId: 'bob', limit: 2 }, cb));
  assert.deepEqual(rest.membranes.map((m: { id: string }) => m.id), ['carol']);
  assert.equal(rest.completed, true);
  const first = await ok((cb) => sdk.query(tenant.query, {}, cb));
  assert.equal(first.membranes.length, 1);

  // requestReply: JSON in, JSON out; the config's method, headers and query rules apply.
  const reply = await ok((cb) =>
    CapabilitySDK.requestReply(reExported.capability, { ca: pki.caCert, method: 'PUT', path: '/ignored?page=2', headers: { 'content-type': 'application/json' } }, '{"n":1}', cb),
  );
  assert.equal(reply.method, 'POST');
  assert.equal(reply.url, '/orders?region=eu&page=2');
  assert.equal(reply.headers['x-api-key'], 'k-123');
  assert.equal(reply.headers.authorization, undefined);
  assert.equal(reply.body, '{"n":1}');

  const signedReply = await ok((cb) => CapabilitySDK.requestReply(signed.capability, { ca: pki.caCert }, undefined, cb));
  assert.equal(signedReply.cap1Verified, true);
  const awsReply = await ok((cb) => CapabilitySDK.requestReply(aws.capability, { ca: pki.caCert, method: 'POST' }, '{}', cb));
  assert.match(awsReply.headers.authorization, /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/us-east-1\/lambda\/aws4_request/);

  // request: a plain https.ClientRequest, streamed.
  const streamed = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = CapabilitySDK.request(exported.capability, { ca: pki.caCert, method: 'POST' }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, body }));
    });
    req.on('error', reject);
    req.end('streamed');
  });
  assert.equal(streamed.status, 200);
  assert.equal(JSON.parse(streamed.body).body, 'streamed');

  // revoke (the SDK sends GET): 202 twice; everything below bob dies, alice's own export lives.
  assert.deepEqual(await ok((cb) => sdk.revoke(bob.capabilities.revoke, cb)), { statusCode: 202, message: 'Accepted' });
  assert.deepEqual(await ok((cb) => sdk.revoke(bob.capabilities.revoke, cb)), { statusCode: 202, message: 'Accepted' });
  const dead = await outcome((cb) => CapabilitySDK.requestReply(reExported.capability, { ca: pki.caCert }, undefined, cb));
  assert.deepEqual(dead.error, { error: 'Unauthorized', statusCode: 401, message: 'a valid capability token is required (Authorization: Bearer CPBLTY1-…)' });
  assert.equal((await ok((cb) => CapabilitySDK.requestReply(exported.capability, { ca: pki.caCert }, undefined, cb))).url, '/orders?region=eu');
  const afterRevoke = await ok((cb) => sdk.query(tenant.query, { limit: 10 }, cb));
  assert.deepEqual(afterRevoke.membranes.map((m: { id: string }) => m.id), ['alice', 'carol']);

  // Server-side refusals reach the SDK's callback as {error, statusCode, message}.
  const duplicate = await outcome((cb) => sdk.create(tenant.create, { id: 'alice' }, cb));
  assert.deepEqual(duplicate.error, { error: 'Conflict', statusCode: 409, message: 'a membrane with id "alice" already exists' });

  // deleteSelf: 202, then the tenant's root capabilities answer 401 to the SDK.
  assert.deepEqual(await ok((cb) => sdk.deleteSelf(tenant.deleteSelf, cb)), { statusCode: 202, message: 'Accepted' });
  const gone = await outcome((cb) => sdk.query(tenant.query, {}, cb));
  assert.equal(gone.error.statusCode, 401);
  assert.equal(gone.error.error, 'Unauthorized');
  const goneInvoke = await outcome((cb) => CapabilitySDK.requestReply(exported.capability, { ca: pki.caCert }, undefined, cb));
  assert.equal(goneInvoke.error.statusCode, 401);
});
