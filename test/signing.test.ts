/**
 * Signed invocations end to end: real capabilities, a real Membrane, and a
 * real target that recomputes every AWS4-HMAC-SHA256 signature
 * independently with AWS's @smithy/signature-v4 (and checks CAP1-HMAC-SHA512
 * with verifyCap1), answering 403 on any mismatch.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { requestReply } from '../src/sdk/client.js';
import { verifyCap1 } from '../src/signing/cap1.js';
import { call, tokenOf } from './helpers/client.js';
import { assertNothingHeld, startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { checkAws4 } from './helpers/aws-oracle.js';
import { startTarget, type ReceivedRequest, type TestTarget } from './helpers/target.js';

const SECRETS: Record<string, string> = {
  AKIDLAMBDA: 'lambda/Secret+Key/EXAMPLE',
  AKIDSESSION: 'session-secret-EXAMPLE',
  AKIDS3: 's3-secret-EXAMPLE',
};
const SESSION_TOKEN = 'AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUu==';
const CAP1_KEYS: Record<string, string> = { 'membrane-1': 'c2hhcmVkLWNhcDEta2V5' };

interface Verdict {
  ok: boolean;
  scheme: string;
  detail?: string;
  url: string;
  method: string;
  bodySha256: string;
  headers: Record<string, string | string[] | undefined>;
}

let membrane: TestMembrane;
let target: TestTarget;
let exportCap: string;

before(async () => {
  membrane = await startTestMembrane({ signedBodyLimit: 256 * 1024 });
  target = await startTarget({
    respond: (req: IncomingMessage, res: ServerResponse, received: ReceivedRequest) => {
      const authorization = String(req.headers.authorization ?? '');
      const scheme = authorization.split(' ', 1)[0]!;
      const check =
        scheme === 'AWS4-HMAC-SHA256'
          ? checkAws4(req, received, SECRETS)
          : verifyCap1(req, (id) => CAP1_KEYS[id]).then((ok) => (ok ? undefined : 'CAP1 signature refused'));
      void check.then((detail) => {
        const verdict: Verdict = { ok: detail === undefined, scheme, detail, url: req.url!, method: req.method!, bodySha256: received.bodySha256, headers: req.headers };
        res.writeHead(detail === undefined ? 200 : 403, { 'content-type': 'application/json' });
        res.end(JSON.stringify(verdict));
      });
    },
  });
  exportCap = (await membrane.control.createMembrane(membrane.roots.create, 'signer')).export;
});
after(async () => {
  await membrane.stop();
  await target.close();
});

const aws = (accessKeyId: string, service: string, extra: Record<string, string> = {}): object => ({
  'aws4-hmac-sha256': { awsAccessKeyId: accessKeyId, secretAccessKey: SECRETS[accessKeyId] ?? 'not-the-secret', region: 'us-east-1', service, ...extra },
});

async function verdictOf(result: { status: number; json: Verdict; text: string }): Promise<Verdict> {
  assert.equal(result.status, 200, result.text);
  assert.equal(result.json.ok, true);
  return result.json;
}

describe('AWS4-HMAC-SHA256 end to end', () => {
  test('the seed’s Lambda invoke: POST with X-Amz-Invocation-Type and a JSON body', async () => {
    const capability = await membrane.control.export(exportCap, {
      uri: `${target.url}/2015-03-31/functions/partner-report/invocations`,
      method: 'POST',
      headers: { 'X-Amz-Invocation-Type': 'RequestResponse' },
      hmac: aws('AKIDLAMBDA', 'lambda'),
    });
    const payload = JSON.stringify({ report: 'weekly', rows: [1, 2, 3] });
    const verdict = await verdictOf(await call(membrane.url, capability, { method: 'POST', body: payload, headers: { 'content-type': 'application/json' } }));
    assert.equal(verdict.url, '/2015-03-31/functions/partner-report/invocations');
    assert.equal(verdict.method, 'POST');
    assert.equal(verdict.headers['x-amz-invocation-type'], 'RequestResponse');
    assert.equal(verdict.bodySha256, createHash('sha256').update(payload).digest('hex'));
    assert.match(String(verdict.headers.authorization), /SignedHeaders=content-type;host;x-amz-date;x-amz-invocation-type,/);
    assert.match(String(verdict.headers.authorization), /Credential=AKIDLAMBDA\/\d{8}\/us-east-1\/lambda\/aws4_request/);
  });

  test('a GET with an allowQuery query string that needs encoding', async () => {
    const capability = await membrane.control.export(exportCap, {
      uri: `${target.url}/items?fixed=a%20b`,
      allowQuery: true,
      hmac: aws('AKIDLAMBDA', 'execute-api'),
    });
    const query = "q=hello%20world&path=%2Fa%2Fb&k=2&k=1&k=1&empty=&flag&%E4%B8%AD=%F0%9F%A6%8A&sub=(1)*!'~&&";
    const verdict = await verdictOf(await call(membrane.url, capability, { path: `/?${query}` }));
    // As the client sends it (WHATWG URL encodes ' in a query).
    const sent = new URL(`/?${query}`, 'http://client.invalid').search.slice(1);
    assert.equal(verdict.url, `/items?fixed=a%20b&${sent}`);
  });

  test('a path with a space and a non-ASCII character', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/files/my%20report/naïve%20€.txt`, hmac: aws('AKIDLAMBDA', 'execute-api') });
    const verdict = await verdictOf(await call(membrane.url, capability));
    assert.equal(verdict.url, '/files/my%20report/na%C3%AFve%20%E2%82%AC.txt');
  });

  test('a binary body', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/upload`, method: 'PUT', hmac: aws('AKIDLAMBDA', 'execute-api') });
    const payload = randomBytes(100_000);
    const verdict = await verdictOf(await call(membrane.url, capability, { body: payload, headers: { 'content-type': 'application/octet-stream' } }));
    assert.equal(verdict.bodySha256, createHash('sha256').update(payload).digest('hex'));
  });

  test('a chunked body is buffered, hashed and sent whole', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/upload`, method: 'POST', hmac: aws('AKIDLAMBDA', 'execute-api') });
    const chunks = Array.from({ length: 20 }, () => randomBytes(5000));
    const response = await request(membrane.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokenOf(capability)}` },
      body: Readable.from(chunks),
    });
    const verdict = (await response.body.json()) as Verdict;
    assert.equal(response.statusCode, 200, JSON.stringify(verdict));
    assert.equal(verdict.bodySha256, createHash('sha256').update(Buffer.concat(chunks)).digest('hex'));
  });

  test('an empty body with a session token', async () => {
    const capability = await membrane.control.export(exportCap, {
      uri: `${target.url}/session`,
      method: 'POST',
      hmac: aws('AKIDSESSION', 'sts', { sessionToken: SESSION_TOKEN }),
    });
    const verdict = await verdictOf(await call(membrane.url, capability, { method: 'POST' }));
    assert.equal(verdict.headers['x-amz-security-token'], SESSION_TOKEN);
    assert.match(String(verdict.headers.authorization), /SignedHeaders=host;x-amz-date;x-amz-security-token,/);
    assert.equal(verdict.bodySha256, createHash('sha256').digest('hex'));
  });

  test('S3: single encoding and x-amz-content-sha256', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/my-bucket/reports/2024%20Q1.csv`, method: 'PUT', hmac: aws('AKIDS3', 's3') });
    const payload = Buffer.from('a,b,c\n1,2,3\n');
    const verdict = await verdictOf(await call(membrane.url, capability, { body: payload, headers: { 'content-type': 'text/csv' } }));
    assert.equal(verdict.headers['x-amz-content-sha256'], createHash('sha256').update(payload).digest('hex'));
    assert.match(String(verdict.headers.authorization), /SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,/);
  });

  test('the requester cannot supply the signature’s own headers nor any x-amz-* header; repeated headers are sent merged', async () => {
    const capability = await membrane.control.export(exportCap, {
      uri: `${target.url}/s`,
      method: 'POST',
      headers: { 'X-Amz-Target': 'DynamoDB_20120810.GetItem' },
      hmac: aws('AKIDLAMBDA', 'execute-api'),
    });
    const verdict = await verdictOf(
      await call(membrane.url, capability, {
        body: 'x',
        headers: {
          'x-amz-date': '20000101T000000Z',
          'x-amz-security-token': 'forged',
          'x-amz-content-sha256': 'forged',
          'x-amz-target': 'DynamoDB_20120810.DeleteTable',
          'x-amz-copy-source': 'other-bucket/secret',
          'x-amz-acl': 'public-read',
          'x-repeat': ['one', 'two'],
          cookie: ['a=1', 'b=2'],
        },
      }),
    );
    assert.notEqual(verdict.headers['x-amz-date'], '20000101T000000Z');
    for (const dropped of ['x-amz-security-token', 'x-amz-content-sha256', 'x-amz-copy-source', 'x-amz-acl']) {
      assert.equal(verdict.headers[dropped], undefined, dropped);
    }
    assert.equal(verdict.headers['x-amz-target'], 'DynamoDB_20120810.GetItem');
    assert.equal(verdict.headers['x-repeat'], 'one, two');
    assert.equal(verdict.headers.cookie, 'a=1; b=2');
  });

  test('S3: a key with characters URLs leave raw is sent exactly as it is signed', async () => {
    for (const key of ["reports/a!b'c(d)*e", 'year=2024/part:1.json', 'sp%20ace/~tilde,comma;semi@at']) {
      const capability = await membrane.control.export(exportCap, { uri: `${target.url}/bucket/${key}`, method: 'PUT', hmac: aws('AKIDS3', 's3') });
      const verdict = await verdictOf(await call(membrane.url, capability, { body: 'x' }));
      assert.equal(verdict.url, `/bucket/${key.split('/').map((segment) => encodeURIComponent(decodeURIComponent(segment)).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)).join('/')}`);
    }
  });

  test('the SDK’s query objects (spaces as %20) pass the AWS signer’s checks', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/sdk-query`, allowQuery: true, hmac: aws('AKIDLAMBDA', 'execute-api') });
    const options = { scheme: 'http' as const, address: membrane.url };
    for (const query of [{ name: 'a b', plus: '1+1' }, new URLSearchParams({ q: 'hello world' })]) {
      const verdict = await requestReply<Verdict>(capability, { ...options, query });
      assert.equal(verdict.ok, true);
      assert.doesNotMatch(verdict.url, /\+/);
    }
  });

  test('the target’s oracle refuses a signature made with another secret', async () => {
    const capability = await membrane.control.export(exportCap, {
      uri: `${target.url}/x`,
      hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKIDLAMBDA', secretAccessKey: 'not-the-secret', region: 'us-east-1', service: 'lambda' } },
    });
    const result = await call(membrane.url, capability);
    assert.equal(result.status, 403);
    assert.match(result.json.detail, /signature mismatch/);
  });

  test('an ambiguous or presigning query string is refused before anything is sent', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/q`, allowQuery: true, hmac: aws('AKIDLAMBDA', 'execute-api') });
    const before = target.requests.length;
    const cases: [string, RegExp][] = [
      ['?a=b+c', /contains '\+', which AWS may read as a space or a plus/],
      ['?X-Amz-Signature=abc', /contains X-Amz-Signature, a parameter of presigned requests/],
      ['?x-amz-credential=abc', /contains x-amz-credential/],
      ['?a=%zz', /malformed percent-encoding/],
    ];
    for (const [query, message] of cases) {
      const result = await call(membrane.url, capability, { path: `/${query}` });
      assert.equal(result.status, 400, query);
      assert.equal(result.json.error, 'Bad Request');
      assert.match(result.json.message, message);
    }
    assert.equal(target.requests.length, before);
    // Refused after a connection was reserved for them, they gave it back.
    await assertNothingHeld(membrane);
  });

  test('a signed body over the limit is refused with 413, by Content-Length or as it arrives', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/big`, method: 'POST', hmac: aws('AKIDLAMBDA', 'execute-api') });
    const before = target.requests.length;
    const declared = await call(membrane.url, capability, { body: Buffer.alloc(256 * 1024 + 1) });
    assert.equal(declared.status, 413);
    assert.deepEqual(declared.json, { error: 'Payload Too Large', message: 'the request body must be at most 262144 bytes' });
    const response = await request(membrane.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokenOf(capability)}` },
      body: Readable.from(Array.from({ length: 40 }, () => Buffer.alloc(8192))),
    });
    assert.equal(response.statusCode, 413);
    await response.body.dump();
    const exactly = await call(membrane.url, capability, { body: Buffer.alloc(256 * 1024) });
    assert.equal(exactly.status, 200);
    assert.equal(target.requests.length, before + 1);
  });

  test('an unsigned capability still streams bodies larger than the signed-body limit', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/unsigned`, method: 'POST' });
    const payload = randomBytes(1024 * 1024);
    const result = await call(membrane.url, capability, { body: payload });
    assert.equal(result.json.bodySha256, createHash('sha256').update(payload).digest('hex'));
  });
});

describe('CAP1-HMAC-SHA512 end to end', () => {
  const cap1 = { 'cap1-hmac-sha512': { key: CAP1_KEYS['membrane-1'], keyId: 'membrane-1' } };

  test('the target verifies what Membrane sends: method, path, query, headers', async () => {
    const capability = await membrane.control.export(exportCap, {
      uri: `${target.url}/orders/a%20b?fixed=1`,
      allowQuery: true,
      headers: { 'X-Api-Version': '2' },
      hmac: cap1,
    });
    const verdict = await verdictOf(
      await call(membrane.url, capability, {
        method: 'PATCH',
        path: "/?b=2&a=1&flag&sp%20ace=x+y&(*)=!'",
        body: '{"n":1}',
        headers: { 'content-type': 'application/json', 'x-repeat': ['1', '2'], 'x-cap-date': '20000101T000000Z' },
      }),
    );
    assert.equal(verdict.scheme, 'CAP1-HMAC-SHA512');
    assert.equal(verdict.url, `/orders/a%20b?fixed=1&${new URL("/?b=2&a=1&flag&sp%20ace=x+y&(*)=!'", 'http://client.invalid').search.slice(1)}`);
    assert.equal(verdict.headers['x-repeat'], '1, 2');
    assert.notEqual(verdict.headers['x-cap-date'], '20000101T000000Z');
    assert.match(String(verdict.headers.authorization), /^CAP1-HMAC-SHA512 Credential=membrane-1\/\d{8}\/127\.0\.0\.1:\d+\/cap1_request,SignedHeaders=[^,]*content-type;host;[^,]*x-api-version;x-cap-date;x-repeat,Signature=/);
    assert.doesNotMatch(String(verdict.headers.authorization), /content-length/);
  });

  test('methods without a body verify even when the requester sends Content-Length: 0', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/no-body`, hmac: cap1 });
    for (const method of ['GET', 'DELETE', 'OPTIONS', 'HEAD', 'POST']) {
      const result = await call(membrane.url, capability, { method, headers: { 'content-length': '0' } });
      assert.equal(result.status, 200, `${method}: ${result.text}`);
    }
  });

  test('a streamed body is not buffered: larger than the signed-body limit, it passes', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/stream`, method: 'POST', hmac: cap1 });
    const payload = randomBytes(1024 * 1024);
    const verdict = await verdictOf(await call(membrane.url, capability, { body: payload }));
    assert.equal(verdict.bodySha256, createHash('sha256').update(payload).digest('hex'));
  });

  test('a target holding another key refuses it', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/x`, hmac: { 'cap1-hmac-sha512': { key: 'b3RoZXIta2V5', keyId: 'membrane-1' } } });
    assert.equal((await call(membrane.url, capability)).status, 403);
  });

  test('malformed percent-encoding in the query is a 400', async () => {
    const capability = await membrane.control.export(exportCap, { uri: `${target.url}/x`, allowQuery: true, hmac: cap1 });
    const result = await call(membrane.url, capability, { path: '/?a=%E4%B8' });
    assert.equal(result.status, 400);
    assert.match(result.json.message, /malformed percent-encoding/);
  });
});

describe('signed exports: validation', () => {
  async function refused(config: object, message: RegExp): Promise<void> {
    const result = await call(membrane.url, exportCap, { body: config });
    assert.equal(result.status, 400, result.text);
    assert.match(result.json.message, message);
  }

  test('headers the signature sets cannot be configured', async () => {
    await refused({ uri: `${target.url}/x`, headers: { Authorization: 'x' }, hmac: aws('AKIDLAMBDA', 'lambda') }, /config\.headers\.Authorization is set by the aws4-hmac-sha256 signature/);
    await refused({ uri: `${target.url}/x`, headers: { 'X-Amz-Date': 'x' }, hmac: aws('AKIDLAMBDA', 'lambda') }, /config\.headers\.X-Amz-Date is set by the aws4-hmac-sha256 signature/);
    await refused({ uri: `${target.url}/x`, headers: { 'x-cap-date': 'x' }, hmac: cap1Config() }, /config\.headers\.x-cap-date is set by the cap1-hmac-sha512 signature/);
  });

  test('URIs the scheme cannot sign unambiguously are refused at export', async () => {
    await refused({ uri: `${target.url}/x?a=b+c`, hmac: aws('AKIDLAMBDA', 'lambda') }, /config\.uri has a query string that contains '\+'.*config\.hmac\.aws4-hmac-sha256 cannot sign/);
    await refused({ uri: `${target.url}/x?X-Amz-Expires=60`, hmac: aws('AKIDLAMBDA', 'lambda') }, /presigned/);
    await refused({ uri: `${target.url}/%E4%B8/x`, hmac: aws('AKIDS3', 's3') }, /config\.uri has malformed percent-encoding in its path/);
    await refused({ uri: `${target.url}/%zz`, hmac: cap1Config() }, /config\.uri has malformed percent-encoding, which config\.hmac\.cap1-hmac-sha512 cannot sign/);
    await refused({ uri: `${target.url}/x?a=%E4`, hmac: cap1Config() }, /malformed percent-encoding/);
  });

  function cap1Config(): object {
    return { 'cap1-hmac-sha512': { key: 'a2V5', keyId: 'k' } };
  }
});
