/** `npm run bench:signing` (dist/bench/signing.js) as a real process: its options, and the JSON it leaves. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from './helpers/child.js';

const SIGNING = join(REPO_ROOT, 'dist', 'bench', 'signing.js');

function signing(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SIGNING, ...args], (error, stdout, stderr) => resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr }));
  });
}

test('an unknown or malformed option exits 2 with one line, before measuring anything', async () => {
  const cases: [string[], RegExp][] = [
    [['--bogus'], /^Unknown option '--bogus'/],
    [['--rounds', '0'], /^--rounds must be a positive number, not "0"\n$/],
    [['--round-ms', 'x'], /^--round-ms must be a positive number, not "x"\n$/],
    [['--rounds'], /argument missing/],
    [['extra'], /^Unexpected argument 'extra'/],
  ];
  for (const [args, message] of cases) {
    const result = await signing(args);
    assert.equal(result.code, 2, args.join(' '));
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /^[^\n]+\n$/);
    assert.match(result.stderr, message);
  }
});

test('--rounds and --round-ms set the run; the figures are printed and written to bench/results/signing-*.json', async () => {
  const result = await signing(['--rounds', '2', '--round-ms', '20']);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /median of 2 interleaved rounds of 20 ms/);
  const file = /^written to (.+signing-[^/]+\.json)$/m.exec(result.stdout)?.[1];
  assert.ok(file, result.stdout);
  try {
    const written = JSON.parse(await readFile(file, 'utf8'));
    assert.equal(written.rounds, 2);
    assert.equal(written.roundMs, 20);
    assert.equal(typeof written.date, 'string');
    assert.equal(written.machine.node, process.version);
    assert.deepEqual(
      written.rows.map((row: { signer: string }) => row.signer),
      ['membrane aws4-hmac-sha256', 'membrane cap1-hmac-sha512', '@smithy/signature-v4'],
    );
    for (const row of written.rows) {
      assert.ok(row.signaturesPerSecond > 0);
      assert.equal(row.rounds.length, 2);
    }
    assert.equal(written.rows[2].vsSmithy, 1);
  } finally {
    await rm(file, { force: true });
  }
});
