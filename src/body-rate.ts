/**
 * The minimum rate of request bodies: a body being read must bring at
 * least `minBytesPerSecond` × the window in every window of `windowMs`
 * (counted in bytes read from the connection), or it is cut off, so that a
 * requester trickling a byte every few seconds cannot hold a connection,
 * a place in flight and a connection to the target for as long as it likes.
 *
 * Only time in which Membrane is reading counts: while the body waits
 * (for a connection to the target, or because the target reads slowly and
 * the relay is paused), the window starts again. One timer serves every
 * watched body, and runs only while there is one.
 */
import type { IncomingMessage } from 'node:http';

export interface BodyRateOptions {
  /** Least average rate a body must keep up in each window, bytes per second; 0 turns the check off. */
  minBytesPerSecond: number;
  windowMs: number;
}

interface Watched {
  req: IncomingMessage;
  /** When the current window began, and the connection's bytes read then. */
  since: number;
  bytesAt: number;
  onStall: () => void;
}

/** How often watched bodies are looked at, at most (finer for short windows). */
const SWEEP_MS = 1000;

export class BodyRateWatch {
  readonly #options: BodyRateOptions;
  readonly #watched = new Set<Watched>();
  readonly #sweepMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: BodyRateOptions) {
    this.#options = options;
    this.#sweepMs = Math.max(10, Math.min(SWEEP_MS, Math.floor(options.windowMs / 4)));
  }

  /** The least number of bytes a window must bring. */
  get minimumPerWindow(): number {
    return (this.#options.minBytesPerSecond * this.#options.windowMs) / 1000;
  }

  /** Why a body was cut off, for its 408. */
  get stallMessage(): string {
    return `the request body arrived more slowly than ${this.#options.minBytesPerSecond} bytes per second (over ${this.#options.windowMs / 1000} s)`;
  }

  /**
   * Watches `req`'s body until it is complete or `unwatch` is called;
   * `onStall` is called (once) if a window passes in which the body was
   * being read but brought too little.
   */
  watch(req: IncomingMessage, onStall: () => void): () => void {
    if (this.#options.minBytesPerSecond === 0 || req.complete) return noop;
    const watched: Watched = { req, since: Date.now(), bytesAt: req.socket?.bytesRead ?? 0, onStall };
    this.#watched.add(watched);
    this.#timer ??= setInterval(this.#sweep, this.#sweepMs).unref();
    return () => this.#forget(watched);
  }

  /** Number of bodies watched now (for tests: nothing is left behind). */
  get size(): number {
    return this.#watched.size;
  }

  close(): void {
    this.#watched.clear();
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  readonly #sweep = (): void => {
    const now = Date.now();
    for (const watched of this.#watched) {
      const { req } = watched;
      const read = req.socket?.bytesRead ?? 0;
      if (req.complete || req.destroyed) {
        this.#forget(watched);
      } else if (req.readableFlowing !== true) {
        // Membrane is not reading it now: the requester is not the one holding it up.
        watched.since = now;
        watched.bytesAt = read;
      } else if (now - watched.since >= this.#options.windowMs) {
        if (read - watched.bytesAt < this.minimumPerWindow) {
          this.#forget(watched);
          watched.onStall();
        } else {
          watched.since = now;
          watched.bytesAt = read;
        }
      }
    }
  };

  #forget(watched: Watched): void {
    this.#watched.delete(watched);
    if (this.#watched.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

const noop = (): void => undefined;
