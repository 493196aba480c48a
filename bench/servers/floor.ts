/**
 * The benchmark floor: the least a Node pass-through proxy does. An undici
 * pool to the target, hop-by-hop headers filtered both ways, one injected
 * header, bodies streamed; no capability, no checks. What it costs is what
 * Node itself costs. Usage: node floor.js PORT TARGET_ORIGIN; prints
 * `listening PORT`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'authorization']);
const pool = new Pool(process.argv[3]!, { connections: 256, pipelining: 1 });

function filter(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

const server = createServer((req, res) => {
  const headers = filter(req.rawHeaders);
  headers.push('x-injected', 'floor');
  const hasBody = req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0';
  pool
    .stream(
      { path: '/', method: req.method as 'GET', headers, body: hasBody || req.headers['transfer-encoding'] ? req : null, responseHeaders: 'raw' },
      ({ statusCode, headers: responseHeaders }) => {
        res.writeHead(statusCode, filter(responseHeaders as unknown as string[]));
        return res;
      },
    )
    .catch(() => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});
// Exit normally on SIGTERM, so that --cpu-prof and friends write their output.
process.on('SIGTERM', () => process.exit(0));
