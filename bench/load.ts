/**
 * Load generators: wrk (when installed; a C program that leaves more CPU to
 * the servers) or autocannon (from npm) for saturation, and our fixed-rate
 * generator (fixed-rate.ts: microsecond latencies, no coordinated
 * omission) for latency at a given rate.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface LoadSpec {
  url: string;
  method: string;
  headers: Record<string, string>;
  body?: string;
  connections: number;
  durationSeconds: number;
  /** Requests per second to hold; omitted: as fast as possible. */
  rate?: number;
  /** Per request, one of these Authorization header values at random (for many capabilities). */
  authorizations?: readonly string[];
}

export interface LoadResult {
  requestsPerSecond: number;
  /** Latency percentiles in milliseconds. */
  p50: number;
  p99: number;
  p999: number;
  /** Requests answered with anything but 2xx, and transport errors. */
  failures: number;
  requests: number;
}

export function haveWrk(): boolean {
  return spawnSync('wrk', ['--version']).error === undefined;
}

const luaString = (text: string): string => JSON.stringify(text);

/** Saturation with wrk: one thread, a Lua script for method, headers, body and a JSON summary. */
async function wrk(spec: LoadSpec): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'membrane-bench-'));
  const script = join(dir, 'load.lua');
  const headers = Object.entries(spec.headers).map(([name, value]) => `wrk.headers[${luaString(name)}] = ${luaString(value)}`);
  const pool = spec.authorizations === undefined ? '' : `local pool = { ${spec.authorizations.map(luaString).join(', ')} }
request = function()
  wrk.headers["Authorization"] = pool[math.random(#pool)]
  return wrk.format()
end`;
  writeFileSync(
    script,
    `wrk.method = ${luaString(spec.method)}
${spec.body === undefined ? '' : `wrk.body = ${luaString(spec.body)}`}
${headers.join('\n')}
${pool}
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status
  io.write(string.format('{"requests":%d,"duration":%d,"failures":%d,"p50":%d,"p99":%d,"p999":%d}\\n',
    summary.requests, summary.duration, errors, latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
`,
  );
  const { stdout } = await run('wrk', ['-t1', `-c${spec.connections}`, `-d${spec.durationSeconds}s`, '-s', script, spec.url], { maxBuffer: 1 << 24 }).finally(() =>
    rmSync(dir, { recursive: true, force: true }),
  );
  const summary = JSON.parse(stdout.trim().split('\n').at(-1)!) as { requests: number; duration: number; failures: number; p50: number; p99: number; p999: number };
  return {
    requestsPerSecond: summary.requests / (summary.duration / 1e6),
    p50: summary.p50 / 1000,
    p99: summary.p99 / 1000,
    p999: summary.p999 / 1000,
    failures: summary.failures,
    requests: summary.requests,
  };
}

/** Saturation with autocannon (its own process). */
async function autocannon(spec: LoadSpec): Promise<LoadResult> {
  const bin = createRequire(import.meta.url).resolve('autocannon/autocannon.js');
  const args = [bin, '--json', '-c', String(spec.connections), '-d', String(spec.durationSeconds), '-m', spec.method];
  for (const [name, value] of Object.entries(spec.headers)) args.push('-H', `${name}=${value}`);
  if (spec.authorizations !== undefined) args.push('-H', `authorization=${spec.authorizations[0]}`);
  if (spec.body !== undefined) args.push('-b', spec.body);
  args.push(spec.url);
  const { stdout } = await run(process.execPath, args, { maxBuffer: 1 << 26 });
  const result = JSON.parse(stdout) as {
    requests: { average: number; total: number };
    latency: { p50: number; p99: number; p99_9: number };
    non2xx: number;
    errors: number;
    timeouts: number;
  };
  return {
    requestsPerSecond: result.requests.total / spec.durationSeconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    p999: result.latency.p99_9,
    failures: result.non2xx + result.errors + result.timeouts,
    requests: result.requests.total,
  };
}

/** Latency at a fixed rate, from fixed-rate.js in its own process. */
async function fixedRate(spec: LoadSpec): Promise<LoadResult> {
  const script = new URL('./fixed-rate.js', import.meta.url).pathname;
  const { stdout } = await run(process.execPath, [script, JSON.stringify(spec)], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as LoadResult;
}

export function load(spec: LoadSpec, tool: 'wrk' | 'autocannon'): Promise<LoadResult> {
  if (spec.rate !== undefined) return fixedRate(spec);
  return tool === 'wrk' ? wrk(spec) : autocannon(spec);
}
