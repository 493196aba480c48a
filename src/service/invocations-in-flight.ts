/**
 * The invocations in flight, by capability, and the capabilities with
 * invocations in flight indexed by every membrane on their chain: revoking
 * a membrane ends each invocation it kills, however deep below it, as
 * surely as it refuses new ones. An invocation costs a set insertion; a
 * capability is indexed when its first invocation starts and unindexed
 * when its last one ends.
 */
import type { MembraneError } from '../errors.js';
import { MembraneIndex } from './membrane-index.js';

/** An invocation that can be ended from outside. */
export interface Interruptible {
  abort(reason: MembraneError): void;
}

/** A capability as this index knows it: every membrane on its chain. */
export interface Chained {
  readonly membraneIds: readonly number[];
}

export class InvocationsInFlight<C extends Chained> {
  readonly #invocations = new Map<C, Set<Interruptible>>();
  readonly #capabilities = new MembraneIndex<C>();

  /** Records an invocation of `capability`. */
  add(capability: C, invocation: Interruptible): void {
    let invocations = this.#invocations.get(capability);
    if (invocations === undefined) {
      this.#invocations.set(capability, (invocations = new Set()));
      this.#capabilities.add(capability.membraneIds, capability);
    }
    invocations.add(invocation);
  }

  /** Forgets an invocation that has ended. */
  remove(capability: C, invocation: Interruptible): void {
    const invocations = this.#invocations.get(capability);
    if (invocations === undefined || !invocations.delete(invocation) || invocations.size > 0) return;
    this.#invocations.delete(capability);
    this.#capabilities.remove(capability.membraneIds, capability);
  }

  /** Aborts, with `reason`, every invocation of a capability whose chain passes through one of `membraneIds`. */
  interrupt(membraneIds: Iterable<number>, reason: MembraneError): void {
    for (const capability of this.#capabilities.under(membraneIds)) {
      for (const invocation of [...(this.#invocations.get(capability) ?? [])]) invocation.abort(reason);
    }
  }

  /** Number of membranes with an invocation in flight below them (for tests: nothing is left behind). */
  get size(): number {
    return this.#capabilities.size;
  }
}
