/**
 * Hostile-input suite (issue 5, item 4): a table-driven corpus of malformed
 * and malicious requests, each sent as raw bytes over a TCP socket to a real
 * in-process server, so that broken framing can be sent too. Every case must
 * be answered with its exact 4xx and a JSON body of exactly `error` and
 * `message`, never a 5xx, and the exchange must end (answer and close)
 * within a bounded time. Afterwards the server is still healthy and a good
 * capability still works.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { call, tokenOf } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

// ---------------------------------------------------------------------------
// Servers and capabilities
// ---------------------------------------------------------------------------

/** main: allows 127.0.0.0/8 targets; strict: the default target policy; slow: short head and idle timeouts. */
type ServerName = 'main' | 'strict' | 'slow';

/** The tokens (not URIs) the corpus uses, known once `before` has run. */
interface Keys {
  create: string;
  query: string;
  /** A membrane's export capability on `main`. */
  export: string;
  /** A good exported capability (to a real loopback target). */
  exported: string;
  /** Root capabilities of a second tenant whose deleteSelf and query take the wrong-method cases. */
  victimDeleteSelf: string;
  victimQuery: string;
  /** The revoke capability of a membrane that takes the wrong-method cases. */
  victimRevoke: string;
  /** The export capability of a revoked membrane, and a capability it had exported. */
  revokedExport: string;
  revokedExported: string;
  /** Full capability URIs, for re-export cases. */
  exportedUri: string;
  revokedExportedUri: string;
  exportUri: string;
  revokeUri: string;
  createUri: string;
  queryUri: string;
  deleteSelfUri: string;
  /** The export capability of a membrane on `strict` (default target policy). */
  strictExport: string;
  /** The create capability on `slow`. */
  slowCreate: string;
  /** A membrane that only the "answer and effect" cases touch: its revoke and export capabilities. */
  probeRevoke: string;
  probeExportUri: string;
  authority: string;
}

const servers = {} as Record<ServerName, TestMembrane>;
let target: TestTarget;
let keys: Keys;

before(async () => {
  [servers.main, servers.strict, servers.slow, target] = await Promise.all([
    startTestMembrane(),
    startTestMembrane({ allowTargets: [] }),
    // The head timeout (1 s, checked every second) always ends before the idle timeout (3 s).
    startTestMembrane({ headersTimeoutMs: 1_000, idleTimeoutMs: 3_000 }),
    startTarget(),
  ]);
  const main = servers.main;
  const hostile = await main.control.createMembrane(main.roots.create, 'hostile');
  const victim = await main.control.createMembrane(main.roots.create, 'victim');
  const probe = await main.control.createMembrane(main.roots.create, 'revoke-probe');
  const exported = await main.control.export(hostile.export, { uri: `${target.url}/good` });
  const doomed = await main.control.createMembrane(main.roots.create, 'revoked');
  const doomedExported = await main.control.export(doomed.export, { uri: `${target.url}/doomed` });
  await main.control.revoke(doomed.revoke);
  const victimTenant = (await main.service.createTenant())!;
  const strict = await servers.strict.control.createMembrane(servers.strict.roots.create, 'policy');
  keys = {
    create: tokenOf(main.roots.create),
    query: tokenOf(main.roots.query),
    export: tokenOf(hostile.export),
    exported: tokenOf(exported),
    victimDeleteSelf: tokenOf(victimTenant.deleteSelf),
    victimQuery: tokenOf(victimTenant.query),
    victimRevoke: tokenOf(victim.revoke),
    revokedExport: tokenOf(doomed.export),
    revokedExported: tokenOf(doomedExported),
    exportedUri: exported,
    revokedExportedUri: doomedExported,
    exportUri: hostile.export,
    revokeUri: hostile.revoke,
    createUri: main.roots.create,
    queryUri: main.roots.query,
    deleteSelfUri: main.roots.deleteSelf,
    strictExport: tokenOf(strict.export),
    slowCreate: tokenOf(servers.slow.roots.create),
    probeRevoke: tokenOf(probe.revoke),
    probeExportUri: probe.export,
    authority: main.authority,
  };
});

after(async () => {
  await Promise.all([servers.main?.stop(), servers.strict?.stop(), servers.slow?.stop(), target?.close()]);
});

// ---------------------------------------------------------------------------
// Raw exchanges
// ---------------------------------------------------------------------------

/** Bytes to write (a string is written as latin1, byte for byte), or a pause in milliseconds. */
type Part = string | Buffer | { pause: number };

/** No case may take longer than this to be answered and closed. */
const CASE_LIMIT_MS = 5_000;

/**
 * Opens a connection, writes `parts`, and collects everything the server
 * sends until it closes the connection. Rejects if that has not happened
 * within CASE_LIMIT_MS (a hang), or if the connection failed before any
 * answer arrived.
 */
function exchange(port: number, parts: readonly Part[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const settle = (error?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const data = Buffer.concat(chunks);
      // A reset after the answer (the server closed with our bytes unread) is fine.
      if (error !== undefined && data.length === 0) reject(error);
      else resolve(data);
    };
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(new Error(`the exchange did not end within ${CASE_LIMIT_MS} ms; received so far: ${show(Buffer.concat(chunks))}`));
    }, CASE_LIMIT_MS);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => settle());
    socket.on('error', (error) => settle(error));
    socket.on('connect', () => {
      void (async () => {
        for (const part of parts) {
          if (settled || socket.destroyed || !socket.writable) return;
          if (typeof part === 'object' && !Buffer.isBuffer(part)) await delay(part.pause);
          else socket.write(typeof part === 'string' ? Buffer.from(part, 'latin1') : part);
        }
      })();
    });
  });
}

function show(data: Buffer): string {
  const text = data.toString('latin1');
  return JSON.stringify(text.length > 600 ? `${text.slice(0, 600)}…` : text);
}

interface Answer {
  status: number;
  headers: Record<string, string[]>;
  body: string;
  /** Interim (1xx) statuses before the final answer. */
  interim: number[];
  /** Bytes after the final answer (there must be none: one request, one answer). */
  rest: Buffer;
}

/** Parses the final HTTP/1.1 answer in `data` (after any 1xx). */
function parseAnswer(data: Buffer): Answer {
  let offset = 0;
  const interim: number[] = [];
  for (;;) {
    const end = data.indexOf('\r\n\r\n', offset);
    assert.notEqual(end, -1, `no complete HTTP answer head in ${show(data)}`);
    const [statusLine, ...lines] = data.subarray(offset, end).toString('latin1').split('\r\n');
    const match = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine!);
    assert.ok(match, `not an HTTP/1.1 status line: ${JSON.stringify(statusLine)} in ${show(data)}`);
    const headers: Record<string, string[]> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim().toLowerCase();
      (headers[name] ??= []).push(line.slice(colon + 1).trim());
    }
    offset = end + 4;
    const status = Number(match[1]);
    if (status >= 100 && status < 200) {
      interim.push(status);
      continue;
    }
    let body: Buffer;
    if (headers['transfer-encoding']?.some((value) => /chunked/i.test(value))) {
      const pieces: Buffer[] = [];
      for (;;) {
        const lineEnd = data.indexOf('\r\n', offset);
        assert.notEqual(lineEnd, -1, `truncated chunked answer in ${show(data)}`);
        const size = parseInt(data.subarray(offset, lineEnd).toString('latin1'), 16);
        offset = lineEnd + 2;
        if (size === 0) {
          const trailerEnd = data.indexOf('\r\n', offset);
          offset = trailerEnd === -1 ? data.length : trailerEnd + 2;
          break;
        }
        pieces.push(data.subarray(offset, offset + size));
        offset += size + 2;
      }
      body = Buffer.concat(pieces);
    } else if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length'][0]);
      body = data.subarray(offset, offset + length);
      assert.equal(body.length, length, `answer body shorter than its Content-Length in ${show(data)}`);
      offset += length;
    } else {
      body = data.subarray(offset);
      offset = data.length;
    }
    return { status, headers, body: body.toString('utf8'), interim, rest: data.subarray(offset) };
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  413: 'Payload Too Large',
  417: 'Expectation Failed',
  431: 'Request Header Fields Too Large',
};

const UNAUTHORIZED_BODY = JSON.stringify({
  error: 'Unauthorized',
  message: 'a valid capability token is required (Authorization: Bearer CPBLTY1-…)',
});

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

interface Case {
  group: string;
  name: string;
  /** Which server the request goes to (default main). */
  server?: ServerName;
  /** The exact 4xx expected. */
  status: number;
  /** What the error message must say, where it matters. */
  message?: RegExp;
  /** The raw request, built once the capabilities exist. */
  send: (k: Keys) => Part | Part[];
  /**
   * For a valid request followed by bad bytes on its connection: whether its
   * action took effect. A 2xx answer must then mean yes; the expected 4xx
   * must mean no.
   */
  effect?: (k: Keys) => Promise<boolean>;
}

const corpus: Case[] = [];
let group = '';
function add(name: string, status: number, send: Case['send'], options: { message?: RegExp; server?: ServerName; effect?: Case['effect'] } = {}): void {
  corpus.push({ group, name, status, send, ...options });
}

/** A request head (latin1), with `Connection: close` so that the server ends the exchange after its answer. */
function head(method: string, token: string | undefined, extra: string[] = [], path = '/'): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: membrane.test'];
  if (token !== undefined) lines.push(`Authorization: Bearer ${token}`);
  return `${[...lines, ...extra, 'Connection: close'].join('\r\n')}\r\n\r\n`;
}

/** A complete request with a body (a string body is UTF-8) and an honest Content-Length. */
function withBody(method: string, token: string | undefined, body: string | Buffer, extra: string[] = [], path = '/'): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([
    Buffer.from(head(method, token, ['Content-Type: application/json', `Content-Length: ${bytes.length}`, ...extra], path), 'latin1'),
    bytes,
  ]);
}

const createBody = (body: string | Buffer) => (k: Keys) => withBody('POST', k.create, body);
const exportBody = (body: string | Buffer) => (k: Keys) => withBody('POST', k.export, body);
const exportConfig = (config: unknown) => exportBody(JSON.stringify(config));
const strictConfig = (config: unknown) => (k: Keys) => withBody('POST', k.strictExport, JSON.stringify(config));
const bytes = (...parts: (string | number[])[]): Buffer =>
  Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part, 'utf8') : Buffer.from(part))));

/** Target URIs on loopback (allowed on `main`), so that no case depends on DNS. */
const T = 'http://127.0.0.1:9/hostile';
const TS = 'https://127.0.0.1:9/hostile';
const AWS = { awsAccessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG', region: 'us-east-1', service: 'lambda' };
const CAP1 = { key: 'bXlTZWNyZXQ', keyId: 'someId' };
const A4 = 'aws4-hmac-sha256';
const C1 = 'cap1-hmac-sha512';
/** A value of each JSON type, for "wrong type" cases. */
const JSON_VALUES: Record<string, unknown> = { number: 7, null: null, boolean: true, array: [], object: {}, string: 'x' };
function wrongTypes(except: string[]): [string, unknown][] {
  return Object.entries(JSON_VALUES).filter(([type]) => !except.includes(type));
}
const lengthOf = (n: number): string => 'a'.repeat(n);

// --- JSON bombs and broken JSON: tenant create ----------------------------
group = 'JSON bombs and broken JSON: tenant create';
add('nesting 17 levels deep', 400, createBody(`{"id":"x","a":${'['.repeat(16)}${']'.repeat(16)}}`), { message: /nested more than 16 levels/ });
add('10,000 nested arrays', 400, createBody(`${'['.repeat(10_000)}${']'.repeat(10_000)}`), { message: /nested more than 16 levels/ });
add('10,000 nested objects', 400, createBody(`${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`), { message: /nested more than 16 levels/ });
add('60,000 unclosed brackets', 400, createBody('['.repeat(60_000)), { message: /not valid JSON/ });
add('60,000 unclosed braces', 400, createBody('{"a":'.repeat(12_000)), { message: /not valid JSON/ });
add('a 60,000-character id', 400, createBody(JSON.stringify({ id: lengthOf(60_000) })), { message: /membrane\.id must be at most 512 characters/ });
add('a 70,000-byte body', 413, createBody(JSON.stringify({ id: lengthOf(70_000) })));
add('64 KiB of whitespace before the JSON', 413, createBody(`${' '.repeat(65_536)}{"id":"x"}`));
add('Content-Length of 100 MB, body never sent in full', 413, (k) => [
  head('POST', k.create, ['Content-Length: 100000000']),
  '{"id":',
]);
add('a 20,000-element array as the id', 400, createBody(`{"id":[${Array(20_000).fill(0).join(',')}]}`), { message: /membrane\.id must be a string/ });
add('5,000 unknown keys', 400, createBody(`{"id":"x",${Array.from({ length: 5_000 }, (_, i) => `"k${i}":0`).join(',')}}`), { message: /unknown field/ });
add('a number that overflows to Infinity', 400, createBody('{"id":1e999999}'), { message: /membrane\.id must be a string/ });
add('a 60,000-digit number', 400, createBody(`{"id":"x","n":${'9'.repeat(60_000)}}`));
add('duplicate keys', 400, createBody('{"id":"a","id":"b"}'), { message: /the key "id" appears twice/ });
add('duplicate keys, one written with escapes', 400, createBody('{"id":"a","\\u0069d":"b"}'), { message: /the key "id" appears twice/ });
add('__proto__ key at the top', 400, createBody('{"__proto__":{"id":"x"}}'), { message: /the key "__proto__" is not allowed/ });
add('__proto__ key written with an escape', 400, createBody('{"id":"x","\\u005f_proto__":{}}'), { message: /the key "__proto__" is not allowed/ });
add('constructor key', 400, createBody('{"id":"x","constructor":{"prototype":{}}}'), { message: /the key "constructor" is not allowed/ });
add('prototype key', 400, createBody('{"id":"x","prototype":1}'), { message: /the key "prototype" is not allowed/ });
add('__proto__ key nested in the id', 400, createBody('{"id":{"__proto__":null}}'));
add('invalid UTF-8: a lone 0xFF byte', 400, createBody(bytes('{"id":"', [0xff], '"}')), { message: /not valid UTF-8/ });
add('invalid UTF-8: an overlong "/"', 400, createBody(bytes('{"id":"', [0xc0, 0xaf], '"}')), { message: /not valid UTF-8/ });
add('invalid UTF-8: an encoded surrogate', 400, createBody(bytes('{"id":"', [0xed, 0xa0, 0x80], '"}')), { message: /not valid UTF-8/ });
add('invalid UTF-8: a truncated sequence', 400, createBody(bytes('{"id":"', [0xe2, 0x82], '"}')), { message: /not valid UTF-8/ });
add('invalid UTF-8: a lone continuation byte', 400, createBody(bytes('{"id":"', [0x80], '"}')), { message: /not valid UTF-8/ });
add('invalid UTF-8: a code point above U+10FFFF', 400, createBody(bytes('{"id":"', [0xf4, 0x90, 0x80, 0x80], '"}')), { message: /not valid UTF-8/ });
add('a UTF-8 byte order mark', 400, createBody(bytes([0xef, 0xbb, 0xbf], '{"id":"bom"}')), { message: /not valid JSON/ });
add('UTF-16LE with a byte order mark', 400, createBody(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('{"id":"u16"}', 'utf16le')])));
add('UTF-16BE without a byte order mark', 400, createBody(Buffer.from('{"id":"u16"}', 'utf16le').swap16()));
add('trailing garbage', 400, createBody('{"id":"a"} x'), { message: /not valid JSON/ });
add('two documents', 400, createBody('{"id":"a"}{"id":"b"}'), { message: /not valid JSON/ });
add('a trailing comma', 400, createBody('{"id":"a",}'), { message: /not valid JSON/ });
add('single quotes', 400, createBody("{'id':'a'}"), { message: /not valid JSON/ });
add('a comment', 400, createBody('{"id":"a"/* hi */}'), { message: /not valid JSON/ });
add('an unquoted key', 400, createBody('{id:"a"}'), { message: /not valid JSON/ });
add('NaN', 400, createBody('{"id":NaN}'), { message: /not valid JSON/ });
add('truncated', 400, createBody('{"id":"a"'), { message: /not valid JSON/ });
add('an empty body', 400, createBody(''), { message: /empty/ });
add('only whitespace', 400, createBody(' \r\n\t '), { message: /not valid JSON/ });
add('a raw control character in a string', 400, createBody(bytes('{"id":"a', [0x01], 'b"}')), { message: /not valid JSON/ });
add('a raw NUL byte in a string', 400, createBody(bytes('{"id":"a', [0x00], 'b"}')), { message: /not valid JSON/ });
add('a NUL byte between tokens', 400, createBody(bytes('{"id":"a"}', [0x00])), { message: /not valid JSON/ });
add('null', 400, createBody('null'), { message: /membrane must be an object/ });
add('a string', 400, createBody('"id"'), { message: /membrane must be an object/ });
add('an array around the object', 400, createBody('[{"id":"a"}]'), { message: /membrane must be an object/ });
add('an id with an escaped NUL', 400, createBody('{"id":"a\\u0000"}'), { message: /control characters/ });
add('an id with CR LF', 400, createBody('{"id":"a\\r\\nb"}'), { message: /control characters/ });
add('an id with an escape sequence for the terminal', 400, createBody('{"id":"\\u001b[2J"}'), { message: /control characters/ });
add('an id with a C1 control', 400, createBody('{"id":"a\\u0085b"}'), { message: /control characters/ });
add('an id with an unpaired surrogate', 400, createBody('{"id":"\\ud800"}'), { message: /unpaired surrogates/ });
add('an empty id', 400, createBody('{"id":""}'), { message: /membrane\.id must not be empty/ });
add('an id of 513 characters', 400, createBody(JSON.stringify({ id: lengthOf(513) })), { message: /at most 512 characters/ });
for (const [type, value] of wrongTypes(['string'])) {
  add(`an id of type ${type}`, 400, createBody(JSON.stringify({ id: value })), { message: /membrane\.id must be a string/ });
}
add('an unknown field beside the id', 400, createBody('{"id":"a","admin":true}'), { message: /unknown field membrane\.admin/ });
add('the id of a live membrane', 409, createBody('{"id":"hostile"}'), { message: /already exists/ });

// --- JSON bombs and broken JSON: membrane export --------------------------
group = 'JSON bombs and broken JSON: membrane export';
add('nesting 17 levels deep in headers', 400, exportBody(`{"uri":"${T}","headers":{"a":${'['.repeat(15)}${']'.repeat(15)}}}`), { message: /nested more than 16/ });
add('10,000 nested objects', 400, exportBody(`${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`), { message: /nested more than 16/ });
add('10,000 nested arrays in tls', 400, exportBody(`{"uri":"${TS}","tls":${'['.repeat(10_000)}${']'.repeat(10_000)}}`), { message: /nested more than 16/ });
add('60,000 unclosed brackets', 400, exportBody(`{"uri":${'['.repeat(60_000)}`), { message: /not valid JSON/ });
add('a 60,000-character uri', 400, exportConfig({ uri: `${T}/${lengthOf(60_000)}` }), { message: /config\.uri must be at most 8192 characters/ });
add('a 60,000-character header value', 400, exportConfig({ uri: T, headers: { 'X-Big': lengthOf(60_000) } }), { message: /config\.headers\.X-Big/ });
add('a 60,000-character key in hmac', 400, exportConfig({ uri: T, hmac: { [C1]: { ...CAP1, key: lengthOf(60_000) } } }), { message: /config\.hmac\.cap1-hmac-sha512\.key/ });
add('a 70,000-byte body', 413, exportConfig({ uri: T, headers: { 'X-Big': lengthOf(70_000) } }));
add('Content-Length of 100 MB, body never sent in full', 413, (k) => [head('POST', k.export, ['Content-Length: 100000000']), `{"uri":"${T}",`]);
add('duplicate uri keys', 400, exportBody(`{"uri":"${T}","uri":"http://127.0.0.2/"}`), { message: /the key "uri" appears twice/ });
add('duplicate keys inside hmac', 400, exportBody(`{"uri":"${T}","hmac":{"${C1}":{"key":"abcd","keyId":"a","key":"efgh"}}}`), { message: /the key "key" appears twice/ });
add('the same header name twice in one object', 400, exportBody(`{"uri":"${T}","headers":{"X-A":"1","X-A":"2"}}`), { message: /the key "X-A" appears twice/ });
add('the capability key twice', 400, exportBody(`{"capability":"x","capability":"y"}`), { message: /appears twice/ });
add('__proto__ at the top', 400, exportBody(`{"uri":"${T}","__proto__":{"headers":{"X-A":"1"}}}`), { message: /"__proto__" is not allowed/ });
add('__proto__ as a header name', 400, exportBody(`{"uri":"${T}","headers":{"__proto__":"x"}}`), { message: /"__proto__" is not allowed/ });
add('constructor inside tls', 400, exportBody(`{"uri":"${TS}","tls":{"constructor":{"prototype":{"rejectUnauthorized":false}}}}`), { message: /"constructor" is not allowed/ });
add('prototype inside hmac', 400, exportBody(`{"uri":"${T}","hmac":{"prototype":{}}}`), { message: /"prototype" is not allowed/ });
add('constructor as a header name', 400, exportBody(`{"uri":"${T}","headers":{"constructor":"x"}}`), { message: /"constructor" is not allowed/ });
add('invalid UTF-8 in the uri', 400, exportBody(bytes('{"uri":"http://127.0.0.1/', [0xff, 0xfe], '"}')), { message: /not valid UTF-8/ });
add('invalid UTF-8 in a header value', 400, exportBody(bytes(`{"uri":"${T}","headers":{"X-A":"`, [0xc3], '"}}')), { message: /not valid UTF-8/ });
add('a byte order mark', 400, exportBody(bytes([0xef, 0xbb, 0xbf], `{"uri":"${T}"}`)), { message: /not valid JSON/ });
add('trailing garbage', 400, exportBody(`{"uri":"${T}"}garbage`), { message: /not valid JSON/ });
add('a second document', 400, exportBody(`{"uri":"${T}"}\n{"uri":"${T}"}`), { message: /not valid JSON/ });
add('truncated', 400, exportBody(`{"uri":"${T}`), { message: /not valid JSON/ });
add('an empty body', 400, exportBody(''), { message: /empty/ });
add('Infinity', 400, exportBody(`{"uri":"${T}","timeoutMs":Infinity}`), { message: /not valid JSON/ });
add('a timeout that overflows to Infinity', 400, exportBody(`{"uri":"${T}","timeoutMs":1e999}`), { message: /config\.timeoutMs/ });
add('an unpaired surrogate in a header value', 400, exportBody(`{"uri":"${T}","headers":{"X-A":"\\udc00"}}`), { message: /config\.headers\.X-A/ });
for (const [type, value] of wrongTypes(['object'])) {
  add(`the config is a JSON ${type}`, 400, exportConfig(value), { message: /the export config must be a JSON object/ });
}
add('the config is an array of configs', 400, exportConfig([{ uri: T }]), { message: /must be a JSON object/ });

// --- Wrong types in every export config field -----------------------------
group = 'wrong types in export config fields';
for (const [type, value] of wrongTypes(['string'])) add(`uri: ${type}`, 400, exportConfig({ uri: value }), { message: /config\.uri must be a string/ });
add('uri: empty', 400, exportConfig({ uri: '' }), { message: /config\.uri must not be empty/ });
for (const [type, value] of wrongTypes(['string'])) {
  add(`capability: ${type}`, 400, exportConfig({ capability: value }), { message: /config\.capability must be a string/ });
}
add('capability: empty', 400, exportConfig({ capability: '' }), { message: /config\.capability/ });
for (const [type, value] of wrongTypes(['string'])) add(`method: ${type}`, 400, exportConfig({ uri: T, method: value }), { message: /config\.method must be a string/ });
for (const method of ['get', '', 'CONNECT', 'GET ', ' GET', 'G\u0000ET', 'POST\r\nX-Injected: 1', 'FETCH', 'GET/1.1']) {
  add(`method: ${JSON.stringify(method)}`, 400, exportConfig({ uri: T, method }), { message: /config\.method must be an HTTP method/ });
}
for (const [type, value] of wrongTypes(['object'])) add(`headers: ${type}`, 400, exportConfig({ uri: T, headers: value }), { message: /config\.headers must be an object/ });
for (const [type, value] of wrongTypes(['string'])) {
  add(`a header value: ${type}`, 400, exportConfig({ uri: T, headers: { 'X-A': value } }), { message: /config\.headers\.X-A must be a string/ });
}
for (const [type, value] of wrongTypes(['boolean'])) {
  add(`allowQuery: ${type}`, 400, exportConfig({ uri: T, allowQuery: value }), { message: /config\.allowQuery must be a boolean/ });
}
add('allowQuery: "true"', 400, exportConfig({ uri: T, allowQuery: 'true' }), { message: /config\.allowQuery must be a boolean/ });
for (const [type, value] of wrongTypes(['number'])) {
  add(`timeoutMs: ${type}`, 400, exportConfig({ uri: T, timeoutMs: value }), { message: /config\.timeoutMs must be an integer/ });
}
for (const value of [1.5, 0, -1, -0.5, 1e12, 2 ** 31, Number.MAX_SAFE_INTEGER + 2]) {
  add(`timeoutMs: ${value}`, 400, exportConfig({ uri: T, timeoutMs: value }), { message: /config\.timeoutMs must be/ });
}
add('timeoutMs: "100"', 400, exportConfig({ uri: T, timeoutMs: '100' }), { message: /config\.timeoutMs must be an integer/ });
for (const [type, value] of wrongTypes(['object'])) add(`tls: ${type}`, 400, exportConfig({ uri: TS, tls: value }), { message: /config\.tls must be an object/ });
for (const field of ['ca', 'cert', 'key']) {
  for (const [type, value] of wrongTypes(['string'])) {
    add(`tls.${field}: ${type}`, 400, exportConfig({ uri: TS, tls: { [field]: value } }), { message: new RegExp(`config\\.tls\\.${field} must be a string`) });
  }
  add(`tls.${field}: empty`, 400, exportConfig({ uri: TS, tls: { [field]: '' } }), { message: new RegExp(`config\\.tls\\.${field} must not be empty`) });
}
for (const [type, value] of wrongTypes(['boolean'])) {
  add(`tls.rejectUnauthorized: ${type}`, 400, exportConfig({ uri: TS, tls: { rejectUnauthorized: value } }), {
    message: /config\.tls\.rejectUnauthorized must be a boolean/,
  });
}
add('tls.rejectUnauthorized: "false"', 400, exportConfig({ uri: TS, tls: { rejectUnauthorized: 'false' } }), { message: /must be a boolean/ });
add('tls: an unknown field', 400, exportConfig({ uri: TS, tls: { checkServerIdentity: false } }), { message: /unknown field config\.tls\.checkServerIdentity/ });
add('tls: ca is not PEM', 400, exportConfig({ uri: TS, tls: { ca: '-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----' } }), { message: /config\.tls\.ca must be one or more PEM/ });
add('tls: ca is a path', 400, exportConfig({ uri: TS, tls: { ca: '/etc/ssl/certs/ca-certificates.crt' } }), { message: /config\.tls\.ca must be one or more PEM/ });
add('tls: on an http uri', 400, exportConfig({ uri: T, tls: { rejectUnauthorized: false } }), { message: /config\.tls applies only to https URIs/ });
for (const [type, value] of wrongTypes(['object'])) add(`hmac: ${type}`, 400, exportConfig({ uri: T, hmac: value }), { message: /config\.hmac must be an object/ });
add('an unknown top-level field', 400, exportConfig({ uri: T, followRedirects: true }), { message: /unknown field config\.followRedirects/ });
add('neither uri nor capability', 400, exportConfig({ method: 'GET' }), { message: /exactly one of uri and capability/ });
add('both uri and capability', 400, (k) => withBody('POST', k.export, JSON.stringify({ uri: T, capability: k.exportedUri })), {
  message: /exactly one of uri and capability, not both/,
});

// --- Header names and values in export configs -----------------------------
group = 'export config header injection';
const headerValues: [string, string][] = [
  ['CR LF injection', 'a\r\nX-Injected: yes'],
  ['a bare LF', 'a\nb'],
  ['a bare CR', 'a\rb'],
  ['a NUL', 'a\u0000b'],
  ['DEL', 'a\u007fb'],
  ['a vertical tab', 'a\u000bb'],
  ['a form feed', 'a\u000cb'],
  ['non-ASCII', 'caf\u00e9'],
  ['an emoji', '\u{1F98A}'],
  ['a line separator', 'a\u2028b'],
  ['CR LF CR LF then a smuggled request', 'x\r\n\r\nGET /admin HTTP/1.1\r\nHost: internal'],
];
for (const [name, value] of headerValues) {
  add(`value with ${name}`, 400, exportConfig({ uri: T, headers: { 'X-A': value } }), { message: /config\.headers\.X-A must be printable ASCII/ });
}
add('value of 8,193 characters', 400, exportConfig({ uri: T, headers: { 'X-A': lengthOf(8_193) } }), { message: /config\.headers\.X-A must be at most 8192 characters/ });
const headerNames: [string, string][] = [
  ['a space', 'X A'],
  ['a colon', 'X:A'],
  ['empty', ''],
  ['CR LF', 'X-\r\nA'],
  ['a trailing colon and value', 'X-A: injected'],
  ['non-ASCII', 'X-Caf\u00e9'],
  ['parentheses', 'X(A)'],
  ['an at sign', 'X@A'],
  ['a leading space', ' X-A'],
  ['a NUL', 'X\u0000A'],
  ['a slash', 'X/A'],
  ['257 characters', `X${lengthOf(256)}`],
];
for (const [name, header] of headerNames) {
  add(`name with ${name}`, 400, exportConfig({ uri: T, headers: { [header]: 'v' } }), { message: /config\.headers has an invalid name/ });
}
for (const name of ['Host', 'Content-Length', 'Transfer-Encoding', 'tRaNsFeR-eNcOdInG', 'Connection', 'Keep-Alive', 'Upgrade', 'TE', 'Trailer', 'Expect', 'Proxy-Authorization', 'Proxy-Connection']) {
  add(`reserved name ${name}`, 400, exportConfig({ uri: T, headers: { [name]: 'v' } }), { message: /is a header Membrane controls/ });
}
add('the same name in two cases', 400, exportConfig({ uri: T, headers: { 'X-A': '1', 'x-a': '2' } }), { message: /is given twice/ });
add('65 headers', 400, exportConfig({ uri: T, headers: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`X-H${i}`, 'v'])) }), {
  message: /config\.headers has more than 64 fields/,
});
add('Authorization beside a cap1 signature', 400, exportConfig({ uri: T, headers: { Authorization: 'x' }, hmac: { [C1]: CAP1 } }), {
  message: /set by the cap1-hmac-sha512 signature/,
});
add('X-Amz-Date beside an aws4 signature', 400, exportConfig({ uri: T, headers: { 'X-Amz-Date': '20150830T123600Z' }, hmac: { [A4]: AWS } }), {
  message: /set by the aws4-hmac-sha256 signature/,
});

// --- Weird URIs -------------------------------------------------------------
group = 'weird URIs';
const schemes = [
  'ftp://127.0.0.1/x',
  'file:///etc/passwd',
  'file://127.0.0.1/etc/passwd',
  'javascript:alert(1)',
  'data:text/plain,hello',
  'gopher://127.0.0.1:70/_GET%20/',
  'ws://127.0.0.1/socket',
  'wss://127.0.0.1/socket',
  'mailto:root@127.0.0.1',
  'urn:isbn:0451450523',
  'blob:http://127.0.0.1/x',
  'view-source:http://127.0.0.1/',
  'dict://127.0.0.1:11211/stats',
  'ldap://127.0.0.1/',
  'unix:/var/run/docker.sock',
  'localhost:9/x',
];
for (const uri of schemes) add(`${uri}`, 400, exportConfig({ uri }), { message: /config\.uri must use the http or https scheme/ });
add('cpblty:// capability URI as a target', 400, (k) => withBody('POST', k.export, JSON.stringify({ uri: k.exportedUri })), {
  message: /config\.uri must (use the http or https scheme|not contain a fragment)/,
});
const malformed = [
  'not a uri',
  '/relative/path',
  '//127.0.0.1/x',
  '127.0.0.1:9/x',
  'http://',
  'http://[::1/',
  'http://127.0.0.1:99999/',
  'http://127.0.0.1:-1/',
  'http://exa mple.com/',
  'http://%00/',
  'http://[fe80::1%25eth0]/',
  'http://a..b%/',
];
for (const uri of malformed) add(JSON.stringify(uri), 400, exportConfig({ uri }), { message: /config\.uri must/ });
const unsafe: [string, string][] = [
  ['user and password', 'http://user:pass@127.0.0.1/'],
  ['a user only', 'http://user@127.0.0.1/'],
  ['an encoded at sign in the user', 'http://127.0.0.1%40evil@127.0.0.1/'],
  ['a fragment', 'http://127.0.0.1/#frag'],
  ['an empty fragment', 'http://127.0.0.1/#'],
  ['a space in the path', 'http://127.0.0.1/a b'],
  ['a tab in the host', 'http://127.0.\t0.1/'],
  ['a tab in the path', 'http://127.0.0.1/a\tb'],
  ['CR LF in the path', 'http://127.0.0.1/a\r\nX-Injected: 1'],
  ['a bare LF', 'http://127.0.0.1/\n'],
  ['a NUL in the path', 'http://127.0.0.1/a\u0000b'],
  ['a leading space', ' http://127.0.0.1/'],
  ['a trailing space', 'http://127.0.0.1/ '],
  ['DEL in the path', 'http://127.0.0.1/\u007f'],
  ['8,200 characters', `http://127.0.0.1/${lengthOf(8_200)}`],
];
for (const [name, uri] of unsafe) add(`uri with ${name}`, 400, exportConfig({ uri }), { message: /config\.uri must/ });

// --- hmac shapes ------------------------------------------------------------
group = 'hmac shapes';
const hmac = (value: unknown, uri = T) => exportConfig({ uri, hmac: value });
add('no scheme', 400, hmac({}), { message: /config\.hmac must be an object naming exactly one signature scheme/ });
add('both schemes', 400, hmac({ [A4]: AWS, [C1]: CAP1 }), { message: /config\.hmac must be an object naming exactly one/ });
add('an unknown scheme', 400, hmac({ 'hmac-sha1': {} }), { message: /unknown field config\.hmac\.hmac-sha1/ });
add('the scheme name in upper case', 400, hmac({ 'AWS4-HMAC-SHA256': AWS }), { message: /unknown field config\.hmac/ });
add('a scheme and an unknown one', 400, hmac({ [C1]: CAP1, none: {} }), { message: /config\.hmac/ });
for (const scheme of [A4, C1]) {
  for (const [type, value] of wrongTypes(['object'])) {
    add(`${scheme}: ${type}`, 400, hmac({ [scheme]: value }), { message: new RegExp(`config\\.hmac\\.${scheme} must be an object`) });
  }
}
for (const field of ['awsAccessKeyId', 'secretAccessKey', 'region', 'service'] as const) {
  const { [field]: _omitted, ...rest } = AWS;
  add(`${A4} without ${field}`, 400, hmac({ [A4]: rest }), { message: new RegExp(`missing field config\\.hmac\\.${A4}\\.${field}`) });
  for (const [type, value] of [['number', 7], ['null', null], ['array', ['x']]] as const) {
    add(`${A4}.${field}: ${type}`, 400, hmac({ [A4]: { ...AWS, [field]: value } }), { message: new RegExp(`config\\.hmac\\.${A4}\\.${field} must be a string`) });
  }
}
add(`${A4}.sessionToken: number`, 400, hmac({ [A4]: { ...AWS, sessionToken: 7 } }), { message: /sessionToken must be a string/ });
add(`${A4}.sessionToken with a space`, 400, hmac({ [A4]: { ...AWS, sessionToken: 'a b' } }), { message: /sessionToken must be printable ASCII/ });
add(`${A4}.sessionToken with CR LF`, 400, hmac({ [A4]: { ...AWS, sessionToken: 'a\r\nX-Injected: 1' } }), { message: /sessionToken must be printable ASCII/ });
add(`${A4}.sessionToken empty`, 400, hmac({ [A4]: { ...AWS, sessionToken: '' } }), { message: /sessionToken must not be empty/ });
add(`${A4}.region with a space`, 400, hmac({ [A4]: { ...AWS, region: 'us east 1' } }), { message: /region must be a plain identifier/ });
add(`${A4}.region with a slash`, 400, hmac({ [A4]: { ...AWS, region: 'us-east-1/../x' } }), { message: /region must be a plain identifier/ });
add(`${A4}.service with CR LF`, 400, hmac({ [A4]: { ...AWS, service: 'lambda\r\n' } }), { message: /service must be a plain identifier/ });
add(`${A4}.awsAccessKeyId with a dash`, 400, hmac({ [A4]: { ...AWS, awsAccessKeyId: 'AKID-X' } }), { message: /awsAccessKeyId must be an access key id/ });
add(`${A4}.awsAccessKeyId with a slash`, 400, hmac({ [A4]: { ...AWS, awsAccessKeyId: 'AKID/20150830' } }), { message: /awsAccessKeyId must be an access key id/ });
add(`${A4}.secretAccessKey empty`, 400, hmac({ [A4]: { ...AWS, secretAccessKey: '' } }), { message: /secretAccessKey must not be empty/ });
add(`${A4}.secretAccessKey of 257 characters`, 400, hmac({ [A4]: { ...AWS, secretAccessKey: lengthOf(257) } }), { message: /secretAccessKey must be at most 256/ });
add(`${A4} with an extra field`, 400, hmac({ [A4]: { ...AWS, endpoint: 'http://127.0.0.1' } }), { message: /unknown field config\.hmac\.aws4-hmac-sha256\.endpoint/ });
add(`${A4} with malformed percent-encoding in the path`, 400, hmac({ [A4]: AWS }, 'http://127.0.0.1:9/a%zz'), { message: /malformed percent-encoding/ });
add(`${C1} without key`, 400, hmac({ [C1]: { keyId: 'a' } }), { message: /missing field config\.hmac\.cap1-hmac-sha512\.key/ });
add(`${C1} without keyId`, 400, hmac({ [C1]: { key: 'abcd' } }), { message: /missing field config\.hmac\.cap1-hmac-sha512\.keyId/ });
for (const field of ['key', 'keyId'] as const) {
  for (const [type, value] of [['number', 7], ['null', null], ['object', {}]] as const) {
    add(`${C1}.${field}: ${type}`, 400, hmac({ [C1]: { ...CAP1, [field]: value } }), { message: new RegExp(`config\\.hmac\\.${C1}\\.${field} must be a string`) });
  }
}
for (const [name, key] of [
  ['padded', 'bXlTZWNyZXQ='],
  ['standard base64', 'a+b/'],
  ['five characters', 'abcde'],
  ['a space', 'ab cd'],
  ['a newline', 'abcd\n'],
  ['1,028 characters', 'A'.repeat(1_028)],
] as const) {
  add(`${C1}.key ${name}`, 400, hmac({ [C1]: { ...CAP1, key } }), { message: /config\.hmac\.cap1-hmac-sha512\.key must be/ });
}
add(`${C1}.key empty`, 400, hmac({ [C1]: { ...CAP1, key: '' } }), { message: /key must not be empty/ });
for (const [name, keyId] of [
  ['a slash', 'a/b'],
  ['a comma', 'a,b'],
  ['a space', 'a b'],
  ['CR LF', 'a\r\nb'],
  ['non-ASCII', 'cl\u00e9'],
] as const) {
  add(`${C1}.keyId with ${name}`, 400, hmac({ [C1]: { ...CAP1, keyId } }), { message: /keyId must be printable ASCII without/ });
}
add(`${C1}.keyId empty`, 400, hmac({ [C1]: { ...CAP1, keyId: '' } }), { message: /keyId must not be empty/ });
add(`${C1} with an extra field`, 400, hmac({ [C1]: { ...CAP1, algorithm: 'none' } }), { message: /unknown field config\.hmac\.cap1-hmac-sha512\.algorithm/ });
add('hmac on a re-export', 400, (k) => withBody('POST', k.export, JSON.stringify({ capability: k.exportedUri, hmac: { [C1]: CAP1 } })), {
  message: /config\.hmac applies only to uri exports/,
});

// --- Re-export capability forms ---------------------------------------------
group = 're-export capability forms';
const reExport = (capability: (k: Keys) => unknown, extra: Record<string, unknown> = {}) => (k: Keys) =>
  withBody('POST', k.export, JSON.stringify({ capability: capability(k), ...extra }));
add('an https URI', 400, reExport(() => 'https://127.0.0.1/'), { message: /config\.capability must be a capability URI/ });
add('a bare token', 400, reExport((k) => k.exported), { message: /config\.capability must be a capability URI/ });
add('a URI without "#"', 400, reExport((k) => k.exportedUri.replace('#', '')), { message: /must be a capability URI/ });
add('a URI with a query', 400, reExport((k) => k.exportedUri.replace('/#', '/?x=1#')), { message: /must be a capability URI/ });
add('a URI with whitespace', 400, reExport((k) => ` ${k.exportedUri}`), { message: /must be a capability URI/ });
add('a URI with a truncated token', 400, reExport((k) => k.exportedUri.slice(0, -1)), { message: /must be a capability URI/ });
add('a URI with an extra character', 400, reExport((k) => `${k.exportedUri}A`), { message: /must be a capability URI/ });
add('another service', 400, reExport((k) => k.exportedUri.replace(k.authority, 'evil.example:443')), { message: /belongs to another service/ });
add('an authority with user info', 400, reExport((k) => k.exportedUri.replace(k.authority, `user@${k.authority}`)), { message: /config\.capability/ });
add('an unknown token', 400, reExport((k) => `${k.exportedUri.slice(0, -4)}AAAA`), { message: /config\.capability is unknown or revoked/ });
add('a revoked capability', 400, reExport((k) => k.revokedExportedUri), { message: /config\.capability is unknown or revoked/ });
add('the export capability itself', 400, reExport((k) => k.exportUri), { message: /is an export capability/ });
add('a revoke capability', 400, reExport((k) => k.revokeUri), { message: /is a revoke capability/ });
add('the tenant create capability', 400, reExport((k) => k.createUri), { message: /is a create capability/ });
add('the tenant query capability', 400, reExport((k) => k.queryUri), { message: /is a query capability/ });
add('the tenant deleteSelf capability', 400, reExport((k) => k.deleteSelfUri), { message: /is a deleteSelf capability/ });
add('1,025 characters', 400, reExport(() => `cpblty://${lengthOf(1_020)}/#x`), { message: /config\.capability must be at most 1024/ });
add('with a method', 400, reExport((k) => k.exportedUri, { method: 'DELETE' }), { message: /config\.method applies only to uri exports/ });
add('with headers', 400, reExport((k) => k.exportedUri, { headers: { 'X-A': '1' } }), { message: /config\.headers applies only to uri exports/ });

// --- Query strings of the tenant query capability ---------------------------
group = 'query strings';
const query = (q: string) => (k: Keys) => head('GET', k.query, [], `/?${q}`);
for (const limit of ['abc', '0', '-1', '1.5', '1e3', '0x10', '%2B1', '%201', '00']) {
  add(`limit=${limit}`, 400, query(`limit=${limit}`), { message: /limit must be a positive integer/ });
}
add('limit given twice', 400, query('limit=1&limit=2'), { message: /limit is given more than once/ });
add('an unknown parameter', 400, query('admin=1'), { message: /unknown query parameter/ });
add('__proto__ as a parameter', 400, query('__proto__=1'), { message: /unknown query parameter/ });
add('malformed percent-encoding', 400, query('id=%ZZ'), { message: /malformed percent-encoding/ });
add('percent-encoded invalid UTF-8', 400, query('id=%FF'), { message: /malformed percent-encoding/ });
add('a truncated percent-encoded sequence', 400, query('id=%E0%A4%A'), { message: /malformed percent-encoding/ });
add('lastId of 513 characters', 400, query(`lastId=${lengthOf(513)}`), { message: /lastId must be at most 512 characters/ });
add('a body over 64 KiB', 413, (k) => withBody('GET', k.query, lengthOf(70_000)));

// --- Token forms ------------------------------------------------------------
group = 'token forms';
const VALID_SHAPE = `CPBLTY1-${'A'.repeat(86)}`;
/** A create request (which would make a membrane "token-probe" if it got through) with the given Authorization lines. */
const authorized = (...authorization: ((k: Keys) => string)[]) => (k: Keys) =>
  Buffer.concat([
    Buffer.from(head('POST', undefined, [...authorization.map((line) => `Authorization: ${line(k)}`), 'Content-Length: 20']), 'latin1'),
    Buffer.from('{"id":"token-probe"}'),
  ]);
const tokenForms: [string, (k: Keys) => string][] = [
  ['an empty value', () => ''],
  ['the scheme only', () => 'Bearer'],
  ['the scheme and a space', () => 'Bearer '],
  ['Basic credentials', () => `Basic ${Buffer.from('admin:admin').toString('base64')}`],
  ['another scheme', (k) => `Token ${k.create}`],
  ['no space after the scheme', (k) => `Bearer${k.create}`],
  ['a tab after the scheme', (k) => `Bearer\t${k.create}`],
  ['the token without a scheme', (k) => k.create],
  ['the token then more', (k) => `Bearer ${k.create} extra`],
  ['two tokens in one header', (k) => `Bearer ${k.create}, Bearer ${k.create}`],
  ['a comma-joined token', (k) => `Bearer ${k.create},${k.create}`],
  ['one character short', (k) => `Bearer ${k.create.slice(0, -1)}`],
  ['one character long', (k) => `Bearer ${k.create}A`],
  ['prefix CPBLTY2', (k) => `Bearer CPBLTY2-${k.create.slice(8)}`],
  ['prefix in lower case', (k) => `Bearer cpblty1-${k.create.slice(8)}`],
  ['prefix with "_"', (k) => `Bearer CPBLTY1_${k.create.slice(8)}`],
  ['no prefix', (k) => `Bearer ${k.create.slice(8)}`],
  ['base64 padding', (k) => `Bearer ${k.create.slice(0, -1)}=`],
  ['standard base64 characters', (k) => `Bearer ${k.create.slice(0, -2)}+/`],
  ['percent-encoded', (k) => `Bearer ${k.create.replace('-', '%2D')}`],
  ['the capability URI', (k) => `Bearer ${k.createUri}`],
  ['the URI fragment', (k) => `Bearer #${k.create}`],
  ['quoted', (k) => `Bearer "${k.create}"`],
  ['unknown but well formed', () => `Bearer ${VALID_SHAPE}`],
  ['4 KiB of token', () => `Bearer CPBLTY1-${'A'.repeat(4_096)}`],
  ['latin1 bytes', () => `Bearer CPBLTY1-${'\u00e9'.repeat(86)}`],
  ['a revoked membrane’s export capability', (k) => `Bearer ${k.revokedExport}`],
  ['a capability exported by a revoked membrane', (k) => `Bearer ${k.revokedExported}`],
];
for (const [name, value] of tokenForms) add(name, 401, authorized(value));
add('no Authorization header', 401, () => withBody('POST', undefined, '{"id":"token-probe"}'));
add('two Authorization headers with the same token', 401, authorized((k) => `Bearer ${k.create}`, (k) => `Bearer ${k.create}`));
add('two Authorization headers, the second unknown', 401, authorized((k) => `Bearer ${k.create}`, () => `Bearer ${VALID_SHAPE}`));
add('two Authorization headers, the first empty', 401, authorized(() => '', (k) => `Bearer ${k.create}`));
add('the token in a query string', 401, (k) => withBody('POST', undefined, '{"id":"token-probe"}', [], `/?access_token=${k.create}`));
add('the token in a cookie', 401, (k) => withBody('POST', undefined, '{"id":"token-probe"}', [`Cookie: token=${k.create}`]));
add('the token in Proxy-Authorization', 401, (k) => withBody('POST', undefined, '{"id":"token-probe"}', [`Proxy-Authorization: Bearer ${k.create}`]));
add('the token in X-Authorization', 401, (k) => withBody('POST', undefined, '{"id":"token-probe"}', [`X-Authorization: Bearer ${k.create}`]));
add('a token, invoking with a path that looks privileged', 401, () => head('GET', VALID_SHAPE, [], '/admin/../healthz'));
add('a NUL inside the token', 400, (k) => head('POST', `${k.create.slice(0, 40)}\u0000${k.create.slice(41)}`, ['Content-Length: 0']));

// --- Request smuggling and framing ------------------------------------------
group = 'smuggling and framing';
const frame = (lines: string[], body = '') => (k: Keys) => `${['POST / HTTP/1.1', 'Host: membrane.test', `Authorization: Bearer ${k.create}`, ...lines, 'Connection: close'].join('\r\n')}\r\n\r\n${body}`;
const SMUGGLED = 'GET /healthz HTTP/1.1\r\nHost: membrane.test\r\n\r\n';
add('Content-Length and Transfer-Encoding', 400, frame(['Content-Length: 4', 'Transfer-Encoding: chunked'], `0\r\n\r\n${SMUGGLED}`));
add('Transfer-Encoding and Content-Length', 400, frame(['Transfer-Encoding: chunked', 'Content-Length: 4'], `0\r\n\r\n${SMUGGLED}`));
add('two different Content-Lengths', 400, frame(['Content-Length: 4', 'Content-Length: 40'], `{"id":"x"}${SMUGGLED}`));
add('two equal Content-Lengths', 400, frame(['Content-Length: 10', 'Content-Length: 10'], '{"id":"x"}'));
add('a Content-Length list', 400, frame(['Content-Length: 10, 10'], '{"id":"x"}'));
add('a negative Content-Length', 400, frame(['Content-Length: -1'], '{"id":"x"}'));
add('a Content-Length with a plus sign', 400, frame(['Content-Length: +10'], '{"id":"x"}'));
add('a hexadecimal Content-Length', 400, frame(['Content-Length: 0xa'], '{"id":"x"}'));
add('a Content-Length with inner space', 400, frame(['Content-Length: 1 0'], '{"id":"x"}'));
add('a Content-Length that overflows 64 bits', 400, frame(['Content-Length: 99999999999999999999999'], '{"id":"x"}'));
add('an empty Content-Length', 400, frame(['Content-Length: '], '{"id":"x"}'));
add('Transfer-Encoding: chunked, identity', 400, frame(['Transfer-Encoding: chunked, identity'], '0\r\n\r\n'));
add('Transfer-Encoding: identity', 400, frame(['Transfer-Encoding: identity'], '{"id":"x"}'));
add('Transfer-Encoding: xchunked', 400, frame(['Transfer-Encoding: xchunked'], '0\r\n\r\n'));
add('Transfer-Encoding: gzip', 400, frame(['Transfer-Encoding: gzip'], '0\r\n\r\n'));
add('a space before the colon of Transfer-Encoding', 400, frame(['Transfer-Encoding : chunked'], '0\r\n\r\n'));
add('Transfer-Encoding with a vertical tab', 400, frame(['Transfer-Encoding:\u000bchunked'], '0\r\n\r\n'));
add('Transfer-Encoding: chunked twice', 400, frame(['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], '0\r\n\r\n'));
add('a chunk size that is not hexadecimal', 400, frame(['Transfer-Encoding: chunked'], 'zz\r\n{"id":"x"}\r\n0\r\n\r\n'));
add('a chunk size that overflows', 400, frame(['Transfer-Encoding: chunked'], 'fffffffffffffffffffff\r\n{"id":"x"}\r\n0\r\n\r\n'));
add('a negative chunk size', 400, frame(['Transfer-Encoding: chunked'], '-a\r\n{"id":"x"}\r\n0\r\n\r\n'));
add('chunk data longer than its size', 400, frame(['Transfer-Encoding: chunked'], `2\r\n{"id":"x"}\r\n0\r\n\r\n`));
add('a chunk extension with a NUL', 400, frame(['Transfer-Encoding: chunked'], 'a;\u0000\r\n{"id":"x"}\r\n0\r\n\r\n'));
add('chunks with bare LF', 400, frame(['Transfer-Encoding: chunked'], 'a\n{"id":"x"}\n0\n\n'));
add('a chunked body over 64 KiB', 413, frame(['Transfer-Encoding: chunked'], `11170\r\n${lengthOf(70_000)}\r\n0\r\n\r\n`));
// Bytes after a request that said `Connection: close` are refused as a whole (the smuggled request is never answered).
add('a chunked body with broken JSON and a smuggled request after it', 400, frame(['Transfer-Encoding: chunked'], `5\r\n{"id"\r\n0\r\n\r\n${SMUGGLED}`));
add('a short Content-Length with a smuggled request after it', 400, frame(['Content-Length: 6'], `{"id":${SMUGGLED}`));
add('a NUL in a header value', 400, () => 'GET / HTTP/1.1\r\nHost: membrane.test\r\nX-A: a\u0000b\r\nConnection: close\r\n\r\n');
add('a bare CR in a header value', 400, () => 'GET / HTTP/1.1\r\nHost: membrane.test\r\nX-A: a\rb\r\nConnection: close\r\n\r\n');
add('a space in a header name', 400, () => 'GET / HTTP/1.1\r\nHost: membrane.test\r\nX A: b\r\nConnection: close\r\n\r\n');
add('a header line without a colon', 400, () => 'GET / HTTP/1.1\r\nHost: membrane.test\r\nnonsense\r\nConnection: close\r\n\r\n');
add('an obs-folded Authorization header', 400, (k) => `GET / HTTP/1.1\r\nHost: membrane.test\r\nAuthorization: Bearer\r\n ${k.query}\r\nConnection: close\r\n\r\n`);
add('a header name with non-ASCII bytes', 400, () => 'GET / HTTP/1.1\r\nHost: membrane.test\r\nX-\u00e9: b\r\nConnection: close\r\n\r\n');
add('a space inside the request target', 400, () => 'GET /a b HTTP/1.1\r\nHost: membrane.test\r\n\r\n');
add('an extra word after the version', 400, () => 'GET / HTTP/1.1 extra\r\nHost: membrane.test\r\n\r\n');
// Node's parser takes a bare `GET /` as HTTP/0.9, which cannot carry a token: 401.
add('HTTP/0.9 (no version, so no token)', 401, () => 'GET /\r\n\r\n');
add('an unknown protocol', 400, () => 'GET / FOO/1.1\r\nHost: membrane.test\r\n\r\n');
// Node's parser accepts the version 2.0 in an HTTP/1 request line; without a token that is a 401.
add('HTTP/2.0 in an HTTP/1 request line, without a token', 401, () => 'GET / HTTP/2.0\r\nHost: membrane.test\r\nConnection: close\r\n\r\n');
add('HTTP/1.9', 400, () => 'GET / HTTP/1.9\r\nHost: membrane.test\r\n\r\n');
add('the HTTP/2 preface', 400, () => 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
add('a lower-case method', 400, () => 'get / HTTP/1.1\r\nHost: membrane.test\r\n\r\n');
add('an unknown method', 400, () => 'BREW / HTTP/1.1\r\nHost: membrane.test\r\n\r\n');
add('a TLS ClientHello on the plain port', 400, () => Buffer.from('16030100a5010000a10303', 'hex'));
add('binary garbage', 400, () => Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a]));
add('absolute-form target with a valid token', 400, (k) => head('GET', k.query, [], 'http://169.254.169.254/latest/meta-data/'), { message: /not a forward proxy/ });
add('absolute-form target for an exported capability', 400, (k) => head('GET', k.exported, [], `http://127.0.0.1:${target.port}/`), { message: /not a forward proxy/ });
add('asterisk-form target', 400, (k) => head('OPTIONS', k.query, [], '*'));
add('authority-form target with GET', 400, (k) => head('GET', k.query, [], '127.0.0.1:22'));
add('CONNECT', 405, () => 'CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n');
add('CONNECT with a token', 405, (k) => `CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nAuthorization: Bearer ${k.exported}\r\n\r\n`);
add('no Host header', 400, (k) => `GET / HTTP/1.1\r\nAuthorization: Bearer ${k.query}\r\nConnection: close\r\n\r\n`);
add('two Host headers', 400, (k) => `GET / HTTP/1.1\r\nHost: membrane.test\r\nHost: 169.254.169.254\r\nAuthorization: Bearer ${k.query}\r\nConnection: close\r\n\r\n`);
add('Expect: 100-continue with a body over the limit', 413, (k) => head('POST', k.create, ['Expect: 100-continue', 'Content-Length: 100000000']));
add('an unknown expectation', 417, (k) => withBody('POST', k.create, '{"id":"x"}', ['Expect: 200-ok']));
add('an Upgrade to websocket without a token', 401, () => 'GET / HTTP/1.1\r\nHost: membrane.test\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
add('an h2c upgrade on an export capability', 405, (k) => head('GET', k.export, ['Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA']));

// --- Oversized and slow heads -----------------------------------------------
group = 'oversized and slow heads';
add('one 20 KB header', 431, () => `GET / HTTP/1.1\r\nHost: membrane.test\r\nConnection: close\r\nX-Big: ${lengthOf(20_000)}\r\n\r\n`);
add('a 20 KB header name', 431, () => `GET / HTTP/1.1\r\nHost: membrane.test\r\nConnection: close\r\n${lengthOf(20_000)}: x\r\n\r\n`);
add('3,000 small headers', 431, () => `GET / HTTP/1.1\r\nHost: membrane.test\r\nConnection: close\r\n${Array.from({ length: 3_000 }, (_, i) => `X-Header-${i}: value`).join('\r\n')}\r\n\r\n`);
add('a 20 KB request target', 431, () => `GET /${lengthOf(20_000)} HTTP/1.1\r\nHost: membrane.test\r\nConnection: close\r\n\r\n`);
add('a 20 KB Authorization header', 431, () => `GET / HTTP/1.1\r\nHost: membrane.test\r\nConnection: close\r\nAuthorization: Bearer CPBLTY1-${'A'.repeat(20_000)}\r\n\r\n`);
add('a 20 KB head sent in 1 KB pieces', 431, () =>
  Array.from({ length: 21 }, (_, i): Part[] => (i === 0 ? ['GET / HTTP/1.1\r\nHost: membrane.test\r\nConnection: close\r\nX-Big: '] : [lengthOf(1_000), { pause: 5 }])).flat(),
);
add('a head that never ends', 408, () => 'GET / HTTP/1.1\r\nHost: membrane.test\r\n', { server: 'slow' });
add('slowloris: a header line every 250 ms', 408, () => ['GET / HTTP/1.1\r\n', ...Array.from({ length: 16 }, (_, i): Part[] => [{ pause: 250 }, `X-${i}: v\r\n`]).flat()], { server: 'slow' });
add('a connection that sends nothing', 408, () => [], { server: 'slow' });
add('a body that stops arriving', 408, (k) => [head('POST', k.slowCreate, ['Content-Length: 100']), '{"id":'], { server: 'slow' });

// --- Methods per capability kind --------------------------------------------
group = 'methods per capability kind';
const methodCases: [string, (k: Keys) => string, string[]][] = [
  ['tenant create', (k) => k.create, ['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE']],
  ['tenant query', (k) => k.victimQuery, ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']],
  ['tenant deleteSelf', (k) => k.victimDeleteSelf, ['PUT', 'PATCH', 'OPTIONS', 'TRACE']],
  ['membrane export', (k) => k.export, ['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']],
  ['membrane revoke', (k) => k.victimRevoke, ['PUT', 'PATCH', 'OPTIONS', 'TRACE']],
];
for (const [kind, token, methods] of methodCases) {
  for (const method of methods) {
    add(`${method} on ${kind}`, 405, (k) => (method === 'PUT' || method === 'PATCH' ? withBody(method, token(k), '{"id":"method-probe"}') : head(method, token(k))), {
      message: new RegExp(`not ${method}`),
    });
  }
}
add('POST with X-HTTP-Method-Override: GET on tenant query', 405, (k) => withBody('POST', k.victimQuery, '{}', ['X-HTTP-Method-Override: GET']));

// --- Answer and effect agree ----------------------------------------------
// A complete, valid control-plane request followed on the same connection by
// bytes that are not HTTP: the server may answer the request (2xx) and then
// refuse the rest, or refuse the whole connection with a 400, but a 400 must
// mean that nothing happened.
group = 'answer and effect agree';
/** Whether the main tenant has a membrane with this id (after a short grace for a handler still running). */
const membraneExists = (id: string) => async (): Promise<boolean> => {
  await delay(150);
  const found = await call(servers.main.url, keys.queryUri, { path: `/?id=${encodeURIComponent(id)}` });
  assert.equal(found.status, 200);
  return found.json.membranes.length > 0;
};
const createThen = (id: string, tail: string, close: boolean) => (k: Keys) => {
  const body = JSON.stringify({ id });
  return `POST / HTTP/1.1\r\nHost: membrane.test\r\nAuthorization: Bearer ${k.create}\r\nContent-Length: ${body.length}\r\n${close ? 'Connection: close\r\n' : ''}\r\n${body}${tail}`;
};
add('a create with Connection: close, then garbage', 400, createThen('pipelined-probe-1', 'GARBAGE', true), { effect: membraneExists('pipelined-probe-1') });
add('a create with Connection: close, then a smuggled request', 400, createThen('pipelined-probe-2', SMUGGLED, true), { effect: membraneExists('pipelined-probe-2') });
add('a keep-alive create, then a line of garbage', 400, createThen('pipelined-probe-3', 'GARBAGE\r\n\r\n', false), { effect: membraneExists('pipelined-probe-3') });
add('a keep-alive create, then binary bytes', 400, createThen('pipelined-probe-4', '\u0000\u00ff\r\n\r\n', false), { effect: membraneExists('pipelined-probe-4') });
add('a revoke with Connection: close, then garbage', 400, (k) => `DELETE / HTTP/1.1\r\nHost: membrane.test\r\nAuthorization: Bearer ${k.probeRevoke}\r\nConnection: close\r\n\r\nGARBAGE`, {
  effect: async (k) => {
    await delay(150);
    const result = await call(servers.main.url, k.probeExportUri, { body: { uri: T } });
    assert.ok(result.status === 201 || result.status === 401, result.text);
    return result.status === 401;
  },
});

// --- Target policy addresses ------------------------------------------------
group = 'target policy addresses';
const denied: [string, RegExp][] = [
  ['http://127.0.0.1/', /loopback/],
  ['http://127.255.255.254:8080/', /loopback/],
  ['https://127.0.0.1/', /loopback/],
  ['http://127.1/', /loopback/],
  ['http://2130706433/', /loopback/],
  ['http://0x7f000001/', /loopback/],
  ['http://0177.0.0.1/', /loopback/],
  ['http://127.0.0.1./', /loopback/],
  ['http://127.0.0.1%2e/', /loopback/],
  ['http://LOCALHOST/', /loopback/],
  ['http://localhost:8080/', /loopback/],
  ['http://10.0.0.1/', /private/],
  ['http://10.255.255.255/', /private/],
  ['http://172.16.0.1/', /private/],
  ['http://172.31.255.254/', /private/],
  ['http://192.168.0.1/', /private/],
  ['http://192.168.255.255/', /private/],
  ['http://169.254.169.254/latest/meta-data/', /link-local/],
  ['http://169.254.0.1/', /link-local/],
  ['http://0xa9fea9fe/', /link-local/],
  ['http://100.64.0.1/', /carrier-grade NAT/],
  ['http://100.127.255.254/', /carrier-grade NAT/],
  ['http://0.0.0.0/', /unspecified/],
  ['http://0/', /unspecified/],
  ['http://[::1]/', /loopback/],
  ['http://[0:0:0:0:0:0:0:1]/', /loopback/],
  ['http://[::]/', /unspecified/],
  ['http://[fc00::1]/', /unique-local/],
  ['http://[fd00:ec2::254]/', /unique-local/],
  ['http://[fe80::1]/', /link-local/],
  ['http://[febf:ffff::1]/', /link-local/],
  ['http://[::ffff:127.0.0.1]/', /loopback, inside an IPv6 address/],
  ['http://[::ffff:7f00:1]/', /loopback, inside an IPv6 address/],
  ['http://[0:0:0:0:0:ffff:127.0.0.1]/', /loopback, inside an IPv6 address/],
  ['http://[::ffff:169.254.169.254]/', /link-local.*inside an IPv6 address/],
  ['http://[::ffff:10.0.0.1]/', /private, inside an IPv6 address/],
  ['http://[::ffff:192.168.1.1]/', /private, inside an IPv6 address/],
  ['http://[::ffff:100.64.0.1]/', /carrier-grade NAT, inside an IPv6 address/],
  ['http://[64:ff9b::7f00:1]/', /loopback, inside an IPv6 address/],
  ['http://[2002:a9fe:a9fe::1]/', /link-local.*inside an IPv6 address/],
  ['http://224.0.0.1/', /multicast/],
  ['http://255.255.255.255/', /reserved|broadcast/],
  ['http://[ff02::1]/', /multicast/],
];
for (const [uri, reason] of denied) add(uri, 400, strictConfig({ uri }), { server: 'strict', message: reason });
add('a denied address with an allowed-looking path', 400, strictConfig({ uri: 'http://169.254.169.254/https://example.com/' }), { server: 'strict', message: /link-local/ });
add('a denied address with signing', 400, strictConfig({ uri: 'https://[::1]/', hmac: { [C1]: CAP1 } }), { server: 'strict', message: /loopback/ });

// ---------------------------------------------------------------------------
// Running the corpus
// ---------------------------------------------------------------------------

test('the corpus has at least 150 cases', () => {
  assert.ok(corpus.length >= 150, `only ${corpus.length} cases`);
  const names = corpus.map((c) => `${c.group}: ${c.name}`);
  assert.equal(new Set(names).size, names.length, 'case names are unique');
});

const groups = [...new Set(corpus.map((c) => c.group))];
for (const name of groups) {
  describe(name, () => {
    for (const c of corpus.filter((each) => each.group === name)) {
      test(`${c.name} → ${c.status}`, async () => {
        const sent = c.send(keys);
        const data = await exchange(servers[c.server ?? 'main'].port, Array.isArray(sent) ? sent : [sent]);
        const answer = parseAnswer(data);
        assert.ok(answer.status < 500, `a server error for a client's mistake: ${show(data)}`);
        if (c.effect !== undefined && answer.status >= 200 && answer.status < 300) {
          assert.equal(await c.effect(keys), true, `answered ${answer.status}, yet nothing happened`);
          return;
        }
        assert.equal(answer.status, c.status, `expected ${c.status}, got ${show(data)}`);
        assert.match(String(answer.headers['content-type']?.[0]), /^application\/json/, `not JSON: ${show(data)}`);
        let json: unknown;
        assert.doesNotThrow(() => (json = JSON.parse(answer.body)), `the body is not JSON: ${show(data)}`);
        assert.ok(typeof json === 'object' && json !== null && !Array.isArray(json), `not an object: ${answer.body}`);
        const body = json as Record<string, unknown>;
        assert.deepEqual(Object.keys(body).sort(), ['error', 'message'], answer.body);
        assert.equal(body.error, REASONS[c.status], answer.body);
        assert.equal(typeof body.message, 'string');
        assert.ok((body.message as string).length > 0);
        if (c.message !== undefined) assert.match(body.message as string, c.message);
        assert.doesNotMatch(answer.body, /CPBLTY1-[A-Za-z0-9_-]{16}/, 'an error never echoes a token');
        if (c.status === 401) {
          assert.equal(answer.body, UNAUTHORIZED_BODY, 'every 401 is the same');
          assert.deepEqual(answer.headers['www-authenticate'], ['Bearer']);
        }
        if (c.status === 405) assert.ok(answer.headers.allow !== undefined, 'a 405 says what is allowed');
        assert.equal(answer.rest.length, 0, `more than one answer to one request: ${show(data)}`);
        if (c.effect !== undefined) assert.equal(await c.effect(keys), false, `answered ${answer.status}, yet the action took effect`);
      });
    }
  });
}

test('afterwards: healthz is 200 and good capabilities still work', async () => {
  const main = servers.main;
  for (const server of Object.values(servers)) {
    const health = await call(server.url, undefined, { path: '/healthz' });
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: 'ok' });
  }
  // The capability exported before the corpus still reaches its target.
  const before = target.requests.length;
  const good = await call(main.url, keys.exportedUri, { path: '/?ignored=1' });
  assert.equal(good.status, 200, good.text);
  assert.equal(good.headers['x-target'], 'echo');
  assert.equal(target.requests.length, before + 1);
  // The corpus's export capability still exports, and the new capability works too.
  const fresh = await main.control.export(keys.exportUri, { uri: `${target.url}/fresh`, method: 'POST', headers: { 'X-Fresh': '1' } });
  const invoked = await call(main.url, fresh, { body: 'payload' });
  assert.equal(invoked.status, 200, invoked.text);
  assert.equal(invoked.json.method, 'POST');
  assert.equal(invoked.json.url, '/fresh');
  // The victim tenant survived its wrong-method deleteSelf cases.
  assert.equal((await call(main.url, `cpblty://${keys.authority}/#${keys.victimQuery}`)).status, 200);
  // The strict server still exports to a public address (its policy does not refuse everything).
  const strictExport = `cpblty://${servers.strict.authority}/#${keys.strictExport}`;
  const publicExport = await call(servers.strict.url, strictExport, { body: { uri: 'https://93.184.215.14/' } });
  assert.equal(publicExport.status, 201, publicExport.text);
});

test('afterwards: no hostile request created or revoked a membrane', async () => {
  const main = servers.main;
  const listed = await call(main.url, main.roots.query, { path: '/?limit=1000' });
  assert.equal(listed.status, 200);
  const ids = listed.json.membranes.map((m: { id: string }) => m.id) as string[];
  // The "answer and effect agree" cases check their own membranes.
  assert.deepEqual(ids.filter((id) => !/^(pipelined|revoke)-probe/.test(id)).sort(), ['hostile', 'victim']);
  // And the tenant can still create membranes.
  const created = await call(main.url, main.roots.create, { body: { id: 'after-the-storm' } });
  assert.equal(created.status, 201, created.text);
});
