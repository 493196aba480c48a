/**
 * Delegation and revocation: chains through several membranes, revoked at
 * each level in turn, checking the fate of every capability.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { call, tokenOf } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';
import { startTarget, type TestTarget } from './helpers/target.js';
import { CHAIN_LENGTH_LIMIT } from '../src/store/store.js';

let membrane: TestMembrane;
let target: TestTarget;

before(async () => {
  membrane = await startTestMembrane();
  target = await startTarget();
});
after(async () => {
  await membrane.stop();
  await target.close();
});

interface World {
  A: { export: string; revoke: string };
  B: { export: string; revoke: string };
  C: { export: string; revoke: string };
  /** Exported through A (uri). */
  a1: string;
  /** Another uri export of A, never delegated. */
  a2: string;
  /** a1 re-exported through B. */
  b1: string;
  /** b1 re-exported through C. */
  c1: string;
  /** A uri export of B's own. */
  b2: string;
  /** A uri export of C's own. */
  c2: string;
  /** b2 re-exported through A: delegated *into* A from B. */
  aFromB: string;
}

let world: World;
let run = 0;

beforeEach(async () => {
  run += 1;
  const c = membrane.control;
  const [A, B, C] = [
    await c.createMembrane(membrane.roots.create, `A${run}`),
    await c.createMembrane(membrane.roots.create, `B${run}`),
    await c.createMembrane(membrane.roots.create, `C${run}`),
  ];
  const a1 = await c.export(A.export, { uri: `${target.url}/a1` });
  const a2 = await c.export(A.export, { uri: `${target.url}/a2` });
  const b1 = await c.export(B.export, { capability: a1 });
  const c1 = await c.export(C.export, { capability: b1 });
  const b2 = await c.export(B.export, { uri: `${target.url}/b2` });
  const c2 = await c.export(C.export, { uri: `${target.url}/c2` });
  const aFromB = await c.export(A.export, { capability: b2 });
  world = { A, B, C, a1, a2, b1, c1, b2, c2, aFromB };
  // Every capability works, and is now in the resolution cache.
  for (const capability of [a1, a2, b1, c1, b2, c2, aFromB]) assert.equal(await c.statusOf(capability), 200);
});

/** Invokes each exported capability and tries each membrane's export; returns which are alive. */
async function fates(): Promise<Record<string, boolean>> {
  const result: Record<string, boolean> = {};
  for (const name of ['a1', 'a2', 'b1', 'c1', 'b2', 'c2', 'aFromB'] as const) {
    const status = await membrane.control.statusOf(world[name]);
    assert.ok(status === 200 || status === 401, `${name}: ${status}`);
    result[name] = status === 200;
  }
  for (const name of ['A', 'B', 'C'] as const) {
    const status = (await call(membrane.url, world[name].export, { body: { uri: `${target.url}/probe` } })).status;
    assert.ok(status === 201 || status === 401, `${name}.export: ${status}`);
    result[`${name}.export`] = status === 201;
  }
  return result;
}

const ALL_ALIVE = { a1: true, a2: true, b1: true, c1: true, b2: true, c2: true, aFromB: true, 'A.export': true, 'B.export': true, 'C.export': true };

describe('a chain A → B → C', () => {
  test('every link invokes the same target', async () => {
    for (const capability of [world.a1, world.b1, world.c1]) {
      const result = await call(membrane.url, capability, { path: '/ignored' });
      assert.equal(result.json.url, '/a1');
    }
  });

  test('revoking C kills C’s export and what C exported or re-exported, nothing else', async () => {
    await membrane.control.revoke(world.C.revoke);
    assert.deepEqual(await fates(), { ...ALL_ALIVE, c1: false, c2: false, 'C.export': false });
  });

  test('revoking B kills B’s export, b1, b2, c1 below b1, and aFromB below b2; not a1, not C’s own', async () => {
    await membrane.control.revoke(world.B.revoke);
    assert.deepEqual(await fates(), { ...ALL_ALIVE, b1: false, b2: false, c1: false, aFromB: false, 'B.export': false });
  });

  test('revoking A kills the whole chain below a1 and A’s exports, but not B’s or C’s own exports', async () => {
    await membrane.control.revoke(world.A.revoke);
    assert.deepEqual(await fates(), { ...ALL_ALIVE, a1: false, a2: false, b1: false, c1: false, aFromB: false, 'A.export': false });
  });

  test('revoking each level in turn, deepest first, leaves only what is unrelated', async () => {
    await membrane.control.revoke(world.C.revoke);
    await membrane.control.revoke(world.B.revoke);
    assert.deepEqual(await fates(), {
      ...ALL_ALIVE,
      b1: false,
      b2: false,
      c1: false,
      c2: false,
      aFromB: false,
      'B.export': false,
      'C.export': false,
    });
    await membrane.control.revoke(world.A.revoke);
    const last = await fates();
    assert.ok(Object.values(last).every((alive) => !alive), JSON.stringify(last));
  });

  test('a re-export of a dead capability is refused', async () => {
    await membrane.control.revoke(world.B.revoke);
    const result = await call(membrane.url, world.C.export, { body: { capability: world.b1 } });
    assert.equal(result.status, 400);
    assert.match(result.json.message, /unknown or revoked/);
  });
});

describe('deep chains', () => {
  /** A chain of `length` capabilities, each re-exported through a membrane of its own from the one before. */
  async function chainOf(length: number, name: string): Promise<{ membranes: { export: string; revoke: string }[]; capabilities: string[] }> {
    const membranes = [];
    const capabilities: string[] = [];
    for (let i = 0; i < length; i++) {
      const m = await membrane.control.createMembrane(membrane.roots.create, `${name}-${i}`);
      membranes.push(m);
      capabilities.push(await membrane.control.export(m.export, i === 0 ? { uri: `${target.url}/deep` } : { capability: capabilities[i - 1]! }));
    }
    return { membranes, capabilities };
  }

  test(`a chain of ${CHAIN_LENGTH_LIMIT} capabilities, the longest allowed, resolves, and revoking the middle kills exactly the lower half`, async () => {
    const depth = CHAIN_LENGTH_LIMIT;
    const { membranes, capabilities } = await chainOf(depth, 'deep');
    assert.equal((await call(membrane.url, capabilities[depth - 1]!)).json.url, '/deep');
    await membrane.control.revoke(membranes[depth / 2]!.revoke);
    for (let i = 0; i < depth; i++) {
      assert.equal(await membrane.control.statusOf(capabilities[i]!), i < depth / 2 ? 200 : 401, `link ${i}`);
    }
  });

  test('re-exporting the last capability of a full chain is refused with 400, naming the limit', async () => {
    const { capabilities } = await chainOf(CHAIN_LENGTH_LIMIT, 'full');
    const m = await membrane.control.createMembrane(membrane.roots.create, 'one-too-many');
    const refused = await call(membrane.url, m.export, { body: { capability: capabilities[CHAIN_LENGTH_LIMIT - 1]! } });
    assert.equal(refused.status, 400);
    assert.equal(refused.json.message, `config.capability is already ${CHAIN_LENGTH_LIMIT} capabilities down from its original export, the longest chain allowed; it cannot be re-exported further`);
    // One link up, the chain still has room.
    assert.equal((await call(membrane.url, m.export, { body: { capability: capabilities[CHAIN_LENGTH_LIMIT - 2]! } })).status, 201);
  });

  test('an invocation at the end of a full chain writes an audit line of the same size as one at its second link', async () => {
    const { capabilities } = await chainOf(CHAIN_LENGTH_LIMIT, 'audited');
    for (const capability of [capabilities[1]!, capabilities[CHAIN_LENGTH_LIMIT - 1]!]) assert.equal(await membrane.control.statusOf(capability), 200);
    // Invocation lines are written in batches, at least every 50 ms.
    let lines: string[] = [];
    const of = (capability: string): string | undefined => lines.find((line) => line.includes(membrane.audit.idOfUri(capability)!));
    while (of(capabilities[1]!) === undefined || of(capabilities[CHAIN_LENGTH_LIMIT - 1]!) === undefined) {
      await sleep(20);
      lines = (await readFile(join(membrane.dataDir, 'audit.log'), 'utf8')).trim().split('\n').filter((line) => line.includes('"capability.invoke"'));
    }
    const [second, last] = [of(capabilities[1]!)!, of(capabilities[CHAIN_LENGTH_LIMIT - 1]!)!];
    assert.equal(JSON.parse(last).chainLength, CHAIN_LENGTH_LIMIT);
    assert.equal(JSON.parse(last).root, membrane.audit.idOfUri(capabilities[0]!));
    assert.equal(JSON.parse(last).parent, membrane.audit.idOfUri(capabilities[CHAIN_LENGTH_LIMIT - 2]!));
    // Only the ids' bytes, the membrane names, the durations and the counters may differ.
    assert.ok(Math.abs(last.length - second.length) < 40, `${second.length} vs ${last.length} bytes`);
    assert.ok(last.length < 600, `${last.length} bytes`);
  });
});

describe('revocation under load', () => {
  test('no invocation that starts after the 202 succeeds', async () => {
    const m = await membrane.control.createMembrane(membrane.roots.create, 'under-load');
    const victim = await membrane.control.export(m.export, { uri: `${target.url}/victim` });
    const delegated = await membrane.control.export(world.B.export, { capability: victim });
    const agent = new Agent({ connections: 16 });
    let revokedAt = false;
    let stop = false;
    const violations: string[] = [];
    let before200 = 0;
    const worker = async (capability: string): Promise<void> => {
      while (!stop) {
        const startedAfterRevoke = revokedAt;
        const response = await request(membrane.url, {
          dispatcher: agent,
          headers: { authorization: `Bearer ${tokenOf(capability)}` },
        });
        await response.body.dump();
        if (response.statusCode === 200 && !startedAfterRevoke) before200 += 1;
        if (startedAfterRevoke && response.statusCode !== 401) violations.push(`${response.statusCode}`);
        if (startedAfterRevoke) stop = true;
      }
    };
    const workers = Array.from({ length: 8 }, (_, i) => worker(i % 2 === 0 ? victim : delegated));
    while (before200 < 50) await new Promise((resolve) => setImmediate(resolve));
    const revoke = await request(membrane.url, { dispatcher: agent, method: 'POST', headers: { authorization: `Bearer ${tokenOf(m.revoke)}` } });
    await revoke.body.dump();
    assert.equal(revoke.statusCode, 202);
    revokedAt = true;
    await Promise.all(workers);
    await agent.close();
    assert.deepEqual(violations, []);
  });
});
