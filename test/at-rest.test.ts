/**
 * Secrets at rest: after a session that exercises every kind of capability
 * and every secret-bearing config field, no token and no secret appears in
 * any file of the data directory (database, WAL, shared memory), whether
 * the server is still running or has shut down; and no control-plane
 * response echoes a secret.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { call, tokenOf } from './helpers/client.js';
import { startTestMembrane } from './helpers/membrane.js';
import { createPki } from './helpers/pki.js';
import { startTarget } from './helpers/target.js';

/** Every form a token could take on disk: its text, and its 64 bytes. */
function tokenForms(capability: string): Buffer[] {
  const token = tokenOf(capability);
  return [Buffer.from(token), Buffer.from(token.slice('CPBLTY1-'.length), 'base64url')];
}

async function scan(dir: string, needles: Map<string, Buffer>): Promise<string[]> {
  const found: string[] = [];
  const files = await readdir(dir);
  assert.ok(files.length >= 2, `expected store files in ${dir}: ${files}`);
  for (const file of files) {
    const content = await readFile(join(dir, file));
    for (const [name, needle] of needles) {
      if (content.includes(needle)) found.push(`${name} in ${file}`);
    }
  }
  return found;
}

test('no token or secret is stored in the clear, and none is echoed', async () => {
  const membrane = await startTestMembrane();
  const target = await startTarget();
  const pki = await createPki();
  const needles = new Map<string, Buffer>();
  const secrets = {
    headerValue: 'hv-3f9a1c7e-DO-NOT-STORE',
    authorization: 'Bearer upstream-7d1e0b55-DO-NOT-STORE',
    queryKey: 'qk-88c2a4f1-DO-NOT-STORE',
    awsSecret: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCY-DO-NOT-STORE',
    awsSession: 'AQoDYXdzEPT-session-DO-NOT-STORE',
    cap1Key: 'Y2FwMS1rZXktRE8tTk9ULVNUT1JF',
  };
  for (const [name, value] of Object.entries(secrets)) needles.set(name, Buffer.from(value));
  // A distinctive line from the middle of the client's private key.
  needles.set('tlsKey', Buffer.from(pki.clientKey.split('\n')[2]!));

  const addToken = (label: string, capability: string): void => {
    tokenForms(capability).forEach((form, i) => needles.set(`${label}#${i}`, form));
  };
  for (const [name, uri] of Object.entries(membrane.roots)) addToken(`root.${name}`, uri);

  const responses: string[] = [];
  const c = membrane.control;
  const tenant = (await membrane.service.createTenant())!;
  for (const [name, uri] of Object.entries(tenant)) addToken(`tenant2.${name}`, uri);
  const configs = [
    { uri: `${target.url}/plain` },
    { uri: `${target.url}/h?api_key=${secrets.queryKey}`, headers: { 'X-Api-Key': secrets.headerValue, Authorization: secrets.authorization } },
    { uri: 'https://example.com/tls', tls: { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey } },
    { uri: 'https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/f/invocations', hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKIDEXAMPLE', secretAccessKey: secrets.awsSecret, region: 'us-east-1', service: 'lambda', sessionToken: secrets.awsSession } } },
    { uri: `${target.url}/cap1`, hmac: { 'cap1-hmac-sha512': { key: secrets.cap1Key, keyId: 'kid' } } },
  ];
  for (const [i, create] of [membrane.roots.create, tenant.create].entries()) {
    for (const id of ['one', 'two']) {
      const m = await c.createMembrane(create, id);
      addToken(`membrane${i}.${id}.export`, m.export);
      addToken(`membrane${i}.${id}.revoke`, m.revoke);
      for (const [j, config] of configs.entries()) {
        const result = await call(membrane.url, m.export, { body: config });
        assert.equal(result.status, 201);
        responses.push(result.text);
        addToken(`exported${i}.${id}.${j}`, result.json.capability);
        const reExported = await c.export(m.export, { capability: result.json.capability });
        addToken(`reexported${i}.${id}.${j}`, reExported);
        if (j === 1) assert.equal(await c.statusOf(reExported), 200);
      }
    }
    const queried = await call(membrane.url, i === 0 ? membrane.roots.query : tenant.query, { path: '/?limit=10' });
    responses.push(queried.text);
  }
  const revoked = await c.createMembrane(membrane.roots.create, 'revoked');
  addToken('revoked.export', revoked.export);
  addToken('revoked.revoke', revoked.revoke);
  await c.revoke(revoked.revoke);
  assert.equal((await call(membrane.url, tenant.deleteSelf, { method: 'DELETE' })).status, 202);

  assert.ok(needles.size > 90, `${needles.size} needles`);
  assert.deepEqual(await scan(membrane.dataDir, needles), [], 'while running');
  for (const response of responses) {
    for (const value of Object.values(secrets)) assert.ok(!response.includes(value), response);
    assert.ok(!response.includes('PRIVATE KEY'));
  }

  await membrane.stop({ keepData: true });
  await target.close();
  assert.deepEqual(await scan(membrane.dataDir, needles), [], 'after shutdown');

  // The scan itself can see a leak: a planted token and secret are found.
  await writeFile(join(membrane.dataDir, 'canary'), Buffer.concat([tokenForms(membrane.roots.create)[1]!, Buffer.from(secrets.awsSecret)]));
  assert.deepEqual((await scan(membrane.dataDir, needles)).sort(), ['awsSecret in canary', 'root.create#1 in canary']);
  await rm(membrane.dataDir, { recursive: true, force: true });
});
