/** The audit trail: what each action records, what it never records, and its failure policy. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'undici';
import { FileAuditSink } from '../src/audit/audit-sink.js';
import { AuditTrail } from '../src/audit/audit-trail.js';
import type { RootCapabilities } from '../src/service/membrane-service.js';
import { bannerRoots, cleanEnv, logLines, MEMBRANE_BIN, runMembrane, startServerProcess, type ServerProcess } from './helpers/child.js';
import { call, ControlPlane, tokenOf } from './helpers/client.js';
import { startTestMembrane, tempDir, type TestMembrane } from './helpers/membrane.js';
import { startTarget, unusedPort, type TestTarget } from './helpers/target.js';

type Line = Record<string, any>;

async function auditLines(dataDir: string, name = 'audit.log'): Promise<Line[]> {
  const text = await readFile(join(dataDir, name), 'utf8');
  return text.trim().split('\n').map((line) => JSON.parse(line) as Line);
}

/** Waits for buffered (invocation) lines to reach the file. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 50));

/** Polls until `check` holds (buffered lines are written in the background); fails after a few seconds. */
async function waitFor(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (let tries = 0; tries < 400; tries++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** membrane_audit_failures_total, read from the admin listener. */
async function auditFailures(adminUrl: string): Promise<number> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text();
  return Number(/^membrane_audit_failures_total (\d+)$/m.exec(text)![1]);
}

/** The admin listener's URL, from a server process's log. */
async function adminUrlOf(server: ServerProcess): Promise<string> {
  const find = (): Line | undefined => logLines(server.stdout()).find((line) => line.msg === 'admin listening (/metrics)');
  await waitFor('the admin listener', () => find() !== undefined);
  return String(find()!.url);
}

interface StoredCapability {
  dataDir: string;
  target: TestTarget;
  roots: RootCapabilities;
  membrane: { export: string; revoke: string };
  capability: string;
}

/** Runs `use` on a data directory (no server running on it) holding membrane `name` and a capability exported from it to a live target. */
async function withStoredCapability(name: string, use: (stored: StoredCapability) => Promise<void>): Promise<void> {
  const target = await startTarget();
  const dataDir = await tempDir();
  try {
    const setup = await startTestMembrane({ dataDir });
    const membrane = await setup.control.createMembrane(setup.roots.create, name);
    const capability = await setup.control.export(membrane.export, { uri: `${target.url}/${name}` });
    await setup.stop({ keepData: true });
    await use({ dataDir, target, roots: setup.roots, membrane, capability });
  } finally {
    await target.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;
const actionsOf = (lines: Line[]): string[] => lines.map((line) => `${line.action}/${line.phase}${line.membrane === undefined ? '' : `/${line.membrane}`}`);

describe('audit lines', () => {
  let membrane: TestMembrane;
  let target: TestTarget;
  before(async () => {
    membrane = await startTestMembrane();
    target = await startTarget();
  });
  after(async () => {
    await membrane.stop();
    await target.close();
  });

  test('every control-plane action and invocation is recorded, with ids that correlate', async () => {
    const c = membrane.control;
    const alice = await c.createMembrane(membrane.roots.create, 'alice');
    const bob = await c.createMembrane(membrane.roots.create, 'bob');
    const secretHeader = 'audit-header-secret-9c1';
    const original = await c.export(alice.export, { uri: `${target.url}/path/secret-path?q=secret-query`, headers: { 'X-Key': secretHeader }, allowQuery: true });
    const delegated = await c.export(bob.export, { capability: original });
    const invoked = await call(membrane.url, delegated, { method: 'PUT', body: 'twelve bytes', path: '/?more=secret-requester-query' });
    assert.equal(invoked.status, 200);
    assert.equal((await call(membrane.url, membrane.roots.query, { path: '/?limit=5' })).status, 200);
    await c.revoke(bob.revoke);
    assert.equal(await c.statusOf(delegated), 401);
    assert.equal((await call(membrane.url, alice.export, { body: { uri: 'ftp://bad' } })).status, 400);
    await settle();

    const lines = await auditLines(membrane.dataDir);
    const idOf = (uri: string): string => membrane.audit.idOfUri(uri)!;

    // membrane.create: request then response, with the new membrane's capability ids.
    const creates = lines.filter((line) => line.action === 'membrane.create');
    assert.deepEqual(creates.map((line) => line.phase), ['request', 'response', 'request', 'response']);
    assert.equal(creates[0].id, creates[1].id);
    assert.equal(creates[1].membrane, 'alice');
    assert.equal(creates[1].status, 201);
    assert.deepEqual(creates[1].created, [idOf(alice.export), idOf(alice.revoke)]);
    assert.equal(creates[1].capability, idOf(membrane.roots.create));
    assert.equal(typeof creates[1].tenant, 'number');
    assert.equal(typeof creates[1].durationMs, 'number');
    assert.match(creates[1].time, /^\d{4}-\d\d-\d\dT/);

    // membrane.export: uri export, then re-export with its parent.
    const exports = lines.filter((line) => line.action === 'membrane.export' && line.phase === 'response');
    assert.deepEqual(exports[0].created, [idOf(original)]);
    assert.equal(exports[0].membrane, 'alice');
    assert.equal(exports[1].parent, idOf(original));
    assert.deepEqual(exports[1].created, [idOf(delegated)]);
    assert.equal(exports[2].status, 400);
    assert.equal(exports[2].message, 'config.uri must use the http or https scheme');

    // capability.invoke: owner, parent, root and chain length, target host and method, status, bytes.
    const invocation = lines.find((line) => line.action === 'capability.invoke' && line.status === 200)!;
    assert.equal(invocation.phase, 'event');
    assert.equal(invocation.capability, idOf(delegated));
    assert.equal(invocation.membrane, 'bob');
    assert.equal(invocation.parent, idOf(original));
    assert.equal(invocation.root, idOf(original));
    assert.equal(invocation.chainLength, 2);
    assert.equal(invocation.chain, undefined);
    assert.deepEqual(invocation.target, { host: `127.0.0.1:${target.port}`, method: 'PUT' });
    assert.equal(invocation.bytesIn, 12);
    assert.ok(invocation.bytesOut > 100, String(invocation.bytesOut));

    // membrane.query, membrane.revoke, and the refused invocation after it.
    assert.ok(lines.some((line) => line.action === 'membrane.query' && line.status === 200 && line.capability === idOf(membrane.roots.query)));
    const revokes = lines.filter((line) => line.action === 'membrane.revoke');
    assert.deepEqual(revokes.map((line) => [line.phase, line.status, line.membrane]), [['request', undefined, 'bob'], ['response', 202, 'bob']]);
    assert.ok(lines.some((line) => line.action === 'capability.denied' && line.capability === idOf(delegated) && line.status === 401));

    // Never a token, a secret, a header value, a path or a query.
    const text = await readFile(join(membrane.dataDir, 'audit.log'), 'utf8');
    for (const forbidden of ['CPBLTY1-', secretHeader, 'secret-path', 'secret-query', 'secret-requester-query', tokenOf(original).slice(8, 30)]) {
      assert.ok(!text.includes(forbidden), forbidden);
    }
  });

  test('control-plane requests refused before their action (bad method, bad body) are recorded too', async () => {
    const { export: exportCap, revoke } = await membrane.control.createMembrane(membrane.roots.create, 'refusals');
    assert.equal((await call(membrane.url, exportCap, { method: 'GET' })).status, 405);
    assert.equal((await call(membrane.url, exportCap, { body: '{"uri":' })).status, 400);
    assert.equal((await call(membrane.url, revoke, { method: 'PUT' })).status, 405);
    await settle();
    const lines = await auditLines(membrane.dataDir);
    const of = (uri: string, action: string): number[] =>
      lines.filter((line) => line.capability === membrane.audit.idOfUri(uri) && line.action === action).map((line) => line.status);
    assert.deepEqual(of(exportCap, 'membrane.export'), [405, 400]);
    assert.deepEqual(of(revoke, 'membrane.revoke'), [405]);
    for (const line of lines.filter((entry) => entry.membrane === 'refusals' && entry.status >= 400)) assert.equal(line.phase, 'event');
  });

  test('deleteSelf is recorded', async () => {
    const tenant = (await membrane.service.createTenant())!;
    assert.equal((await call(membrane.url, tenant.deleteSelf, { method: 'DELETE' })).status, 202);
    const lines = await auditLines(membrane.dataDir);
    const last = lines.filter((line) => line.action === 'tenant.deleteSelf');
    assert.deepEqual(last.map((line) => [line.phase, line.status]), [['request', undefined], ['response', 202]]);
    assert.equal(last[1].capability, membrane.audit.idOfUri(tenant.deleteSelf));
  });
});

describe('audit lines cannot be forged', () => {
  /** The line breaks of Python's str.splitlines(), a common way to read a log. */
  const SPLITLINES = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;

  test('membrane ids with a character a line reader breaks at are refused with 400 naming the problem', async () => {
    const membrane = await startTestMembrane();
    try {
      for (const id of ['a\u2028{"forged":1}', 'a\u2029b']) {
        const result = await call(membrane.url, membrane.roots.create, { body: { id } });
        assert.equal(result.status, 400, JSON.stringify(id));
        assert.deepEqual(result.json, { error: 'Bad Request', message: 'membrane.id must not contain line or paragraph separators (U+2028, U+2029)' });
      }
      for (const id of ['a\u000bb', 'a\u000cb', 'a\u001cb', 'a\u001db', 'a\u001eb', 'a\u0085b']) {
        const result = await call(membrane.url, membrane.roots.create, { body: { id } });
        assert.equal(result.status, 400, JSON.stringify(id));
        assert.equal(result.json.message, 'membrane.id must not contain control characters or unpaired surrogates');
      }
      assert.deepEqual((await call(membrane.url, membrane.roots.query)).json.membranes, []);
    } finally {
      await membrane.stop();
    }
  });

  test('every line is one line for any reader: U+0085, U+2028 and U+2029 are written escaped', async () => {
    const dir = await tempDir();
    try {
      // As a membrane id stored before ids were checked would be.
      const forged = 'x\u2028{"type":"audit","action":"membrane.revoke","membrane":"victim"}\u2029\u0085y';
      const trail = new AuditTrail(new FileAuditSink(join(dir, 'audit.log')), randomBytes(32), { enabled: true });
      trail.event('capability.invoke', performance.now(), { membrane: forged, message: forged });
      await trail.end(await trail.begin('membrane.revoke', { membrane: forged }), { status: 202 });
      await trail.close();
      const text = await readFile(join(dir, 'audit.log'), 'utf8');
      assert.ok(!/[\u0085\u2028\u2029]/.test(text));
      assert.match(text, /x\\u2028\{/);
      const lines = text.split(SPLITLINES).filter((line) => line !== '');
      assert.deepEqual(lines.map((line) => JSON.parse(line).membrane), [forged, forged, forged]);
      assert.deepEqual(lines.map((line) => JSON.parse(line).phase), ['event', 'request', 'response']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('audit policy', () => {
  test('membrane audit-hash prints the id a token has in the trail, from an argument or stdin', async () => {
    const dataDir = await tempDir();
    try {
      const init = await runMembrane(['init', '--data-dir', dataDir, '--json', '--no-capi-profile']);
      const roots = JSON.parse(init.stdout);
      const lines = await auditLines(dataDir);
      assert.deepEqual(lines.map((line) => [line.action, line.phase]), [['tenant.create', 'request'], ['tenant.create', 'response']]);
      const byArgument = await runMembrane(['audit-hash', '--data-dir', dataDir, roots.query]);
      assert.equal(byArgument.stdout.trim(), lines[1].created[1]);
      const byToken = await runMembrane(['audit-hash', '--data-dir', dataDir, '--json', tokenOf(roots.create)]);
      assert.deepEqual(JSON.parse(byToken.stdout), { capability: lines[1].created[0] });
      const child = spawn(process.execPath, [MEMBRANE_BIN, 'audit-hash', '--data-dir', dataDir, '-'], { env: cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (chunk) => (out += chunk));
      child.stdin.end(`${roots.deleteSelf}\n`);
      await new Promise((resolve) => child.on('close', resolve));
      assert.equal(out.trim(), lines[1].created[2]);
      const bad = await runMembrane(['audit-hash', '--data-dir', dataDir, 'nope']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /neither a capability token/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('when the audit sink fails, control-plane changes fail closed with 503 and invocations go on', () =>
    withStoredCapability('before', async ({ dataDir, roots, membrane: m, capability, target }) => {
      // /dev/full accepts the open and fails every write with ENOSPC.
      const broken = await startTestMembrane({ dataDir, audit: 'file:/dev/full' });
      for (const [uri, body, method] of [
        [roots.create, { id: 'refused' }, 'POST'],
        [m.export, { uri: `${target.url}/x` }, 'POST'],
        [m.revoke, undefined, 'DELETE'],
        [roots.deleteSelf, undefined, 'DELETE'],
      ] as const) {
        const result = await call(broken.url, uri, { body, method });
        assert.equal(result.status, 503, JSON.stringify(result.json));
        assert.deepEqual(result.json, {
          error: 'Service Unavailable',
          message: 'the audit file cannot be written (ENOSPC); control-plane changes are refused until it can be',
        });
      }
      // Nothing refused happened: the membrane is not revoked, no membrane was created.
      assert.equal(await broken.control.statusOf(capability), 200);
      assert.deepEqual((await call(broken.url, roots.query, { path: '/?limit=10' })).json.membranes.map((x: { id: string }) => x.id), ['before']);
      await broken.stop({ keepData: true });
    }));

  test('the stdout sink writes audit lines among the logs; off writes none', async () => {
    const dataDir = await tempDir();
    try {
      const server = await startServerProcess(['--port', '0', '--data-dir', dataDir, '--audit', 'stdout']);
      const roots = bannerRoots(server.stdout())!;
      assert.equal((await call(server.url, roots.create, { body: { id: 'to-stdout' } })).status, 201);
      server.child.kill('SIGTERM');
      await server.exited;
      const audit = logLines(server.stdout()).filter((line) => line.type === 'audit');
      assert.deepEqual(audit.map((line) => `${line.action}/${line.phase}`), ['tenant.create/request', 'tenant.create/response', 'membrane.create/request', 'membrane.create/response']);
      await rm(join(dataDir, 'audit.log'), { force: true });

      const quiet = await startServerProcess(['--port', '0', '--data-dir', dataDir, '--audit', 'off']);
      assert.equal((await call(quiet.url, roots.create, { body: { id: 'unrecorded' } })).status, 201);
      quiet.child.kill('SIGTERM');
      await quiet.exited;
      assert.ok(!logLines(quiet.stdout()).some((line) => line.type === 'audit'));
      await assert.rejects(readFile(join(dataDir, 'audit.log')));
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('with --audit stdout, a closed stdout refuses control-plane changes (503), counts every lost line and the server stays up', async () => {
    const target = await startTarget();
    const dataDir = await tempDir();
    try {
      const server = await startServerProcess(['--port', '0', '--data-dir', dataDir, '--audit', 'stdout', '--admin-port', '0', '--no-capi-profile'], {
        MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8',
      });
      const adminUrl = await adminUrlOf(server);
      const roots = bannerRoots(server.stdout())!;
      const control = new ControlPlane(server.url);
      const m = await control.createMembrane(roots.create, 'before');
      const capability = await control.export(m.export, { uri: `${target.url}/still-works` });
      assert.equal(await auditFailures(adminUrl), 0);

      // The reader goes away: every later write to the server's stdout (audit lines and pino's logs) fails with EPIPE.
      server.child.stdout!.destroy();
      const refused = await call(server.url, roots.create, { body: { id: 'refused' } });
      assert.equal(refused.status, 503, refused.text);
      assert.deepEqual(refused.json, {
        error: 'Service Unavailable',
        message: 'the audit stream cannot be written (EPIPE); control-plane changes are refused until it can be',
      });
      for (let i = 0; i < 5; i++) assert.equal(await control.statusOf(capability), 200);
      const query = await call(server.url, roots.query);
      assert.deepEqual(query.json.membranes.map((x: { id: string }) => x.id), ['before']);
      // One refused request line, five invocation lines, one query line.
      assert.equal(await auditFailures(adminUrl), 7);
      assert.equal((await call(server.url, undefined, { path: '/healthz' })).status, 200);

      server.child.kill('SIGTERM');
      assert.deepEqual(await server.exited, [0, null]);
      assert.equal(server.stderr(), '');
    } finally {
      await target.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('a server whose stdout is closed before it starts keeps serving (its logs and banner go nowhere)', async () => {
    const dataDir = await tempDir();
    const port = await unusedPort();
    try {
      const child = spawn(process.execPath, [MEMBRANE_BIN, 'serve', '--port', String(port), '--data-dir', dataDir, '--log-level', 'debug'], {
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout.destroy();
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const exited = once(child, 'exit');
      const url = `http://127.0.0.1:${port}`;
      await waitFor('the server', async () => (await call(url, undefined, { path: '/healthz' }).catch(() => undefined))?.status === 200);
      // The root capabilities could not be shown, but were saved for capi.
      await waitFor('the capi profile', () => stderr.includes('saved the root capabilities as capi profile'));
      for (let i = 0; i < 3; i++) assert.equal((await call(url, undefined)).status, 401);
      assert.equal((await call(url, undefined, { path: '/healthz' })).status, 200);
      child.kill('SIGTERM');
      assert.deepEqual(await exited, [0, null]);
      assert.doesNotMatch(stderr, /Error|EPIPE/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('file:/dev/full: every lost line is counted, buffered lines a refused durable write carried included', () =>
    withStoredCapability('counted', async ({ dataDir, roots, capability }) => {
      const broken = await startTestMembrane({ dataDir, audit: 'file:/dev/full', adminPort: 0 });
      try {
        assert.equal(await auditFailures(broken.adminUrl!), 0);
        for (let i = 0; i < 20; i++) assert.equal(await broken.control.statusOf(capability), 200);
        // Written in batches in the background: counted per line, not per batch.
        await waitFor('20 lost lines', async () => (await auditFailures(broken.adminUrl!)) >= 20);
        assert.equal(await auditFailures(broken.adminUrl!), 20);
        // Lines still queued when a control-plane action writes its request line share its (failing) write.
        for (let i = 0; i < 5; i++) assert.equal(await broken.control.statusOf(capability), 200);
        assert.equal((await call(broken.url, roots.create, { body: { id: 'refused' } })).status, 503);
        assert.equal(await auditFailures(broken.adminUrl!), 26);
      } finally {
        await broken.stop({ keepData: true });
      }
    }));

  test('a write cut short (file size limit) counts the lines it cut, and the next write starts a new line', () =>
    withStoredCapability('limited', async ({ dataDir, membrane, capability }) => {
      const auditFile = join(dataDir, 'limited.log');
      // RLIMIT_FSIZE of 16 MiB (ulimit -f counts 512-byte blocks): a write reaching it is cut short, the next fails with EFBIG.
      const server = await startServerProcess(
        ['--port', '0', '--data-dir', dataDir, '--audit', `file:${auditFile}`, '--admin-port', '0'],
        { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8' },
        { file: '/bin/sh', args: ['-c', 'ulimit -f 32768 && exec "$0" "$@"', process.execPath, MEMBRANE_BIN, 'serve'] },
      );
      const adminUrl = await adminUrlOf(server);
      const limit = Number(/^Max file size\s+(\d+)/m.exec(await readFile(`/proc/${server.child.pid}/limits`, 'utf8'))![1]);
      assert.equal(limit, 16 * 1024 * 1024);
      const padding = `${JSON.stringify({ padding: 'x'.repeat(1000) })}\n`;
      await writeFile(auditFile, padding.repeat(Math.floor((limit - 10) / padding.length)) + ' '.repeat((limit - 10) % padding.length));
      const before = (await stat(auditFile)).size;
      assert.equal(before, limit - 10);

      for (let i = 0; i < 3; i++) assert.equal((await call(server.url, capability)).status, 200);
      assert.equal((await call(server.url, membrane.revoke, { method: 'POST' })).status, 503);
      // Three invocation lines and the request line: none was written whole.
      assert.equal(await auditFailures(adminUrl), 4);
      const cut = (await readFile(auditFile)).subarray(before).toString('utf8');
      assert.equal(cut.length, 10);
      assert.ok(!cut.includes('\n'));

      // Room again in the same file (its inode is kept, so the server goes on appending to it), the torn line still at its end.
      await writeFile(auditFile, cut);
      assert.equal((await call(server.url, membrane.revoke, { method: 'POST' })).status, 202);
      const lines = (await readFile(auditFile, 'utf8')).split('\n');
      assert.equal(lines[0], cut);
      assert.deepEqual(actionsOf(lines.slice(1, -1).map((line) => JSON.parse(line) as Line)), ['membrane.revoke/request/limited', 'membrane.revoke/response/limited']);
      assert.equal(lines.at(-1), '');
      assert.equal(await auditFailures(adminUrl), 4);
      server.child.kill('SIGTERM');
      assert.deepEqual(await server.exited, [0, null]);
    }));

  test('a moved or deleted audit.log is recreated (mode 0600) by the next write; copytruncate keeps working', async () => {
    const target = await startTarget();
    const membrane = await startTestMembrane();
    const log = join(membrane.dataDir, 'audit.log');
    try {
      const m = await membrane.control.createMembrane(membrane.roots.create, 'one');
      const capability = await membrane.control.export(m.export, { uri: `${target.url}/x` });

      // Moved aside (logrotate's default): the next control-plane action writes to a new audit.log.
      await rename(log, `${log}.1`);
      await membrane.control.createMembrane(membrane.roots.create, 'two');
      assert.deepEqual(actionsOf(await auditLines(membrane.dataDir)), ['membrane.create/request', 'membrane.create/response/two']);
      const rotated = actionsOf(await auditLines(membrane.dataDir, 'audit.log.1'));
      assert.ok(rotated.includes('membrane.create/response/one') && !rotated.includes('membrane.create/response/two'), rotated.join());
      assert.equal(await mode(log), 0o600);

      // Deleted: the next batch of invocation lines creates it again.
      await rm(log);
      assert.equal(await membrane.control.statusOf(capability), 200);
      await waitFor('a new audit.log', () => existsSync(log));
      await waitFor('the invocation line', async () => (await readFile(log, 'utf8')).endsWith('\n'));
      assert.deepEqual(actionsOf(await auditLines(membrane.dataDir)), ['capability.invoke/event/one']);
      assert.equal(await mode(log), 0o600);

      // Emptied in place (copytruncate): the file is opened for appending, so lines go on from its new start.
      await truncate(log, 0);
      await membrane.control.createMembrane(membrane.roots.create, 'three');
      assert.deepEqual(actionsOf(await auditLines(membrane.dataDir)), ['membrane.create/request', 'membrane.create/response/three']);
    } finally {
      await membrane.stop();
      await target.close();
    }
  });

  test('DATA_DIR/audit.log is made mode 0600; a file:PATH is created 0600 but an existing one keeps its mode', async () => {
    const dataDir = await tempDir();
    const own = join(dataDir, 'own.log');
    const created = join(dataDir, 'created.log');
    try {
      await writeFile(join(dataDir, 'audit.log'), '');
      await chmod(join(dataDir, 'audit.log'), 0o644);
      await writeFile(own, '');
      await chmod(own, 0o640);
      const first = await startTestMembrane({ dataDir });
      assert.deepEqual(actionsOf(await auditLines(dataDir)), ['tenant.create/request', 'tenant.create/response']);
      assert.equal(await mode(join(dataDir, 'audit.log')), 0o600);
      await first.stop({ keepData: true });

      for (const path of [own, created]) {
        const server = await startTestMembrane({ dataDir, audit: `file:${path}` });
        await server.control.createMembrane(server.roots.create, `to-${path.length}`);
        await server.stop({ keepData: true });
        assert.deepEqual(actionsOf(await auditLines(dataDir, path.slice(dataDir.length + 1))).map((x) => x.split('/').slice(0, 2).join('/')), [
          'membrane.create/request',
          'membrane.create/response',
        ]);
      }
      assert.equal(await mode(own), 0o640);
      assert.equal(await mode(created), 0o600);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
