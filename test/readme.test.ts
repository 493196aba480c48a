/**
 * The README's walkthroughs, run as written against real servers, the real
 * example target and a target that checks AWS signatures with AWS's own
 * signer. Only addresses (the README's fixed ports and AWS's endpoint) and
 * the pasted root capabilities are filled in.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { startAwsOracleTarget } from './helpers/aws-oracle.js';
import { bannerRoots, cleanEnv, REPO_ROOT, startServerProcess, type ServerProcess } from './helpers/child.js';
import { tempDir } from './helpers/membrane.js';

const LAMBDA_ORIGIN = 'https://lambda.us-east-1.amazonaws.com';
const AWS_KEYS = { AKIAIOSFODNN7EXAMPLE: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
const run = promisify(execFile);

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

let readme: string;

/** The fenced block that follows `<!-- walkthrough:NAME -->`. */
function block(name: string): string {
  const marker = readme.indexOf(`<!-- walkthrough:${name} -->`);
  assert.ok(marker !== -1, `README has no walkthrough:${name} block`);
  const match = /```(?:sh|js)\n([\s\S]*?)```/.exec(readme.slice(marker));
  assert.ok(match);
  return match[1]!;
}

function replaceLine(script: string, variable: string, value: string): string {
  const pattern = new RegExp(`^${variable}=.*$`, 'm');
  assert.match(script, pattern);
  return script.replace(pattern, `${variable}='${value}'`);
}

async function freshDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The environment the README's `serve` block sets before `npm start`. */
function serveEnvironment(): NodeJS.ProcessEnv {
  const line = block('serve').trim();
  const match = /^((?:[A-Z_]+=\S+ )*)npm start$/.exec(line);
  assert.ok(match, `the serve block is "${line}"`);
  return Object.fromEntries(match[1]!.trim().split(' ').filter(Boolean).map((pair) => pair.split('=') as [string, string]));
}

/** A Membrane server process on a fresh store, started as the README says, with its own HOME for capi profiles. */
async function server(home: string, args: string[] = []): Promise<ServerProcess> {
  const dataDir = await tempDir();
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
  const started = await startServerProcess(['--port', '0', '--data-dir', dataDir, ...args], { HOME: home, ...serveEnvironment() });
  cleanup.push(() => started.child.kill('SIGKILL'));
  return started;
}

async function echoTarget(): Promise<string> {
  const echo = spawn(process.execPath, [join(REPO_ROOT, 'examples', 'echo-target.mjs'), '0'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  cleanup.push(() => echo.kill());
  return new Promise<string>((resolve, reject) => {
    echo.stdout.on('data', (chunk: Buffer) => {
      const match = /listening on (http:\/\/\S+)/.exec(chunk.toString());
      if (match) resolve(match[1]!);
    });
    echo.on('exit', () => reject(new Error('echo target exited')));
  });
}

/**
 * A project of its own with Membrane installed from this checkout, as the
 * README's sdk-install block says (offline: the checkout is linked, nothing
 * is fetched). Made once.
 */
let project: Promise<string> | undefined;
function projectWithMembrane(): Promise<string> {
  project ??= (async () => {
    const dir = await freshDir('readme-project-');
    await writeFile(join(dir, 'package.json'), '{"name":"readme-project","private":true}\n');
    const install = block('sdk-install').trim();
    assert.equal(install, 'npm install /path/to/membrane');
    await run('bash', ['-euo', 'pipefail', '-c', `${install.replace('/path/to/membrane', REPO_ROOT)} --offline --no-audit --no-fund --loglevel=error`], { cwd: dir, env: cleanEnv() });
    return dir;
  })();
  return project;
}

/** The README's CAP1-checking service, run in a project with Membrane installed, on a free port; resolves with its port. */
async function cap1Service(key: string): Promise<number> {
  const source = block('cap1-target');
  assert.ok(source.includes("server.listen(9001, '127.0.0.1');"));
  const file = join(await projectWithMembrane(), 'orders-service.mjs');
  await writeFile(file, source.replace('server.listen(9001', "server.on('listening', () => console.log(`listening on ${server.address().port}`));\nserver.listen(0"));
  const service = spawn(process.execPath, [file], { env: { ...cleanEnv(), CAP1_KEY: key }, stdio: ['ignore', 'pipe', 'inherit'] });
  cleanup.push(() => service.kill());
  return new Promise<number>((resolve, reject) => {
    service.stdout.on('data', (chunk: Buffer) => {
      const match = /listening on (\d+)/.exec(chunk.toString());
      if (match) resolve(Number(match[1]));
    });
    service.on('exit', () => reject(new Error('the CAP1 service exited')));
  });
}

async function bash(script: string, home: string): Promise<{ stdout: string; stderr: string }> {
  return run('bash', ['-euo', 'pipefail', '-c', script], { cwd: REPO_ROOT, env: { ...cleanEnv(), HOME: home }, maxBuffer: 16 * 1024 * 1024 });
}

test('the capi walkthrough and the CAP1 walkthrough work as written', async () => {
  readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const home = await freshDir('readme-home-');
  await server(home);
  // The key as the cap1-key block makes it, for the service and for the export alike.
  const key = (await bash(`${block('cap1-key')}printf %s "$CAP1_KEY"`, home)).stdout;
  assert.match(key, /^[A-Za-z0-9_-]{43}$/);
  const port = await cap1Service(key);
  const cap1 = replaceLine(block('cap1-key'), 'CAP1_KEY', key) + block('cap1-export').replaceAll('127.0.0.1:9001', `127.0.0.1:${port}`);
  const script = replaceLine(block('capi'), 'TARGET', await echoTarget()) + cap1;
  const { stdout, stderr } = await bash(script, home);

  // Step 3: what the target received.
  assert.match(stdout, /"method": "POST",\n {2}"url": "\/orders\?page=2"/);
  assert.match(stdout, /"x-api-key": "s3cr3t"/);
  assert.match(stdout, /"body": "\{\\"item\\":42\}"/);
  assert.ok(!stdout.includes('"authorization"'));
  // Step 5: the subcontractor's capability died, the shop's lives.
  assert.match(stdout, /revoked: the membrane and everything exported through it\n\{"error":"Unauthorized","message":"[^"]+"\}\nrefused: it died with the partner's membrane\nthe shop's capability still works\n/);
  // Steps 3, 4, 5 (refused, then the shop's), and the CAP1 invocation.
  assert.deepEqual(stderr.split('\n').filter((line) => /^\d{3} /.test(line)), ['200 OK', '200 OK', '401 Unauthorized', '200 OK', '200 OK']);
  // Step 6: the partner is gone.
  const listed = stdout.slice(stdout.lastIndexOf('still works\n') + 'still works\n'.length);
  assert.match(listed, /^shop\n {2}export: cpblty:\S+\n {2}revoke: cpblty:\S+\nsubcontractor\n {2}export: cpblty:\S+\n {2}revoke: cpblty:\S+\nhello, Membrane\nnot signed by Membrane\n$/);
});

test('the curl walkthrough and the Lambda walkthroughs (curl, capi, SDK) work as written', async () => {
  readme ??= await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const home = await freshDir('readme-home-');
  const membrane = await server(home);
  const roots = bannerRoots(membrane.stdout())!;
  const aws = await startAwsOracleTarget(AWS_KEYS);
  cleanup.push(() => aws.close());

  let script = block('roots') + block('script') + block('aws-keys') + block('lambda') + 'export PATH="$PWD/bin:$PATH"\n' + block('lambda-capi');
  script = replaceLine(script, 'CREATE', roots.create);
  script = replaceLine(script, 'QUERY', roots.query);
  script = replaceLine(script, 'MEMBRANE', membrane.url);
  script = replaceLine(script, 'TARGET', await echoTarget());
  assert.ok(script.includes(LAMBDA_ORIGIN));
  script = script.replaceAll(LAMBDA_ORIGIN, aws.url);
  const { stdout, stderr } = await bash(script, home);

  // Step 1: alice's membrane.
  assert.match(stdout, /"id": "alice"/);
  // Step 3: what the target received.
  const invocation = /\{\n {2}"method": "POST",\n {2}"url": "([^"]+)",\n {2}"apiKey": "([^"]+)",\n {2}"body": "(.*)"\n\}/.exec(stdout);
  assert.ok(invocation, stdout);
  assert.deepEqual(invocation.slice(1), ['/orders?region=eu&page=2', 's3cr3t', '{\\"item\\":42}']);
  // Steps 4 and 6: statuses before and after revoking bob.
  assert.match(stdout, /^200\n200\n200\n200\n\{\n {2}"statusCode": 202,\n {2}"message": "Accepted"\n\}\n200\n401\n401\n200\n/m);
  // Step 7: the uniform 401.
  assert.match(stdout, /"error": "Unauthorized"/);
  // Step 8: bob is gone.
  assert.match(stdout, /\[\n {2}"alice",\n {2}"carol"\n\]\ntrue\n/);

  // Lambda with curl: accepted by the AWS signature check, then revoked.
  const lambda = stdout.slice(stdout.indexOf('\ntrue\n') + 6).split('\n');
  assert.match(lambda[0]!, /^cpblty:\/\/localhost:\d+\/#CPBLTY1-/);
  assert.deepEqual(JSON.parse(lambda[1]!), { ok: true, url: '/2015-03-31/functions/partner-report/invocations', body: '{"week": 47}' });
  assert.deepEqual(lambda.slice(2, 7).join('\n'), '{\n  "statusCode": 202,\n  "message": "Accepted"\n}\n401');
  // Lambda with capi: the same, then refused.
  assert.deepEqual(JSON.parse(lambda[7]!), { ok: true, url: '/2015-03-31/functions/partner-report/invocations', body: '{"week": 47}' });
  assert.equal(lambda[8], 'revoked: the membrane and everything exported through it');
  assert.match(lambda.slice(9).join('\n'), /^\{"error":"Unauthorized","message":"[^"]+"\}\nrefused, as it should be\n$/);
  assert.match(stderr, /200 OK\n401 Unauthorized\n$/);

  // Lambda with the SDK: the script as written, in a project that installed Membrane as the README says.
  const sdkScript = join(await projectWithMembrane(), 'lambda.mjs');
  const source = block('lambda-sdk');
  assert.ok(source.includes("'http://localhost:8080'") && source.includes(LAMBDA_ORIGIN));
  await writeFile(sdkScript, source.replace("'http://localhost:8080'", `'${membrane.url}'`).replaceAll(LAMBDA_ORIGIN, aws.url));
  const sdk = await run(process.execPath, [sdkScript], {
    cwd: await projectWithMembrane(),
    env: { ...cleanEnv(), CREATE: roots.create, AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE', AWS_SECRET_ACCESS_KEY: AWS_KEYS.AKIAIOSFODNN7EXAMPLE },
  });
  assert.match(sdk.stdout, /^\{\n {2}ok: true,\n {2}url: '\/2015-03-31\/functions\/partner-report\/invocations',\n {2}body: '\{"week":47\}'\n\}\n401 Unauthorized\n$/);
  assert.equal(aws.requests.length, 3);

  // No token was logged.
  assert.ok(!membrane.stdout().slice(membrane.stdout().indexOf('{"level"')).includes('CPBLTY1-'));
});

test('the self-signed certificate recipe serves HTTPS that capi trusts', async () => {
  readme ??= await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const dir = await freshDir('readme-tls-');
  await run('bash', ['-euo', 'pipefail', '-c', block('tls')], { cwd: dir });
  const home = await freshDir('readme-home-');
  const membrane = await server(home, ['--tls-cert', join(dir, 'tls', 'localhost.crt'), '--tls-key', join(dir, 'tls', 'localhost.key')]);
  assert.match(membrane.url, /^https:/);
  const capi = join(REPO_ROOT, 'bin', 'capi');
  const env = { ...cleanEnv(), HOME: home };
  await assert.rejects(run(process.execPath, [capi, 'membrane', 'query'], { env }));
  await run(process.execPath, [capi, 'config', '--ca', join(dir, 'tls', 'localhost.crt')], { env });
  const { stdout } = await run(process.execPath, [capi, 'membrane', 'query', '--json'], { env });
  assert.equal(stdout, '{"membranes":[],"completed":true}\n');
});
