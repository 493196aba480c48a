/**
 * The README's curl walkthrough, run as written against a real server and
 * the real example target. Only the addresses (the README's fixed ports) and
 * the pasted root capabilities are filled in.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { bannerRoots, cleanEnv, REPO_ROOT, startServerProcess, type ServerProcess } from './helpers/child.js';
import { startAwsOracleTarget } from './helpers/aws-oracle.js';
import { tempDir } from './helpers/membrane.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

/** The fenced sh block that follows `<!-- walkthrough:NAME -->`. */
function block(readme: string, name: string): string {
  const marker = readme.indexOf(`<!-- walkthrough:${name} -->`);
  assert.ok(marker !== -1, `README has no walkthrough:${name} block`);
  const match = /```sh\n([\s\S]*?)```/.exec(readme.slice(marker));
  assert.ok(match);
  return match[1]!;
}

function replaceLine(script: string, variable: string, value: string): string {
  const pattern = new RegExp(`^${variable}=.*$`, 'm');
  assert.match(script, pattern);
  return script.replace(pattern, `${variable}='${value}'`);
}

test('the README walkthrough works as written', async () => {
  const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const dataDir = await tempDir();
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));

  const server: ServerProcess = await startServerProcess(['--port', '0', '--data-dir', dataDir], { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' });
  cleanup.push(() => server.child.kill('SIGKILL'));
  const roots = bannerRoots(server.stdout())!;

  const echo = spawn(process.execPath, [join(REPO_ROOT, 'examples', 'echo-target.mjs'), '0'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  cleanup.push(() => echo.kill());
  const targetUrl = await new Promise<string>((resolve, reject) => {
    echo.stdout.on('data', (chunk: Buffer) => {
      const match = /listening on (http:\/\/\S+)/.exec(chunk.toString());
      if (match) resolve(match[1]!);
    });
    echo.on('exit', () => reject(new Error('echo target exited')));
  });

  // The Lambda walkthrough's function URL is served by a target that checks
  // every signature with AWS's @smithy/signature-v4.
  const aws = await startAwsOracleTarget({ AKIAIOSFODNN7EXAMPLE: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' });
  cleanup.push(() => aws.close());
  const lambdaOrigin = 'https://lambda.us-east-1.amazonaws.com';

  let script = block(readme, 'roots') + block(readme, 'script') + block(readme, 'aws-keys') + block(readme, 'lambda');
  script = replaceLine(script, 'CREATE', roots.create);
  script = replaceLine(script, 'QUERY', roots.query);
  script = replaceLine(script, 'MEMBRANE', server.url);
  script = replaceLine(script, 'TARGET', targetUrl);
  assert.ok(script.includes(lambdaOrigin));
  script = script.replaceAll(lambdaOrigin, aws.url);

  const { stdout } = await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], { cwd: REPO_ROOT, env: cleanEnv() });

  // Step 1: alice's membrane.
  assert.match(stdout, /"id": "alice"/);
  // Step 3: what the target received.
  const invocation = /\{\n  "method": "POST",\n  "url": "([^"]+)",\n  "apiKey": "([^"]+)",\n  "body": "(.*)"\n\}/.exec(stdout);
  assert.ok(invocation, stdout);
  assert.deepEqual(invocation.slice(1), ['/orders?region=eu&page=2', 's3cr3t', '{\\"item\\":42}']);
  // Steps 4 and 6: statuses before and after revoking bob.
  assert.match(stdout, /^200\n200\n200\n200\n\{\n  "statusCode": 202,\n  "message": "Accepted"\n\}\n200\n401\n401\n200\n/m);
  // Step 7: the uniform 401.
  assert.match(stdout, /"error": "Unauthorized"/);
  // Step 8: bob is gone.
  assert.match(stdout, /\[\n  "alice",\n  "carol"\n\]\ntrue\n/);
  // Lambda: the signed invocation was accepted by the AWS signature check, then revoked.
  const lambda = stdout.slice(stdout.indexOf('\ntrue\n') + 6).split('\n');
  assert.match(lambda[0]!, /^cpblty:\/\/localhost:\d+\/#CPBLTY1-/);
  assert.deepEqual(JSON.parse(lambda[1]!), { ok: true, url: '/2015-03-31/functions/partner-report/invocations', body: '{"week": 47}' });
  assert.deepEqual(lambda.slice(2).join('\n'), '{\n  "statusCode": 202,\n  "message": "Accepted"\n}\n401\n');
  assert.equal(aws.requests.length, 1);
  // The capability never reached the target, and no token was logged.
  assert.ok(!server.stdout().slice(server.stdout().indexOf('{"level"')).includes('CPBLTY1-'));
});
