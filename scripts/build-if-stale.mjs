#!/usr/bin/env node
/**
 * Compiles the checkout (`tsc -p tsconfig.json`) only when the build is
 * older than what it is built from, so that `npm start` on a current build
 * starts the server at once. The build is current when its record
 * (dist/.tsbuildinfo, tsconfig's tsBuildInfoFile) is at least as new as
 * tsconfig.json, package.json and every file and directory under src/ (a
 * directory's time changes when a file in it is added, removed or
 * renamed). After a successful compilation the record's time is set to
 * now, because tsc leaves it untouched when no output changed; after a
 * failed one it is set to the epoch, because tsc writes it even when it
 * reports errors, and the next run must compile again.
 *
 * Prints nothing when the build is current; otherwise one line on stderr
 * naming the newer file, then whatever tsc prints. Exits with tsc's status.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const record = join(root, 'dist', '.tsbuildinfo');

/** Modification time in milliseconds, or undefined when the path does not exist. */
function modified(path) {
  try {
    return statSync(path).mtimeMs;
  } catch (error) {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The first path under `directory` (itself included) modified after `since`. */
function newerUnder(directory, since) {
  const time = modified(directory);
  if (time === undefined) return undefined;
  if (time > since) return directory;
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name);
    const newer = entry.isDirectory() ? newerUnder(path, since) : (modified(path) ?? -Infinity) > since ? path : undefined;
    if (newer !== undefined) return newer;
  }
  return undefined;
}

/** Why the build must be made again, or undefined when it is current. */
function staleness() {
  const built = modified(record);
  if (built === undefined) return 'no build yet';
  if (built === 0) return 'the last compilation failed';
  const newer = [join(root, 'tsconfig.json'), join(root, 'package.json')].find((path) => (modified(path) ?? -Infinity) > built) ?? newerUnder(join(root, 'src'), built);
  return newer === undefined ? undefined : `${relative(root, newer) || '.'} is newer than the build`;
}

const reason = staleness();
if (reason !== undefined) {
  process.stderr.write(`build-if-stale: ${reason}; compiling\n`);
  const tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
  const compiled = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' });
  if (compiled.status !== 0) {
    if (modified(record) !== undefined) utimesSync(record, new Date(0), new Date(0));
    process.exit(compiled.status ?? 1);
  }
  const now = new Date();
  utimesSync(record, now, now);
}
