/** The chunk joiner: small chunks become one buffer of their own, a lone chunk is passed on as it is. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChunkJoiner, JOIN_BYTES } from '../src/proxy/chunk-joiner.js';

test('a lone chunk is taken back as it is, without a copy', () => {
  const joiner = new ChunkJoiner();
  const chunk = Buffer.from('hello');
  assert.equal(joiner.add(chunk), false);
  assert.equal(joiner.take(), chunk);
  assert.equal(joiner.take(), undefined);
});

test('many small chunks come back joined, in order, in a buffer that shares nothing with what is joined next', () => {
  const joiner = new ChunkJoiner();
  for (let i = 0; i < 1000; i++) joiner.add(Buffer.of(i % 256));
  const first = joiner.take()!;
  assert.equal(first.length, 1000);
  assert.ok(first.every((byte, i) => byte === i % 256));
  for (let i = 0; i < 10; i++) joiner.add(Buffer.of(0xff));
  joiner.add(Buffer.of(0xff));
  assert.equal(joiner.take()!.length, 11);
  assert.ok(first.every((byte, i) => byte === i % 256), 'the first buffer was not overwritten');
});

test('says when enough waits to be taken, and takes whatever fills past it', () => {
  const joiner = new ChunkJoiner();
  const piece = Buffer.alloc(1000, 7);
  let full = false;
  let added = 0;
  while (!full) {
    full = joiner.add(piece);
    added += piece.length;
  }
  assert.ok(added >= JOIN_BYTES && added < JOIN_BYTES + piece.length);
  const taken = joiner.take()!;
  assert.equal(taken.length, added);
  assert.ok(taken.every((byte) => byte === 7));
  joiner.add(piece);
  joiner.clear();
  assert.equal(joiner.length, 0);
  assert.equal(joiner.take(), undefined);
});
