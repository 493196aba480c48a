/**
 * CAP1-HMAC-SHA512: the known-answer vector of the specification, further
 * vectors for its quirks, and the verifier's rules (section 8).
 *
 * The canonical requests below were derived by hand from the specification;
 * the Authorization values were also produced by the original reference
 * implementation when these vectors were written.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cap1Sign, trimall, verifyCap1, type Cap1SignInput } from '../src/signing/cap1.js';

describe('cap1Sign', () => {
  test('the specification’s known-answer vector', () => {
    const result = cap1Sign({
      headers: { host: 'localhost:8888', connection: 'close', 'x-cap-date': '20170702T204657Z' },
      httpRequestMethod: 'GET',
      key: 'mySecret',
      keyId: 'someId',
      path: '/somewhere',
      queryString: 'page=12',
    });
    assert.equal(result.canonicalRequest, 'GET\n%2Fsomewhere\npage=12\nhost:localhost:8888\nx-cap-date:20170702T204657Z\n\nhost;x-cap-date');
    assert.equal(
      result.authorization,
      'CAP1-HMAC-SHA512 Credential=someId/20170702/localhost:8888/cap1_request,SignedHeaders=host;x-cap-date,Signature=zfJvsTapbKxdvWMCbRFbkqO99b6dtgS81ym4O7k9I3R_m31mmUy9qcv_0qnrVKVbGhVkADX5xTLEedi_pzfEZw',
    );
    assert.deepEqual(
      { algorithm: result.algorithm, credential: result.credential, date: result['x-cap-date'], signedHeaders: result.signedHeaders },
      { algorithm: 'CAP1-HMAC-SHA512', credential: 'someId/20170702/localhost:8888/cap1_request', date: '20170702T204657Z', signedHeaders: 'host;x-cap-date' },
    );
  });

  const base = { key: 'a2V5', keyId: 'vec' };
  const vectors: [string, Cap1SignInput, string, string][] = [
    [
      'query: raw sort before decoding, value-less pieces, k=v=w, + kept as a plus',
      { ...base, headers: { host: 'svc.example', 'x-cap-date': '20240102T030405Z' }, httpRequestMethod: 'GET', path: '/', queryString: 'b=2&a=1&B=0&a=&flag&k=v=w&sp%20ace=x+y' },
      'GET\n%2F\nB=0&a=&a=1&b=2&flag=undefined&k=v&sp%20ace=x%2By\nhost:svc.example\nx-cap-date:20240102T030405Z\n\nhost;x-cap-date',
      'Signature=7mSPMIm4tRB_AgTxJhGxzzvnk2HWfnE_kJpp968MpzvVoXDaJ75rv0-2LOciRS9LVC7jObIvSrSldorABvMZng',
    ],
    [
      'path: decoded, POSIX-normalized, re-encoded with / encoded too',
      { ...base, headers: { host: 'svc.example', 'x-cap-date': '20240102T030405Z' }, httpRequestMethod: 'DELETE', path: '/a//b/./c/../d%20e/%E4%B8%AD/', queryString: '' },
      'DELETE\n%2Fa%2Fb%2Fd%20e%2F%E4%B8%AD%2F\n\nhost:svc.example\nx-cap-date:20240102T030405Z\n\nhost;x-cap-date',
      'Signature=eb1VFjl-luhWeLYLZewEL5cz7Sowe9oSXaSlTap0unCDjOdDUkIN4Wzqwe2RUsSRo4HBgyAbo1YKcOWPyoQqyQ',
    ],
    [
      'path: .. above a relative path is kept',
      { ...base, headers: { host: 'svc.example', 'x-cap-date': '20240102T030405Z' }, httpRequestMethod: 'GET', path: 'x/../../y' },
      'GET\n..%2Fy\n\nhost:svc.example\nx-cap-date:20240102T030405Z\n\nhost;x-cap-date',
      'Signature=zSqM8HTXYvNa1cQCIxeLMrAh6Hr544MT2_OHtFnXyt_LjAWcsONL96gRFv7jg4B1GO8j41KAu2hv000CV8wNGA',
    ],
    [
      'headers: trimming, quoted values kept, a missing closing quote added, case-duplicates signed twice, hop-by-hop dropped, lower-case method',
      {
        ...base,
        headers: {
          host: 'Svc.Example:8443',
          'X-Trim': '  a   b\t c  ',
          'X-Quoted': 'say "hello   world"  now',
          'X-Odd': 'a "b  c',
          'X-Dup': 'first',
          'x-dup': 'second',
          Connection: 'close',
          'x-cap-date': '20240102T030405Z',
        },
        httpRequestMethod: 'post',
        path: '/',
        queryString: '',
      },
      'POST\n%2F\n\nhost:Svc.Example:8443\nx-cap-date:20240102T030405Z\nx-dup:second\nx-odd:a "b  c"\nx-quoted:say "hello   world" now\nx-trim:a b c\n\nhost;x-cap-date;x-dup;x-dup;x-odd;x-quoted;x-trim',
      'Credential=vec/20240102/svc.example:8443/cap1_request,SignedHeaders=host;x-cap-date;x-dup;x-dup;x-odd;x-quoted;x-trim,Signature=aR4eYgqOQJ9MECUzGsO-LY5KnPa_F9xSs2LwyBWMxJuJtXnCr4GG9-Zgoc9jei_VaGQNx0LAaYWUrvmmgoysuA',
    ],
    [
      'date: characters after the 15th ignored, out-of-range hour normalized, original value signed',
      { ...base, headers: { host: 'svc.example', 'x-cap-date': '20240229T240000Zjunk' }, httpRequestMethod: 'GET', path: '/', queryString: '' },
      'GET\n%2F\n\nhost:svc.example\nx-cap-date:20240229T240000Zjunk\n\nhost;x-cap-date',
      'Credential=vec/20240301/svc.example/cap1_request,SignedHeaders=host;x-cap-date,Signature=7QNORckFPCE_enDqb3S5kdufVLDDjSlGXtZVJ7vPGVN5zIvN4PuGmurkUM_2MXxcFDXZSS041EK7JmFEbV7vSg',
    ],
  ];
  for (const [name, input, canonicalRequest, authorization] of vectors) {
    test(`vector: ${name}`, () => {
      const result = cap1Sign(input);
      assert.equal(result.canonicalRequest, canonicalRequest);
      assert.ok(result.authorization.startsWith('CAP1-HMAC-SHA512 Credential=vec/'));
      assert.ok(result.authorization.endsWith(authorization), result.authorization);
    });
  }

  test('without X-Cap-Date, the current time is used and X-Cap-Date is signed', () => {
    const now = new Date(Date.UTC(2021, 5, 7, 8, 9, 10, 999));
    const result = cap1Sign({ ...base, headers: { Host: 'h.example' } }, now);
    assert.equal(result['x-cap-date'], '20210607T080910Z');
    assert.equal(result.canonicalRequest, 'GET\n%2F\n\nhost:h.example\nx-cap-date:20210607T080910Z\n\nhost;x-cap-date');
  });

  test('throws as the reference does', () => {
    assert.throws(() => cap1Sign({ ...base, headers: { 'x-a': '1' } }), /^Error: Host header not found\.$/);
    assert.throws(() => cap1Sign({ ...base, headers: { host: '' } }), /Host header not found/);
    assert.throws(() => cap1Sign({ ...base, headers: { host: 'h', 'x-cap-date': '20241301T000000Z' } }), RangeError);
    assert.throws(() => cap1Sign({ ...base, headers: { host: 'h' }, path: '/%E4%B8' }), URIError);
    assert.throws(() => cap1Sign({ ...base, headers: { host: 'h' }, queryString: 'a=%zz' }), URIError);
  });

  test('trimall', () => {
    assert.equal(trimall('  a \t\n b  '), 'a b');
    assert.equal(trimall('"  a  "  b'), '"  a  " b');
    assert.equal(trimall('x "y'), 'x "y"');
    assert.equal(trimall(undefined), '');
    assert.equal(trimall(null), 'null');
    assert.equal(trimall(42), '42');
    assert.equal(trimall(['a', 'b']), 'a,b');
    assert.equal(trimall('a\u00a0\u2003b'), 'a b');
  });
});

describe('verifyCap1', () => {
  const signedAt = new Date(Date.UTC(2024, 0, 1, 12, 0, 0));
  function signedRequest(): { method: string; url: string; headers: Record<string, string> } {
    const headers = { host: 'svc.example:8443', 'content-type': 'application/json', 'x-one': ' a   b ' };
    const signature = cap1Sign({ headers, httpRequestMethod: 'POST', key: 'k3y', keyId: 'id-1', path: '/orders/a%20b', queryString: 'page=2&q=x' }, signedAt);
    return {
      method: 'POST',
      url: '/orders/a%20b?page=2&q=x',
      headers: { ...headers, 'x-cap-date': signature['x-cap-date'], authorization: signature.authorization, 'x-not-signed': 'anything' },
    };
  }
  const keys = (id: string): string | undefined => (id === 'id-1' ? 'k3y' : undefined);
  const minutes = (n: number): Date => new Date(signedAt.getTime() + n * 60_000);

  test('accepts an intact request within the window, up to exactly 15 minutes either way', async () => {
    for (const at of [0, 1, -1, 15, -15]) assert.equal(await verifyCap1(signedRequest(), keys, { now: minutes(at) }), true, `${at} min`);
    const async = async (id: string): Promise<string | undefined> => keys(id);
    assert.equal(await verifyCap1(signedRequest(), async, { now: minutes(1) }), true);
  });

  test('headers the signature does not list may change', async () => {
    const request = signedRequest();
    request.headers['x-not-signed'] = 'changed';
    request.headers['x-added'] = 'new';
    assert.equal(await verifyCap1(request, keys, { now: minutes(1) }), true);
  });

  test('a lower-case method verifies (methods are upper-cased)', async () => {
    const request = signedRequest();
    request.method = 'post';
    assert.equal(await verifyCap1(request, keys, { now: minutes(1) }), true);
  });

  const rejections: [string, (request: ReturnType<typeof signedRequest>) => void, Date?][] = [
    ['a changed path', (r) => (r.url = '/orders/other?page=2&q=x')],
    ['a changed query', (r) => (r.url = '/orders/a%20b?page=3&q=x')],
    ['an added query parameter', (r) => (r.url = '/orders/a%20b?page=2&q=x&admin=1')],
    ['a changed signed header', (r) => (r.headers['content-type'] = 'text/plain')],
    ['a changed host', (r) => (r.headers.host = 'evil.example:8443')],
    ['a changed method', (r) => (r.method = 'DELETE')],
    ['a date past the window', () => undefined, minutes(15.001)],
    ['a date before the window', () => undefined, minutes(-15.001)],
    ['a missing X-Cap-Date', (r) => delete (r.headers as Record<string, string | undefined>)['x-cap-date']],
    ['a changed X-Cap-Date', (r) => (r.headers['x-cap-date'] = '20240101T120001Z')],
    ['an unknown key id', (r) => (r.headers.authorization = r.headers.authorization!.replace('id-1/', 'id-2/'))],
    ['a tampered signature', (r) => (r.headers.authorization = r.headers.authorization!.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')))],
    ['another algorithm', (r) => (r.headers.authorization = r.headers.authorization!.replace('CAP1-HMAC-SHA512', 'CAP2-HMAC-SHA512'))],
    ['a malformed credential', (r) => (r.headers.authorization = r.headers.authorization!.replace('/cap1_request', ''))],
    ['no Authorization header', (r) => delete (r.headers as Record<string, string | undefined>).authorization],
  ];
  for (const [name, mutate, now] of rejections) {
    test(`rejects ${name}`, async () => {
      const request = signedRequest();
      mutate(request);
      assert.equal(await verifyCap1(request, keys, { now: now ?? minutes(1) }), false);
    });
  }

  test('rejects the wrong key, a failing lookup and a missing key', async () => {
    assert.equal(await verifyCap1(signedRequest(), () => 'wrong', { now: minutes(1) }), false);
    assert.equal(await verifyCap1(signedRequest(), () => { throw new Error('down'); }, { now: minutes(1) }), false);
    assert.equal(await verifyCap1(signedRequest(), async () => { throw new Error('down'); }, { now: minutes(1) }), false);
    assert.equal(await verifyCap1(signedRequest(), () => null, { now: minutes(1) }), false);
    assert.equal(await verifyCap1(signedRequest(), () => '', { now: minutes(1) }), false);
  });

  test('a key lookup that is not a function is a programming error', async () => {
    await assert.rejects(verifyCap1(signedRequest(), 'k3y' as never), /secret is not a function/);
  });
});
