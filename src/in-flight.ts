/**
 * One invocation in flight, as something that can be ended from outside:
 * by a revocation of a membrane on its capability's chain (401, or a cut
 * stream once the answer has started), or by its body arriving too slowly
 * (408). Whichever step the invocation is at (waiting for a connection,
 * reading the body to sign it, exchanging with the target) registers how
 * to stop it; an abort that comes before any step registered is kept and
 * ends the next step as soon as it registers.
 */
import type { MembraneError } from './errors.js';

/** What a step of an invocation needs to be stopped from outside. */
export interface Abortable {
  /** Sets how the current step stops (replacing the previous step's); runs it at once if already aborted. */
  whenAborted(stop: (reason: MembraneError) => void): void;
}

export class InFlight implements Abortable {
  #reason: MembraneError | undefined;
  #stop: ((reason: MembraneError) => void) | undefined;

  /** Why it was aborted, if it was. */
  get aborted(): MembraneError | undefined {
    return this.#reason;
  }

  /** Ends the invocation with `reason` (the first abort wins; later ones change nothing). */
  abort(reason: MembraneError): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    const stop = this.#stop;
    this.#stop = undefined;
    stop?.(reason);
  }

  /** Sets how the current step stops (replacing the previous step's); runs it at once if already aborted. */
  whenAborted(stop: (reason: MembraneError) => void): void {
    if (this.#reason !== undefined) stop(this.#reason);
    else this.#stop = stop;
  }
}
