/**
 * Sealing of secrets at rest: AES-256-GCM under the master key.
 *
 * Sealed blob layout (all of it stored, nothing else needed to open it):
 *   version (1 byte, = 1) | key id (8 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)
 * The key id is derived from the key, so a blob sealed under another key is
 * recognised as such instead of failing as "tampered". Every blob is bound to
 * a purpose string (the GCM additional data), so a sealed value cannot be
 * moved into a column of another kind and opened there.
 *
 * The master key comes from MEMBRANE_MASTER_KEY (base64 of 32 bytes) or from
 * the key file `master.key` in the data directory (mode 0600, created by
 * `membrane init` or the first `membrane serve`). Either may hold several
 * keys (comma-separated, or one per line): a key ring whose first key seals
 * and whose others still open what they sealed, so that the master key can
 * be rotated without downtime (`membrane keys rotate`). A ring read from the
 * key file follows changes to the file: it re-reads the file before sealing
 * when the file has changed, and when asked to open a value sealed under a
 * key it does not hold.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createWhole, syncDirectory, writeTemporary } from './durable-file.js';
import { ConfigurationError } from './errors.js';

const VERSION = 1;
const KEY_BYTES = 32;
const KEY_ID_BYTES = 8;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES;
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;

export const KEY_FILE_NAME = 'master.key';

/** What seals and opens secrets: one key, or a key ring. */
export interface Sealer {
  seal(plaintext: Buffer | string, purpose: string): Buffer;
  unseal(blob: Buffer, purpose: string): Buffer;
  unsealText(blob: Buffer, purpose: string): string;
}

/** The id of the key a sealed blob was sealed under (or undefined if it is no sealed blob). */
export function sealedKeyId(blob: Buffer): Buffer | undefined {
  return blob.length >= HEADER_BYTES + TAG_BYTES && blob[0] === VERSION ? blob.subarray(1, 1 + KEY_ID_BYTES) : undefined;
}

/** Thrown when a sealed blob cannot be opened: wrong key, wrong purpose, or altered. */
export class UnsealError extends Error {
  readonly code = 'MEMBRANE_UNSEAL';
}

export class MasterKey implements Sealer {
  readonly id: Buffer;
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== KEY_BYTES) throw new ConfigurationError(`the master key must be ${KEY_BYTES} bytes`);
    this.#key = Buffer.from(key);
    this.id = createHmac('sha256', this.#key).update('membrane master key id').digest().subarray(0, KEY_ID_BYTES);
  }

  static generate(): MasterKey {
    return new MasterKey(randomBytes(KEY_BYTES));
  }

  /** Parses base64 of exactly 32 bytes. */
  static fromBase64(text: string, source: string): MasterKey {
    const trimmed = text.trim();
    if (!BASE64_KEY.test(trimmed)) throw new ConfigurationError(`${source} must be base64 of ${KEY_BYTES} bytes`);
    return new MasterKey(Buffer.from(trimmed, 'base64'));
  }

  toBase64(): string {
    return this.#key.toString('base64');
  }

  seal(plaintext: Buffer | string, purpose: string): Buffer {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, nonce);
    cipher.setAAD(Buffer.from(purpose, 'utf8'));
    const body = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext;
    const ciphertext = Buffer.concat([cipher.update(body), cipher.final()]);
    return Buffer.concat([Buffer.of(VERSION), this.id, nonce, ciphertext, cipher.getAuthTag()]);
  }

  unseal(blob: Buffer, purpose: string): Buffer {
    if (blob.length < HEADER_BYTES + TAG_BYTES || blob[0] !== VERSION) {
      throw new UnsealError('sealed value has an unknown format');
    }
    if (!blob.subarray(1, 1 + KEY_ID_BYTES).equals(this.id)) {
      throw new UnsealError('sealed value was sealed under another master key');
    }
    const nonce = blob.subarray(1 + KEY_ID_BYTES, HEADER_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', this.#key, nonce);
    decipher.setAAD(Buffer.from(purpose, 'utf8'));
    decipher.setAuthTag(blob.subarray(blob.length - TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(blob.subarray(HEADER_BYTES, blob.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new UnsealError('sealed value failed authentication');
    }
  }

  unsealText(blob: Buffer, purpose: string): string {
    return this.unseal(blob, purpose).toString('utf8');
  }
}

export class KeyRing implements Sealer {
  #keys: readonly MasterKey[];
  readonly #file: string | undefined;
  #fileVersion: string | undefined;

  /** `keys[0]` seals; every key opens. `file`: the key file the ring follows. */
  constructor(keys: readonly MasterKey[], file?: string) {
    if (keys.length === 0) throw new ConfigurationError('a key ring needs at least one key');
    this.#keys = keys;
    this.#file = file;
    this.#fileVersion = file === undefined ? undefined : fileVersion(file);
  }

  /** The key that seals. */
  get current(): MasterKey {
    this.#follow(false);
    return this.#keys[0]!;
  }

  get keys(): readonly MasterKey[] {
    return this.#keys;
  }

  seal(plaintext: Buffer | string, purpose: string): Buffer {
    return this.current.seal(plaintext, purpose);
  }

  unseal(blob: Buffer, purpose: string): Buffer {
    const id = sealedKeyId(blob);
    let key = id === undefined ? undefined : this.#keys.find((candidate) => candidate.id.equals(id));
    if (key === undefined && id !== undefined && this.#follow(true)) key = this.#keys.find((candidate) => candidate.id.equals(id));
    if (key === undefined) {
      throw new UnsealError(id === undefined ? 'sealed value has an unknown format' : 'sealed value was sealed under a master key this server does not hold');
    }
    return key.unseal(blob, purpose);
  }

  unsealText(blob: Buffer, purpose: string): string {
    return this.unseal(blob, purpose).toString('utf8');
  }

  /** Re-reads the key file if it changed (or, with `force`, anyway); true if the keys changed. */
  #follow(force: boolean): boolean {
    if (this.#file === undefined) return false;
    const version = fileVersion(this.#file);
    if (!force && version === this.#fileVersion) return false;
    const keys = readKeyFile(this.#file);
    this.#fileVersion = version;
    const changed = !sameKeys(keys, this.#keys);
    this.#keys = keys;
    return changed;
  }
}

/** True when both lists hold the same keys in the same order. */
export function sameKeys(a: readonly MasterKey[], b: readonly MasterKey[]): boolean {
  return a.length === b.length && a.every((key, i) => key.id.equals(b[i]!.id));
}

function fileVersion(path: string): string | undefined {
  try {
    const stat = statSync(path);
    return `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  } catch {
    return undefined;
  }
}

/** Parses one or more base64 keys separated by commas or line breaks; the first is current. */
export function parseKeys(text: string, source: string): MasterKey[] {
  const parts = text.split(/[,\n]/).map((part) => part.trim()).filter((part) => part !== '');
  if (parts.length === 0) throw new ConfigurationError(`${source} must be base64 of ${KEY_BYTES} bytes`);
  return parts.map((part) => MasterKey.fromBase64(part, source));
}

export interface LoadMasterKeyOptions {
  dataDir: string;
  /** Value of MEMBRANE_MASTER_KEY, if set; it takes precedence over the key file. */
  envValue?: string | undefined;
  /** Create the key file (mode 0600) when neither the variable nor the file exists. */
  create: boolean;
}

export function loadMasterKey(options: LoadMasterKeyOptions): KeyRing {
  if (options.envValue !== undefined && options.envValue !== '') {
    return new KeyRing(parseKeys(options.envValue, 'MEMBRANE_MASTER_KEY'));
  }
  const path = keyFilePath(options.dataDir);
  try {
    return new KeyRing(readKeyFile(path), path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    if (!options.create) {
      throw new ConfigurationError(`no master key: set MEMBRANE_MASTER_KEY or create ${path} with \`membrane init\``);
    }
    return createKeyFile(path, options);
  }
}

export function keyFilePath(dataDir: string): string {
  return join(dataDir, KEY_FILE_NAME);
}

/** Reads the key file, refusing one that others can read. Throws ENOENT errors as they are. */
function readKeyFile(path: string): MasterKey[] {
  const fd = openSync(path, 'r');
  try {
    const mode = fstatSync(fd).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new ConfigurationError(`${path} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it`);
    }
    return parseKeys(readFileSync(fd, 'utf8'), path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Replaces the key file's contents atomically (a private temporary file
 * renamed into place), keys one per line, the first current.
 */
export function writeKeyFile(dataDir: string, keys: readonly MasterKey[]): void {
  const path = keyFilePath(dataDir);
  const temporary = writeTemporary(path, keys.map((key) => `${key.toBase64()}\n`).join(''));
  try {
    renameSync(temporary, path);
  } catch (error) {
    unlinkSync(temporary);
    throw error;
  }
  syncDirectory(dataDir);
}

/**
 * Creates the key file whole (see createWhole), so a concurrent reader sees
 * either no key file or a complete one, and two processes racing to create
 * it end up sharing one key.
 */
function createKeyFile(path: string, options: LoadMasterKeyOptions): KeyRing {
  const key = MasterKey.generate();
  if (!createWhole(path, `${key.toBase64()}\n`)) return loadMasterKey({ ...options, create: false });
  return new KeyRing([key], path);
}
