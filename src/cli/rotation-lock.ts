/**
 * The lock a `membrane keys rotate` holds from start to end: the file
 * `keys-rotate.lock` in the data directory, created whole and only if it
 * does not exist (a private file linked into place), naming its holder: the
 * process id, the host name, when it started, and a random nonce that tells
 * this run's lock from any later one.
 *
 * A lock whose holder is gone is taken over: when the lock names this host
 * and no process with its id is alive (the holder was killed or crashed).
 * A lock naming another host (a data directory on shared storage) is never
 * judged stale: the message says how to remove it by hand. The holder's
 * process id is checked with `kill(pid, 0)`; if the id has since been
 * reused by another process, the lock looks held, which errs on the safe
 * side (the message says how to clear it).
 *
 * Staleness is not judged by age (as proper-lockfile does, by refreshing
 * the lock's mtime): a rotation that stalls or is stopped must keep its
 * lock, or a second rotation would run beside it, which is what loses keys.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createWhole } from '../durable-file.js';

export const ROTATION_LOCK_NAME = 'keys-rotate.lock';

interface Holder {
  pid: number;
  host: string;
  since: string;
  nonce: string;
}

/** The lock is held by another rotation (or cannot be judged). */
export class RotationLockedError extends Error {
  readonly code = 'MEMBRANE_ROTATION_LOCKED';
}

export class RotationLock {
  readonly path: string;
  readonly #nonce: string;

  private constructor(path: string, nonce: string) {
    this.path = path;
    this.#nonce = nonce;
  }

  /**
   * Takes the lock of `dataDir`, taking over a stale one (and calling
   * `warn` to say so), or throws RotationLockedError naming the holder.
   */
  static acquire(dataDir: string, warn: (message: string) => void): RotationLock {
    const path = join(dataDir, ROTATION_LOCK_NAME);
    const mine: Holder = { pid: process.pid, host: hostname(), since: new Date().toISOString(), nonce: randomBytes(16).toString('hex') };
    const clear = `if no rotation is running, remove ${path} and run this again`;
    // A few rounds: each one that fails to create the lock finds it gone or stale and removed.
    for (let round = 0; round < 3; round++) {
      if (createWhole(path, `${JSON.stringify(mine)}\n`)) return new RotationLock(path, mine.nonce);
      const holder = readHolder(path);
      if (holder === 'gone') continue;
      if (holder === undefined) throw new RotationLockedError(`the key rotation lock ${path} names no holder; ${clear}`);
      const held = `the key rotation lock ${path} is held by process ${holder.pid} on ${holder.host} since ${holder.since}`;
      if (holder.host !== mine.host) throw new RotationLockedError(`another key rotation may be running: ${held}; ${clear}`);
      if (isAlive(holder.pid)) throw new RotationLockedError(`another key rotation is running: ${held}; wait for it to end (${clear})`);
      if (removeIfStill(path, holder)) warn(`took over the key rotation lock ${path}: process ${holder.pid}, which held it since ${holder.since}, is no longer running`);
    }
    throw new RotationLockedError(`could not take the key rotation lock ${path}: other rotations keep taking it`);
  }

  /** True while the lock file is still this run's (nobody removed or replaced it). */
  isHeld(): boolean {
    const holder = readHolder(this.path);
    return typeof holder === 'object' && holder.nonce === this.#nonce;
  }

  /** Removes the lock file if it is still this run's. */
  release(): void {
    if (this.isHeld()) unlinkSync(this.path);
  }
}

/** The holder a lock file names; 'gone' if there is no lock file; undefined if it names none. */
function readHolder(path: string): Holder | 'gone' | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw error;
  }
  try {
    const holder = JSON.parse(text) as Partial<Holder>;
    const valid = Number.isSafeInteger(holder.pid) && holder.pid! > 0 && [holder.host, holder.since, holder.nonce].every((field) => typeof field === 'string');
    return valid ? (holder as Holder) : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  // A lock naming this very process id was left by an earlier process that had it.
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the stale lock `holder` left, and nothing else: the lock file is
 * moved aside, and if it turns out to be another run's lock (one that took
 * over the same stale lock a moment earlier), it is put back. True if the
 * stale lock was removed here.
 */
function removeIfStill(path: string, holder: Holder): boolean {
  const aside = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.stale`;
  try {
    renameSync(path, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  const moved = readHolder(aside);
  if (typeof moved === 'object' && moved.nonce === holder.nonce) {
    unlinkSync(aside);
    return true;
  }
  // Not the stale lock: put it back unless yet another run has taken the
  // lock meanwhile (its owner then finds it gone when it checks, and stops).
  try {
    linkSync(aside, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    unlinkSync(aside);
  }
  return false;
}
