/** Reading whole request bodies, on a real server. */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { readBody } from '../src/body.js';

test('a body that has fully arrived before it is read is still read whole', async () => {
  const server = createServer((req, res) => {
    // Let the whole (small) request arrive and be parsed before reading it.
    void sleep(50).then(async () => {
      assert.equal(req.complete, true);
      const body = await readBody(req, { limit: 1024 });
      res.end(body.toString('hex'));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    for (const payload of ['{"id":"x"}', '']) {
      const response = await request(`http://127.0.0.1:${port}/`, { method: 'POST', body: payload });
      assert.equal(await response.body.text(), Buffer.from(payload).toString('hex'));
    }
  } finally {
    server.close();
  }
});
