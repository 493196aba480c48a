#!/usr/bin/env node
// A tiny HTTP target for trying Membrane: answers every request with a JSON
// echo of what it received (method, path, headers, body).
// Usage: node examples/echo-target.mjs [PORT]   (default 9000, listens on 127.0.0.1)
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9000);
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = JSON.stringify(
      { method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') },
      null,
      2,
    );
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`${body}\n`);
  });
});
server.listen(port, '127.0.0.1', () => console.log(`echo target listening on http://127.0.0.1:${server.address().port}`));
