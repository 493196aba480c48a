/**
 * `npm run bench:scale`: Membrane with many capabilities.
 *
 * 1. Lookup: invocation throughput and latency of random capabilities with
 *    1 k, 100 k and 1 M capabilities in the store, with the resolution
 *    cache (default size) and without it (every invocation a store lookup).
 * 2. Revocation of a membrane whose tree holds 100 k descendant
 *    capabilities (1 k exports, each re-exported through 100 membranes):
 *    time to the 202, time until all 100 k are checked to answer 401, and
 *    the latency of unrelated invocations meanwhile.
 * 3. Export throughput over HTTP, and the server's RSS at 1 M capabilities.
 *
 * Capabilities are bulk-loaded through the store (SqliteStore's batch
 * insert), sealed as exports are. Prints a table and writes
 * bench/results/scale-*.json. Options: --duration S (5), --max N (1000000).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { openStore } from '../src/app.js';
import { MasterKey } from '../src/secrets.js';
import { MembraneService, SEALED } from '../src/service/membrane-service.js';
import type { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { generateToken, hashToken } from '../src/token.js';
import { haveWrk, load, type LoadResult } from './load.js';
import { bearer, control, REPO, rss, startMembrane, startTarget, temporaryDirectory, type StartedMembrane } from './subjects.js';

const { values } = parseArgs({ options: { duration: { type: 'string', default: '5' }, max: { type: 'string', default: '1000000' } } });
const DURATION = Number(values.duration);
const MAX = Number(values.max);
const TOOL = haveWrk() ? 'wrk' : 'autocannon';
const SAMPLE = 10_000;

const key = MasterKey.generate();
const env = { MEMBRANE_MASTER_KEY: key.toBase64() };

/** Opens the store in-process for bulk loading (no server running on it). */
async function openForLoading(dataDir: string): Promise<{ store: SqliteStore; service: MembraneService; close: () => Promise<void> }> {
  const { store, key: ring } = await openStore(dataDir, env.MEMBRANE_MASTER_KEY, { create: true });
  const service = new MembraneService(store, ring, { authority: 'localhost:1', cacheSize: 1, auditId: () => '' });
  return { store: store as SqliteStore, service, close: () => store.close() };
}

async function membraneIdOf(service: MembraneService, exportCapability: string): Promise<number> {
  const capability = await service.authenticate(exportCapability.slice(exportCapability.indexOf('#') + 1));
  if (capability.kind !== 'export') throw new Error('not an export capability');
  return capability.membraneId;
}

/** Inserts `count` uri exports through a membrane, keeping a random sample of their tokens. */
function bulkExport(store: SqliteStore, membraneId: number, uri: string, count: number, sample: string[], sampleEvery: number): number[] {
  const ids: number[] = [];
  const sealedConfig = (): Buffer => key.seal(JSON.stringify({ uri, headers: { 'X-Injected': 'scale' } }), SEALED.config);
  for (let done = 0; done < count; ) {
    const batch = [];
    const tokens: string[] = [];
    for (let i = 0; i < Math.min(10_000, count - done); i++) {
      const token = generateToken();
      tokens.push(token);
      batch.push({ hash: hashToken(token), membraneId, sealedConfig: sealedConfig(), parentId: null });
    }
    ids.push(...(store.insertExportedCapabilities(batch) as number[]));
    tokens.forEach((token, i) => {
      if ((done + i) % sampleEvery === 0) sample.push(token);
    });
    done += batch.length;
  }
  return ids;
}

const ms = (value: number): string => value.toFixed(2).padStart(8);

async function main(): Promise<void> {
  const target = await startTarget();
  const dataDir = temporaryDirectory('membrane-scale-');
  const results: Record<string, unknown> = {};

  // 1. Lookup at growing store sizes.
  const loader = await openForLoading(dataDir);
  const tenant = (await loader.service.createTenantWithId())!;
  const bulk = await loader.service.createMembrane(tenant.tenantId, { id: 'bulk' });
  const bulkId = await membraneIdOf(loader.service, bulk.capabilities.export);
  await loader.close();
  const sizes = [1_000, 100_000, 1_000_000].filter((size) => size <= MAX);
  const lookup: { size: number; cached: LoadResult; uncached: LoadResult; loadSeconds: number }[] = [];
  let loaded = 0;
  const sample: string[] = [];
  for (const size of sizes) {
    const started = performance.now();
    const l = await openForLoading(dataDir);
    const fresh: string[] = [];
    bulkExport(l.store, bulkId, `${target.url}/`, size - loaded, fresh, Math.max(1, Math.floor((size - loaded) / SAMPLE)));
    await l.close();
    // A sample spread over every capability loaded so far.
    sample.push(...fresh);
    const pool = sample.filter((_, i) => i % Math.ceil(sample.length / SAMPLE) === 0).map((token) => `Bearer ${token}`);
    loaded = size;
    const loadSeconds = (performance.now() - started) / 1000;
    const run = async (args: string[]): Promise<LoadResult> => {
      const server = await startMembrane({ dataDir, env, args: ['--audit', 'off', ...args] });
      try {
        await load({ url: server.url, method: 'GET', headers: {}, authorizations: pool, connections: 50, durationSeconds: 1 }, TOOL);
        return await load({ url: server.url, method: 'GET', headers: {}, authorizations: pool, connections: 50, durationSeconds: DURATION }, TOOL);
      } finally {
        server.child.kill('SIGKILL');
      }
    };
    const cached = await run([]);
    const uncached = await run(['--cache-size', '1']);
    lookup.push({ size, cached, uncached, loadSeconds });
    console.log(`${String(size).padStart(8)} capabilities (loaded in ${loadSeconds.toFixed(1)} s): cached ${Math.round(cached.requestsPerSecond)} req/s p99 ${cached.p99.toFixed(2)} ms; uncached ${Math.round(uncached.requestsPerSecond)} req/s p99 ${uncached.p99.toFixed(2)} ms${cached.failures + uncached.failures > 0 ? ` (${cached.failures + uncached.failures} failures)` : ''}`);
  }
  results.lookup = lookup;

  // 3a. RSS at the largest store, after serving random capabilities (cache full).
  const big = await startMembrane({ dataDir, env, args: ['--audit', 'off'] });
  const pool = sample.slice(0, SAMPLE).map((token) => `Bearer ${token}`);
  await load({ url: big.url, method: 'GET', headers: {}, authorizations: pool, connections: 50, durationSeconds: DURATION }, TOOL);
  const rssAtMax = rss(big.child.pid!);
  big.child.kill('SIGKILL');
  results.rss = { capabilities: loaded, bytes: rssAtMax };
  console.log(`RSS at ${loaded} capabilities: ${(rssAtMax / 1024 / 1024).toFixed(0)} MiB`);

  // 2. Revocation of a tree of 100 k descendants.
  const revocationDir = temporaryDirectory('membrane-scale-revoke-');
  const l = await openForLoading(revocationDir);
  const t = (await l.service.createTenantWithId())!;
  const root = await l.service.createMembrane(t.tenantId, { id: 'root' });
  const rootId = await membraneIdOf(l.service, root.capabilities.export);
  const roots = bulkExport(l.store, rootId, `${target.url}/`, 1_000, [], 1_000_000);
  const descendants: string[] = [];
  for (let d = 0; d < 100; d++) {
    const delegate = await l.service.createMembrane(t.tenantId, { id: `delegate-${d}` });
    const delegateId = await membraneIdOf(l.service, delegate.capabilities.export);
    const batch = roots.map((parentId) => {
      const token = generateToken();
      descendants.push(token);
      return { hash: hashToken(token), membraneId: delegateId, sealedConfig: null, parentId };
    });
    l.store.insertExportedCapabilities(batch);
  }
  const bystander = await l.service.createMembrane(t.tenantId, { id: 'bystander' });
  await l.close();
  const server: StartedMembrane = await startMembrane({ dataDir: revocationDir, env, args: ['--audit', 'off', '--cache-size', '200000'] });
  const unrelated = (await control(server.url, bystander.capabilities.export, { uri: `${target.url}/unrelated` })).capability as string;
  const agent = new Agent({ connections: 64 });
  const statuses = async (tokens: readonly string[]): Promise<Map<number, number>> => {
    const counts = new Map<number, number>();
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < tokens.length) {
          const response = await request(server.url, { dispatcher: agent, headers: { authorization: `Bearer ${tokens[next++]}` } });
          await response.body.dump();
          counts.set(response.statusCode, (counts.get(response.statusCode) ?? 0) + 1);
        }
      }),
    );
    return counts;
  };
  const warmStarted = performance.now();
  const warm = await statuses(descendants);
  const warmSeconds = (performance.now() - warmStarted) / 1000;
  const baseline = await load({ url: server.url, method: 'GET', headers: { authorization: bearer(unrelated) }, connections: 10, durationSeconds: 2, rate: 500 }, TOOL);
  const during = load({ url: server.url, method: 'GET', headers: { authorization: bearer(unrelated) }, connections: 10, durationSeconds: 2, rate: 500 }, TOOL);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const revokeStarted = performance.now();
  const revoked = await request(server.url, { method: 'DELETE', headers: { authorization: bearer(root.capabilities.revoke) } });
  await revoked.body.dump();
  const to202 = performance.now() - revokeStarted;
  const after = await statuses(descendants);
  const toAll401 = performance.now() - revokeStarted;
  const duringResult = await during;
  await agent.close();
  server.child.kill('SIGKILL');
  results.revocation = {
    descendants: descendants.length,
    warmedBeforeRevoking: Object.fromEntries(warm),
    warmSeconds,
    statusOfRevoke: revoked.statusCode,
    millisecondsTo202: to202,
    millisecondsUntilAllChecked401: toAll401,
    statusesAfter: Object.fromEntries(after),
    unrelated: { baseline, duringRevocation: duringResult },
  };
  console.log(
    `revoking a membrane with ${descendants.length} descendants (all cached): 202 after ${to202.toFixed(1)} ms; all ${descendants.length} checked (${JSON.stringify(Object.fromEntries(after))}) ${toAll401.toFixed(0)} ms after the request; unrelated invocations p99 ${baseline.p99.toFixed(2)} ms before, ${duringResult.p99.toFixed(2)} ms during`,
  );

  // 3b. Export throughput over HTTP.
  const exporter = await startMembrane({ env });
  const m = await control(exporter.url, exporter.create, { id: 'exporter' });
  const exportLoad = await load(
    { url: exporter.url, method: 'POST', headers: { authorization: bearer(m.capabilities.export) }, body: JSON.stringify({ uri: `${target.url}/x` }), connections: 32, durationSeconds: DURATION },
    TOOL,
  );
  exporter.child.kill('SIGKILL');
  results.exports = exportLoad;
  console.log(`exports over HTTP (durable, audit on): ${Math.round(exportLoad.requestsPerSecond)} capabilities/s, p99 ${exportLoad.p99.toFixed(2)} ms`);

  console.log('\nlookup (req/s, p50/p99 ms)');
  console.log(`${'capabilities'.padStart(12)} ${'cached'.padStart(8)} ${'p50'.padStart(8)} ${'p99'.padStart(8)} ${'uncached'.padStart(9)} ${'p50'.padStart(8)} ${'p99'.padStart(8)}`);
  for (const row of lookup) {
    console.log(`${String(row.size).padStart(12)} ${String(Math.round(row.cached.requestsPerSecond)).padStart(8)} ${ms(row.cached.p50)} ${ms(row.cached.p99)} ${String(Math.round(row.uncached.requestsPerSecond)).padStart(9)} ${ms(row.uncached.p50)} ${ms(row.uncached.p99)}`);
  }
  const first = lookup[0]!;
  const last = lookup.at(-1)!;
  console.log(`change from ${first.size} to ${last.size}: cached ${((last.cached.requestsPerSecond / first.cached.requestsPerSecond - 1) * 100).toFixed(1)} %, uncached ${((last.uncached.requestsPerSecond / first.uncached.requestsPerSecond - 1) * 100).toFixed(1)} % (target: within 10 %)`);

  const out = join(REPO, 'bench', 'results');
  mkdirSync(out, { recursive: true });
  const file = join(out, `scale-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version }, tool: TOOL, ...results }, null, 2));
  console.log(`\nwritten to ${file}`);
  process.exit(0);
}

await main();
