/**
 * The processes a benchmark runs against: the target, the floor proxy,
 * nginx, Membrane. Each is tethered to the harness (children.ts), so none
 * outlives it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { signal, startTethered } from './children.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
const HERE = fileURLToPath(new URL('.', import.meta.url));

export interface Started {
  url: string;
  /** The process's id (for its CPU time and memory). */
  pid: number;
  /** Sends it a signal: SIGTERM (the default) to stop, SIGKILL to stop at once. */
  stop(signal?: NodeJS.Signals): void;
}

const directories: string[] = [];
process.on('exit', () => {
  for (const dir of directories) rmSync(dir, { recursive: true, force: true });
});

export function temporaryDirectory(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  directories.push(dir);
  return dir;
}

/** Starts a process and resolves with what its output said once `ready` matches it. */
export async function startProcess(file: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<{ pid: number; match: RegExpExecArray; output: () => string }> {
  const { launcher, pid, exited } = startTethered(file, args, env);
  let output = '';
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const check = (chunk: Buffer): void => {
      output += chunk.toString();
      const found = ready.exec(output);
      if (found) resolve(found);
    };
    launcher.stdout!.on('data', check);
    launcher.stderr!.on('data', check);
    void exited.then((code) => reject(new Error(`${file} ${args.join(' ')} exited with ${code}:\n${output}`)));
  });
  return { pid: await pid, match, output: () => output };
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function started(pid: number, url: string): Started {
  return { url, pid, stop: (name = 'SIGTERM') => signal(pid, name) };
}

export async function startTarget(): Promise<Started> {
  const { pid, match } = await startProcess(process.execPath, [join(HERE, 'servers', 'target.js'), '0'], {}, /listening (\d+)/);
  return started(pid, `http://127.0.0.1:${match[1]}`);
}

export async function startFloor(target: string): Promise<Started> {
  const { pid, match } = await startProcess(process.execPath, [join(HERE, 'servers', 'floor.js'), '0', target], {}, /listening (\d+)/);
  return started(pid, `http://127.0.0.1:${match[1]}`);
}

export function haveNginx(): boolean {
  return spawnSync('nginx', ['-v']).error === undefined;
}

/** nginx as a keep-alive reverse proxy to the target, injecting one header, one worker process. */
export async function startNginx(target: string): Promise<Started> {
  const dir = temporaryDirectory('membrane-bench-nginx-');
  const port = await freePort();
  const upstream = new URL(target);
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
error_log ${join(dir, 'error.log')} warn;
pid ${join(dir, 'nginx.pid')};
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream target { server ${upstream.host}; keepalive 256; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://target;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Injected nginx;
    }
  }
}
`,
  );
  const nginx = startTethered('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir, '-g', 'daemon off;']);
  nginx.launcher.stdout!.resume();
  nginx.launcher.stderr!.resume();
  const pid = await nginx.pid;
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/`).then(
      (response) => response.ok,
      () => false,
    );
    if (ok) return started(pid, `http://127.0.0.1:${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('nginx did not start');
}

export interface StartedMembrane extends Started {
  dataDir: string;
  create: string;
}

/** A Membrane server as `membrane serve` runs it by default (audit trail on), allowing loopback targets. */
export async function startMembrane(options: { dataDir?: string; env?: NodeJS.ProcessEnv; args?: string[]; nodeArgs?: string[] } = {}): Promise<StartedMembrane> {
  const dataDir = options.dataDir ?? temporaryDirectory('membrane-bench-data-');
  const { pid, match, output } = await startProcess(
    process.execPath,
    [...(options.nodeArgs ?? []), join(REPO, 'bin', 'membrane'), 'serve', '--port', '0', '--data-dir', dataDir, '--no-capi-profile', ...(options.args ?? [])],
    { MEMBRANE_ALLOW_TARGETS: '127.0.0.0/8', MEMBRANE_LOG_LEVEL: 'info', ...options.env },
    /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"listening"/,
  );
  const create = /create:\s+(cpblty:\S+)/.exec(output())?.[1] ?? '';
  return { ...started(pid, match[1]!), dataDir, create };
}

/** Calls a capability on Membrane's control plane and returns the JSON answer. */
export async function control(url: string, capability: string, body: unknown): Promise<any> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${capability.slice(capability.indexOf('#') + 1)}` },
    body: JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${JSON.stringify(json)}`);
  return json;
}

export const bearer = (capability: string): string => `Bearer ${capability.slice(capability.indexOf('#') + 1)}`;

/** Resident memory of a process, bytes (Linux). */
export function rss(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/** Fields of /proc/PID/stat after the command name (field 3 onwards). */
function statFields(pid: number): string[] {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
}

/** CPU time (user + system) a process and its live children have used, in microseconds (Linux; nginx serves from its workers). */
export function cpuMicros(pid: number): number {
  const of = (id: number): number => {
    const fields = statFields(id);
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  };
  let total = of(pid);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (Number(statFields(Number(entry))[1]) === pid) total += of(Number(entry));
    } catch {
      // The process ended while being read.
    }
  }
  return total;
}
