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

interface Entry<V> {
  value: V;
  membraneIds: readonly number[];
}

export class CapabilityCache<V extends object> {
  readonly #entries: LRUCache<string, Entry<V>>;
  readonly #byMembrane = new Map<number, Set<string>>();
  #epoch = 0;

  constructor(maxEntries: number) {
    this.#entries = new LRUCache<string, Entry<V>>({
      max: Math.max(1, maxEntries),
      dispose: (entry, key) => this.#unindex(key, entry.membraneIds),
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
    return this.#entries.get(key)?.value;
  }

  /** Caches `value` unless a membrane was revoked since `epoch` was read. */
  set(key: string, value: V, membraneIds: readonly number[], epoch: number): void {
    if (epoch !== this.#epoch) return;
    this.#entries.set(key, { value, membraneIds });
    for (const id of membraneIds) {
      let keys = this.#byMembrane.get(id);
      if (keys === undefined) this.#byMembrane.set(id, (keys = new Set()));
      keys.add(key);
    }
  }

  /** Evicts every entry whose chain passes through one of these membranes. */
  revokeMembranes(membraneIds: Iterable<number>): void {
    this.#epoch++;
    for (const id of membraneIds) {
      const keys = this.#byMembrane.get(id);
      if (keys === undefined) continue;
      for (const key of [...keys]) this.#entries.delete(key);
    }
  }

  #unindex(key: string, membraneIds: readonly number[]): void {
    for (const id of membraneIds) {
      const keys = this.#byMembrane.get(id);
      if (keys === undefined) continue;
      keys.delete(key);
      if (keys.size === 0) this.#byMembrane.delete(id);
    }
  }
}
