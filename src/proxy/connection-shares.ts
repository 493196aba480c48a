/**
 * Fair shares of the connections to each target.
 *
 * At most `perTarget` requests go to one target (one connection pool) at
 * once, at most a tenant's share of them for one tenant's capabilities,
 * and at most a capability's share for one capability. A request beyond
 * any of these waits, in order of arrival, for one of its own kind to end:
 * first for its capability's share, then its tenant's, then the target's.
 * Waiting in stages keeps every step O(1) and keeps one tenant's queue out
 * of another's way: a request waiting for the target as a whole already
 * holds a place in its tenant's share, so no tenant has more requests
 * waiting there than its share allows, and a tenant at its share waits
 * behind its own requests only.
 *
 * A request that waits longer than `waitTimeoutMs` is refused with 503
 * (and `Retry-After`); one that is aborted meanwhile leaves its queue at
 * once. A slot is handed straight to the first waiter when it is released,
 * so no newcomer overtakes a request that waited.
 */
import { ServiceUnavailableError } from '../errors.js';
import type { Abortable } from '../in-flight.js';
import { shareOf, type Holder, type ShareFractions } from '../shares.js';

export interface ConnectionSharesOptions {
  /** Most requests to one target at once (the size of its connection pool). */
  perTarget: number;
  fractions: ShareFractions;
  /** Longest wait for a slot before 503. */
  waitTimeoutMs: number;
}

/** A place among the requests to one target; release it when the exchange ends. */
export interface ConnectionSlot {
  release(): void;
}

/** One bound and the requests waiting for it, first come first served. */
class Gate {
  active = 0;
  head: Waiter | undefined;
  tail: Waiter | undefined;

  constructor(readonly limit: number) {}

  get idle(): boolean {
    return this.active === 0 && this.head === undefined;
  }

  /** Room for a newcomer: below the limit, and nobody waiting who came first. */
  get open(): boolean {
    return this.active < this.limit && this.head === undefined;
  }

  enqueue(waiter: Waiter): void {
    waiter.queue = this;
    waiter.prev = this.tail;
    if (this.tail === undefined) this.head = waiter;
    else this.tail.next = waiter;
    this.tail = waiter;
  }

  remove(waiter: Waiter): void {
    if (waiter.prev === undefined) this.head = waiter.next;
    else waiter.prev.next = waiter.next;
    if (waiter.next === undefined) this.tail = waiter.prev;
    else waiter.next.prev = waiter.prev;
    waiter.queue = waiter.prev = waiter.next = undefined;
  }
}

/** The gates of one target: its whole pool, and per tenant and per capability (those only while in use). */
class TargetGates {
  readonly total: Gate;
  readonly tenants = new Map<number, Gate>();
  readonly capabilities = new Map<number, Gate>();

  constructor(readonly key: string, limit: number) {
    this.total = new Gate(limit);
  }

  get idle(): boolean {
    return this.total.idle && this.tenants.size === 0 && this.capabilities.size === 0;
  }
}

/** The stages a request passes, in order: its capability's share, its tenant's, the target's whole pool. */
const STAGES = 3;

interface Waiter {
  slot: Slot;
  queue: Gate | undefined;
  prev: Waiter | undefined;
  next: Waiter | undefined;
  timer: NodeJS.Timeout | undefined;
  resolve: (slot: ConnectionSlot) => void;
  reject: (error: Error) => void;
}

class Slot implements ConnectionSlot {
  /** The gates this request holds a place in, in stage order. */
  readonly held: Gate[] = [];
  #released = false;

  constructor(
    readonly shares: ConnectionShares,
    readonly target: TargetGates,
    readonly holder: Holder,
  ) {}

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.shares.leave(this);
  }
}

export class ConnectionShares {
  readonly #options: ConnectionSharesOptions;
  readonly #perTenant: number;
  readonly #perCapability: number;
  readonly #targets = new Map<string, TargetGates>();

  constructor(options: ConnectionSharesOptions) {
    this.#options = options;
    this.#perTenant = shareOf(options.perTarget, options.fractions.tenant);
    this.#perCapability = shareOf(options.perTarget, options.fractions.capability);
  }

  /**
   * A slot toward the target `key` for `holder`: returned at once when its
   * capability, its tenant and the target all have room and nobody waits;
   * otherwise a promise of one, which rejects with 503 after the wait
   * timeout, or with the reason `invocation` is aborted for while it waits.
   */
  acquire(key: string, holder: Holder, invocation?: Abortable): ConnectionSlot | Promise<ConnectionSlot> {
    let target = this.#targets.get(key);
    if (target === undefined) this.#targets.set(key, (target = new TargetGates(key, this.#options.perTarget)));
    const slot = new Slot(this, target, holder);
    const capability = target.capabilities.get(holder.capability);
    const tenant = target.tenants.get(holder.tenant);
    if ((capability?.open ?? true) && (tenant?.open ?? true) && target.total.open) {
      for (let stage = 0; stage < STAGES; stage++) this.#enter(slot, this.#gate(slot, stage));
      return slot;
    }
    return new Promise<ConnectionSlot>((resolve, reject) => {
      const waiter: Waiter = { slot, queue: undefined, prev: undefined, next: undefined, timer: undefined, resolve, reject };
      waiter.timer = setTimeout(
        () => this.#giveUp(waiter, new ServiceUnavailableError(`no connection to the target became free within ${this.#options.waitTimeoutMs} ms; try again shortly`, { 'retry-after': '1' })),
        this.#options.waitTimeoutMs,
      );
      this.#advance(waiter);
      // Registered once the waiter is queued: an abort that came before (run at once) takes it out too.
      invocation?.whenAborted((reason) => this.#giveUp(waiter, reason));
    });
  }

  /** Most requests to one target at once. */
  get perTarget(): number {
    return this.#options.perTarget;
  }

  /** Number of targets with requests active or waiting (for tests: nothing is left behind). */
  get targets(): number {
    return this.#targets.size;
  }

  /** Gives back every place a slot holds, last stage first: each goes straight to that gate's first waiter, if any. */
  leave(slot: Slot): void {
    while (slot.held.length > 0) {
      const gate = slot.held.pop()!;
      const next = gate.head;
      if (next === undefined) {
        gate.active -= 1;
        this.#forgetIfIdle(slot, gate, slot.held.length);
      } else {
        gate.remove(next);
        next.slot.held.push(gate);
        this.#advance(next);
      }
    }
  }

  /** The gate of `stage` for a slot's holder, made when first needed (looked up when the stage is reached, never kept while idle). */
  #gate(slot: Slot, stage: number): Gate {
    const { target, holder } = slot;
    if (stage === 2) return target.total;
    const [gates, id, limit] = stage === 0 ? [target.capabilities, holder.capability, this.#perCapability] : [target.tenants, holder.tenant, this.#perTenant];
    let gate = gates.get(id);
    if (gate === undefined) gates.set(id, (gate = new Gate(limit)));
    return gate;
  }

  #enter(slot: Slot, gate: Gate): void {
    gate.active += 1;
    slot.held.push(gate);
  }

  /** Moves a waiter through the stages it has not passed; resolves it once it holds all of them. */
  #advance(waiter: Waiter): void {
    const { slot } = waiter;
    while (slot.held.length < STAGES) {
      const gate = this.#gate(slot, slot.held.length);
      if (!gate.open) {
        gate.enqueue(waiter);
        return;
      }
      this.#enter(slot, gate);
    }
    clearTimeout(waiter.timer);
    waiter.resolve(slot);
  }

  /** Takes a waiter out (timed out or aborted): leaves its queue, gives back the places it holds, rejects. */
  #giveUp(waiter: Waiter, error: Error): void {
    const queue = waiter.queue;
    if (queue === undefined) return; // it got its slot, or gave up, already
    clearTimeout(waiter.timer);
    queue.remove(waiter);
    this.#forgetIfIdle(waiter.slot, queue, waiter.slot.held.length);
    this.leave(waiter.slot);
    waiter.reject(error);
  }

  /** Drops a gate that nobody holds or waits for (and the target's gates once all are idle). */
  #forgetIfIdle(slot: Slot, gate: Gate, stage: number): void {
    if (!gate.idle) return;
    const { target, holder } = slot;
    if (stage === 0) target.capabilities.delete(holder.capability);
    else if (stage === 1) target.tenants.delete(holder.tenant);
    if (target.idle && this.#targets.get(target.key) === target) this.#targets.delete(target.key);
  }
}
