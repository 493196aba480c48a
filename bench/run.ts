/**
 * `npm run bench`: the cost of an invocation through Membrane, against the
 * field, on this machine.
 *
 * Subjects: direct (the target itself), floor (a bare Node pass-through
 * proxy), nginx (when installed), and Membrane with a plain capability, an
 * AWS4-HMAC-SHA256 signed one (1 KiB POST), a CAP1-HMAC-SHA512 signed one
 * (1 KiB POST) and one re-exported three times. Saturation runs are
 * interleaved round by round (A B C … A B C …) so that drift in the
 * machine hits all alike; each figure is the median of the rounds. Then a
 * fixed-rate run at half of membrane-plain's saturation measures latency
 * added over direct. Prints a table and writes bench/results/run-*.json.
 *
 * Options: --rounds N (3), --duration S (5), --connections C (50),
 * --tool wrk|autocannon (wrk when installed).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { haveWrk, load, type LoadResult, type LoadSpec } from './load.js';
import { bearer, control, haveNginx, REPO, startFloor, startMembrane, startNginx, startTarget } from './subjects.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
    tool: { type: 'string' },
  },
});
const ROUNDS = Number(values.rounds);
const DURATION = Number(values.duration);
const CONNECTIONS = Number(values.connections);
const TOOL = (values.tool ?? (haveWrk() ? 'wrk' : 'autocannon')) as 'wrk' | 'autocannon';

const KIB = 'x'.repeat(1024 - 10);
const POST_BODY = JSON.stringify({ d: KIB });

interface Subject {
  name: string;
  spec: Omit<LoadSpec, 'connections' | 'durationSeconds' | 'rate'>;
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function main(): Promise<void> {
  const target = await startTarget();
  const floor = await startFloor(target.url);
  const nginx = haveNginx() ? await startNginx(target.url) : undefined;
  const membrane = await startMembrane();

  const m = await control(membrane.url, membrane.create, { id: 'bench' });
  const exportCap = m.capabilities.export as string;
  const plain = (await control(membrane.url, exportCap, { uri: `${target.url}/`, headers: { 'X-Injected': 'membrane' } })).capability as string;
  const aws4 = (
    await control(membrane.url, exportCap, {
      uri: `${target.url}/2015-03-31/functions/bench/invocations`,
      method: 'POST',
      headers: { 'X-Amz-Invocation-Type': 'RequestResponse' },
      hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', region: 'us-east-1', service: 'lambda' } },
    })
  ).capability as string;
  const cap1 = (await control(membrane.url, exportCap, { uri: `${target.url}/cap1`, method: 'POST', hmac: { 'cap1-hmac-sha512': { key: 'YmVuY2gta2V5', keyId: 'bench' } } })).capability as string;
  let delegated = plain;
  for (let i = 0; i < 3; i++) {
    const next = await control(membrane.url, membrane.create, { id: `delegate-${i}` });
    delegated = (await control(membrane.url, next.capabilities.export, { capability: delegated })).capability as string;
  }

  const get = { method: 'GET', headers: {} };
  const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: POST_BODY };
  const subjects: Subject[] = [
    { name: 'direct', spec: { url: target.url, ...get } },
    { name: 'floor', spec: { url: floor.url, ...get } },
    ...(nginx === undefined ? [] : [{ name: 'nginx', spec: { url: nginx.url, ...get } }]),
    { name: 'membrane-plain', spec: { url: membrane.url, ...get, headers: { authorization: bearer(plain) } } },
    { name: 'membrane-aws4', spec: { url: membrane.url, ...post, headers: { ...post.headers, authorization: bearer(aws4) } } },
    { name: 'membrane-cap1', spec: { url: membrane.url, ...post, headers: { ...post.headers, authorization: bearer(cap1) } } },
    { name: 'membrane-delegated', spec: { url: membrane.url, ...get, headers: { authorization: bearer(delegated) } } },
  ];

  console.log(`${TOOL}, ${ROUNDS} interleaved rounds of ${DURATION} s at ${CONNECTIONS} connections${nginx === undefined ? '; nginx not installed, its row is skipped' : ''}`);
  for (const subject of subjects) await load({ ...subject.spec, connections: CONNECTIONS, durationSeconds: 1 }, TOOL); // warm-up
  const runs = new Map<string, LoadResult[]>(subjects.map((subject) => [subject.name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const subject of subjects) {
      const result = await load({ ...subject.spec, connections: CONNECTIONS, durationSeconds: DURATION }, TOOL);
      runs.get(subject.name)!.push(result);
      process.stdout.write(`  round ${round}: ${subject.name.padEnd(20)} ${Math.round(result.requestsPerSecond)} req/s${result.failures > 0 ? ` (${result.failures} failures)` : ''}\n`);
    }
  }
  const saturation = new Map(
    [...runs].map(([name, results]) => [
      name,
      {
        requestsPerSecond: median(results.map((r) => r.requestsPerSecond)),
        p50: median(results.map((r) => r.p50)),
        p99: median(results.map((r) => r.p99)),
        p999: median(results.map((r) => r.p999)),
        failures: results.reduce((sum, r) => sum + r.failures, 0),
      },
    ]),
  );

  // Latency at a fixed rate: half of membrane-plain's saturation, for every subject.
  const rate = Math.floor(saturation.get('membrane-plain')!.requestsPerSecond / 2);
  const halfLoad = new Map<string, LoadResult>();
  for (const subject of subjects) {
    halfLoad.set(subject.name, await load({ ...subject.spec, connections: CONNECTIONS, durationSeconds: DURATION, rate }, TOOL));
  }

  const direct = saturation.get('direct')!;
  const floorRate = saturation.get('floor')!.requestsPerSecond;
  const nginxRate = saturation.get('nginx')?.requestsPerSecond;
  const ratio = (value: number, base: number | undefined): string => (base === undefined ? '—' : `${(value / base).toFixed(2)}×`);
  const rows = subjects.map((subject) => {
    const s = saturation.get(subject.name)!;
    const h = halfLoad.get(subject.name)!;
    const d = halfLoad.get('direct')!;
    return {
      subject: subject.name,
      requestsPerSecond: Math.round(s.requestsPerSecond),
      p50: s.p50,
      p99: s.p99,
      p999: s.p999,
      vsDirect: s.requestsPerSecond / direct.requestsPerSecond,
      vsFloor: s.requestsPerSecond / floorRate,
      vsNginx: nginxRate === undefined ? null : s.requestsPerSecond / nginxRate,
      failures: s.failures,
      halfLoad: { rate, p50: h.p50, p99: h.p99, p999: h.p999, addedP50: h.p50 - d.p50, addedP99: h.p99 - d.p99, failures: h.failures },
    };
  });

  const ms = (value: number): string => value.toFixed(2).padStart(7);
  console.log(`\nsaturation (median of ${ROUNDS}; latency in ms)`);
  console.log(`${'subject'.padEnd(20)} ${'req/s'.padStart(8)} ${'p50'.padStart(7)} ${'p99'.padStart(7)} ${'p99.9'.padStart(7)}  ${'÷direct'.padStart(7)} ${'÷floor'.padStart(7)} ${'÷nginx'.padStart(7)}`);
  for (const row of rows) {
    console.log(
      `${row.subject.padEnd(20)} ${String(row.requestsPerSecond).padStart(8)} ${ms(row.p50)} ${ms(row.p99)} ${ms(row.p999)}  ${ratio(row.requestsPerSecond, direct.requestsPerSecond).padStart(7)} ${ratio(row.requestsPerSecond, floorRate).padStart(7)} ${ratio(row.requestsPerSecond, nginxRate).padStart(7)}${row.failures > 0 ? `  ${row.failures} failures` : ''}`,
    );
  }
  console.log(`\nfixed rate ${rate} req/s (half of membrane-plain's saturation); latency in ms, added = over direct`);
  console.log(`${'subject'.padEnd(20)} ${'p50'.padStart(7)} ${'p99'.padStart(7)} ${'p99.9'.padStart(7)}  ${'+p50'.padStart(7)} ${'+p99'.padStart(7)}`);
  for (const row of rows) {
    const h = row.halfLoad;
    console.log(`${row.subject.padEnd(20)} ${ms(h.p50)} ${ms(h.p99)} ${ms(h.p999)}  ${ms(h.addedP50)} ${ms(h.addedP99)}${h.failures > 0 ? `  ${h.failures} failures` : ''}`);
  }
  const plainRow = rows.find((row) => row.subject === 'membrane-plain')!;
  const of = (name: string): number => rows.find((row) => row.subject === name)!.requestsPerSecond / plainRow.requestsPerSecond;
  console.log(`\ntargets: membrane-plain ÷ floor ${plainRow.vsFloor.toFixed(2)} (≥ 0.8); aws4 ÷ plain ${of('membrane-aws4').toFixed(2)} (≥ 0.7); delegated ÷ plain ${of('membrane-delegated').toFixed(2)} (≥ 0.95); added p99 at half load ${plainRow.halfLoad.addedP99.toFixed(2)} ms (≤ 1)`);

  const out = join(REPO, 'bench', 'results');
  mkdirSync(out, { recursive: true });
  const file = join(out, `run-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version },
        tool: TOOL,
        rounds: ROUNDS,
        durationSeconds: DURATION,
        connections: CONNECTIONS,
        rows,
      },
      null,
      2,
    ),
  );
  console.log(`\nwritten to ${file}`);
  process.exit(0);
}

await main();
