/**
 * The invocations in flight, indexed by every membrane on their
 * capability's chain, so that revoking a membrane ends each invocation it
 * kills, however deep below it, as surely as it refuses new ones.
 */
import type { MembraneError } from '../errors.js';

/** An invocation that can be ended from outside. */
export interface Interruptible {
  abort(reason: MembraneError): void;
}

export class InvocationsInFlight {
  readonly #byMembrane = new Map<number, Set<Interruptible>>();

  /** Records an invocation of a capability whose chain passes through `membraneIds`. */
  add(membraneIds: readonly number[], invocation: Interruptible): void {
    for (const id of membraneIds) {
      let invocations = this.#byMembrane.get(id);
      if (invocations === undefined) this.#byMembrane.set(id, (invocations = new Set()));
      invocations.add(invocation);
    }
  }

  /** Forgets an invocation that has ended. */
  remove(membraneIds: readonly number[], invocation: Interruptible): void {
    for (const id of membraneIds) {
      const invocations = this.#byMembrane.get(id);
      if (invocations === undefined) continue;
      invocations.delete(invocation);
      if (invocations.size === 0) this.#byMembrane.delete(id);
    }
  }

  /** Aborts, with `reason`, every invocation whose chain passes through one of `membraneIds`. */
  interrupt(membraneIds: Iterable<number>, reason: MembraneError): void {
    for (const id of membraneIds) {
      const invocations = this.#byMembrane.get(id);
      if (invocations === undefined) continue;
      for (const invocation of [...invocations]) invocation.abort(reason);
    }
  }

  /** Number of membranes with an invocation in flight (for tests: nothing is left behind). */
  get size(): number {
    return this.#byMembrane.size;
  }
}
