/**
 * Items indexed under every membrane of a chain, so that revoking a
 * membrane finds exactly the items that depend on it, however deep below
 * it. A membrane with nothing under it takes no memory.
 */
export class MembraneIndex<T> {
  readonly #byMembrane = new Map<number, Set<T>>();

  add(membraneIds: readonly number[], item: T): void {
    for (const id of membraneIds) {
      let items = this.#byMembrane.get(id);
      if (items === undefined) this.#byMembrane.set(id, (items = new Set()));
      items.add(item);
    }
  }

  remove(membraneIds: readonly number[], item: T): void {
    for (const id of membraneIds) {
      const items = this.#byMembrane.get(id);
      if (items === undefined) continue;
      items.delete(item);
      if (items.size === 0) this.#byMembrane.delete(id);
    }
  }

  /** The items under any of `membraneIds`, each once (a copy: the index may change while the caller goes through them). */
  under(membraneIds: Iterable<number>): Set<T> {
    const found = new Set<T>();
    for (const id of membraneIds) for (const item of this.#byMembrane.get(id) ?? []) found.add(item);
    return found;
  }

  /** Number of membranes with something under them. */
  get size(): number {
    return this.#byMembrane.size;
  }
}
