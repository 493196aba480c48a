/**
 * Fair shares: a bound with per-tenant and per-capability shares that
 * refuses at once, and the connection shares that queue in stages, hand
 * places to the first waiter, time out with 503 and leave nothing behind.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadRequestError, ServiceUnavailableError } from '../src/errors.js';
import { InFlight } from '../src/in-flight.js';
import { ConnectionShares, type ConnectionSlot } from '../src/proxy/connection-shares.js';
import { SharedLimit, shareOf } from '../src/shares.js';

const A1 = { tenant: 1, capability: 11 };
const A2 = { tenant: 1, capability: 12 };
const A3 = { tenant: 1, capability: 13 };
const B1 = { tenant: 2, capability: 21 };
const C1 = { tenant: 3, capability: 31 };

describe('SharedLimit', () => {
  test('a share is a fraction of the total, at least one', () => {
    assert.equal(shareOf(4096, 0.5), 2048);
    assert.equal(shareOf(10, 0.25), 2);
    assert.equal(shareOf(3, 0.25), 1);
  });

  test('refuses beyond a capability’s share, its tenant’s or the total, and names the broadest one that is full', () => {
    const limit = new SharedLimit(8, { tenant: 0.5, capability: 0.25 });
    assert.equal(limit.take(A1), undefined);
    assert.equal(limit.take(A1), undefined);
    assert.equal(limit.take(A1), 'capability');
    assert.equal(limit.take(A2), undefined);
    assert.equal(limit.take(A2), undefined);
    assert.equal(limit.take(A3), 'tenant');
    for (let i = 0; i < 2; i++) assert.equal(limit.take(B1), undefined);
    for (let i = 0; i < 2; i++) assert.equal(limit.take({ tenant: 2, capability: 22 }), undefined);
    assert.equal(limit.take(C1), 'total');
    assert.equal(limit.take(A1), 'total');
    assert.equal(limit.used, 8);
    limit.release(B1);
    assert.equal(limit.take(A1), 'tenant', 'its capability is full too, but so is its tenant');
  });

  test('amounts are taken whole or not at all, and releasing everything leaves nothing behind', () => {
    const limit = new SharedLimit(1000, { tenant: 0.5, capability: 0.25 });
    assert.equal(limit.take(A1, 200), undefined);
    assert.equal(limit.take(A1, 51), 'capability');
    assert.equal(limit.used, 200);
    limit.release(A1, 200);
    assert.equal(limit.used, 0);
    assert.equal(limit.holders, 0);
  });
});

describe('ConnectionShares', () => {
  const shares = (perTarget: number, waitTimeoutMs = 10_000): ConnectionShares =>
    new ConnectionShares({ perTarget, fractions: { tenant: 0.5, capability: 0.25 }, waitTimeoutMs });

  test('a free place is given at once, without a promise', () => {
    const connections = shares(8);
    const slot = connections.acquire('t', A1);
    assert.ok(!(slot instanceof Promise));
    slot.release();
    slot.release(); // releasing twice gives back one place
    assert.equal(connections.targets, 0);
  });

  test('one tenant at its share waits behind its own requests while another tenant goes straight through', async () => {
    const connections = shares(8);
    const held = [connections.acquire('t', A1), connections.acquire('t', A1), connections.acquire('t', A2), connections.acquire('t', A2)] as ConnectionSlot[];
    assert.ok(held.every((slot) => !(slot instanceof Promise)));
    const waiting = connections.acquire('t', A3);
    assert.ok(waiting instanceof Promise, 'tenant 1 holds its share of 4');
    assert.ok(!(connections.acquire('t', B1) instanceof Promise), 'tenant 2 is not held up');
    assert.ok(!(connections.acquire('other-target', A3) instanceof Promise), 'shares are per target');
    held[0]!.release();
    const slot = await waiting;
    assert.ok(!(slot instanceof Promise));
  });

  test('a released place goes to the first waiter, not to a newcomer', async () => {
    const connections = shares(2);
    // perTarget 2: one place per capability, one per tenant.
    const first = connections.acquire('t', A1) as ConnectionSlot;
    const order: string[] = [];
    const second = (connections.acquire('t', A1) as Promise<ConnectionSlot>).then((slot) => (order.push('second'), slot));
    const third = (connections.acquire('t', A1) as Promise<ConnectionSlot>).then((slot) => (order.push('third'), slot));
    first.release();
    (await second).release();
    (await third).release();
    assert.deepEqual(order, ['second', 'third']);
    assert.equal(connections.targets, 0);
  });

  test('waiting for the target as a whole is first come, first served among tenants', async () => {
    const connections = shares(4);
    // perTarget 4: two per tenant, one per capability.
    const held = [connections.acquire('t', A1), connections.acquire('t', A2), connections.acquire('t', B1), connections.acquire('t', { tenant: 2, capability: 22 })] as ConnectionSlot[];
    const order: string[] = [];
    const c = (connections.acquire('t', C1) as Promise<ConnectionSlot>).then((slot) => (order.push('C'), slot));
    const d = (connections.acquire('t', { tenant: 4, capability: 41 }) as Promise<ConnectionSlot>).then((slot) => (order.push('D'), slot));
    held[2]!.release();
    held[0]!.release();
    await Promise.all([c, d]);
    assert.deepEqual(order, ['C', 'D']);
  });

  test('a wait past the timeout is a 503 with Retry-After, and gives back what it held', async () => {
    const connections = shares(2, 50);
    const held = connections.acquire('t', A1) as ConnectionSlot;
    const error = await (connections.acquire('t', A1) as Promise<ConnectionSlot>).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    assert.ok(error instanceof ServiceUnavailableError);
    assert.equal(error.message, 'no connection to the target became free within 50 ms; try again shortly');
    assert.deepEqual(error.headers, { 'retry-after': '1' });
    held.release();
    assert.equal(connections.targets, 0);
  });

  test('an aborted wait leaves its queue at once with the abort’s reason, and the next waiter moves up', async () => {
    const connections = shares(2);
    const held = connections.acquire('t', A1) as ConnectionSlot;
    const invocation = new InFlight();
    const aborted = connections.acquire('t', A1, invocation) as Promise<ConnectionSlot>;
    const next = connections.acquire('t', A1) as Promise<ConnectionSlot>;
    const reason = new BadRequestError('gone');
    invocation.abort(reason);
    await assert.rejects(aborted, (error: unknown) => error === reason);
    held.release();
    (await next).release();
    await sleep(0);
    assert.equal(connections.targets, 0);
  });

  test('an invocation aborted before it has to wait is taken out at once, not after the timeout', async () => {
    const connections = shares(2, 60_000);
    const held = connections.acquire('t', A1) as ConnectionSlot;
    const invocation = new InFlight();
    const reason = new BadRequestError('revoked meanwhile');
    invocation.abort(reason);
    await assert.rejects(connections.acquire('t', A1, invocation) as Promise<ConnectionSlot>, (error: unknown) => error === reason);
    held.release();
    assert.equal(connections.targets, 0);
  });
});
