/**
 * A bounded cache of resolved capabilities that revocation invalidates
 * synchronously.
 *
 * Each entry is indexed under every membrane on its chain, so revoking a
 * membrane evicts exactly the entries that depend on it, however deep. An
 * `epoch` counter guards against a lookup that read the store before a
 * revocation committed and finishes after it: such a result is served to
 * its own (earlier) request but never cached.
 */
import { LRUCache } from 'lru-cache';
import { MembraneIndex } from './membrane-index.js';

/** A cached value: what it is, and every membrane on its chain. */
export interface Cacheable {
  readonly membraneIds: readonly number[];
}

export class CapabilityCache<V extends Cacheable> {
  readonly #entries: LRUCache<string, V>;
  readonly #byMembrane = new MembraneIndex<string>();
  #epoch = 0;

  constructor(maxEntries: number) {
    this.#entries = new LRUCache<string, V>({
      max: Math.max(1, maxEntries),
      dispose: (value, key) => this.#byMembrane.remove(value.membraneIds, key),
    });
  }

  /** Read before a store lookup; pass to `set` after it. */
  get epoch(): number {
    return this.#epoch;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): V | undefined {
    return this.#entries.get(key);
  }

  /** Caches `value` unless a membrane was revoked since `epoch` was read. */
  set(key: string, value: V, epoch: number): void {
    if (epoch !== this.#epoch) return;
    this.#entries.set(key, value);
    this.#byMembrane.add(value.membraneIds, key);
  }

  /** Evicts every entry whose chain passes through one of these membranes. */
  revokeMembranes(membraneIds: Iterable<number>): void {
    this.#epoch++;
    for (const key of this.#byMembrane.under(membraneIds)) this.#entries.delete(key);
  }
}
