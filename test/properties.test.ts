/** Property-based tests (fast-check) of config validation, token and URI parsing, and strict JSON. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { BadRequestError } from '../src/errors.js';
import { jsonProblem } from '../src/http/strict-json.js';
import { parseExportConfig } from '../src/service/export-config.js';
import { capabilityUri, generateToken, isWellFormedToken, parseCapabilityUri, validateAuthority } from '../src/token.js';

const RUNS = { numRuns: 1000 };
const FIELDS = ['uri', 'capability', 'method', 'headers', 'allowQuery', 'timeoutMs', 'tls', 'hmac'];

/** Objects shaped like export configs: known field names with arbitrary JSON values, plus strangers. */
const configLike = fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string()), fc.jsonValue(), { maxKeys: 6 });
const nested = fc.record(
  {
    uri: fc.oneof(fc.constant('https://api.example.com/x'), fc.webUrl(), fc.string()),
    headers: fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.jsonValue())),
    tls: fc.dictionary(fc.constantFrom('ca', 'cert', 'key', 'rejectUnauthorized', 'other'), fc.jsonValue()),
    hmac: fc.dictionary(
      fc.constantFrom('aws4-hmac-sha256', 'cap1-hmac-sha512', 'other'),
      fc.dictionary(fc.constantFrom('awsAccessKeyId', 'secretAccessKey', 'region', 'service', 'sessionToken', 'key', 'keyId', 'x'), fc.jsonValue()),
    ),
    method: fc.oneof(fc.constantFrom('GET', 'POST', 'get', 'CONNECT'), fc.string()),
    timeoutMs: fc.oneof(fc.integer(), fc.double(), fc.string()),
  },
  { requiredKeys: [] },
);

/** parseExportConfig's contract: a config, or a BadRequestError with a one-line message; nothing else. */
function accepts(value: unknown): boolean {
  try {
    parseExportConfig(value);
    return true;
  } catch (error) {
    assert.ok(error instanceof BadRequestError, `threw ${(error as Error)?.constructor?.name}: ${(error as Error)?.message}`);
    assert.ok(error.message.length > 0 && !error.message.includes('\n'), error.message);
    return false;
  }
}

test('export config validation only ever accepts or answers 400, for any JSON', () => {
  fc.assert(fc.property(fc.jsonValue(), (value) => void accepts(value)), RUNS);
  fc.assert(fc.property(configLike, (value) => void accepts(value)), RUNS);
  fc.assert(fc.property(nested, (value) => void accepts(value)), RUNS);
});

test('whatever export config validation accepts has exactly one of uri and capability and no unknown field', () => {
  fc.assert(
    fc.property(fc.oneof(configLike, nested), (value) => {
      if (!accepts(value)) return;
      const keys = Object.keys(value as object);
      assert.equal(keys.includes('uri') !== keys.includes('capability'), true);
      for (const key of keys) assert.ok(FIELDS.includes(key), key);
    }),
    RUNS,
  );
});

test('a 400 from export config validation never repeats a value it was given', () => {
  const secret = 'zq-SECRET-VALUE-7f3';
  fc.assert(
    fc.property(nested, fc.constantFrom('uri', 'headers', 'tls', 'hmac', 'method'), (value, field) => {
      const poisoned: Record<string, unknown> = { ...value };
      poisoned[field] =
        field === 'headers' ? { 'X-A': `${secret}\n` } : field === 'tls' ? { key: secret } : field === 'hmac' ? { 'aws4-hmac-sha256': { secretAccessKey: secret } } : `${secret} `;
      try {
        parseExportConfig(poisoned);
      } catch (error) {
        assert.ok(!(error as Error).message.includes(secret), (error as Error).message);
      }
    }),
    RUNS,
  );
});

test('token and capability URI parsing never throws, and round-trips what it accepts', () => {
  fc.assert(
    fc.property(fc.string(), (text) => {
      const parsed = parseCapabilityUri(text);
      if (parsed !== undefined) {
        assert.ok(isWellFormedToken(parsed.token));
        assert.equal(capabilityUri(parsed.authority, parsed.token), text);
      }
      assert.equal(typeof isWellFormedToken(text), 'boolean');
    }),
    RUNS,
  );
  const authority = fc.oneof(fc.domain(), fc.ipV4(), fc.ipV6().map((address) => `[${address}]`)).chain((host) =>
    fc.option(fc.integer({ min: 1, max: 65535 })).map((port) => (port === null ? host : `${host}:${port}`)),
  );
  fc.assert(
    fc.property(authority, (host) => {
      const token = generateToken();
      assert.deepEqual(parseCapabilityUri(capabilityUri(validateAuthority(host), token)), { authority: host, token });
    }),
    RUNS,
  );
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 120 }), (text) => {
      const uri = `cpblty://localhost:8080/#${text}`;
      assert.equal(parseCapabilityUri(uri) !== undefined, /^CPBLTY1-[A-Za-z0-9_-]{86}$/.test(text));
    }),
    RUNS,
  );
});

test('strict JSON: valid JSON without duplicates passes; a duplicate key anywhere is found', () => {
  const noDuplicates = fc.jsonValue({ maxDepth: 6 });
  fc.assert(
    fc.property(noDuplicates, (value) => {
      const text = JSON.stringify(value);
      const problem = jsonProblem(text, 64);
      if (problem !== undefined) assert.match(problem, /"(__proto__|constructor|prototype)" is not allowed/);
    }),
    RUNS,
  );
  fc.assert(
    fc.property(noDuplicates, fc.string(), fc.jsonValue(), (value, key, duplicate) => {
      fc.pre(!['__proto__', 'constructor', 'prototype'].includes(key));
      const inner = JSON.stringify({ [key]: duplicate });
      const text = JSON.stringify({ wrapper: [value, '__HOLE__'] }).replace('"__HOLE__"', () => `${inner.slice(0, -1)},${JSON.stringify(key)}:0}`);
      JSON.parse(text);
      assert.match(jsonProblem(text, 64) ?? '', /appears twice|is not allowed|nested more than/);
    }),
    RUNS,
  );
});
