/** Export config validation, through a real server: each bad config is a 400 naming the field. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { call } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { createPki, type Pki } from './helpers/pki.js';

let membrane: TestMembrane;
let exportCap: string;
let pki: Pki;
let otherPki: Pki;

before(async () => {
  membrane = await startTestMembrane();
  exportCap = (await membrane.control.createMembrane(membrane.roots.create, 'configs')).export;
  [pki, otherPki] = await Promise.all([createPki(), createPki()]);
});
after(() => membrane.stop());

const T = 'https://api.example.com/v1/thing';
const AWS = { awsAccessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalr/K7MDENG', region: 'us-east-1', service: 'lambda' };
const CAP1 = { key: 'bXlTZWNyZXQ', keyId: 'someId' };

async function expect400(config: unknown, message: RegExp): Promise<void> {
  const result = await call(membrane.url, exportCap, { body: config });
  assert.equal(result.status, 400, `${JSON.stringify(config)} -> ${result.status} ${result.text}`);
  assert.equal(result.json.error, 'Bad Request');
  assert.match(result.json.message, message, JSON.stringify(config));
}

async function expect201(config: unknown): Promise<string> {
  const result = await call(membrane.url, exportCap, { body: config });
  assert.equal(result.status, 201, `${JSON.stringify(config)} -> ${result.status} ${result.text}`);
  return result.json.capability;
}

describe('accepted configs', () => {
  test('every uri option, alone and together', async () => {
    await expect201({ uri: T });
    await expect201({ uri: 'http://127.0.0.1:9/x?y=1' });
    await expect201({ uri: T, method: 'PATCH' });
    await expect201({ uri: T, headers: { 'X-Api-Key': 'k', Authorization: 'Bearer upstream' } });
    await expect201({ uri: T, headers: {} });
    await expect201({ uri: T, allowQuery: true });
    await expect201({ uri: T, timeoutMs: 2500 });
    await expect201({ uri: T, tls: { rejectUnauthorized: false } });
    await expect201({ uri: T, tls: { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey, rejectUnauthorized: true } });
    await expect201({ uri: T, tls: { ca: pki.caCert + otherPki.caCert } });
    await expect201({ uri: T, hmac: { 'aws4-hmac-sha256': AWS } });
    await expect201({ uri: T, hmac: { 'aws4-hmac-sha256': { ...AWS, sessionToken: 'AQoDYXdzEPT//////////wEXAMPLE==' } } });
    await expect201({ uri: T, hmac: { 'cap1-hmac-sha512': CAP1 } });
    await expect201({
      uri: T,
      method: 'POST',
      headers: { 'X-One': '1' },
      allowQuery: true,
      timeoutMs: 1,
      tls: { rejectUnauthorized: true },
      hmac: { 'cap1-hmac-sha512': CAP1 },
    });
  });

  test('re-export of an exported capability', async () => {
    const parent = await expect201({ uri: T });
    const child = await expect201({ capability: parent });
    await expect201({ capability: child });
  });
});

describe('refused configs', () => {
  test('shape: not an object, neither or both of uri and capability, unknown fields', async () => {
    await expect400([], /must be a JSON object/);
    await expect400('"x"', /must be a JSON object/);
    await expect400('17', /must be a JSON object/);
    await expect400(null, /must be a JSON object/);
    await expect400({}, /exactly one of uri and capability/);
    await expect400({ method: 'GET' }, /exactly one of uri and capability/);
    await expect400({ uri: T, capability: 'cpblty://x/#y' }, /exactly one of uri and capability, not both/);
    await expect400({ uri: T, extra: 1 }, /unknown field config\.extra/);
    await expect400({ uri: T, URI: T }, /unknown field config\.URI/);
    await expect400({ uri: T, __proto__x: 1 }, /unknown field config\.__proto__x/);
    await expect400('{"uri":"https://a.example/","__proto__":{"x":1}}', /the key "__proto__" is not allowed/);
    await expect400('{"uri":"https://a.example/","uri":"https://b.example/"}', /the key "uri" appears twice/);
    await expect400({ uri: T, 'we ird': 1 }, /unknown field config\["we ird"\]/);
  });

  test('uri', async () => {
    await expect400({ uri: 5 }, /config\.uri must be a string/);
    await expect400({ uri: '' }, /config\.uri must not be empty/);
    await expect400({ uri: 'not a uri' }, /config\.uri must be an absolute http or https URI/);
    await expect400({ uri: '/relative' }, /config\.uri must be an absolute/);
    await expect400({ uri: 'ftp://example.com/' }, /config\.uri must use the http or https scheme/);
    await expect400({ uri: 'file:///etc/passwd' }, /config\.uri must use the http or https scheme/);
    await expect400({ uri: 'javascript:alert(1)' }, /config\.uri must use the http or https scheme/);
    await expect400({ uri: 'https://user:pass@example.com/' }, /config\.uri must not contain user info/);
    await expect400({ uri: 'https://example.com/#frag' }, /config\.uri must not contain a fragment/);
    await expect400({ uri: 'https://example.com/a\r\nX: y' }, /config\.uri must not contain whitespace/);
    await expect400({ uri: `https://example.com/${'a'.repeat(9000)}` }, /config\.uri must be at most 8192 characters/);
  });

  test('method', async () => {
    await expect400({ uri: T, method: 'get' }, /config\.method must be an HTTP method in upper case/);
    await expect400({ uri: T, method: 'FETCH' }, /config\.method must be an HTTP method/);
    await expect400({ uri: T, method: 'CONNECT' }, /config\.method must be an HTTP method/);
    await expect400({ uri: T, method: 1 }, /config\.method must be a string/);
  });

  test('headers', async () => {
    await expect400({ uri: T, headers: [] }, /config\.headers must be an object/);
    await expect400({ uri: T, headers: 'X: y' }, /config\.headers must be an object/);
    await expect400({ uri: T, headers: { 'X-A': 1 } }, /config\.headers\.X-A must be a string/);
    await expect400({ uri: T, headers: { 'X-A': 'a\r\nInjected: yes' } }, /config\.headers\.X-A must be printable ASCII/);
    await expect400({ uri: T, headers: { 'X-A': 'a\nb' } }, /config\.headers\.X-A must be printable ASCII/);
    await expect400({ uri: T, headers: { 'X-A': 'caf\u00e9' } }, /config\.headers\.X-A must be printable ASCII/);
    await expect400({ uri: T, headers: { 'X A': 'v' } }, /config\.headers has an invalid name\["X A"\]/);
    await expect400({ uri: T, headers: { 'X:A': 'v' } }, /config\.headers has an invalid name/);
    await expect400({ uri: T, headers: { '': 'v' } }, /config\.headers has an invalid name/);
    await expect400({ uri: T, headers: { 'X-\r\nA': 'v' } }, /config\.headers has an invalid name/);
    await expect400({ uri: T, headers: { 'X-A': 'a', 'x-a': 'b' } }, /config\.headers\.x-a is given twice/);
    for (const name of ['Connection', 'Keep-Alive', 'TE', 'Trailer', 'Transfer-Encoding', 'Upgrade', 'Proxy-Authorization', 'Host', 'Content-Length', 'Expect']) {
      await expect400({ uri: T, headers: { [name]: 'v' } }, new RegExp(`config\\.headers\\.${name} is a header Membrane controls`));
    }
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`X-H${i}`, 'v']));
    await expect400({ uri: T, headers: many }, /config\.headers has more than 64 fields/);
  });

  test('allowQuery and timeoutMs', async () => {
    await expect400({ uri: T, allowQuery: 'true' }, /config\.allowQuery must be a boolean/);
    await expect400({ uri: T, allowQuery: 1 }, /config\.allowQuery must be a boolean/);
    await expect400({ uri: T, timeoutMs: '100' }, /config\.timeoutMs must be an integer/);
    await expect400({ uri: T, timeoutMs: 1.5 }, /config\.timeoutMs must be an integer/);
    await expect400({ uri: T, timeoutMs: 0 }, /config\.timeoutMs must be at least 1/);
    await expect400({ uri: T, timeoutMs: -5 }, /config\.timeoutMs must be at least 1/);
    await expect400({ uri: T, timeoutMs: 1e12 }, /config\.timeoutMs must be at most/);
  });

  test('tls', async () => {
    await expect400({ uri: T, tls: true }, /config\.tls must be an object/);
    await expect400({ uri: T, tls: { rejectUnauthorized: 'no' } }, /config\.tls\.rejectUnauthorized must be a boolean/);
    await expect400({ uri: T, tls: { verify: false } }, /unknown field config\.tls\.verify/);
    await expect400({ uri: T, tls: { ca: 5 } }, /config\.tls\.ca must be a string/);
    await expect400({ uri: T, tls: { ca: 'garbage' } }, /config\.tls\.ca must be one or more PEM certificates/);
    await expect400({ uri: T, tls: { ca: `${pki.caCert}trailing junk` } }, /config\.tls\.ca must be one or more PEM certificates/);
    await expect400({ uri: T, tls: { ca: pki.caCert.replace(/[A-Z]{8}/, 'ZZZZZZZZ') } }, /config\.tls\.ca must be one or more PEM/);
    await expect400({ uri: T, tls: { cert: pki.clientCert } }, /config\.tls\.cert and config\.tls\.key must be given together/);
    await expect400({ uri: T, tls: { key: pki.clientKey } }, /config\.tls\.cert and config\.tls\.key must be given together/);
    await expect400({ uri: T, tls: { cert: pki.clientCert, key: 'nope' } }, /config\.tls\.key must be an unencrypted PEM private key/);
    await expect400({ uri: T, tls: { cert: pki.clientCert, key: otherPki.clientKey } }, /config\.tls\.key is not the private key of config\.tls\.cert/);
    await expect400({ uri: T, tls: { cert: pki.clientKey, key: pki.clientKey } }, /config\.tls\.cert must be one or more PEM certificates/);
    await expect400({ uri: 'http://example.com/', tls: { rejectUnauthorized: false } }, /config\.tls applies only to https URIs/);
  });

  test('tls errors never echo the key', async () => {
    const result = await call(membrane.url, exportCap, { body: { uri: T, tls: { cert: pki.clientCert, key: otherPki.clientKey } } });
    assert.equal(result.status, 400);
    assert.ok(!result.text.includes('PRIVATE KEY'));
    assert.ok(!result.text.includes(otherPki.clientKey.split('\n')[1]!));
  });

  test('hmac selector', async () => {
    await expect400({ uri: T, hmac: {} }, /config\.hmac must be an object naming exactly one signature scheme/);
    await expect400({ uri: T, hmac: { 'aws4-hmac-sha256': AWS, 'cap1-hmac-sha512': CAP1 } }, /config\.hmac must be an object naming exactly one/);
    await expect400({ uri: T, hmac: { 'hmac-sha1': {} } }, /unknown field config\.hmac\.hmac-sha1/);
    await expect400({ uri: T, hmac: 'aws4-hmac-sha256' }, /config\.hmac must be an object/);
  });

  test('hmac aws4-hmac-sha256 fields', async () => {
    const scheme = 'aws4-hmac-sha256';
    for (const field of ['awsAccessKeyId', 'secretAccessKey', 'region', 'service']) {
      const { [field as keyof typeof AWS]: _omitted, ...rest } = AWS;
      await expect400({ uri: T, hmac: { [scheme]: rest } }, new RegExp(`missing field config\\.hmac\\.${scheme}\\.${field}`));
      await expect400({ uri: T, hmac: { [scheme]: { ...AWS, [field]: 7 } } }, new RegExp(`config\\.hmac\\.${scheme}\\.${field} must be a string`));
    }
    await expect400({ uri: T, hmac: { [scheme]: { ...AWS, extra: 'x' } } }, /unknown field config\.hmac\.aws4-hmac-sha256\.extra/);
    await expect400({ uri: T, hmac: { [scheme]: { ...AWS, region: 'us east 1' } } }, /config\.hmac\.aws4-hmac-sha256\.region must be a plain identifier/);
    await expect400({ uri: T, hmac: { [scheme]: { ...AWS, service: 'lambda/../s3' } } }, /config\.hmac\.aws4-hmac-sha256\.service must be a plain identifier/);
    await expect400({ uri: T, hmac: { [scheme]: { ...AWS, awsAccessKeyId: 'AKID-X' } } }, /config\.hmac\.aws4-hmac-sha256\.awsAccessKeyId must be an access key id/);
    await expect400({ uri: T, hmac: { [scheme]: { ...AWS, secretAccessKey: '' } } }, /config\.hmac\.aws4-hmac-sha256\.secretAccessKey must not be empty/);
    await expect400({ uri: T, hmac: { [scheme]: { ...AWS, sessionToken: 'a b' } } }, /config\.hmac\.aws4-hmac-sha256\.sessionToken must be printable ASCII/);
  });

  test('hmac cap1-hmac-sha512 fields', async () => {
    const scheme = 'cap1-hmac-sha512';
    await expect400({ uri: T, hmac: { [scheme]: { keyId: 'a' } } }, /missing field config\.hmac\.cap1-hmac-sha512\.key/);
    await expect400({ uri: T, hmac: { [scheme]: { key: 'abcd' } } }, /missing field config\.hmac\.cap1-hmac-sha512\.keyId/);
    await expect400({ uri: T, hmac: { [scheme]: { ...CAP1, key: 'bXlTZWNyZXQ=' } } }, /config\.hmac\.cap1-hmac-sha512\.key must be base64url/);
    await expect400({ uri: T, hmac: { [scheme]: { ...CAP1, key: 'a+b/' } } }, /config\.hmac\.cap1-hmac-sha512\.key must be base64url/);
    await expect400({ uri: T, hmac: { [scheme]: { ...CAP1, key: 'abcde' } } }, /config\.hmac\.cap1-hmac-sha512\.key must be base64url/);
    await expect400({ uri: T, hmac: { [scheme]: { ...CAP1, keyId: 'a/b' } } }, /config\.hmac\.cap1-hmac-sha512\.keyId must be printable ASCII without/);
    await expect400({ uri: T, hmac: { [scheme]: { ...CAP1, keyId: '' } } }, /config\.hmac\.cap1-hmac-sha512\.keyId must not be empty/);
    await expect400({ uri: T, hmac: { [scheme]: { ...CAP1, extra: 1 } } }, /unknown field config\.hmac\.cap1-hmac-sha512\.extra/);
  });

  test('re-export', async () => {
    const parent = await expect201({ uri: T });
    for (const option of ['method', 'headers', 'allowQuery', 'timeoutMs', 'tls', 'hmac']) {
      await expect400({ capability: parent, [option]: {} }, new RegExp(`config\\.${option} applies only to uri exports`));
    }
    await expect400({ capability: 5 }, /config\.capability must be a string/);
    await expect400({ capability: 'https://example.com/' }, /config\.capability must be a capability URI/);
    await expect400({ capability: parent.replace('#', '') }, /config\.capability must be a capability URI/);
    await expect400({ capability: parent.replace(/localhost:\d+/, 'elsewhere.example:443') }, /config\.capability belongs to another service \(elsewhere\.example:443\)/);
    await expect400({ capability: parent.slice(0, -4) + 'AAAA' }, /config\.capability is unknown or revoked/);
    const m = await membrane.control.createMembrane(membrane.roots.create, 're-export-kinds');
    await expect400({ capability: m.export }, /config\.capability is an export capability; only exported capabilities/);
    await expect400({ capability: m.revoke }, /config\.capability is a revoke capability/);
    await expect400({ capability: membrane.roots.create }, /config\.capability is a create capability/);
    await expect400({ capability: membrane.roots.query }, /config\.capability is a query capability/);
    await expect400({ capability: membrane.roots.deleteSelf }, /config\.capability is a deleteSelf capability/);
    const other = await membrane.control.createMembrane(membrane.roots.create, 're-export-revoked');
    const doomed = await membrane.control.export(other.export, { uri: T });
    await membrane.control.revoke(other.revoke);
    await expect400({ capability: doomed }, /config\.capability is unknown or revoked/);
  });

  test('a 400 never echoes the secret values it refused', async () => {
    const secret = 'sk_live_DO_NOT_ECHO_123';
    const bodies = [
      { uri: `https://example.com/?k=${secret}#x` },
      { uri: T, headers: { 'X-Key': `${secret}\n` } },
      { uri: T, hmac: { 'aws4-hmac-sha256': { ...AWS, secretAccessKey: secret, region: 'bad region' } } },
      { uri: T, hmac: { 'cap1-hmac-sha512': { key: `${secret}=`, keyId: 'k' } } },
    ];
    for (const body of bodies) {
      const result = await call(membrane.url, exportCap, { body });
      assert.equal(result.status, 400);
      assert.ok(!result.text.includes(secret), result.text);
    }
  });
});
