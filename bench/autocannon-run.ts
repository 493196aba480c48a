/**
 * Saturation with autocannon's API in its own process (the CLI cannot vary a
 * header per request, which a pool of capabilities needs). Run as
 *   node autocannon-run.js SPEC_FILE   (a JSON LoadSpec)
 * and prints one JSON LoadResult.
 */
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import type { LoadResult, LoadSpec } from './load.js';

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as LoadSpec;
const pool = spec.authorizations;
const result = await autocannon({
  url: spec.url,
  method: spec.method as 'GET',
  headers: spec.headers,
  body: spec.body,
  connections: spec.connections,
  duration: spec.durationSeconds,
  ...(pool === undefined
    ? {}
    : { requests: [{ setupRequest: (request: autocannon.Request) => ({ ...request, headers: { ...request.headers, authorization: pool[Math.floor(Math.random() * pool.length)]! } }) }] }),
});
const out: LoadResult = {
  requestsPerSecond: result.requests.total / spec.durationSeconds,
  p50: result.latency.p50,
  p99: result.latency.p99,
  p999: result.latency.p99_9 ?? result.latency.p99,
  failures: result.non2xx + result.errors + result.timeouts,
  requests: result.requests.total,
};
process.stdout.write(`${JSON.stringify(out)}\n`);
