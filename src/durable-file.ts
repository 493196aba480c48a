/** Small helpers for files that must survive a crash whole or not at all. */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Writes `data` to a new file (mode 0600) next to `path`, flushed to disk,
 * and returns its name; the caller links or renames it into place.
 */
export function writeTemporary(path: string, data: string): string {
  const temporary = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(temporary, 'wx', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return temporary;
}

/** Makes a change of a directory's entries (a new, renamed or linked file) durable. */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates `path` holding `data` (mode 0600) unless it exists, in one step:
 * the data is written to a private temporary file that is then linked into
 * place, so no one ever sees the file incomplete. False if `path` existed.
 */
export function createWhole(path: string, data: string): boolean {
  const temporary = writeTemporary(path, data);
  try {
    linkSync(temporary, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    unlinkSync(temporary);
  }
  syncDirectory(dirname(path));
  return true;
}
