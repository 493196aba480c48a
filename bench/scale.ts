/**
 * `npm run bench:scale`: Membrane with many capabilities.
 *
 * 1. Lookup: invocations of random capabilities with 1 k, 100 k and 1 M
 *    capabilities in the store, at a fixed rate: latency, and the server's
 *    CPU time per invocation (which, unlike throughput, a load generator
 *    cannot hide). One store per size, each served twice: with the
 *    resolution cache (the sample fits in it) and without (`--cache-size
 *    1`: every invocation a store lookup). All six servers run at once and
 *    are measured in interleaved rounds; medians are reported.
 * 2. RSS at the largest store, once the resolution cache is full and
 *    churning (twice as many distinct capabilities invoked as it holds).
 * 3. Revocation of a membrane whose tree holds 100 k descendant
 *    capabilities (1 k exports, each re-exported through 100 membranes),
 *    all of them cached: time to the 202; probes of random descendants
 *    running throughout (none sent after the 202 may succeed); every one
 *    checked to answer 401 afterwards; and the latency of unrelated
 *    invocations at a fixed rate, before and during.
 * 4. Export throughput over HTTP (each export durable: SQLite commit and
 *    audit line fsynced).
 *
 * Capabilities are bulk-loaded through the store (SqliteStore's batch
 * insert), each with its own config sealed as an export seals it. The
 * servers run with the audit trail off except for the export run, so that
 * the store is what is measured. Prints a table and writes
 * bench/results/scale-*.json.
 * Options: --duration S (5), --max N (1000000), --rate R (2000), --rounds N (3).
 */
import { Agent, request } from 'undici';
import { openStore } from '../src/app.js';
import { SERVE_OPTIONS } from '../src/config.js';
import { MasterKey } from '../src/secrets.js';
import { MembraneService, SEALED } from '../src/service/membrane-service.js';
import type { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { generateToken, hashToken } from '../src/token.js';
import { haveWrk, load, median, medianResult, type LoadResult } from './load.js';
import { commandLine, positiveOption } from './options.js';
import { writeResults } from './results.js';
import { bearer, control, cpuMicros, rss, startMembrane, startTarget, temporaryDirectory } from './subjects.js';

const { values } = commandLine({
  options: {
    duration: { type: 'string', default: '5' },
    max: { type: 'string', default: '1000000' },
    rate: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
  },
});
const DURATION = positiveOption('duration', values.duration);
const ROUNDS = positiveOption('rounds', values.rounds);
const MAX = positiveOption('max', values.max);
const RATE = positiveOption('rate', values.rate);
const TOOL = haveWrk() ? 'wrk' : 'autocannon';
const CACHE_SIZE = SERVE_OPTIONS.cacheSize.default as number;
/** Capabilities invoked in the lookup runs (they fit in the cache), spread over the whole store. */
const SAMPLE = Math.min(10_000, CACHE_SIZE);

const key = MasterKey.generate();
const env = { MEMBRANE_MASTER_KEY: key.toBase64() };

/** Opens the store in-process for bulk loading (no server running on it). */
async function openForLoading(dataDir: string): Promise<{ store: SqliteStore; service: MembraneService; close: () => Promise<void> }> {
  const { store, key: ring } = await openStore(dataDir, env.MEMBRANE_MASTER_KEY, { create: true });
  const service = new MembraneService(store, ring, { authority: 'localhost:1', cacheSize: 1, auditId: () => '' });
  return { store: store as SqliteStore, service, close: () => store.close() };
}

/** A new membrane's id and its capabilities. */
async function newMembrane(service: MembraneService, tenantId: number, id: string): Promise<{ membraneId: number; export: string; revoke: string }> {
  const view = await service.createMembrane(tenantId, { id });
  const capability = await service.authenticate(view.capabilities.export.slice(view.capabilities.export.indexOf('#') + 1));
  if (capability.kind !== 'export') throw new Error('not an export capability');
  return { membraneId: capability.membraneId, ...view.capabilities };
}

/** Inserts `count` uri exports (config `uri(i)`) through a membrane; returns their ids and tokens. */
function bulkExport(store: SqliteStore, membraneId: number, uri: (i: number) => string, from: number, count: number): { ids: number[]; tokens: string[] } {
  const ids: number[] = [];
  const tokens: string[] = [];
  for (let done = 0; done < count; ) {
    const batch = [];
    for (let i = 0; i < Math.min(10_000, count - done); i++) {
      const token = generateToken();
      tokens.push(token);
      const config = JSON.stringify({ uri: uri(from + done + i), headers: { 'X-Injected': 'scale' } });
      batch.push({ hash: hashToken(token), membraneId, sealedConfig: key.seal(config, SEALED.config), parentId: null });
    }
    ids.push(...(store.insertExportedCapabilities(batch) as number[]));
    done += batch.length;
  }
  return { ids, tokens };
}

/** Invokes each capability once (to fill the cache), `concurrency` at a time; counts the statuses. */
async function invokeEach(url: string, tokens: readonly string[], concurrency = 64): Promise<Record<number, number>> {
  const agent = new Agent({ connections: concurrency });
  const counts: Record<number, number> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < tokens.length) {
        const response = await request(url, { dispatcher: agent, headers: { authorization: `Bearer ${tokens[next++]}` } });
        await response.body.dump();
        counts[response.statusCode] = (counts[response.statusCode] ?? 0) + 1;
      }
    }),
  );
  await agent.close();
  return counts;
}

/** A fixed-rate run over a pool of capabilities, with the server's CPU time per invocation. */
async function measured(url: string, pid: number, pool: readonly string[]): Promise<LoadResult & { cpuMicrosPerRequest: number }> {
  const before = cpuMicros(pid);
  const result = await load({ url, method: 'GET', headers: {}, authorizations: pool.map((token) => `Bearer ${token}`), connections: 50, durationSeconds: DURATION, rate: RATE }, TOOL);
  return { ...result, cpuMicrosPerRequest: (cpuMicros(pid) - before) / result.requests };
}

const ms = (value: number): string => value.toFixed(2).padStart(8);
const mib = (bytes: number): string => (bytes / 1048576).toFixed(0);
const pick = <T>(items: readonly T[], count: number): T[] => items.filter((_, i) => i % Math.max(1, Math.floor(items.length / count)) === 0).slice(0, count);

async function main(): Promise<void> {
  const target = await startTarget();
  const results: Record<string, unknown> = {};
  console.log(`fixed rate ${RATE} req/s for ${DURATION} s per run; resolution cache ${CACHE_SIZE} entries (the default)`);

  // 1. Lookup at growing store sizes: one store per size, a server with the
  // cache and one without on each, all running; measured in interleaved
  // rounds (so that drift in the machine hits all alike), medians reported.
  const sizes = [1_000, 100_000, 1_000_000].filter((size) => size <= MAX);
  type Server = Awaited<ReturnType<typeof startMembrane>>;
  type Run = Awaited<ReturnType<typeof measured>>;
  const stores: { size: number; dataDir: string; tokens: string[]; loadSeconds: number; sample: string[]; servers: { cached: Server; uncached: Server }; rssAtStartBytes: number }[] = [];
  for (const size of sizes) {
    const dir = temporaryDirectory('membrane-scale-');
    const started = performance.now();
    const l = await openForLoading(dir);
    const tenant = (await l.service.createTenantWithId())!;
    const bulk = await newMembrane(l.service, tenant.tenantId, 'bulk');
    const { tokens } = bulkExport(l.store, bulk.membraneId, (i) => `${target.url}/c/${i}`, 0, size);
    await l.close();
    const loadSeconds = (performance.now() - started) / 1000;
    const cached = await startMembrane({ dataDir: dir, env, args: ['--audit', 'off'] });
    const rssAtStartBytes = rss(cached.pid);
    const uncached = await startMembrane({ dataDir: dir, env, args: ['--audit', 'off', '--cache-size', '1'] });
    const sample = pick(tokens, SAMPLE);
    // Every capability of the sample once (so the cache holds them), and enough invocations to warm up the JIT.
    for (const server of [cached, uncached]) for (let done = 0; done < 20_000; done += sample.length) await invokeEach(server.url, sample);
    stores.push({ size, dataDir: dir, tokens, loadSeconds, sample, servers: { cached, uncached }, rssAtStartBytes });
    console.log(`${String(size).padStart(8)} capabilities loaded in ${loadSeconds.toFixed(1)} s; RSS of a server at start ${mib(rssAtStartBytes)} MiB`);
  }
  const runs = new Map<string, Run[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const store of stores) {
      for (const mode of ['cached', 'uncached'] as const) {
        const server = store.servers[mode];
        const result = await measured(server.url, server.pid, store.sample);
        const key = `${store.size} ${mode}`;
        runs.set(key, [...(runs.get(key) ?? []), result]);
        console.log(`  round ${round}: ${String(store.size).padStart(8)} ${mode.padEnd(8)} p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms, ${result.cpuMicrosPerRequest.toFixed(0)} µs CPU${result.failures > 0 ? ` (${result.failures} failures)` : ''}`);
      }
    }
  }
  const medianRun = (results: Run[]): Run => ({ ...medianResult(results), cpuMicrosPerRequest: median(results.map((r) => r.cpuMicrosPerRequest)) });
  const lookup = stores.map((store) => ({
    size: store.size,
    loadSeconds: store.loadSeconds,
    rssAtStartBytes: store.rssAtStartBytes,
    cached: medianRun(runs.get(`${store.size} cached`)!),
    uncached: medianRun(runs.get(`${store.size} uncached`)!),
  }));
  for (const store of stores) for (const server of Object.values(store.servers)) server.stop('SIGKILL');
  results.lookup = lookup;
  const all = stores.at(-1)!.tokens;
  const dataDir = stores.at(-1)!.dataDir;

  // 2. RSS at the largest store, the cache full and churning.
  const churn = pick(all, Math.min(all.length, 2 * CACHE_SIZE));
  const big = await startMembrane({ dataDir, env, args: ['--audit', 'off'] });
  const rssIdle = rss(big.pid);
  const churned = await invokeEach(big.url, churn);
  const rssFull = rss(big.pid);
  big.stop('SIGKILL');
  results.rss = { capabilities: all.length, distinctInvoked: churn.length, statuses: churned, idleBytes: rssIdle, cacheFullBytes: rssFull };
  console.log(`RSS at ${all.length} capabilities: ${mib(rssIdle)} MiB at start, ${mib(rssFull)} MiB after invoking ${churn.length} distinct ones (cache full)`);

  // 3. Revocation of a tree of 100 k descendants.
  const revocationDir = temporaryDirectory('membrane-scale-revoke-');
  const l = await openForLoading(revocationDir);
  const t = (await l.service.createTenantWithId())!;
  const root = await newMembrane(l.service, t.tenantId, 'root');
  const roots = bulkExport(l.store, root.membraneId, (i) => `${target.url}/r/${i}`, 0, 1_000).ids;
  const descendants: string[] = [];
  for (let d = 0; d < 100; d++) {
    const delegate = await newMembrane(l.service, t.tenantId, `delegate-${d}`);
    const batch = roots.map((parentId) => {
      const token = generateToken();
      descendants.push(token);
      return { hash: hashToken(token), membraneId: delegate.membraneId, sealedConfig: null, parentId };
    });
    l.store.insertExportedCapabilities(batch);
  }
  const bystander = await newMembrane(l.service, t.tenantId, 'bystander');
  await l.close();
  const server = await startMembrane({ dataDir: revocationDir, env, args: ['--audit', 'off', '--cache-size', String(2 * descendants.length)] });
  const unrelated = (await control(server.url, bystander.export, { uri: `${target.url}/unrelated` })).capability as string;
  const warmed = await invokeEach(server.url, descendants);

  // Probes: random descendants, a few at a time, from before the revocation until after it.
  const probes: { sent: number; answered: number; status: number }[] = [];
  let probing = true;
  const probeAgent = new Agent({ connections: 4 });
  const probing4 = Promise.all(
    Array.from({ length: 4 }, async () => {
      while (probing) {
        const sent = performance.now();
        const response = await request(server.url, { dispatcher: probeAgent, headers: { authorization: `Bearer ${descendants[Math.floor(Math.random() * descendants.length)]}` } });
        await response.body.dump();
        probes.push({ sent, answered: performance.now(), status: response.statusCode });
      }
    }),
  );
  const unrelatedSpec = { url: server.url, method: 'GET', headers: { authorization: bearer(unrelated) }, connections: 10, durationSeconds: 2, rate: 500 };
  const baseline = await load(unrelatedSpec, TOOL);
  const during = load(unrelatedSpec, TOOL);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const revokeSent = performance.now();
  const revoked = await request(server.url, { method: 'DELETE', headers: { authorization: bearer(root.revoke) } });
  await revoked.body.dump();
  const answered202 = performance.now();
  const duringResult = await during;
  probing = false;
  await probing4;
  await probeAgent.close();
  const checkStarted = performance.now();
  const after = await invokeEach(server.url, descendants);
  const checkSeconds = (performance.now() - checkStarted) / 1000;
  server.stop('SIGKILL');
  const lastSuccess = Math.max(...probes.filter((probe) => probe.status === 200).map((probe) => probe.answered));
  const revocation = {
    descendants: descendants.length,
    warmedBeforeRevoking: warmed,
    statusOfRevoke: revoked.statusCode,
    millisecondsTo202: answered202 - revokeSent,
    probes: probes.length,
    probesSentAfter202Succeeding: probes.filter((probe) => probe.sent >= answered202 && probe.status !== 401).length,
    probesSentAfter202: probes.filter((probe) => probe.sent >= answered202).length,
    lastSuccessfulProbeAnsweredMillisecondsAfterRevoke: lastSuccess - revokeSent,
    statusesWhenAllChecked: after,
    secondsToCheckAll: checkSeconds,
    unrelated: { baseline, duringRevocation: duringResult },
  };
  results.revocation = revocation;
  console.log(
    `revoking a membrane with ${descendants.length} cached descendants: 202 after ${revocation.millisecondsTo202.toFixed(1)} ms; ` +
      `${revocation.probesSentAfter202Succeeding} of ${revocation.probesSentAfter202} probes sent after it succeeded (last success answered ${revocation.lastSuccessfulProbeAnsweredMillisecondsAfterRevoke.toFixed(1)} ms after the revoke was sent); ` +
      `then all ${descendants.length} checked: ${JSON.stringify(after)} in ${checkSeconds.toFixed(1)} s; ` +
      `unrelated invocations at 500/s p99 ${baseline.p99.toFixed(2)} ms before, ${duringResult.p99.toFixed(2)} ms during`,
  );

  // 4. Export throughput over HTTP, durable, audit trail on.
  const exporter = await startMembrane({ env });
  const m = await control(exporter.url, exporter.create, { id: 'exporter' });
  const exportLoad = await load(
    { url: exporter.url, method: 'POST', headers: { authorization: bearer(m.capabilities.export) }, body: JSON.stringify({ uri: `${target.url}/x` }), connections: 32, durationSeconds: DURATION },
    TOOL,
  );
  exporter.stop('SIGKILL');
  results.exports = exportLoad;
  console.log(`exports over HTTP (durable, audit on): ${Math.round(exportLoad.requestsPerSecond)} capabilities/s, p99 ${exportLoad.p99.toFixed(2)} ms`);

  console.log(`\nlookup at ${RATE} req/s (median of ${ROUNDS}): latency in ms, server CPU per invocation in µs`);
  console.log(`${'capabilities'.padStart(12)}  ${'cached p50'.padStart(10)} ${'p99'.padStart(8)} ${'CPU'.padStart(6)}  ${'uncached p50'.padStart(12)} ${'p99'.padStart(8)} ${'CPU'.padStart(6)}  ${'RSS at start'.padStart(12)}`);
  for (const row of lookup) {
    console.log(
      `${String(row.size).padStart(12)}  ${ms(row.cached.p50).padStart(10)} ${ms(row.cached.p99)} ${row.cached.cpuMicrosPerRequest.toFixed(0).padStart(6)}  ${ms(row.uncached.p50).padStart(12)} ${ms(row.uncached.p99)} ${row.uncached.cpuMicrosPerRequest.toFixed(0).padStart(6)}  ${`${mib(row.rssAtStartBytes)} MiB`.padStart(12)}`,
    );
  }
  const first = lookup[0]!;
  const last = lookup.at(-1)!;
  const change = (a: number, b: number): string => `${((b / a - 1) * 100).toFixed(1)} %`;
  console.log(
    `change from ${first.size} to ${last.size} (target: within 10 %): cached p50 ${change(first.cached.p50, last.cached.p50)}, CPU ${change(first.cached.cpuMicrosPerRequest, last.cached.cpuMicrosPerRequest)}; uncached p50 ${change(first.uncached.p50, last.uncached.p50)}, CPU ${change(first.uncached.cpuMicrosPerRequest, last.uncached.cpuMicrosPerRequest)}`,
  );
  console.log(`revocation of ${descendants.length} descendants effective at the 202, ${revocation.millisecondsTo202.toFixed(0)} ms (target: ≤ 1 s); RSS at ${all.length} capabilities ${mib(rssFull)} MiB = ${(rssFull / 1e6).toFixed(0)} MB (target: ≤ 150 MB)`);

  writeResults('scale', { tool: TOOL, rate: RATE, durationSeconds: DURATION, cacheSize: CACHE_SIZE, ...results });
  process.exit(0);
}

await main();
