/** The audit trail: what each action records, what it never records, and its failure policy. */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { bannerRoots, cleanEnv, logLines, MEMBRANE_BIN, runMembrane, startServerProcess } from './helpers/child.js';
import { call, tokenOf } from './helpers/client.js';
import { startTestMembrane, tempDir, type TestMembrane } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';

type Line = Record<string, any>;

async function auditLines(dataDir: string): Promise<Line[]> {
  const text = await readFile(join(dataDir, 'audit.log'), 'utf8');
  return text.trim().split('\n').map((line) => JSON.parse(line) as Line);
}

/** Waits for buffered (invocation) lines to reach the file. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 50));

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

    // capability.invoke: owner, chain, target host and method, status, bytes.
    const invocation = lines.find((line) => line.action === 'capability.invoke' && line.status === 200)!;
    assert.equal(invocation.phase, 'event');
    assert.equal(invocation.capability, idOf(delegated));
    assert.equal(invocation.membrane, 'bob');
    assert.deepEqual(invocation.chain, [idOf(original)]);
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

  test('when the audit sink fails, control-plane changes fail closed with 503 and invocations go on', async () => {
    const target = await startTarget();
    const dataDir = await tempDir();
    try {
      const setup = await startTestMembrane({ dataDir });
      const m = await setup.control.createMembrane(setup.roots.create, 'before');
      const capability = await setup.control.export(m.export, { uri: `${target.url}/still-works` });
      await setup.stop({ keepData: true });

      // /dev/full accepts the open and fails every write with ENOSPC.
      const broken = await startTestMembrane({ dataDir, audit: 'file:/dev/full' });
      for (const [uri, body, method] of [
        [setup.roots.create, { id: 'refused' }, 'POST'],
        [m.export, { uri: `${target.url}/x` }, 'POST'],
        [m.revoke, undefined, 'DELETE'],
        [setup.roots.deleteSelf, undefined, 'DELETE'],
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
      assert.deepEqual((await call(broken.url, setup.roots.query, { path: '/?limit=10' })).json.membranes.map((x: { id: string }) => x.id), ['before']);
      await broken.stop({ keepData: true });
    } finally {
      await target.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

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
});
