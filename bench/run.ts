/**
 * `npm run bench`: the cost of an invocation through Membrane, against the
 * field, on this machine.
 *
 * Subjects: direct (the target itself), floor (a bare Node pass-through
 * proxy), nginx (when installed), and Membrane with a plain capability, an
 * AWS4-HMAC-SHA256 signed one (1 KiB POST), a CAP1-HMAC-SHA512 signed one
 * (1 KiB POST) and one re-exported three times, each Membrane subject on a
 * server of its own, run as `membrane serve` runs by default (audit trail
 * to a file, metrics on). Saturation runs are interleaved round by round
 * (A B C … A B C …) so that drift in the machine hits all alike, each
 * after a second of unrecorded warm-up; each figure is the median of the
 * rounds. Each saturation run also charges the CPU time of its subject's
 * own process to the requests it answered (µs per request): on a small
 * machine the load generator, the target and the subject share the cores,
 * and CPU per request is the cost that does not depend on how they share
 * them. Then each subject runs at a fixed rate of half its saturation (at
 * most half of membrane-plain's), right after direct at the same rate, for
 * the latency it adds over direct; these runs are interleaved in rounds
 * too, and reported as medians. Prints a table and writes
 * bench/results/run-*.json.
 *
 * Options: --rounds N (3), --duration S (5), --connections C (50),
 * --tool wrk|autocannon (wrk when installed).
 */
import { haveWrk, load, median, medianResult, type LoadResult, type LoadSpec } from './load.js';
import { commandLine, positiveOption } from './options.js';
import { writeResults } from './results.js';
import { bearer, control, cpuMicros, haveNginx, startFloor, startMembrane, startNginx, startTarget } from './subjects.js';

const { values } = commandLine({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
    tool: { type: 'string' },
  },
});
const ROUNDS = positiveOption('rounds', values.rounds);
const DURATION = positiveOption('duration', values.duration);
const CONNECTIONS = positiveOption('connections', values.connections);
const toolName = values.tool ?? (haveWrk() ? 'wrk' : 'autocannon');
if (toolName !== 'wrk' && toolName !== 'autocannon') {
  process.stderr.write(`--tool must be wrk or autocannon, not ${JSON.stringify(toolName)}\n`);
  process.exit(2);
}
const TOOL: 'wrk' | 'autocannon' = toolName;

const KIB = 'x'.repeat(1024 - 10);
const POST_BODY = JSON.stringify({ d: KIB });

interface Subject {
  name: string;
  /** The process whose CPU time is charged to this subject: the proxy, or for direct the target. */
  pid: number;
  spec: Omit<LoadSpec, 'connections' | 'durationSeconds' | 'rate'>;
}

async function main(): Promise<void> {
  const target = await startTarget();
  const floor = await startFloor(target.url);
  const nginx = haveNginx() ? await startNginx(target.url) : undefined;
  // One Membrane server per Membrane subject, as the floor and nginx each
  // have their own process: a subject's row is not shaped by the heap the
  // others left behind.
  const serve = async (config: (targetUrl: string) => object, delegations = 0): Promise<{ url: string; pid: number; capability: string }> => {
    const membrane = await startMembrane();
    const m = await control(membrane.url, membrane.create, { id: 'bench' });
    let capability = (await control(membrane.url, m.capabilities.export, config(target.url))).capability as string;
    for (let i = 0; i < delegations; i++) {
      const next = await control(membrane.url, membrane.create, { id: `delegate-${i}` });
      capability = (await control(membrane.url, next.capabilities.export, { capability })).capability as string;
    }
    return { url: membrane.url, pid: membrane.pid, capability };
  };
  const plainConfig = (url: string): object => ({ uri: `${url}/`, headers: { 'X-Injected': 'membrane' } });
  const plain = await serve(plainConfig);
  const aws4 = await serve((url) => ({
    uri: `${url}/2015-03-31/functions/bench/invocations`,
    method: 'POST',
    headers: { 'X-Amz-Invocation-Type': 'RequestResponse' },
    hmac: { 'aws4-hmac-sha256': { awsAccessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', region: 'us-east-1', service: 'lambda' } },
  }));
  const cap1 = await serve((url) => ({ uri: `${url}/cap1`, method: 'POST', hmac: { 'cap1-hmac-sha512': { key: 'YmVuY2gta2V5', keyId: 'bench' } } }));
  const delegated = await serve(plainConfig, 3);

  const get = { method: 'GET', headers: {} };
  const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: POST_BODY };
  const subjects: Subject[] = [
    { name: 'direct', pid: target.pid, spec: { url: target.url, ...get } },
    { name: 'floor', pid: floor.pid, spec: { url: floor.url, ...get } },
    ...(nginx === undefined ? [] : [{ name: 'nginx', pid: nginx.pid, spec: { url: nginx.url, ...get } }]),
    { name: 'membrane-plain', pid: plain.pid, spec: { url: plain.url, ...get, headers: { authorization: bearer(plain.capability) } } },
    { name: 'membrane-aws4', pid: aws4.pid, spec: { url: aws4.url, ...post, headers: { ...post.headers, authorization: bearer(aws4.capability) } } },
    { name: 'membrane-cap1', pid: cap1.pid, spec: { url: cap1.url, ...post, headers: { ...post.headers, authorization: bearer(cap1.capability) } } },
    { name: 'membrane-delegated', pid: delegated.pid, spec: { url: delegated.url, ...get, headers: { authorization: bearer(delegated.capability) } } },
  ];

  console.log(`${TOOL}, ${ROUNDS} interleaved rounds of ${DURATION} s at ${CONNECTIONS} connections${nginx === undefined ? '; nginx not installed, its row is skipped' : ''}`);
  const runs = new Map<string, (LoadResult & { cpuMicrosPerRequest: number })[]>(subjects.map((subject) => [subject.name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const subject of subjects) {
      // A second of load first, not recorded: a process that sat idle while
      // the others were measured (its heap shrunk, its caches cold) would
      // otherwise be charged for waking up.
      await load({ ...subject.spec, connections: CONNECTIONS, durationSeconds: 1 }, TOOL);
      const cpuBefore = cpuMicros(subject.pid);
      const loaded = await load({ ...subject.spec, connections: CONNECTIONS, durationSeconds: DURATION }, TOOL);
      const result = { ...loaded, cpuMicrosPerRequest: (cpuMicros(subject.pid) - cpuBefore) / loaded.requests };
      runs.get(subject.name)!.push(result);
      process.stdout.write(`  round ${round}: ${subject.name.padEnd(20)} ${Math.round(result.requestsPerSecond)} req/s, ${result.cpuMicrosPerRequest.toFixed(0)} µs CPU/req${result.failures > 0 ? ` (${result.failures} failures)` : ''}\n`);
    }
  }
  const saturation = new Map(
    [...runs].map(([name, results]) => [
      name,
      { ...medianResult(results), cpuMicrosPerRequest: median(results.map((r) => r.cpuMicrosPerRequest)) },
    ]),
  );

  // Latency at a fixed rate: each subject at half of its own saturation, and
  // direct at that same rate right before it, so that the difference is what
  // the subject adds at that load. The rate is capped at half of
  // membrane-plain's saturation: the fixed-rate generator is a Node process
  // sharing the machine, and much faster it would measure itself. A tail
  // latency from one run is at the mercy of the scheduler on two cores:
  // rounds, and the median of each percentile.
  const cap = Math.floor(saturation.get('membrane-plain')!.requestsPerSecond / 2);
  const fixedRuns = new Map<string, { rate: number; subject: LoadResult[]; direct: LoadResult[] }>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const subject of subjects) {
      if (subject.name === 'direct') continue;
      const rate = Math.min(cap, Math.floor(saturation.get(subject.name)!.requestsPerSecond / 2));
      const fixed = { connections: CONNECTIONS, durationSeconds: DURATION, rate };
      const direct = await load({ ...subjects[0]!.spec, ...fixed }, TOOL);
      const result = await load({ ...subject.spec, ...fixed }, TOOL);
      const runs = fixedRuns.get(subject.name) ?? { rate, subject: [], direct: [] };
      runs.subject.push(result);
      runs.direct.push(direct);
      fixedRuns.set(subject.name, runs);
      process.stdout.write(`  round ${round}: ${subject.name.padEnd(20)} at ${rate} req/s p99 ${result.p99.toFixed(2)} ms, direct p99 ${direct.p99.toFixed(2)} ms\n`);
    }
  }
  const halfLoad = new Map([...fixedRuns].map(([name, runs]) => [name, { rate: runs.rate, subject: medianResult(runs.subject), direct: medianResult(runs.direct) }]));

  const direct = saturation.get('direct')!;
  const floorRate = saturation.get('floor')!.requestsPerSecond;
  const nginxRate = saturation.get('nginx')?.requestsPerSecond;
  const ratio = (value: number, base: number | undefined): string => (base === undefined ? '—' : `${(value / base).toFixed(2)}×`);
  const rows = subjects.map((subject) => {
    const s = saturation.get(subject.name)!;
    const half = halfLoad.get(subject.name);
    return {
      subject: subject.name,
      requestsPerSecond: Math.round(s.requestsPerSecond),
      p50: s.p50,
      p99: s.p99,
      p999: s.p999,
      cpuMicrosPerRequest: s.cpuMicrosPerRequest,
      vsDirect: s.requestsPerSecond / direct.requestsPerSecond,
      vsFloor: s.requestsPerSecond / floorRate,
      vsNginx: nginxRate === undefined ? null : s.requestsPerSecond / nginxRate,
      failures: s.failures,
      halfLoad:
        half === undefined
          ? null
          : {
              rate: half.rate,
              p50: half.subject.p50,
              p99: half.subject.p99,
              p999: half.subject.p999,
              direct: { p50: half.direct.p50, p99: half.direct.p99, p999: half.direct.p999 },
              addedP50: half.subject.p50 - half.direct.p50,
              addedP99: half.subject.p99 - half.direct.p99,
              failures: half.subject.failures + half.direct.failures,
            },
    };
  });

  const ms = (value: number): string => value.toFixed(2).padStart(7);
  console.log(`\nsaturation (median of ${ROUNDS}; latency in ms; CPU µs = CPU time of the subject's own process per request)`);
  console.log(`${'subject'.padEnd(20)} ${'req/s'.padStart(8)} ${'p50'.padStart(7)} ${'p99'.padStart(7)} ${'p99.9'.padStart(7)} ${'CPU µs'.padStart(7)}  ${'÷direct'.padStart(7)} ${'÷floor'.padStart(7)} ${'÷nginx'.padStart(7)}`);
  for (const row of rows) {
    console.log(
      `${row.subject.padEnd(20)} ${String(row.requestsPerSecond).padStart(8)} ${ms(row.p50)} ${ms(row.p99)} ${ms(row.p999)} ${row.cpuMicrosPerRequest.toFixed(0).padStart(7)}  ${ratio(row.requestsPerSecond, direct.requestsPerSecond).padStart(7)} ${ratio(row.requestsPerSecond, floorRate).padStart(7)} ${ratio(row.requestsPerSecond, nginxRate).padStart(7)}${row.failures > 0 ? `  ${row.failures} failures` : ''}`,
    );
  }
  console.log(
    `\nfixed rate (median of ${ROUNDS}): each subject at half of its saturation (at most ${cap} req/s, half of membrane-plain's), direct at the same rate just before; latency in ms, added = over direct`,
  );
  console.log(
    `${'subject'.padEnd(20)} ${'req/s'.padStart(8)} ${'p50'.padStart(7)} ${'p99'.padStart(7)} ${'p99.9'.padStart(7)}  ${'direct p50'.padStart(10)} ${'p99'.padStart(7)}  ${'+p50'.padStart(7)} ${'+p99'.padStart(7)}`,
  );
  for (const row of rows) {
    const h = row.halfLoad;
    if (h === null) continue;
    console.log(
      `${row.subject.padEnd(20)} ${String(h.rate).padStart(8)} ${ms(h.p50)} ${ms(h.p99)} ${ms(h.p999)}  ${ms(h.direct.p50).padStart(10)} ${ms(h.direct.p99)}  ${ms(h.addedP50)} ${ms(h.addedP99)}${h.failures > 0 ? `  ${h.failures} failures` : ''}`,
    );
  }
  const plainRow = rows.find((row) => row.subject === 'membrane-plain')!;
  const of = (name: string): number => rows.find((row) => row.subject === name)!.requestsPerSecond / plainRow.requestsPerSecond;
  console.log(`\ntargets: membrane-plain ÷ floor ${plainRow.vsFloor.toFixed(2)} (≥ 0.8); aws4 ÷ plain ${of('membrane-aws4').toFixed(2)} (≥ 0.7); delegated ÷ plain ${of('membrane-delegated').toFixed(2)} (≥ 0.95); added p99 at half load ${plainRow.halfLoad!.addedP99.toFixed(2)} ms (≤ 1)`);

  writeResults('run', { tool: TOOL, rounds: ROUNDS, durationSeconds: DURATION, connections: CONNECTIONS, rows });
  process.exit(0);
}

await main();
