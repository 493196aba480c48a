/** Prometheus metrics on the admin listener, and the readiness probe. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { call } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { startTarget, unusedPort, type TestTarget } from './helpers/target.js';

let membrane: TestMembrane;
let target: TestTarget;
before(async () => {
  membrane = await startTestMembrane({ adminPort: 0 });
  target = await startTarget();
});
after(async () => {
  await membrane.stop();
  await target.close();
});

async function metrics(): Promise<string> {
  const response = await request(`${membrane.adminUrl}/metrics`);
  assert.equal(response.statusCode, 200);
  assert.match(String(response.headers['content-type']), /^text\/plain/);
  return response.body.text();
}

/** The value of one sample line, e.g. `membrane_revocations_total{of="membrane"}`. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

test('invocations, target errors, revocations, control-plane actions and store timings are counted', async () => {
  const m = await membrane.control.createMembrane(membrane.roots.create, 'metered');
  const good = await membrane.control.export(m.export, { uri: `${target.url}/ok` });
  const signed = await membrane.control.export(m.export, { uri: `${target.url}/signed`, hmac: { 'cap1-hmac-sha512': { key: 'a2V5', keyId: 'k' } } });
  const refused = await membrane.control.export(m.export, { uri: `http://127.0.0.1:${await unusedPort()}/` });
  for (let i = 0; i < 3; i++) assert.equal(await membrane.control.statusOf(good), 200);
  assert.equal(await membrane.control.statusOf(signed), 200);
  assert.equal(await membrane.control.statusOf(refused), 502);
  // Refused before its action (the wrong method), and refused by the action (the target policy).
  assert.equal((await call(membrane.url, m.export, { method: 'GET' })).status, 405);
  assert.equal((await call(membrane.url, m.export, { body: { uri: 'http://169.254.169.254/' } })).status, 400);
  assert.equal((await call(membrane.url, membrane.roots.query)).status, 200);
  await membrane.control.revoke(m.revoke);
  const text = await metrics();
  assert.equal(sample(text, 'membrane_invocations_total{status_class="2xx",scheme="none"}'), 3);
  assert.equal(sample(text, 'membrane_invocations_total{status_class="2xx",scheme="cap1-hmac-sha512"}'), 1);
  assert.equal(sample(text, 'membrane_invocations_total{status_class="5xx",scheme="none"}'), 1);
  assert.equal(sample(text, 'membrane_target_errors_total{reason="refused"}'), 1);
  assert.equal(sample(text, 'membrane_revocations_total{of="membrane"}'), 1);
  assert.equal(sample(text, 'membrane_control_plane_requests_total{action="membrane.export",status_class="2xx"}'), 3);
  assert.equal(sample(text, 'membrane_control_plane_requests_total{action="membrane.export",status_class="4xx"}'), 2);
  assert.equal(sample(text, 'membrane_control_plane_requests_total{action="membrane.query",status_class="2xx"}'), 1);
  assert.equal(sample(text, 'membrane_invocation_duration_seconds_count{scheme="none"}'), 4);
  assert.ok(sample(text, 'membrane_store_operation_duration_seconds_count{operation="findCapability"}') >= 5);
  assert.equal(sample(text, 'membrane_invocations_in_flight'), 0);
  assert.ok(/^membrane_process_resident_memory_bytes \d+/m.test(text), 'process metrics are exported');
});

test('the admin listener serves only /metrics, and the main listener never serves metrics', async () => {
  const other = await request(`${membrane.adminUrl}/`);
  assert.equal(other.statusCode, 404);
  assert.equal(((await other.body.json()) as { error: string }).error, 'Not Found');
  assert.equal((await call(membrane.url, undefined, { path: '/metrics' })).status, 401);
});

test('there is no admin listener unless asked for', async () => {
  const plain = await startTestMembrane();
  try {
    assert.equal(plain.adminUrl, undefined);
  } finally {
    await plain.stop();
  }
});

test('GET /readyz without credentials answers 200 while the store answers', async () => {
  const result = await call(membrane.url, undefined, { path: '/readyz' });
  assert.equal(result.status, 200);
  assert.deepEqual(result.json, { status: 'ready' });
  // With credentials the path means nothing, as always.
  assert.equal((await call(membrane.url, membrane.roots.query, { path: '/readyz' })).status, 200);
  assert.ok(Array.isArray((await call(membrane.url, membrane.roots.query, { path: '/readyz' })).json.membranes));
});
