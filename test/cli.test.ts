/** `bin/membrane` as a real process: init, tenant create, serve, flags, environment, signals. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { chmod, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { Agent, request } from 'undici';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { bannerRoots, cleanEnv, logLines, REPO_ROOT, runMembrane, startServerProcess, type ServerProcess } from './helpers/child.js';
import { call, ControlPlane, tokenOf, type CallResult } from './helpers/client.js';
import { tempDir } from './helpers/membrane.js';
import { createPki } from './helpers/pki.js';
import { startTarget } from './helpers/target.js';

const URI = /^cpblty:\/\/[^/]+\/#CPBLTY1-[A-Za-z0-9_-]{86}$/;
const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

async function dataDir(): Promise<string> {
  const dir = await tempDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ServerProcess> {
  const server = await startServerProcess(args, env);
  cleanup.push(() => void server.child.kill('SIGKILL'));
  return server;
}

function assertOneLineError(result: { code: number | null; stderr: string; stdout: string }, code: number, message: RegExp): void {
  assert.equal(result.code, code, result.stderr);
  assert.equal(result.stdout, '');
  assert.match(result.stderr, /^membrane: .+\n$/);
  assert.match(result.stderr, message);
}

describe('membrane init', () => {
  test('creates the store and key file, prints the root capabilities as JSON', async () => {
    const dir = await dataDir();
    const result = await runMembrane(['init', '--data-dir', dir, '--json']);
    assert.equal(result.code, 0, result.stderr);
    const roots = JSON.parse(result.stdout);
    assert.deepEqual(Object.keys(roots).sort(), ['create', 'deleteSelf', 'query']);
    for (const uri of Object.values(roots)) assert.match(uri as string, URI);
    assert.ok((roots.create as string).startsWith('cpblty://localhost:8080/#'));
    assert.equal((await stat(join(dir, 'master.key'))).mode & 0o777, 0o600);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
  });

  test('human output without --json; --authority and MEMBRANE_AUTHORITY set the URIs’ authority', async () => {
    const human = await runMembrane(['init', '--data-dir', await dataDir(), '--authority', 'membrane.example.com']);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /^create: +cpblty:\/\/membrane\.example\.com\/#CPBLTY1-\S+\nquery: +cpblty:\S+\ndeleteSelf: cpblty:\S+\n$/);
    const fromEnv = await runMembrane(['init', '--data-dir', await dataDir(), '--json'], { MEMBRANE_AUTHORITY: 'm.example:8443' });
    assert.ok(JSON.parse(fromEnv.stdout).query.startsWith('cpblty://m.example:8443/#'));
    const fromPort = await runMembrane(['init', '--json'], { MEMBRANE_DATA_DIR: await dataDir(), MEMBRANE_PORT: '9999' });
    assert.ok(JSON.parse(fromPort.stdout).query.startsWith('cpblty://localhost:9999/#'));
  });

  test('refuses a store that already has a tenant', async () => {
    const dir = await dataDir();
    assert.equal((await runMembrane(['init', '--data-dir', dir])).code, 0);
    assertOneLineError(await runMembrane(['init', '--data-dir', dir]), 1, /already holds a tenant; add another with `membrane tenant create/);
  });

  test('bad flags and values are usage errors (exit 2)', async () => {
    assertOneLineError(await runMembrane(['init', '--bogus']), 2, /unknown option "--bogus" \(see membrane init --help\)/);
    assertOneLineError(await runMembrane(['init', '--data-dir', await dataDir(), '--authority', 'http://x/']), 2, /--authority: authority "http:\/\/x\/" is not host\[:port\]/);
    assertOneLineError(await runMembrane(['init', '--data-dir', await dataDir()], { MEMBRANE_AUTHORITY: 'a b' }), 2, /MEMBRANE_AUTHORITY: authority "a b"/);
    assertOneLineError(await runMembrane(['frobnicate']), 2, /unknown command "frobnicate" \(see membrane --help\)/);
    assertOneLineError(await runMembrane(['tenant', 'delete']), 2, /unknown command "tenant delete" \(see membrane tenant --help\)/);
  });
});

describe('membrane help', () => {
  test('--help prints the commands, how to get a command’s help, and the exit codes; exit 0', async () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const help = await runMembrane(args);
      assert.equal(help.code, 0, args.join(' '));
      assert.equal(help.stderr, '');
      for (const word of ['serve', 'init', 'tenant create', 'audit-hash', 'keys rotate', 'membrane COMMAND --help', '2 usage error', 'MEMBRANE_MASTER_KEY']) {
        assert.ok(help.stdout.includes(word), `${args.join(' ')}: ${word}`);
      }
    }
  });

  test('every command and subcommand prints its own help, with --help or -h anywhere among its arguments; exit 0', async () => {
    const cases: [string[], RegExp, string[]][] = [
      [['serve', '--help'], /^Usage: membrane serve \[options\]\n\nRuns the Membrane service/, ['--port N', 'MEMBRANE_PORT', '--allow-targets LIST', 'MEMBRANE_ALLOW_TARGETS', '--capi-profile NAME', 'a second or more after the first exits at once with 1', '-h, --help']],
      [['serve', '--port', 'not-a-port', '-h'], /^Usage: membrane serve /, ['--data-dir DIR', '-h, --help']],
      [['help', 'serve'], /^Usage: membrane serve /, ['--drain-timeout-ms N', '-h, --help']],
      [['init', '--json', '--help'], /^Usage: membrane init \[--data-dir DIR\]/, ['Creates a store and its first tenant', '--authority HOST[:PORT]', '--no-capi-profile', '-h, --help']],
      [['tenant', 'create', '-h'], /^Usage: membrane tenant create /, ['Adds a tenant to an existing store', '--capi-profile NAME', '-h, --help']],
      [['audit-hash', '--help'], /^Usage: membrane audit-hash \[--data-dir DIR\] \[--json\] TOKEN\|CAPABILITY\|-\n/, ['audit trail', '-h, --help']],
      [['keys', 'rotate', '--data-dir', 'x', '--help'], /^Usage: membrane keys rotate /, ['Re-seals every secret', 'keys-rotate.lock', '-h, --help']],
      [['tenant', '--help'], /^Usage: membrane tenant COMMAND/, ['membrane tenant create', 'membrane tenant COMMAND --help']],
      [['keys', '-h'], /^Usage: membrane keys COMMAND/, ['membrane keys rotate', 'membrane keys COMMAND --help']],
    ];
    for (const [args, usage, words] of cases) {
      const help = await runMembrane(args);
      assert.equal(help.code, 0, args.join(' '));
      assert.equal(help.stderr, '', args.join(' '));
      assert.match(help.stdout, usage, args.join(' '));
      for (const word of words) assert.ok(help.stdout.includes(word), `${args.join(' ')}: ${word}`);
    }
  });

  test('a mistyped command, subcommand or option names the nearest valid one; exit 2', async () => {
    assertOneLineError(await runMembrane(['srve']), 2, /^membrane: unknown command "srve"; did you mean "serve"\? \(see membrane --help\)$/m);
    assertOneLineError(await runMembrane(['serve', '--prot', '1']), 2, /^membrane: unknown option "--prot"; did you mean "--port"\? \(see membrane serve --help\)$/m);
    assertOneLineError(await runMembrane(['tenant', 'crate']), 2, /unknown command "tenant crate"; did you mean "tenant create"\?/);
    assertOneLineError(await runMembrane(['keys', 'rotat']), 2, /unknown command "keys rotat"; did you mean "keys rotate"\?/);
    assertOneLineError(await runMembrane(['init', '--jsn']), 2, /unknown option "--jsn"; did you mean "--json"\?/);
    assertOneLineError(await runMembrane(['audit-hash', '--data-dri', 'x', 'CPBLTY1-x']), 2, /unknown option "--data-dri"; did you mean "--data-dir"\?/);
  });

  test('no command, or a group without its subcommand, is a one-line usage error', async () => {
    assertOneLineError(await runMembrane([]), 2, /^membrane: a command is needed: serve, init, tenant, audit-hash, keys \(see membrane --help\)\n$/);
    assertOneLineError(await runMembrane(['tenant']), 2, /^membrane: tenant needs a command: tenant create \(see membrane tenant --help\)\n$/);
    assertOneLineError(await runMembrane(['keys', '--json']), 2, /^membrane: keys needs a command: keys rotate \(see membrane keys --help\)\n$/);
  });
});

describe('master key', () => {
  test('MEMBRANE_MASTER_KEY is used instead of a key file, and is then required', async () => {
    const dir = await dataDir();
    const key = Buffer.alloc(32, 7).toString('base64');
    assert.equal((await runMembrane(['init', '--data-dir', dir], { MEMBRANE_MASTER_KEY: key })).code, 0);
    await assert.rejects(stat(join(dir, 'master.key')));
    assert.equal((await runMembrane(['tenant', 'create', '--data-dir', dir], { MEMBRANE_MASTER_KEY: key })).code, 0);
    assertOneLineError(await runMembrane(['tenant', 'create', '--data-dir', dir]), 1, /no master key: set MEMBRANE_MASTER_KEY/);
    const wrong = Buffer.alloc(32, 8).toString('base64');
    assertOneLineError(await runMembrane(['tenant', 'create', '--data-dir', dir], { MEMBRANE_MASTER_KEY: wrong }), 1, /master key does not match the store/);
  });

  test('a malformed MEMBRANE_MASTER_KEY is refused', async () => {
    for (const bad of ['short', Buffer.alloc(31).toString('base64'), Buffer.alloc(33).toString('base64'), Buffer.alloc(32).toString('hex')]) {
      assertOneLineError(await runMembrane(['init', '--data-dir', await dataDir()], { MEMBRANE_MASTER_KEY: bad }), 1, /MEMBRANE_MASTER_KEY must be base64 of 32 bytes/);
    }
  });

  test('a key file readable by others is refused', async () => {
    const dir = await dataDir();
    assert.equal((await runMembrane(['init', '--data-dir', dir])).code, 0);
    await chmod(join(dir, 'master.key'), 0o644);
    assertOneLineError(await runMembrane(['tenant', 'create', '--data-dir', dir]), 1, /master\.key is readable by others \(mode 644\); run chmod 600/);
  });

  test('a store opened with a different key file is refused', async () => {
    const dir = await dataDir();
    assert.equal((await runMembrane(['init', '--data-dir', dir])).code, 0);
    await writeFile(join(dir, 'master.key'), `${Buffer.alloc(32, 1).toString('base64')}\n`, { mode: 0o600 });
    assertOneLineError(await runMembrane(['tenant', 'create', '--data-dir', dir]), 1, /master key does not match/);
  });
});

describe('membrane tenant create', () => {
  test('needs an existing store', async () => {
    const dir = await dataDir();
    assertOneLineError(await runMembrane(['tenant', 'create', '--data-dir', join(dir, 'nothing')]), 1, /no Membrane store in .*nothing \(create one with `membrane init/);
  });

  test('adds a tenant while a server runs on the same store, and the server honours it at once', async () => {
    const dir = await dataDir();
    const server = await serve(['--port', '0', '--data-dir', dir]);
    const result = await runMembrane(['tenant', 'create', '--data-dir', dir, '--json']);
    assert.equal(result.code, 0, result.stderr);
    const roots = JSON.parse(result.stdout);
    const control = new ControlPlane(server.url);
    const m = await control.createMembrane(roots.create, 'from-cli-tenant');
    assert.match(m.export, URI);
    assert.equal((await call(server.url, roots.query)).json.membranes[0].id, 'from-cli-tenant');
    // The bootstrap tenant is a different tenant.
    const bootstrap = bannerRoots(server.stdout())!;
    assert.deepEqual((await call(server.url, bootstrap.query)).json.membranes, []);
  });
});

describe('membrane serve', () => {
  test('prints the bootstrap tenant’s root capabilities on the first start only', async () => {
    const dir = await dataDir();
    const first = await serve(['--port', '0', '--data-dir', dir]);
    const roots = bannerRoots(first.stdout());
    assert.ok(roots);
    assert.ok(roots.create.startsWith(`cpblty://localhost:${new URL(first.url).port}/#`));
    assert.equal((await call(first.url, roots.query)).status, 200);
    first.child.kill('SIGTERM');
    assert.deepEqual(await first.exited, [0, null]);
    const second = await serve(['--port', '0', '--data-dir', dir]);
    assert.equal(bannerRoots(second.stdout()), undefined);
    assert.ok(!second.stdout().includes('CPBLTY1-'));
    assert.equal((await call(second.url, roots.query)).status, 200);
  });

  test('an initialized store is not bootstrapped again', async () => {
    const dir = await dataDir();
    await runMembrane(['init', '--data-dir', dir]);
    const server = await serve(['--port', '0', '--data-dir', dir]);
    assert.ok(!server.stdout().includes('CPBLTY1-'));
  });

  test('log lines never contain a token', async () => {
    const dir = await dataDir();
    const server = await serve(['--port', '0', '--data-dir', dir], { MEMBRANE_LOG_LEVEL: 'trace', MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' });
    const target = await startTarget();
    cleanup.push(() => target.close());
    const roots = bannerRoots(server.stdout())!;
    const control = new ControlPlane(server.url);
    const m = await control.createMembrane(roots.create, 'logged');
    const capability = await control.export(m.export, { uri: `${target.url}/x`, headers: { 'X-Secret': 'header-secret-value' } });
    await control.statusOf(capability);
    await call(server.url, undefined, { headers: { authorization: `Bearer ${tokenOf(capability)}x` } });
    await control.revoke(m.revoke);
    server.child.kill('SIGTERM');
    await server.exited;
    const logs = server.stdout().slice(server.stdout().indexOf('{"level"'));
    assert.ok(logLines(logs).some((line) => line.msg === 'request' && line.kind === 'exported'));
    assert.ok(!logs.includes('CPBLTY1-'));
    assert.ok(!logs.includes('header-secret-value'));
    assert.ok(!server.stderr().includes('CPBLTY1-'));
  });

  test('flags and environment variables: host, port, authority, data dir; flags win', async () => {
    const dir = await dataDir();
    const server = await serve(['--port', '0', '--authority', 'flag.example:1234'], {
      MEMBRANE_DATA_DIR: dir,
      MEMBRANE_HOST: '127.0.0.1',
      MEMBRANE_PORT: '1',
      MEMBRANE_AUTHORITY: 'env.example',
    });
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(new URL(server.url).port, '1');
    assert.ok(bannerRoots(server.stdout())!.create.startsWith('cpblty://flag.example:1234/#'));
    await stat(join(dir, 'membrane.db'));
  });

  test('a bad setting is a usage error (exit 2) in one line naming the flag or variable; a file that cannot be read exits 1', async () => {
    const dir = await dataDir();
    const cases: [string[], NodeJS.ProcessEnv, number, RegExp][] = [
      [['--port', '70000'], {}, 2, /--port must be at most 65535/],
      [['--port', 'eighty'], {}, 2, /--port must be an integer/],
      [['--port', 'abc'], {}, 2, /^membrane: --port must be an integer \(see membrane serve --help\)\n$/],
      [[], { MEMBRANE_PORT: '-1' }, 2, /MEMBRANE_PORT must be at least 0/],
      [['--log-level', 'loud'], {}, 2, /--log-level must be one of/],
      [['--allow-targets', '10.0.0.0/33'], {}, 2, /--allow-targets: "10\.0\.0\.0\/33" is not a valid CIDR/],
      [[], { MEMBRANE_ALLOW_TARGETS: 'exa mple' }, 2, /MEMBRANE_ALLOW_TARGETS: "exa mple" is neither a CIDR nor a host name/],
      [['--idle-timeout-ms', '1000', '--headers-timeout-ms', '5000'], {}, 2, /--idle-timeout-ms \(MEMBRANE_IDLE_TIMEOUT_MS\) must be longer than --headers-timeout-ms/],
      [['--tls-cert', '/nonexistent.pem'], {}, 2, /--tls-cert and --tls-key .* must be given together/],
      [['--tls-cert', '/nonexistent.pem', '--tls-key', '/nonexistent.key'], {}, 1, /--tls-cert: cannot read \/nonexistent\.pem \(ENOENT\)/],
      [['--tenant-share', '0.04'], {}, 2, /^membrane: --body-memory-limit \(MEMBRANE_BODY_MEMORY_LIMIT\) times the smaller of --tenant-share and --capability-share is 5368709 bytes, less than the largest signed body \(6291456, --signed-body-limit\): such a body could never be buffered/],
      [['--capability-share', '0.001', '--signed-body-limit', '0'], {}, 2, /--tenant-share and --capability-share must be at least 1\/256/],
      [['--tenant-share', '0'], {}, 2, /--tenant-share must be greater than 0/],
      [[], { MEMBRANE_CAPABILITY_SHARE: '1.5' }, 2, /MEMBRANE_CAPABILITY_SHARE must be at most 1/],
      [['--min-body-rate', 'fast'], {}, 2, /--min-body-rate must be an integer/],
      [['--frob'], {}, 2, /unknown option "--frob"/],
      [['--port'], {}, 2, /argument missing/],
      [['extra'], {}, 2, /Unexpected argument 'extra'/],
    ];
    for (const [args, env, code, message] of cases) {
      assertOneLineError(await runMembrane(['serve', '--data-dir', dir, ...args], env), code, message);
    }
  });

  test('MEMBRANE_ALLOW_TARGETS with CIDRs and host names is accepted', async () => {
    const server = await serve(['--port', '0', '--data-dir', await dataDir()], {
      MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8, ::1/128,10.1.2.3, internal.example.com',
    });
    assert.equal((await call(server.url, undefined, { path: '/healthz' })).status, 200);
  });

  test('a port in use is a one-line error', async () => {
    const dir = await dataDir();
    const server = await serve(['--port', '0', '--data-dir', dir]);
    const result = await runMembrane(['serve', '--data-dir', dir, '--port', new URL(server.url).port]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^membrane: listen EADDRINUSE/);
  });

  test('--tls-cert and --tls-key serve HTTPS', async () => {
    const pki = await createPki();
    const server = await serve(['--port', '0', '--data-dir', await dataDir(), '--tls-cert', pki.serverCertPath, '--tls-key', pki.serverKeyPath]);
    assert.match(server.url, /^https:\/\//);
    const agent = new Agent({ connect: { ca: pki.caCert } });
    cleanup.push(() => agent.close());
    const roots = bannerRoots(server.stdout())!;
    const response = await request(server.url, { dispatcher: agent, headers: { authorization: `Bearer ${tokenOf(roots.query)}` } });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(await response.body.json(), { membranes: [], completed: true });
  });

  test('SIGTERM lets in-flight requests finish, refuses new ones, and exits 0', async () => {
    const { server, inFlight, release } = await serveWithAnInvocationHeld();
    server.child.kill('SIGTERM');
    await sleep(200);
    await assert.rejects(call(server.url, undefined, { path: '/healthz', headers: { connection: 'close' } }));
    release();
    const result = await inFlight;
    assert.equal(result.status, 200);
    assert.equal(result.text, 'finished');
    assert.deepEqual(await server.exited, [0, null]);
    assert.ok(logLines(server.stdout()).some((line) => line.msg === 'stopped'));
  });

  test('signals arriving together (a terminal’s SIGINT and the copy npm forwards) are one request to drain', async () => {
    const { server, inFlight, release } = await serveWithAnInvocationHeld();
    server.child.kill('SIGINT');
    server.child.kill('SIGTERM');
    await sleep(300);
    assert.equal(server.child.exitCode, null, 'still draining');
    release();
    assert.equal((await inFlight).status, 200);
    assert.deepEqual(await server.exited, [0, null]);
    assert.ok(logLines(server.stdout()).some((line) => line.msg === 'signal repeated within a second of the first: still draining'));
  });

  test('a second signal a second or more after the first exits at once with 1, cutting what is in flight', async () => {
    const { server, inFlight } = await serveWithAnInvocationHeld();
    const outcome = inFlight.then(
      () => 'answered',
      () => 'cut',
    );
    server.child.kill('SIGINT');
    await sleep(1_200);
    assert.equal(server.child.exitCode, null, 'still draining');
    server.child.kill('SIGINT');
    assert.deepEqual(await server.exited, [1, null]);
    assert.equal(await outcome, 'cut');
    assert.ok(logLines(server.stdout()).some((line) => line.msg === 'second signal: exiting without draining'));
  });
});

/**
 * `membrane serve` on a fresh store with one invocation in flight: its
 * target holds it until `release()`, then answers "finished".
 */
async function serveWithAnInvocationHeld(): Promise<{ server: ServerProcess; inFlight: Promise<CallResult>; release(): void }> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let arrive!: () => void;
  const arrived = new Promise<void>((resolve) => (arrive = resolve));
  const target = await startTarget({
    respond: (_req, res) => {
      arrive();
      void released.then(() => res.end('finished'));
    },
  });
  cleanup.push(() => {
    release();
    return target.close();
  });
  const server = await serve(['--port', '0', '--data-dir', await dataDir()], { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' });
  const inFlight = call(server.url, await exportThrough(server, target.url));
  await arrived;
  return { server, inFlight, release };
}

/** A target that answers each upload, once it has all of it, with the number of bytes it received; `firstChunk` resolves when an upload has begun. */
async function uploadTarget(): Promise<{ url: string; firstChunk: Promise<void> }> {
  let begin!: () => void;
  const firstChunk = new Promise<void>((resolve) => (begin = resolve));
  const server = createServer((req, res) => {
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      begin();
    });
    req.on('end', () => res.end(`received ${received} bytes`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, firstChunk };
}

/** Exports `targetUrl` through a new membrane of the server's bootstrap tenant. */
async function exportThrough(server: ServerProcess, targetUrl: string): Promise<string> {
  const control = new ControlPlane(server.url);
  const m = await control.createMembrane(bannerRoots(server.stdout())!.create, 'signals');
  return control.export(m.export, { uri: `${targetUrl}/` });
}

describe('npm start', () => {
  test('serves from a current build without compiling, on the configured store, and prints the root capabilities once', async () => {
    const dir = await dataDir();
    const buildRecord = join(REPO_ROOT, 'dist', '.tsbuildinfo');
    const current = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'build-if-stale.mjs')], { encoding: 'utf8' });
    assert.equal(current.status, 0, current.stderr);
    const builtAt = (await stat(buildRecord)).mtimeMs;
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const server = await startServerProcess([], { MEMBRANE_DATA_DIR: dir, MEMBRANE_PORT: '0' }, { file: npm, args: ['start', '--silent'] });
    cleanup.push(() => void server.child.kill('SIGKILL'));
    assert.equal((await stat(buildRecord)).mtimeMs, builtAt);
    assert.doesNotMatch(server.stderr(), /compiling/);
    const roots = bannerRoots(server.stdout())!;
    assert.ok(roots);
    assert.equal((await call(server.url, roots.query)).status, 200);
    // npm forwards SIGTERM to the server, which drains and stops; npm then
    // ends itself with the same signal.
    server.child.kill('SIGTERM');
    const [code, signal] = await server.exited;
    assert.ok(code === 0 || signal === 'SIGTERM', `npm ended with ${code} ${signal}`);
    assert.ok(logLines(server.stdout()).some((line) => line.msg === 'stopped'), server.stdout());
  });

  test('Ctrl-C (SIGINT to the whole process group) lets an upload in flight finish; the server and npm exit 0', async () => {
    const target = await uploadTarget();
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const server = await startServerProcess(
      ['--port', '0', '--data-dir', await dataDir()],
      { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' },
      { file: npm, args: ['run', 'start', '--silent', '--'] },
      { processGroup: true },
    );
    const group = -server.child.pid!;
    cleanup.push(() => {
      try {
        process.kill(group, 'SIGKILL');
      } catch {
        // The group has ended.
      }
    });
    const capability = await exportThrough(server, target.url);
    let pressed!: () => void;
    const ctrlC = new Promise<void>((resolve) => (pressed = resolve));
    const chunk = Buffer.alloc(64 * 1024, 'x');
    // The first chunk before Ctrl-C, ten more over half a second after it.
    const body = Readable.from(
      (async function* () {
        yield chunk;
        await ctrlC;
        for (let i = 0; i < 10; i++) {
          await sleep(50);
          yield chunk;
        }
      })(),
    );
    const upload = request(server.url, { method: 'POST', headers: { authorization: `Bearer ${tokenOf(capability)}` }, body });
    await target.firstChunk;
    process.kill(group, 'SIGINT');
    pressed();
    const response = await upload;
    assert.equal(response.statusCode, 200);
    assert.equal(await response.body.text(), `received ${11 * chunk.length} bytes`);
    // npm exits 0 only when its child, the server, did.
    assert.deepEqual(await server.exited, [0, null]);
    const lines = logLines(server.stdout());
    assert.ok(lines.some((line) => line.msg === 'draining' && line.signal === 'SIGINT'));
    assert.ok(lines.some((line) => line.msg === 'stopped'));
    assert.ok(!lines.some((line) => line.msg === 'second signal: exiting without draining'));
  });
});

describe('bin/membrane without a build', () => {
  test('says how to build', async () => {
    // Run a copy of bin/membrane from a directory that has no dist/.
    const dir = await dataDir();
    const source = await readFile(join(REPO_ROOT, 'bin', 'membrane'), 'utf8');
    await writeFile(join(dir, 'membrane.mjs'), source);
    const child = spawn(process.execPath, [join(dir, 'membrane.mjs'), '--help'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const [code] = await once(child, 'close');
    assert.equal(code, 1);
    assert.match(stderr, /not built yet; run `npm install`/);
  });
});
