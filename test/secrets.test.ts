/** Sealing with AES-256-GCM under the master key, and the key file. */
import assert from 'node:assert/strict';
import { chmod, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { KEY_FILE_NAME, loadMasterKey, MasterKey, UnsealError } from '../src/secrets.js';
import { tempDir } from './helpers/membrane.js';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
async function dir(): Promise<string> {
  const path = await tempDir();
  dirs.push(path);
  return path;
}

test('seal and unseal round-trip; sealed text does not contain the plaintext; every seal differs', () => {
  const key = MasterKey.generate();
  const secret = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
  const a = key.seal(secret, 'purpose');
  const b = key.seal(secret, 'purpose');
  assert.notDeepEqual(a, b);
  assert.ok(!a.includes(Buffer.from(secret)));
  assert.equal(key.unsealText(a, 'purpose'), secret);
  assert.equal(a.length, 1 + 8 + 12 + Buffer.byteLength(secret) + 16);
  assert.deepEqual(key.unseal(key.seal(Buffer.alloc(0), 'p'), 'p'), Buffer.alloc(0));
});

test('a blob opens only under its own purpose, its own key, and unaltered', () => {
  const key = MasterKey.generate();
  const sealed = key.seal('secret', 'membrane.export-token');
  assert.throws(() => key.unseal(sealed, 'membrane.revoke-token'), UnsealError);
  assert.throws(() => MasterKey.generate().unseal(sealed, 'membrane.export-token'), /sealed under another master key/);
  for (const index of [0, 1, 9, 21, sealed.length - 1]) {
    const altered = Buffer.from(sealed);
    altered[index]! ^= 1;
    assert.throws(() => key.unseal(altered, 'membrane.export-token'), UnsealError, `byte ${index}`);
  }
  assert.throws(() => key.unseal(sealed.subarray(0, 20), 'membrane.export-token'), /unknown format/);
});

test('keys parse from base64 of exactly 32 bytes', () => {
  const key = MasterKey.generate();
  const copy = MasterKey.fromBase64(`${key.toBase64()}\n`, 'test');
  assert.equal(copy.unsealText(key.seal('x', 'p'), 'p'), 'x');
  for (const bad of ['', 'abc', Buffer.alloc(16).toString('base64'), Buffer.alloc(32).toString('base64url').slice(0, 42) + '-=', Buffer.alloc(32).toString('hex')]) {
    assert.throws(() => MasterKey.fromBase64(bad, 'SOURCE'), /SOURCE must be base64 of 32 bytes/);
  }
});

test('loadMasterKey creates a 0600 key file once and then reads it', async () => {
  const dataDir = await dir();
  assert.throws(() => loadMasterKey({ dataDir, create: false }), /no master key/);
  const created = loadMasterKey({ dataDir, create: true });
  const path = join(dataDir, KEY_FILE_NAME);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.match(await readFile(path, 'utf8'), /^[A-Za-z0-9+/]{43}=\n$/);
  const again = loadMasterKey({ dataDir, create: true });
  assert.equal(again.current.toBase64(), created.current.toBase64());
});

test('MEMBRANE_MASTER_KEY takes precedence over the key file', async () => {
  const dataDir = await dir();
  const file = loadMasterKey({ dataDir, create: true });
  const env = MasterKey.generate().toBase64();
  assert.equal(loadMasterKey({ dataDir, create: true, envValue: env }).current.toBase64(), env);
  assert.notEqual(env, file.current.toBase64());
});

test('a key file that others can read, or that is malformed, is refused', async () => {
  const dataDir = await dir();
  loadMasterKey({ dataDir, create: true });
  const path = join(dataDir, KEY_FILE_NAME);
  await chmod(path, 0o640);
  assert.throws(() => loadMasterKey({ dataDir, create: false }), /readable by others \(mode 640\)/);
  await chmod(path, 0o600);
  await writeFile(path, 'not a key\n');
  assert.throws(() => loadMasterKey({ dataDir, create: false }), /must be base64 of 32 bytes/);
});
