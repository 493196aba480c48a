/**
 * scripts/build-if-stale.mjs, run for real on a small copy of the project
 * layout (its own src/, tsconfig.json, package.json and dist/, the
 * checkout's TypeScript): it compiles only when the build is older than
 * what it is built from.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdir, readdir, readFile, rm, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REPO_ROOT } from './helpers/child.js';
import { tempDir } from './helpers/membrane.js';

let project: string;
const record = (): string => join(project, 'dist', '.tsbuildinfo');
const output = (): string => join(project, 'dist', 'src', 'greeting.js');

async function buildIfStale(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(project, 'scripts', 'build-if-stale.mjs')], { cwd: project, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

const modified = async (path: string): Promise<number> => (await stat(path)).mtimeMs;

/** Dates the sources two minutes back and the build one minute back: a current build, made before the edits a test makes now. */
async function ageTheBuild(): Promise<void> {
  const minutesAgo = (minutes: number): Date => new Date(Date.now() - minutes * 60_000);
  const sources = [project, join(project, 'tsconfig.json'), join(project, 'package.json'), ...(await readdir(join(project, 'src'), { recursive: true })).map((path) => join(project, 'src', path)), join(project, 'src')];
  for (const path of sources) await utimes(path, minutesAgo(2), minutesAgo(2));
  await utimes(record(), minutesAgo(1), minutesAgo(1));
}

async function touch(path: string): Promise<void> {
  const now = new Date();
  await utimes(path, now, now);
}

before(async () => {
  project = await tempDir('membrane-build-if-stale-');
  await mkdir(join(project, 'scripts'));
  await mkdir(join(project, 'src', 'parts'), { recursive: true });
  await copyFile(join(REPO_ROOT, 'scripts', 'build-if-stale.mjs'), join(project, 'scripts', 'build-if-stale.mjs'));
  await symlink(join(REPO_ROOT, 'node_modules'), join(project, 'node_modules'));
  await writeFile(join(project, 'package.json'), '{ "type": "module" }\n');
  await writeFile(
    join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', outDir: 'dist', rootDir: '.', strict: true, incremental: true, tsBuildInfoFile: 'dist/.tsbuildinfo', types: [] },
      include: ['src'],
    }),
  );
  await writeFile(join(project, 'src', 'greeting.ts'), "export const greeting: string = 'hello';\n");
  await writeFile(join(project, 'src', 'parts', 'name.ts'), "export const name: string = 'world';\n");
});

after(() => rm(project, { recursive: true, force: true }));

describe('build-if-stale', () => {
  test('compiles when there is no build yet', async () => {
    const result = await buildIfStale();
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /^build-if-stale: no build yet; compiling\n/);
    assert.match(await readFile(output(), 'utf8'), /'hello'/);
  });

  test('does nothing, and prints nothing, when the build is current', async () => {
    const recordBefore = await modified(record());
    const outputBefore = await modified(output());
    const result = await buildIfStale();
    assert.deepEqual(result, { code: 0, stdout: '', stderr: '' });
    assert.equal(await modified(record()), recordBefore);
    assert.equal(await modified(output()), outputBefore);
  });

  test('a source touched after the build makes it compile, and the build is current afterwards', async () => {
    await ageTheBuild();
    await touch(join(project, 'src', 'parts', 'name.ts'));
    const result = await buildIfStale();
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /^build-if-stale: src\/parts\/name\.ts is newer than the build; compiling\n/);
    // tsc wrote nothing (the source did not change), yet the build counts as current from now on.
    assert.ok((await modified(record())) >= (await modified(join(project, 'src', 'parts', 'name.ts'))));
    assert.deepEqual(await buildIfStale(), { code: 0, stdout: '', stderr: '' });
  });

  test('an edited source is compiled into the build', async () => {
    await ageTheBuild();
    await writeFile(join(project, 'src', 'greeting.ts'), "export const greeting: string = 'hello again';\n");
    const result = await buildIfStale();
    assert.equal(result.code, 0, result.stderr);
    assert.match(await readFile(output(), 'utf8'), /'hello again'/);
  });

  test('tsconfig.json and a removed source each count as a change', async () => {
    for (const change of [
      { path: 'tsconfig.json', make: () => touch(join(project, 'tsconfig.json')) },
      { path: 'src/parts', make: () => unlink(join(project, 'src', 'parts', 'name.ts')) },
    ]) {
      await ageTheBuild();
      await change.make();
      const result = await buildIfStale();
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, new RegExp(`^build-if-stale: ${change.path} is newer than the build; compiling\\n`), change.path);
    }
  });

  test('a source that does not compile fails the script, and the next run tries again', async () => {
    await ageTheBuild();
    await writeFile(join(project, 'src', 'greeting.ts'), 'export const greeting: number = "not a number";\n');
    const failed = await buildIfStale();
    assert.notEqual(failed.code, 0);
    assert.match(failed.stdout + failed.stderr, /TS2322/);
    const again = await buildIfStale();
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /^build-if-stale: the last compilation failed; compiling\n/);
  });
});
