/**
 * `capi` end to end: spawned processes against a real server, checking
 * stdout, stderr and exit codes; profiles in an isolated HOME.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { bannerRoots, CAPI_BIN, cleanEnv, runCapi, runMembrane, startServerProcess, type CommandResult, type ServerProcess } from './helpers/child.js';
import { startAwsOracleTarget } from './helpers/aws-oracle.js';
import { tempDir } from './helpers/membrane.js';
import { createPki, type Pki } from './helpers/pki.js';
import { startTarget, type TestTarget } from './helpers/target.js';

const URI = /^cpblty:\/\/localhost:\d+\/#CPBLTY1-[A-Za-z0-9_-]{86}$/;
const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

let home: string;
let server: ServerProcess;
let target: TestTarget;
let pki: Pki;

async function freshHome(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'capi-home-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

before(async () => {
  home = await freshHome();
  const dataDir = await tempDir();
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
  server = await startServerProcess(['--port', '0', '--data-dir', dataDir], { HOME: home, MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' });
  cleanup.push(() => server.child.kill('SIGKILL'));
  target = await startTarget();
  cleanup.push(() => target.close());
  pki = await createPki();
});

/** capi with the server's own HOME (whose default profile `serve` wrote). */
const capi = (args: string[], env: NodeJS.ProcessEnv = {}, stdin?: string | Buffer): Promise<CommandResult> => runCapi(args, { HOME: home, ...env }, stdin);

function succeeded(result: CommandResult): string {
  assert.equal(result.code, 0, `exit ${result.code}: ${result.stderr}`);
  return result.stdout;
}

function failed(result: CommandResult, code: number, message: RegExp): void {
  assert.equal(result.code, code, `stdout: ${result.stdout} stderr: ${result.stderr}`);
  assert.match(result.stderr, /^capi: [^\n]+\n$/, result.stderr);
  assert.match(result.stderr, message);
}

async function exportCapability(id: string): Promise<{ export: string; revoke: string }> {
  return JSON.parse(succeeded(await capi(['membrane', 'create', '--id', id, '--json']))).capabilities;
}

/**
 * Another `membrane serve` on a store of its own (removed after the tests),
 * which saves its tenant's root capabilities as the default profile in
 * `home`; `tls` serves HTTPS with the test PKI's server certificate.
 */
async function startOtherServer(home: string, options: { tls?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<ServerProcess & { dataDir: string }> {
  const dataDir = await tempDir();
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
  const tls = options.tls === true ? ['--tls-cert', pki.serverCertPath, '--tls-key', pki.serverKeyPath] : [];
  const started = await startServerProcess(['--port', '0', '--data-dir', dataDir, ...tls], { HOME: home, ...options.env });
  cleanup.push(() => started.child.kill('SIGKILL'));
  return { ...started, dataDir };
}

/** capi run from `cwd` (runCapi runs it from the test's own directory). */
function capiIn(cwd: string, args: string[], home: string): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CAPI_BIN, ...args], { cwd, env: { ...cleanEnv(), HOME: home } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : Number(error.code), signal: null, stdout, stderr });
    });
  });
}

/**
 * capi on a pseudo-terminal (util-linux `script`), with `typed` typed into
 * it; `output` is everything the terminal showed (stdout and stderr).
 */
function capiOnTerminal(args: string[], home: string, typed: string): Promise<{ code: number | null; output: string }> {
  const quote = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, CAPI_BIN, ...args].map(quote).join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], { env: { ...cleanEnv(), HOME: home }, stdio: ['pipe', 'pipe', 'pipe'] });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  child.stdin.end(typed);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('profiles written by the server', () => {
  test('the first serve saved the root capabilities and address as the default profile (0600 files)', async () => {
    const roots = bannerRoots(server.stdout())!;
    const credentials = await readFile(join(home, '.capability', 'credentials'), 'utf8');
    const [document] = parseAllDocuments(credentials).map((d) => d.toJS());
    assert.deepEqual(document, { profile: 'default', membrane: { capabilities: roots } });
    const config = parseAllDocuments(await readFile(join(home, '.capability', 'config'), 'utf8')).map((d) => d.toJS());
    assert.deepEqual(config, [{ profile: 'default', membrane: { address: `http://localhost:${new URL(server.url).port}` } }]);
    for (const file of ['credentials', 'config']) assert.equal((await stat(join(home, '.capability', file))).mode & 0o777, 0o600);
    assert.equal((await stat(join(home, '.capability'))).mode & 0o777, 0o700);
    assert.match(server.stderr(), /saved the root capabilities as capi profile "default"/);
  });

  test('capi membrane create works right away, with no flags', async () => {
    const out = succeeded(await capi(['membrane', 'create', '--id', 'first']));
    assert.match(out, /^first\n {2}export: cpblty:\/\/\S+\n {2}revoke: cpblty:\/\/\S+\n$/);
  });

  test('membrane init saves a profile; an existing one with other capabilities is kept, not overwritten', async () => {
    const isolated = await freshHome();
    const dataDir = await tempDir();
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await runMembrane(['init', '--data-dir', dataDir, '--json'], { HOME: isolated });
    assert.equal(first.code, 0, first.stderr);
    const firstRoots = JSON.parse(first.stdout);
    const second = await runMembrane(['tenant', 'create', '--data-dir', dataDir, '--json', '--capi-profile', 'default'], { HOME: isolated });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /the capi profile "default" held other capabilities; it is kept as "default-\d{8}T\d{9}Z"/);
    const profiles = JSON.parse(succeeded(await runCapi(['profiles', '--json'], { HOME: isolated }))) as string[];
    assert.equal(profiles.length, 2);
    const kept = profiles.find((name) => name !== 'default')!;
    const credentials = parseAllDocuments(await readFile(join(isolated, '.capability', 'credentials'), 'utf8')).map((d) => d.toJS());
    assert.deepEqual(credentials.find((d) => d.profile === kept).membrane.capabilities, firstRoots);
    assert.deepEqual(credentials.find((d) => d.profile === 'default').membrane.capabilities, JSON.parse(second.stdout));
    // tenant create saves nothing unless asked; --no-capi-profile saves nothing.
    const third = await runMembrane(['tenant', 'create', '--data-dir', dataDir], { HOME: isolated });
    assert.equal(third.code, 0);
    assert.equal(third.stderr, '');
    const other = await tempDir();
    cleanup.push(() => rm(other, { recursive: true, force: true }));
    const quiet = await runMembrane(['init', '--data-dir', other, '--no-capi-profile'], { HOME: isolated });
    assert.equal(quiet.stderr, '');
    assert.equal((JSON.parse(succeeded(await runCapi(['profiles', '--json'], { HOME: isolated }))) as string[]).length, 2);
  });
});

describe('capi config and profiles', () => {
  test('sets capabilities, address and CA of a profile and shows them without revealing capabilities', async () => {
    const isolated = await freshHome();
    const roots = bannerRoots(server.stdout())!;
    const caFile = join(isolated, 'ca.pem');
    await writeFile(caFile, pki.caCert);
    const shown = succeeded(
      await runCapi(['config', '--profile', 'work', '--create', roots.create, '--query', roots.query, '--delete-self', roots.deleteSelf, '--address', server.url, '--ca', caFile], { HOME: isolated }),
    );
    assert.equal(
      shown,
      `profile: work\naddress: ${server.url}\nca: ${caFile}\ncreate: (...${roots.create.slice(-5)})\nquery: (...${roots.query.slice(-5)})\ndeleteSelf: (...${roots.deleteSelf.slice(-5)})\n`,
    );
    const json = JSON.parse(succeeded(await runCapi(['config', '--profile', 'work', '--json'], { HOME: isolated })));
    assert.deepEqual(json, {
      profile: 'work',
      membrane: { address: server.url, ca: caFile, capabilities: { create: `(...${roots.create.slice(-5)})`, query: `(...${roots.query.slice(-5)})`, deleteSelf: `(...${roots.deleteSelf.slice(-5)})` } },
    });
    assert.ok(!JSON.stringify(json).includes('CPBLTY1-'));
    assert.deepEqual(succeeded(await runCapi(['profiles'], { HOME: isolated })), 'work\n');
    assert.equal(succeeded(await runCapi(['config', '--profile', 'empty'], { HOME: isolated })).split('\n')[3], 'create: (none)');
  });

  test('refuses bad values with one line and exit 2', async () => {
    const isolated = await freshHome();
    failed(await runCapi(['config', '--create', 'not-a-capability'], { HOME: isolated }), 2, /--create is not a capability URI/);
    failed(await runCapi(['config', '--address', 'ftp://x'], { HOME: isolated }), 2, /--address must be an http or https base URL/);
    failed(await runCapi(['config', '--address', 'http://x/path'], { HOME: isolated }), 2, /--address must be an http or https base URL/);
    failed(await runCapi(['config', '--ca', '/nonexistent/ca.pem'], { HOME: isolated }), 2, /--ca: cannot read \/nonexistent\/ca\.pem \(ENOENT\)/);
    failed(await runCapi(['config', '--bogus'], { HOME: isolated }), 2, /unknown option --bogus/);
    failed(await runCapi(['config', '--create'], { HOME: isolated }), 2, /Not enough arguments following: create/);
    failed(await runCapi([], { HOME: isolated }), 2, /a command is required/);
    failed(await runCapi(['membrane'], { HOME: isolated }), 2, /a membrane command is required/);
  });

  test('--ca is saved as an absolute path that works from any directory; --ca "" and --address "" clear', async () => {
    const isolated = await freshHome();
    await startOtherServer(isolated, { tls: true });
    const certificates = join(isolated, 'certificates');
    const elsewhere = join(isolated, 'elsewhere');
    await mkdir(certificates);
    await mkdir(elsewhere);
    await writeFile(join(certificates, 'ca.pem'), pki.caCert);
    const configFile = async (): Promise<Record<string, unknown>> =>
      parseAllDocuments(await readFile(join(isolated, '.capability', 'config'), 'utf8')).map((d) => d.toJS()).find((d) => d.profile === 'default').membrane;

    succeeded(await capiIn(certificates, ['config', '--ca', 'ca.pem'], isolated));
    assert.equal((await configFile()).ca, join(certificates, 'ca.pem'));
    assert.equal(JSON.parse(succeeded(await capiIn(elsewhere, ['membrane', 'query', '--json'], isolated))).completed, true);
    failed(await capiIn(elsewhere, ['config', '--ca', 'ca.pem'], isolated), 2, new RegExp(`--ca: cannot read ${join(elsewhere, 'ca.pem')} \\(ENOENT\\)`));

    const cleared = succeeded(await capiIn(elsewhere, ['config', '--ca', ''], isolated));
    assert.match(cleared, /^ca: \(system trust store\)$/m);
    assert.ok(!('ca' in (await configFile())));
    assert.ok('address' in (await configFile()));
    failed(await capiIn(elsewhere, ['membrane', 'query'], isolated), 1, /no answer from https:\/\/localhost:\d+/);

    const noAddress = succeeded(await capiIn(elsewhere, ['config', '--address', ''], isolated));
    assert.match(noAddress, /^address: \(https:\/\/AUTHORITY of each capability\)$/m);
    assert.deepEqual(await configFile(), {});
    assert.deepEqual(JSON.parse(succeeded(await capiIn(elsewhere, ['config', '--json'], isolated))).membrane.address, undefined);
  });

  test('concurrent writers never lose each other’s profiles', async () => {
    const isolated = await freshHome();
    const roots = bannerRoots(server.stdout())!;
    const writers = Array.from({ length: 12 }, (_, i) => runCapi(['config', '--profile', `p${i}`, '--create', roots.create, '--address', `http://host${i}:8080`], { HOME: isolated }));
    for (const result of await Promise.all(writers)) succeeded(result);
    const names = JSON.parse(succeeded(await runCapi(['profiles', '--json'], { HOME: isolated }))) as string[];
    assert.deepEqual(names.sort(), Array.from({ length: 12 }, (_, i) => `p${i}`).sort());
    for (let i = 0; i < 12; i++) {
      const shown = JSON.parse(succeeded(await runCapi(['config', '--profile', `p${i}`, '--json'], { HOME: isolated })));
      assert.equal(shown.membrane.address, `http://host${i}:8080`);
    }
  });

  test('a corrupt profile file is a one-line error', async () => {
    const isolated = await freshHome();
    await runCapi(['config', '--address', 'http://x:1'], { HOME: isolated });
    await writeFile(join(isolated, '.capability', 'config'), 'profile: [unclosed\n');
    failed(await runCapi(['config'], { HOME: isolated }), 1, /config is not valid YAML/);
    await writeFile(join(isolated, '.capability', 'config'), 'membrane: {}\n');
    failed(await runCapi(['config'], { HOME: isolated }), 1, /document 1 has no profile name/);
  });
});

describe('capi membrane', () => {
  test('create, query, export, revoke, delete-self: human output', async () => {
    const alpha = await exportCapability('alpha');
    assert.match(alpha.export, URI);
    const exported = succeeded(await capi(['membrane', 'export', '--capability', alpha.export, '--uri', `${target.url}/human`]));
    assert.match(exported, /^cpblty:\/\/localhost:\d+\/#CPBLTY1-\S+\n$/);
    const query = succeeded(await capi(['membrane', 'query', '--id', 'alpha']));
    assert.equal(query, `alpha\n  export: ${alpha.export}\n  revoke: ${alpha.revoke}\n`);
    assert.match(succeeded(await capi(['membrane', 'query'])), /\n\(more: capi membrane query --last-id \S+\)\n$/);
    assert.equal(succeeded(await capi(['membrane', 'query', '--id', 'nobody'])), '(no membranes)\n');
    assert.equal(succeeded(await capi(['membrane', 'revoke', '--capability', alpha.revoke])), 'revoked: the membrane and everything exported through it\n');
    assert.equal(succeeded(await capi(['membrane', 'revoke', '--capability', alpha.revoke])), 'revoked: the membrane and everything exported through it\n');
  });

  test('--json prints the service’s answers', async () => {
    for (const id of ['json-1', 'json-2']) await exportCapability(id);
    const created = JSON.parse(succeeded(await capi(['membrane', 'create', '--id', 'beta', '--json'])));
    assert.equal(created.id, 'beta');
    const exported = JSON.parse(succeeded(await capi(['membrane', 'export', '--json', '--capability', created.capabilities.export, '--uri', `${target.url}/j`])));
    assert.match(exported.capability, URI);
    const page = JSON.parse(succeeded(await capi(['membrane', 'query', '--json', '--limit', '2'])));
    assert.equal(page.membranes.length, 2);
    assert.equal(page.completed, false);
    const next = JSON.parse(succeeded(await capi(['membrane', 'query', '--json', '--limit', '1000', '--last-id', page.membranes[1].id])));
    assert.equal(next.completed, true);
    const all = JSON.parse(succeeded(await capi(['membrane', 'query', '--json', '--all', '--limit', '1'])));
    assert.deepEqual(all.membranes.map((m: { id: string }) => m.id), [...page.membranes, ...next.membranes].map((m: { id: string }) => m.id));
    assert.deepEqual(JSON.parse(succeeded(await capi(['membrane', 'revoke', '--json', '--capability', created.capabilities.revoke]))), { statusCode: 202, message: 'Accepted' });
  });

  test('delete-self with a second tenant’s profile', async () => {
    const isolated = await freshHome();
    await startOtherServer(isolated);
    succeeded(await runCapi(['membrane', 'create', '--id', 'x'], { HOME: isolated }));
    assert.equal(succeeded(await runCapi(['membrane', 'delete-self', '--yes'], { HOME: isolated })), 'deleted: every membrane of the tenant is revoked, and its root capabilities are dead\n');
    failed(await runCapi(['membrane', 'query'], { HOME: isolated }), 1, /^capi: 401 Unauthorized: a valid capability token is required/);
  });

  test('export with every uri option reaches the target as configured', async () => {
    const { export: exportCap } = await exportCapability('options');
    const capability = succeeded(
      await capi([
        'membrane', 'export', '--capability', exportCap,
        '--uri', `${target.url}/opts?fixed=1`,
        '--method', 'PATCH',
        '--header', 'X-One: 1',
        '--header', 'Authorization: Bearer upstream: with colon',
        '--allow-query',
        '--timeout-ms', '5000',
      ]),
    ).trim();
    const invoked = await capi(['invoke', capability, '--query', 'page=2', '--method', 'GET']);
    const echo = JSON.parse(succeeded(invoked));
    assert.equal(echo.method, 'PATCH');
    assert.equal(echo.url, '/opts?fixed=1&page=2');
    const headers: string[] = echo.rawHeaders;
    assert.equal(headers[headers.indexOf('X-One') + 1], '1');
    assert.equal(headers[headers.indexOf('Authorization') + 1], 'Bearer upstream: with colon');
  });

  test('export with TLS options from files, and --no-tls-reject-unauthorized', async () => {
    const tlsTarget = await startTarget({ tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert, requestCert: true, rejectUnauthorized: true } });
    cleanup.push(() => tlsTarget.close());
    const dir = await freshHome();
    for (const [file, pem] of [['ca.pem', pki.caCert], ['client.crt', pki.clientCert], ['client.key', pki.clientKey]] as const) await writeFile(join(dir, file), pem);
    const { export: exportCap } = await exportCapability('tls');
    const capability = succeeded(
      await capi(['membrane', 'export', '--capability', exportCap, '--uri', `${tlsTarget.url}/mtls`, '--tls-ca', `@${join(dir, 'ca.pem')}`, '--tls-cert', `@${join(dir, 'client.crt')}`, '--tls-key', `@${join(dir, 'client.key')}`]),
    ).trim();
    assert.equal((await capi(['invoke', capability])).code, 0);
    assert.equal(tlsTarget.requests.at(-1)!.clientCertificate, 'membrane-test-client');
    const plain = await startTarget({ tls: { cert: pki.serverCert, key: pki.serverKey } });
    cleanup.push(() => plain.close());
    const insecure = succeeded(await capi(['membrane', 'export', '--capability', exportCap, '--uri', `${plain.url}/x`, '--no-tls-reject-unauthorized'])).trim();
    assert.equal((await capi(['invoke', insecure])).code, 0);
    const strict = succeeded(await capi(['membrane', 'export', '--capability', exportCap, '--uri', `${plain.url}/x`, '--tls-reject-unauthorized'])).trim();
    const refused = await capi(['invoke', strict]);
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, '502 Bad Gateway\n');
  });

  test('aws4 and cap1 signing flags; secrets from the environment, a file, or standard input', async () => {
    const secret = 'cli/Secret+Key/EXAMPLE';
    const oracle = await startAwsOracleTarget({ AKIDCLI: secret });
    cleanup.push(() => oracle.close());
    const { export: exportCap } = await exportCapability('signed');
    const flags = ['membrane', 'export', '--capability', exportCap, '--uri', `${oracle.url}/2015-03-31/functions/f/invocations`, '--method', 'POST', '--aws4-hmac-sha256-aws-access-key-id', 'AKIDCLI', '--aws4-hmac-sha256-region', 'us-east-1', '--aws4-hmac-sha256-service', 'lambda'];
    const fromEnv = succeeded(await capi(flags, { CAPI_AWS4_HMAC_SHA256_SECRET_ACCESS_KEY: secret })).trim();
    const dir = await freshHome();
    await writeFile(join(dir, 'secret'), `${secret}\n`);
    const fromFile = succeeded(await capi([...flags, '--aws4-hmac-sha256-secret-access-key', `@${join(dir, 'secret')}`])).trim();
    const fromStdin = succeeded(await capi([...flags, '--aws4-hmac-sha256-secret-access-key', '@-'], {}, `${secret}\n`)).trim();
    const wrong = succeeded(await capi([...flags, '--aws4-hmac-sha256-secret-access-key', 'wrong'])).trim();
    for (const capability of [fromEnv, fromFile, fromStdin]) {
      const result = await capi(['invoke', capability, '--data', '{"x":1}']);
      assert.equal(result.stderr, '200 OK\n');
      assert.equal(JSON.parse(result.stdout).ok, true);
    }
    const refused = await capi(['invoke', wrong, '--data', '{}']);
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, '403 Forbidden\n');

    const session = succeeded(await capi([...flags, '--aws4-hmac-sha256-secret-access-key', secret, '--aws4-hmac-sha256-session-token', 'TOKEN-123'])).trim();
    assert.equal((await capi(['invoke', session, '--data', '{}'])).stderr, '200 OK\n');

    const cap1 = succeeded(await capi(['membrane', 'export', '--capability', exportCap, '--uri', `${target.url}/cap1`, '--cap1-hmac-sha512-key-id', 'kid'], { CAPI_CAP1_HMAC_SHA512_KEY: 'Y2xpLWtleQ' })).trim();
    const headers: string[] = JSON.parse(succeeded(await capi(['invoke', cap1]))).rawHeaders;
    assert.match(headers[headers.indexOf('Authorization') + 1]!, /^CAP1-HMAC-SHA512 Credential=kid\//);
    failed(await capi([...flags, '--aws4-hmac-sha256-secret-access-key', '@/nonexistent/secret']), 2, /--aws4-hmac-sha256-secret-access-key: cannot read \/nonexistent\/secret \(ENOENT\)/);
    failed(await capi([...flags, '--aws4-hmac-sha256-secret-access-key', '@-', '--capability-to-export', '@-']), 2, /./);
  });

  test('re-export with --capability-to-export', async () => {
    const owner = await exportCapability('owner');
    const delegate = await exportCapability('delegate');
    const original = succeeded(await capi(['membrane', 'export', '--capability', owner.export, '--uri', `${target.url}/chain`])).trim();
    const reExported = succeeded(await capi(['membrane', 'export', '--capability', delegate.export, '--capability-to-export', original])).trim();
    assert.equal(JSON.parse(succeeded(await capi(['invoke', reExported]))).url, '/chain');
    succeeded(await capi(['membrane', 'revoke', '--capability', delegate.revoke]));
    const dead = await capi(['invoke', reExported]);
    assert.equal(dead.code, 1);
    assert.equal(dead.stderr, '401 Unauthorized\n');
    assert.equal(JSON.parse(dead.stdout).error, 'Unauthorized');
    assert.equal((await capi(['invoke', original])).code, 0);
  });

  test('every flag conflict and implication of the original', async () => {
    const { export: exportCap } = await exportCapability('conflicts');
    const other = succeeded(await capi(['membrane', 'export', '--capability', exportCap, '--uri', `${target.url}/x`])).trim();
    const base = ['membrane', 'export', '--capability', exportCap];
    const withReExport = [...base, '--capability-to-export', other];
    const uriOptions: [string, string[]][] = [
      ['uri', ['--uri', `${target.url}/x`]],
      ['allow-query', ['--allow-query']],
      ['header', ['--header', 'X: y']],
      ['method', ['--method', 'GET']],
      ['timeout-ms', ['--timeout-ms', '10']],
      ['tls-ca', ['--tls-ca', 'pem']],
      ['tls-cert', ['--tls-cert', 'pem']],
      ['tls-key', ['--tls-key', 'pem']],
      ['tls-reject-unauthorized', ['--tls-reject-unauthorized']],
      ['aws4-hmac-sha256-aws-access-key-id', ['--aws4-hmac-sha256-aws-access-key-id', 'A']],
      ['aws4-hmac-sha256-region', ['--aws4-hmac-sha256-region', 'us-east-1']],
      ['aws4-hmac-sha256-service', ['--aws4-hmac-sha256-service', 's3']],
      ['aws4-hmac-sha256-secret-access-key', ['--aws4-hmac-sha256-secret-access-key', 's']],
      ['aws4-hmac-sha256-session-token', ['--aws4-hmac-sha256-session-token', 't']],
      ['cap1-hmac-sha512-key', ['--cap1-hmac-sha512-key', 'a2V5']],
      ['cap1-hmac-sha512-key-id', ['--cap1-hmac-sha512-key-id', 'k']],
    ];
    for (const [name, flags] of uriOptions) {
      // Options that also imply --uri may be reported by either rule.
      failed(await capi([...withReExport, ...flags]), 2, new RegExp(`Arguments (capability-to-export and ${name}|${name} and capability-to-export) are mutually exclusive|Implications failed: ${name} -> `));
    }
    for (const [name, flags] of uriOptions.slice(1, 9)) {
      failed(await capi([...base, ...flags]), 2, new RegExp(`Implications failed: ${name} -> uri`));
    }
    const aws = ['--aws4-hmac-sha256-aws-access-key-id', 'A', '--aws4-hmac-sha256-region', 'us-east-1', '--aws4-hmac-sha256-service', 'lambda', '--aws4-hmac-sha256-secret-access-key', 's'];
    const uri = ['--uri', `${target.url}/x`];
    for (let i = 0; i < aws.length; i += 2) {
      const partial = [...aws.slice(0, i), ...aws.slice(i + 2)];
      failed(await capi([...base, ...uri, ...partial]), 2, new RegExp(`Implications failed: (\\S+ -> \\S+, )*\\S+ -> ${aws[i]!.slice(2)}`));
    }
    failed(await capi([...base, ...uri, '--aws4-hmac-sha256-session-token', 't']), 2, /Implications failed: aws4-hmac-sha256-session-token -> aws4-hmac-sha256-aws-access-key-id/);
    failed(await capi([...base, ...uri, '--cap1-hmac-sha512-key', 'a2V5']), 2, /Implications failed: cap1-hmac-sha512-key -> cap1-hmac-sha512-key-id/);
    failed(await capi([...base, ...uri, '--cap1-hmac-sha512-key-id', 'k']), 2, /Implications failed: cap1-hmac-sha512-key-id -> cap1-hmac-sha512-key/);
    failed(await capi([...base, ...uri, ...aws, '--cap1-hmac-sha512-key', 'a2V5', '--cap1-hmac-sha512-key-id', 'k']), 2, /mutually exclusive/);
    failed(await capi(base), 2, /one of --uri or --capability-to-export is required/);
    failed(await capi([...base, '--uri', `${target.url}/x`, '--timeout-ms', 'soon']), 2, /--timeout-ms must be a whole number/);
    failed(await capi([...base, '--uri', `${target.url}/x`, '--header', 'no colon']), 2, /--header number 1 is not "Name: value"/);
    const secretWithoutColon = await capi([...base, '--uri', `${target.url}/x`, '--header', 'X-Ok: 1', '--header', 'Authorization Bearer sk_live_secret']);
    failed(secretWithoutColon, 2, /^capi: --header number 2 is not "Name: value"\n$/);
    failed(await capi(['membrane', 'query', '--limit', '0']), 2, /--limit must be a whole number greater than 0/);
    failed(await capi(['membrane', 'query', '--all', '--last-id', 'x']), 2, /mutually exclusive/);
    failed(await capi(['membrane', 'create']), 2, /Missing required argument: id/);
    failed(await capi(['membrane', 'export', '--uri', `${target.url}/x`]), 2, /--capability is required: the membrane's export capability/);
    failed(await capi(['membrane', 'revoke']), 2, /--capability is required: the membrane's revoke capability/);
  });

  test('bad capability URIs', async () => {
    for (const bad of ['garbage', 'https://localhost/#CPBLTY1-x', `cpblty://localhost/#CPBLTY1-${'A'.repeat(85)}`]) {
      failed(await capi(['membrane', 'create', '--id', 'x', '--capability', bad]), 2, /--capability is not a capability URI/);
      failed(await capi(['invoke', bad]), 2, /--capability is not a capability URI/);
      failed(await capi(['membrane', 'export', '--capability', (await exportCapability(`bad-${bad.length}`)).export, '--capability-to-export', bad]), 2, /--capability-to-export is not a capability URI/);
    }
    const unknown = `cpblty://localhost:${new URL(server.url).port}/#CPBLTY1-${'A'.repeat(86)}`;
    const result = await capi(['invoke', unknown]);
    assert.equal(result.code, 1);
    assert.equal(result.stderr, '401 Unauthorized\n');
  });

  test('service refusals and unreachable services are one line, exit 1', async () => {
    await exportCapability('twice');
    failed(await capi(['membrane', 'create', '--id', 'twice']), 1, /^capi: 409 Conflict: a membrane with id "twice" already exists\n$/);
    failed(await capi(['membrane', 'export', '--capability', (await exportCapability('bad-uri')).export, '--uri', 'ftp://x/']), 1, /^capi: 400 Bad Request: config\.uri must use the http or https scheme\n$/);
    failed(await capi(['membrane', 'query', '--address', 'http://127.0.0.1:1']), 1, /^capi: no answer from http:\/\/127\.0\.0\.1:1: /);
    failed(await capi(['membrane', 'query', '--profile', 'nobody']), 1, /no membrane "query" capability in profile "nobody"/);
  });
});

describe('capi invoke', () => {
  let capability: string;
  before(async () => {
    capability = succeeded(await capi(['membrane', 'export', '--capability', (await exportCapability('invoker')).export, '--uri', `${target.url}/inv`, '--allow-query'])).trim();
  });

  test('streams the body to stdout and the status to stderr', async () => {
    const result = await capi(['invoke', capability, '--header', 'X-A: 1', '--header', 'X-B: two words', '--query', '?q=1']);
    assert.equal(result.code, 0);
    assert.equal(result.stderr, '200 OK\n');
    const echo = JSON.parse(result.stdout);
    assert.equal(echo.method, 'GET');
    assert.equal(echo.url, '/inv?q=1');
    assert.equal(echo.rawHeaders[echo.rawHeaders.indexOf('X-B') + 1], 'two words');
  });

  test('--data STRING, @FILE and @- (streamed), with POST by default', async () => {
    const payload = randomBytes(3 * 1024 * 1024);
    const dir = await freshHome();
    await writeFile(join(dir, 'body.bin'), payload);
    const digest = createHash('sha256').update(payload).digest('hex');
    const literal = JSON.parse(succeeded(await capi(['invoke', capability, '--data', 'hello'])));
    assert.deepEqual([literal.method, literal.bodyLength], ['POST', 5]);
    const fromFile = JSON.parse(succeeded(await capi(['invoke', capability, '--data', `@${join(dir, 'body.bin')}`, '--method', 'PUT'])));
    assert.deepEqual([fromFile.method, fromFile.bodyLength, fromFile.bodySha256], ['PUT', payload.length, digest]);
    const fromStdin = JSON.parse(succeeded(await capi(['invoke', capability, '--data', '@-'], {}, payload)));
    assert.deepEqual([fromStdin.bodyLength, fromStdin.bodySha256], [payload.length, digest]);
    failed(await capi(['invoke', capability, '--data', '@/nonexistent/body']), 2, /--data: cannot read \/nonexistent\/body \(ENOENT\)/);
  });

  test('--json puts status and headers on stderr as JSON', async () => {
    const result = await capi(['invoke', capability, '--json']);
    const meta = JSON.parse(result.stderr);
    assert.equal(meta.status, 200);
    assert.equal(meta.headers['x-target'], 'echo');
    assert.equal(JSON.parse(result.stdout).url, '/inv');
  });

  test('an error body gets a final newline when it has none; a 2xx body stays byte-exact', async () => {
    const answers: Record<string, [number, string]> = {
      '/missing': [404, 'not here'],
      '/ended': [500, 'broken\n'],
      '/empty': [503, ''],
      '/ok': [200, 'exact, no newline'],
      '/ok-crlf': [201, 'ends\r\n'],
    };
    const answering = await startTarget({ respond: (req, res) => res.writeHead(answers[req.url!]![0]).end(answers[req.url!]![1]) });
    cleanup.push(() => answering.close());
    const { export: exportCap } = await exportCapability('newline');
    for (const [path, [status, body]] of Object.entries(answers)) {
      const capability = succeeded(await capi(['membrane', 'export', '--capability', exportCap, '--uri', `${answering.url}${path}`])).trim();
      const result = await capi(['invoke', capability]);
      assert.equal(result.code, status < 300 ? 0 : 1);
      assert.equal(result.stdout, status < 300 || body === '' || body.endsWith('\n') ? body : `${body}\n`, path);
    }
    // Membrane's own refusal (a JSON body without a newline) too.
    const unknown = await capi(['invoke', `cpblty://localhost:${new URL(server.url).port}/#CPBLTY1-${'B'.repeat(86)}`]);
    assert.match(unknown.stdout, /^\{"error":"Unauthorized","message":"[^"\n]+"\}\n$/);
  });

  test('over HTTPS with the profile’s CA, --ca, or --trustedCA-file-path', async () => {
    const isolated = await freshHome();
    const tls = await startOtherServer(isolated, { tls: true });
    const roots = bannerRoots(tls.stdout())!;
    const caFile = join(isolated, 'ca.pem');
    await writeFile(caFile, pki.caCert);
    failed(await runCapi(['membrane', 'query'], { HOME: isolated }), 1, /no answer from https:\/\/localhost:\d+/);
    succeeded(await runCapi(['membrane', 'query', '--ca', caFile], { HOME: isolated }));
    const trusted = join(isolated, 'trusted.json');
    await writeFile(trusted, JSON.stringify({ [new URL(roots.query.replace('cpblty', 'https')).host]: pki.caCert }));
    succeeded(await runCapi(['membrane', 'query', '--trustedCA-file-path', trusted], { HOME: isolated }));
    succeeded(await runCapi(['config', '--ca', caFile], { HOME: isolated }));
    assert.equal(succeeded(await runCapi(['membrane', 'query', '--json'], { HOME: isolated })), '{"membranes":[],"completed":true}\n');
  });
});

describe('capi hardening', () => {
  test('CAPI_* secret variables stand in only where their flag belongs', async () => {
    const env = {
      CAPI_AWS4_HMAC_SHA256_SECRET_ACCESS_KEY: 'x',
      CAPI_AWS4_HMAC_SHA256_SESSION_TOKEN: 'y',
      CAPI_CAP1_HMAC_SHA512_KEY: 'a2V5',
      CAPI_TLS_KEY: 'pem',
      CAPI_UNRELATED: 'z',
    };
    succeeded(await capi(['membrane', 'create', '--id', 'env-1'], env));
    succeeded(await capi(['profiles'], env));
    const m = await exportCapability('env-2');
    const plain = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/env`], env)).trim();
    succeeded(await capi(['membrane', 'export', '--capability', m.export, '--capability-to-export', plain], env));
    succeeded(await capi(['invoke', plain], env));
    // CAPI_CAPABILITY stands in for --capability of the membrane commands.
    const viaEnv = JSON.parse(succeeded(await capi(['membrane', 'export', '--json', '--uri', `${target.url}/env2`], { CAPI_CAPABILITY: m.export })));
    assert.match(viaEnv.capability, URI);
    failed(await capi(['membrane', 'revoke'], { CAPI_CAPABILITY: 'not a capability' }), 2, /CAPI_CAPABILITY is not a capability URI/);
  });

  test('a profile’s address is used only for capabilities of the profile’s own service', async () => {
    const isolated = await freshHome();
    const roots = bannerRoots(server.stdout())!;
    succeeded(await runCapi(['config', '--create', roots.create, '--address', server.url], { HOME: isolated }));
    const seen: string[] = [];
    const listener = await startTarget({ respond: (req, res) => { seen.push(String(req.headers.authorization)); res.end('{}'); } });
    cleanup.push(() => listener.close());
    // A capability of another service (another authority) is not sent to the profile's address.
    const foreign = `cpblty://127.0.0.1:${listener.port}/#CPBLTY1-${'F'.repeat(86)}`;
    const result = await runCapi(['invoke', foreign], { HOME: isolated });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no answer from https:\/\/127\.0\.0\.1:\d+/);
    assert.deepEqual(seen, []);
    // One of its own is.
    succeeded(await runCapi(['membrane', 'create', '--id', 'own-authority'], { HOME: isolated }));
  });

  test('membrane init saves https for any authority but loopback', async () => {
    const cases: [string, string][] = [
      ['membrane.example.com', 'https://membrane.example.com'],
      ['10.0.0.5:8080', 'https://10.0.0.5:8080'],
      ['localhost:8080', 'http://localhost:8080'],
      ['127.0.0.2:9', 'http://127.0.0.2:9'],
      ['[::1]:8080', 'http://[::1]:8080'],
    ];
    for (const [authority, address] of cases) {
      const isolated = await freshHome();
      const dataDir = await tempDir();
      cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
      assert.equal((await runMembrane(['init', '--data-dir', dataDir, '--authority', authority], { HOME: isolated })).code, 0);
      assert.equal(JSON.parse(succeeded(await runCapi(['config', '--json'], { HOME: isolated }))).membrane.address, address, authority);
    }
  });

  test('tokens are never echoed in usage errors', async () => {
    const token = bannerRoots(server.stdout())!.query;
    const stray = await capi(['membrane', 'revoke', token]);
    failed(stray, 2, /^capi: unexpected argument: membrane revoke takes no more arguments/);
    assert.ok(!stray.stderr.includes('cpblty'), stray.stderr);
    const result = await capi([token]);
    assert.equal(result.code, 2);
    assert.ok(!result.stderr.includes(token.slice(token.indexOf('#') + 9)), result.stderr);
    assert.match(result.stderr, /unknown command "cpblty:\/\/\S+\/#CPBLTY1-…"/);
    const membraneResult = await runMembrane(['init', token]);
    assert.equal(membraneResult.code, 2);
    assert.ok(!membraneResult.stderr.includes(token.slice(token.indexOf('#') + 9)), membraneResult.stderr);
  });

  test('a capability pasted with whitespace or quotes around it says so, wherever a capability is taken', async () => {
    const roots = bannerRoots(server.stdout())!;
    const m = await exportCapability('pasted');
    const isolated = await freshHome();
    const pasted: [string, RegExp][] = [
      [` ${roots.query} `, /the capability has whitespace around it; remove it/],
      [`${roots.query}\n`, /the capability has whitespace around it; remove it/],
      [`"${roots.query}"`, /the capability is wrapped in quotes; remove them/],
      [`'${roots.query}'`, /the capability is wrapped in quotes; remove them/],
      [` "${roots.query}" `, /the capability is wrapped in quotes and has whitespace around it; remove them/],
    ];
    const places: [string, (value: string) => Promise<CommandResult>][] = [
      ['--capability', (value) => capi(['invoke', value])],
      ['--capability', (value) => capi(['membrane', 'query', '--capability', value])],
      ['--capability-to-export', (value) => capi(['membrane', 'export', '--capability', m.export, '--capability-to-export', value])],
      ['--create', (value) => runCapi(['config', '--create', value], { HOME: isolated })],
      ['--query', (value) => runCapi(['config', '--query', value], { HOME: isolated })],
      ['--delete-self', (value) => runCapi(['config', '--delete-self', value], { HOME: isolated })],
      ['CAPI_CAPABILITY', (value) => capi(['membrane', 'query'], { CAPI_CAPABILITY: value })],
    ];
    for (const [source, run] of places) {
      for (const [value, message] of pasted) {
        const result = await run(value);
        failed(result, 2, new RegExp(`^capi: ${source}: ${message.source}\n$`));
        assert.ok(!result.stderr.includes('cpblty') && !result.stderr.includes('CPBLTY1-'), result.stderr);
      }
    }
    assert.equal(succeeded(await runCapi(['config', '--json'], { HOME: isolated })), '{"profile":"default","membrane":{"capabilities":{"create":"(none)","query":"(none)","deleteSelf":"(none)"}}}\n');
  });

  test('repeated header names are refused, methods are upper-cased, standard input is read once', async () => {
    const m = await exportCapability('strict');
    failed(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/x`, '--header', 'X-A: 1', '--header', 'x-a: 2']), 2, /--header x-a is given twice/);
    const lower = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/x`, '--method', 'patch'])).trim();
    assert.equal(JSON.parse(succeeded(await capi(['invoke', lower, '--method', 'get']))).method, 'PATCH');
    failed(await capi(['invoke', '@-', '--data', '@-'], {}, `${lower}
`), 2, /--data: only one value can be read from standard input/);
  });

  test('invoke exits 0 only for a 2xx answer', async () => {
    const redirecting = await startTarget({ respond: (_req, res) => res.writeHead(302, { location: '/elsewhere' }).end() });
    cleanup.push(() => redirecting.close());
    const capability = succeeded(await capi(['membrane', 'export', '--capability', (await exportCapability('redirect')).export, '--uri', `${redirecting.url}/r`])).trim();
    const result = await capi(['invoke', capability]);
    assert.equal(result.code, 1);
    assert.equal(result.stderr, '302 Found\n');
  });
});

describe('header lines from a file, standard input or CAPI_HEADERS', () => {
  /** The value of each named header as the target received it (undefined when absent). */
  async function headersReceived(capability: string, names: string[], args: string[] = []): Promise<(string | undefined)[]> {
    const raw: string[] = JSON.parse(succeeded(await capi(['invoke', capability, ...args]))).rawHeaders;
    return names.map((name) => {
      const index = raw.findIndex((header, i) => i % 2 === 0 && header.toLowerCase() === name.toLowerCase());
      return index === -1 ? undefined : raw[index + 1];
    });
  }

  test('export --header @FILE (CRLF or LF, blank lines skipped) and @-, mixed with literal headers', async () => {
    const m = await exportCapability('header-lines');
    const dir = await freshHome();
    const file = join(dir, 'headers');
    await writeFile(file, 'X-Api-Key: s3cr3t-from-file\r\n\r\nAuthorization: Bearer up: stream\r\n   \n');
    const fromFile = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/h`, '--header', `@${file}`, '--header', 'X-Literal: 1'])).trim();
    assert.deepEqual(await headersReceived(fromFile, ['X-Api-Key', 'Authorization', 'X-Literal']), ['s3cr3t-from-file', 'Bearer up: stream', '1']);
    const fromStdin = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/h`, '--header', '@-'], {}, 'X-Api-Key: s3cr3t-from-stdin\nX-Two: 2')).trim();
    assert.deepEqual(await headersReceived(fromStdin, ['X-Api-Key', 'X-Two']), ['s3cr3t-from-stdin', '2']);
  });

  test('CAPI_HEADERS stands in for --header only in membrane export with --uri and no --header', async () => {
    const m = await exportCapability('header-env');
    const env = { CAPI_HEADERS: 'X-Api-Key: s3cr3t-from-env\r\nX-Env: yes\n' };
    const fromEnv = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/e`], env)).trim();
    assert.deepEqual(await headersReceived(fromEnv, ['X-Api-Key', 'X-Env']), ['s3cr3t-from-env', 'yes']);
    // A --header flag wins: the variable is not merged in.
    const flagged = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/e`, '--header', 'X-Flag: 1'], env)).trim();
    assert.deepEqual(await headersReceived(flagged, ['X-Flag', 'X-Api-Key']), ['1', undefined]);
    // Not for a re-export (no conflict), not for invoke.
    const plain = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/p`])).trim();
    const reExported = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--capability-to-export', plain], env)).trim();
    assert.deepEqual(await headersReceived(reExported, ['X-Api-Key']), [undefined]);
    const invoked: string[] = JSON.parse(succeeded(await capi(['invoke', plain], env))).rawHeaders;
    assert.ok(!invoked.includes('X-Env'));
  });

  test('invoke --header @FILE and @-', async () => {
    const m = await exportCapability('invoke-header-lines');
    const plain = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/i`])).trim();
    const dir = await freshHome();
    await writeFile(join(dir, 'headers'), 'X-From-File: f\n');
    assert.deepEqual(await headersReceived(plain, ['X-From-File', 'X-Literal'], ['--header', `@${join(dir, 'headers')}`, '--header', 'X-Literal: l']), ['f', 'l']);
    const result = await capi(['invoke', plain, '--header', '@-'], {}, 'X-From-Stdin: s\r\n');
    assert.equal(JSON.parse(succeeded(result)).rawHeaders.includes('X-From-Stdin'), true);
  });

  test('a bad line is named by its number and never echoed; names twice across sources and standard input twice are refused', async () => {
    const m = await exportCapability('header-refusals');
    const exportTo = ['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/x`];
    const dir = await freshHome();
    const file = join(dir, 'headers');
    await writeFile(file, 'X-Ok: 1\r\ns3cr3t-without-a-name\r\n');
    const fromFile = await capi([...exportTo, '--header', `@${file}`]);
    failed(fromFile, 2, new RegExp(`^capi: --header @${file}: line 2 is not "Name: value"\n$`));
    const fromStdin = await capi([...exportTo, '--header', '@-'], {}, 'X-Ok: 1\n\nBad Name: s3cr3t\n');
    failed(fromStdin, 2, /^capi: --header @-: line 3 is not "Name: value"\n$/);
    const fromEnv = await capi(exportTo, { CAPI_HEADERS: 's3cr3t' });
    failed(fromEnv, 2, /^capi: CAPI_HEADERS: line 1 is not "Name: value"\n$/);
    for (const result of [fromFile, fromStdin, fromEnv]) assert.ok(!result.stderr.includes('s3cr3t'), result.stderr);
    failed(await capi([...exportTo, '--header', `@${file}x`]), 2, new RegExp(`--header: cannot read ${file}x \\(ENOENT\\)`));

    await writeFile(file, 'X-Twice: 1\n');
    failed(await capi([...exportTo, '--header', `@${file}`, '--header', 'x-twice: 2']), 2, /--header x-twice is given twice/);
    failed(await capi(exportTo, { CAPI_HEADERS: 'X-Twice: 1\nX-TWICE: 2' }), 2, /--header X-TWICE is given twice/);
    failed(await capi([...exportTo, '--header', '@-', '--tls-key', '@-'], {}, 'X-A: 1\n'), 2, /only one value can be read from standard input/);
    const plain = succeeded(await capi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/p`])).trim();
    failed(await capi(['invoke', plain, '--header', '@-', '--data', '@-'], {}, 'X-A: 1\n'), 2, /^capi: --data: only one value can be read from standard input\n$/);
  });

  test('the help says how header values stay out of shell history', async () => {
    for (const args of [['membrane', 'export', '--help'], ['invoke', '--help']]) {
      const out = succeeded(await capi(args)).replace(/\s+/g, ' ');
      assert.match(out, /--header @FILE and --header @- read header lines, one "Name: value" per line/);
      assert.match(out, /CAPI_HEADERS \(header lines in place of --header, with --uri\)/);
      // Option descriptions may be wrapped inside a word.
      assert.match(out.replace(/ /g, ''), /--headerHeaderto\w+,"Name:value"\(repeatable\);@FILE\/@-:headerlines/);
    }
  });
});

describe('capi membrane delete-self asks first', () => {
  let isolated: string;
  let dataDir: string;
  let url: string;
  let exported: string;
  before(async () => {
    isolated = await freshHome();
    const other = await startOtherServer(isolated, { env: { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' } });
    dataDir = other.dataDir;
    url = other.url;
    const m = JSON.parse(succeeded(await runCapi(['membrane', 'create', '--id', 'kept', '--json'], { HOME: isolated }))).capabilities;
    exported = succeeded(await runCapi(['membrane', 'export', '--capability', m.export, '--uri', `${target.url}/alive`], { HOME: isolated })).trim();
  });

  /** Whether the tenant still answers: its query capability and a capability exported through it. */
  async function tenantAlive(): Promise<boolean> {
    const query = await runCapi(['membrane', 'query'], { HOME: isolated });
    const invoked = await runCapi(['invoke', exported], { HOME: isolated });
    assert.equal(query.code, invoked.code, `${query.stderr} ${invoked.stderr}`);
    if (query.code !== 0) {
      assert.match(query.stderr, /^capi: 401 Unauthorized/);
      assert.equal(invoked.stderr, '401 Unauthorized\n');
    }
    return query.code === 0;
  }

  test('without a terminal and without --yes it is a usage error and nothing is sent', async () => {
    failed(await runCapi(['membrane', 'delete-self'], { HOME: isolated }), 2, /^capi: membrane delete-self asks for confirmation, and there is no terminal to ask on: pass --yes/);
    failed(await runCapi(['membrane', 'delete-self'], { HOME: isolated }, 'yes\n'), 2, /pass --yes/);
    assert.equal(await tenantAlive(), true);
  });

  test('on a terminal it names what will happen and goes ahead only on y or yes', async () => {
    for (const answer of ['no\n', '\n', 'yess\n', '']) {
      const refused = await capiOnTerminal(['membrane', 'delete-self'], isolated, answer);
      assert.equal(refused.code, 1, refused.output);
      assert.match(refused.output, /membrane delete-self revokes every membrane of the tenant of profile "default" at localhost:\d+: every capability exported through them stops working, and the tenant's root capabilities \(create, query, deleteSelf\) die with it\./);
      assert.match(refused.output, /Delete the tenant\? \[y\/N\] /);
      assert.match(refused.output, /capi: not confirmed; nothing was deleted/);
      assert.ok(!refused.output.includes('CPBLTY1-'), refused.output);
      assert.equal(await tenantAlive(), true, JSON.stringify(answer));
    }
    const confirmed = await capiOnTerminal(['membrane', 'delete-self'], isolated, 'yes\n');
    assert.equal(confirmed.code, 0, confirmed.output);
    assert.match(confirmed.output, /deleted: every membrane of the tenant is revoked, and its root capabilities are dead/);
    assert.equal(await tenantAlive(), false);
  });

  test('--yes and -y skip the question', async () => {
    for (const flag of ['--yes', '-y']) {
      const tenant = await runMembrane(['tenant', 'create', '--data-dir', dataDir, '--json'], { HOME: isolated });
      const roots = JSON.parse(tenant.stdout);
      const onTerminal = await capiOnTerminal(['membrane', 'delete-self', flag, '--address', url, '--capability', roots.deleteSelf], isolated, '');
      assert.equal(onTerminal.code, 0, onTerminal.output);
      assert.ok(!onTerminal.output.includes('[y/N]'), onTerminal.output);
      failed(await runCapi(['membrane', 'query', '--address', url, '--capability', roots.query], { HOME: isolated }), 1, /401 Unauthorized/);
    }
  });
});

describe('capi --help', () => {
  test('explains how secrets stay out of shell history', async () => {
    for (const args of [['--help'], ['membrane', 'export', '--help'], ['invoke', '--help'], ['config', '--help']]) {
      const out = succeeded(await capi(args));
      assert.match(out, /CAPI_AWS4_HMAC_SHA256_SECRET_ACCESS_KEY/);
      assert.match(out, /CAPI_CAPABILITY/);
      assert.match(out, /@FILE/);
    }
  });

  test('every command and subcommand prints its own help with --help and -h, exit 0', async () => {
    const usage: [string[], RegExp][] = [
      [[], /^capi <command> \[options\]\n/],
      [['config'], /^capi config\n\nSet a profile’s capabilities/],
      [['profiles'], /^capi profiles\n\nList profiles/],
      [['membrane'], /^capi membrane\n\nMembrane service operations\n\nCommands:\n {2}capi membrane create /],
      [['membrane', 'create'], /^capi membrane create\n\nCreate a membrane\n[\s\S]*--id /],
      [['membrane', 'export'], /^capi membrane export\n\nExport a capability[\s\S]*--uri /],
      [['membrane', 'query'], /^capi membrane query\n\nQuery membranes\n[\s\S]*--last-id /],
      [['membrane', 'revoke'], /^capi membrane revoke\n\nRevoke a membrane/],
      [['membrane', 'delete-self'], /^capi membrane delete-self\n\nRevoke every membrane of the tenant, killing its root capabilities \(asks first on a terminal\)\n[\s\S]*-y, --yes +Do not ask for confirmation/],
      [['invoke'], /^capi invoke <capability>\n\nInvoke a capability[\s\S]*--data /],
    ];
    for (const [path, expected] of usage) {
      for (const flag of ['--help', '-h']) {
        const result = await capi([...path, flag]);
        assert.equal(result.code, 0, `${path.join(' ')} ${flag}: ${result.stderr}`);
        assert.equal(result.stderr, '');
        assert.match(result.stdout, expected, `${path.join(' ')} ${flag}`);
      }
    }
  });

  test('a mistyped command or option names the nearest valid one, exit 2', async () => {
    const cap = bannerRoots(server.stdout())!.query;
    const mistyped: [string[], string][] = [
      [['invok', cap], 'unknown command "invok"; did you mean "invoke"?'],
      [['confg'], 'unknown command "confg"; did you mean "config"?'],
      [['membrane', 'exprot'], 'unknown command "exprot"; did you mean "export"?'],
      [['membrane', 'qurey'], 'unknown command "qurey"; did you mean "query"?'],
      [['membrane', 'delete-slef'], 'unknown command "delete-slef"; did you mean "delete-self"?'],
      [['membrane', 'frobnicate'], 'unknown command "frobnicate"; expected create, export, query, revoke or delete-self'],
      [['membrane', 'export', '--ur', 'x'], 'unknown option --ur; did you mean --uri?'],
      [['membrane', 'export', '--capabilty', cap, '--uri', 'http://x/'], 'unknown option --capabilty; did you mean --capability?'],
      [['membrane', 'export', '--uri', 'http://x/', '--no-allow-qurey'], 'unknown option --no-allow-qurey; did you mean --no-allow-query?'],
      [['membrane', 'query', '--limt=5'], 'unknown option --limt; did you mean --limit?'],
      [['membrane', 'delete-self', '--yse'], 'unknown option --yse; did you mean --yes?'],
      [['config', '--adress', 'http://x'], 'unknown option --adress; did you mean --address?'],
      [['invoke', cap, '--hedaer', 'X: y'], 'unknown option --hedaer; did you mean --header?'],
      [['--profle', 'x', 'profiles'], 'unknown option --profle; did you mean --profile?'],
      [['--bogus'], 'unknown option --bogus'],
      [['membrane', '--bogus'], 'unknown option --bogus'],
      [['profiles', 'extra'], 'unexpected argument: profiles takes no more arguments (quote a value that has spaces)'],
    ];
    for (const [args, message] of mistyped) {
      const result = await capi(args);
      assert.equal(result.code, 2, args.join(' '));
      assert.equal(result.stderr, `capi: ${message}\n`, args.join(' '));
      assert.equal(result.stdout, '');
    }
    // Usage errors other than a mistyped word keep exit 2 as well.
    failed(await capi([]), 2, /^capi: a command is required: config, profiles, membrane or invoke\n$/);
    failed(await capi(['membrane']), 2, /^capi: a membrane command is required: create, export, query, revoke or delete-self\n$/);
    failed(await capi(['invoke']), 2, /Not enough non-option arguments/);
  });
});
