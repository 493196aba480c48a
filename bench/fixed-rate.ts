/**
 * A fixed-rate load generator with microsecond latencies (autocannon's are
 * whole milliseconds, too coarse to see a sub-millisecond cost). Requests
 * are sent on a schedule (`rate` per second over a keep-alive pool) and each
 * latency is measured from the request's scheduled time, not from when it
 * was sent, so a server that falls behind is charged for the wait
 * (no coordinated omission). The first `warmupSeconds` (default 1) run
 * on the same schedule but are not recorded: a generator that has just
 * started (its JIT cold, its connections not yet open) falls behind, and
 * that backlog would otherwise be charged to the server. Run as its own
 * process:
 *   node fixed-rate.js SPEC_FILE   (a JSON LoadSpec)
 * and prints one JSON LoadResult.
 */
import { readFileSync } from 'node:fs';
import hdr from 'hdr-histogram-js';
import { Pool } from 'undici';
import type { LoadResult, LoadSpec } from './load.js';

async function main(): Promise<void> {
  const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as LoadSpec & { rate: number };
  const warmupNanoseconds = BigInt(Math.round((spec.warmupSeconds ?? 1) * 1e9));
  const url = new URL(spec.url);
  const pool = new Pool(url.origin, { connections: spec.connections, pipelining: 1 });
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  const authorizations = spec.authorizations;
  const headersOf = (): Record<string, string> =>
    authorizations === undefined ? spec.headers : { ...spec.headers, authorization: authorizations[Math.floor(Math.random() * authorizations.length)]! };
  const interval = 1e9 / spec.rate;
  const start = process.hrtime.bigint();
  const recordFrom = start + warmupNanoseconds;
  const end = recordFrom + BigInt(Math.round(spec.durationSeconds * 1e9));
  let sent = 0;
  let recorded = 0;
  let failures = 0;
  let inFlight = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  let scheduling = true;

  const send = (scheduled: bigint): void => {
    const record = scheduled >= recordFrom;
    if (record) recorded += 1;
    inFlight += 1;
    pool
      .request({ path: url.pathname + url.search, method: spec.method as 'GET', headers: headersOf(), body: spec.body })
      .then(async (response) => {
        await response.body.dump();
        if (record && (response.statusCode < 200 || response.statusCode >= 300)) failures += 1;
      })
      .catch(() => {
        if (record) failures += 1;
      })
      .finally(() => {
        if (record) histogram.recordValue(Math.max(1, Number((process.hrtime.bigint() - scheduled) / 1000n)));
        inFlight -= 1;
        if (!scheduling && inFlight === 0) done();
      });
  };

  const tick = (): void => {
    const now = process.hrtime.bigint();
    while (sent * interval <= Number(now - start) && start + BigInt(Math.round(sent * interval)) < end) {
      send(start + BigInt(Math.round(sent * interval)));
      sent += 1;
    }
    if (now < end) setTimeout(tick, 1);
    else {
      scheduling = false;
      if (inFlight === 0) done();
    }
  };
  tick();
  await finished;
  await pool.close();
  const result: LoadResult = {
    requestsPerSecond: recorded / spec.durationSeconds,
    p50: histogram.getValueAtPercentile(50) / 1000,
    p99: histogram.getValueAtPercentile(99) / 1000,
    p999: histogram.getValueAtPercentile(99.9) / 1000,
    failures,
    requests: recorded,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
