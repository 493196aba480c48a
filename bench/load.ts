/**
 * Load generators: wrk (when installed; a C program that leaves more CPU to
 * the servers) or autocannon (from npm) for saturation, and our fixed-rate
 * generator (fixed-rate.ts: microsecond latencies, no coordinated
 * omission) for latency at a given rate.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTethered } from './children.js';

export interface LoadSpec {
  url: string;
  method: string;
  headers: Record<string, string>;
  body?: string;
  connections: number;
  durationSeconds: number;
  /** Requests per second to hold; omitted: as fast as possible. */
  rate?: number;
  /** At a fixed rate: seconds run on the schedule before recording starts (default 1). */
  warmupSeconds?: number;
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

export const median = (values: readonly number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** Several runs as one: the median of each figure, failures and requests summed. */
export function medianResult(results: readonly LoadResult[]): LoadResult {
  return {
    requestsPerSecond: median(results.map((r) => r.requestsPerSecond)),
    p50: median(results.map((r) => r.p50)),
    p99: median(results.map((r) => r.p99)),
    p999: median(results.map((r) => r.p999)),
    failures: results.reduce((sum, r) => sum + r.failures, 0),
    requests: results.reduce((sum, r) => sum + r.requests, 0),
  };
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
  // The pool is read from a file: a Lua table literal of 100 k strings exceeds LuaJIT's constant limit.
  const poolFile = join(dir, 'authorizations.txt');
  if (spec.authorizations !== undefined) writeFileSync(poolFile, `${spec.authorizations.join('\n')}\n`);
  const pool = spec.authorizations === undefined ? '' : `local pool = {}
for line in io.lines(${luaString(poolFile)}) do pool[#pool + 1] = line end
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
  const stdout = await runTethered('wrk', ['-t1', `-c${spec.connections}`, `-d${spec.durationSeconds}s`, '-s', script, spec.url]).finally(() => rmSync(dir, { recursive: true, force: true }));
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

/** Runs one of our generator scripts in its own process, the spec passed in a file (a pool can exceed the argument size limit). */
async function runScript(name: string, spec: LoadSpec): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'membrane-bench-'));
  const file = join(dir, 'spec.json');
  writeFileSync(file, JSON.stringify(spec));
  try {
    return JSON.parse(await runTethered(process.execPath, [new URL(`./${name}`, import.meta.url).pathname, file])) as LoadResult;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function load(spec: LoadSpec, tool: 'wrk' | 'autocannon'): Promise<LoadResult> {
  // Latency at a fixed rate comes from fixed-rate.js; saturation from wrk, or autocannon through autocannon-run.js.
  if (spec.rate !== undefined) return runScript('fixed-rate.js', spec);
  return tool === 'wrk' ? wrk(spec) : runScript('autocannon-run.js', spec);
}
