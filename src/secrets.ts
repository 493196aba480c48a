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
 * `membrane init` or the first `membrane serve`).
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, linkSync, openSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { syncDirectory, writeTemporary } from './durable-file.js';
import { ConfigurationError } from './errors.js';

const VERSION = 1;
const KEY_BYTES = 32;
const KEY_ID_BYTES = 8;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES;
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;

export const KEY_FILE_NAME = 'master.key';

/** Thrown when a sealed blob cannot be opened: wrong key, wrong purpose, or altered. */
export class UnsealError extends Error {
  readonly code = 'MEMBRANE_UNSEAL';
}

export class MasterKey {
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

export interface LoadMasterKeyOptions {
  dataDir: string;
  /** Value of MEMBRANE_MASTER_KEY, if set; it takes precedence over the key file. */
  envValue?: string | undefined;
  /** Create the key file (mode 0600) when neither the variable nor the file exists. */
  create: boolean;
}

export function loadMasterKey(options: LoadMasterKeyOptions): MasterKey {
  if (options.envValue !== undefined && options.envValue !== '') {
    return MasterKey.fromBase64(options.envValue, 'MEMBRANE_MASTER_KEY');
  }
  const path = join(options.dataDir, KEY_FILE_NAME);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    if (!options.create) {
      throw new ConfigurationError(`no master key: set MEMBRANE_MASTER_KEY or create ${path} with \`membrane init\``);
    }
    return createKeyFile(path, options);
  }
  try {
    const mode = fstatSync(fd).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new ConfigurationError(`${path} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it`);
    }
    return MasterKey.fromBase64(readFileSync(fd, 'utf8'), path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the key to a private temporary file, then links it into place, so
 * a concurrent reader sees either no key file or a complete one, and two
 * processes racing to create it end up sharing one key.
 */
function createKeyFile(path: string, options: LoadMasterKeyOptions): MasterKey {
  const key = MasterKey.generate();
  const temporary = writeTemporary(path, `${key.toBase64()}\n`);
  try {
    linkSync(temporary, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return loadMasterKey({ ...options, create: false });
    throw error;
  } finally {
    unlinkSync(temporary);
  }
  syncDirectory(options.dataDir);
  return key;
}
