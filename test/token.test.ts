/** Capability tokens and URIs. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { capabilityUri, generateToken, hashToken, isWellFormedToken, parseCapabilityUri, redactTokens, validateAuthority } from '../src/token.js';

test('tokens are CPBLTY1- and 86 base64url characters of 64 random bytes, all distinct', () => {
  const tokens = new Set(Array.from({ length: 1000 }, generateToken));
  assert.equal(tokens.size, 1000);
  for (const token of tokens) {
    assert.match(token, /^CPBLTY1-[A-Za-z0-9_-]{86}$/);
    assert.equal(Buffer.from(token.slice(8), 'base64url').length, 64);
    assert.ok(isWellFormedToken(token));
  }
});

test('malformed tokens are recognised', () => {
  const good = generateToken();
  for (const bad of ['', 'CPBLTY1-', good.slice(0, -1), `${good}A`, good.replace('CPBLTY1', 'CPBLTY2'), good.replace('-', '_'), `${good.slice(0, -1)}=`, `${good.slice(0, -1)}+`, ` ${good}`]) {
    assert.equal(isWellFormedToken(bad), false, bad);
  }
});

test('hashToken is SHA-256 of the token text', () => {
  const token = generateToken();
  assert.deepEqual(hashToken(token), createHash('sha256').update(token).digest());
});

test('capability URIs round-trip, and anything else is refused', () => {
  const token = generateToken();
  for (const authority of ['localhost:8080', 'membrane.example.com', '[::1]:443', '10.0.0.1:9']) {
    const uri = capabilityUri(authority, token);
    assert.equal(uri, `cpblty://${authority}/#${token}`);
    assert.deepEqual(parseCapabilityUri(uri), { authority, token });
  }
  for (const bad of [
    token,
    `https://localhost/#${token}`,
    `cpblty://localhost#${token}`,
    `cpblty://localhost/path#${token}`,
    `cpblty://localhost/?#${token}`,
    `cpblty:///#${token}`,
    `cpblty://local host/#${token}`,
    `cpblty://localhost/#${token}x`,
    `cpblty://localhost/#${token}\n`,
    `cpblty://[::1/#${token}`,
    `cpblty://host:99999/#${token}`,
    `cpblty://-bad/#${token}`,
  ]) {
    assert.equal(parseCapabilityUri(bad), undefined, bad);
  }
});

test('redactTokens hides every token in a text', () => {
  const token = generateToken();
  assert.equal(redactTokens(`Unknown argument: cpblty://x/#${token} and ${token}`), 'Unknown argument: cpblty://x/#CPBLTY1-… and CPBLTY1-…');
});

test('authorities are host[:port]', () => {
  for (const good of ['localhost', 'localhost:8080', 'a.b-c.example', '127.0.0.1:1', '[::1]', '[2001:db8::1]:65535']) {
    assert.equal(validateAuthority(good), good);
  }
  for (const bad of ['', 'http://x', 'x/', 'x:0', 'x:65536', 'x:', 'user@x', 'a b', '-x', 'x-', '::1', 'x:80:80']) {
    assert.throws(() => validateAuthority(bad), /is not host\[:port\]/, bad);
  }
});
