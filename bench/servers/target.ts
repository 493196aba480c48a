/**
 * The benchmark target: answers every request with a tiny JSON body, after
 * reading the request body. Usage: node target.js PORT (0: any); prints
 * `listening PORT`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const body = Buffer.from('{"ok":true}');
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});
// Exit normally on SIGTERM, so that --cpu-prof and friends write their output.
process.on('SIGTERM', () => process.exit(0));
