/**
 * How request bodies must arrive while Membrane reads them: fast enough,
 * and not in chunks too small to be worth their cost.
 *
 * Rate: a body must bring at least `minBytesPerSecond` × the window in
 * every window of `windowMs` (counted in body bytes, so that chunk-size
 * padding or chunk extensions buy nothing), or it is cut off with 408,
 * so that a requester trickling a byte every few seconds cannot hold a
 * connection, a place in flight and a connection to the target for as
 * long as it likes. Only time in which Membrane is reading counts: while
 * the body waits (for a connection to the target, or because the target
 * reads slowly and the relay is paused), the window starts again.
 *
 * Chunks: Node's HTTP server hands over every chunk of a chunked body on
 * its own, at a cost of about 2 µs each whatever its size, so a body of
 * one-byte chunks would cost a core for every 3 MB/s a requester sends.
 * In each window a body may bring FREE_CHUNKS_PER_SECOND chunks a second
 * and one more for every MIN_AVERAGE_CHUNK_BYTES bytes; beyond that it is
 * cut off with 400, at once. Line-at-a-time streams (a chunk per event,
 * a few a second) and uploads in chunks of a few dozen bytes or more pass.
 *
 * The readers (the buffering of a signed or control-plane body, the relay
 * of a streamed one) report each chunk. One timer serves every watched
 * body, and runs only while there is one.
 */
import type { IncomingMessage } from 'node:http';
import { BadRequestError, RequestTimeoutError, type MembraneError } from './errors.js';

export interface BodyRateOptions {
  /** Least average rate a body must keep up in each window, bytes per second; 0 turns the rate check off. */
  minBytesPerSecond: number;
  windowMs: number;
}

/** Chunks a body may bring each second whatever their size. */
export const FREE_CHUNKS_PER_SECOND = 100;
/** Beyond those, one chunk for every this many bytes. */
export const MIN_AVERAGE_CHUNK_BYTES = 32;

/** A body being watched, as its reader sees it. */
export interface WatchedBody {
  /** The reader took a chunk of `bytes` bytes of the body. */
  received(bytes: number): void;
  /** The reader is done with the body (or gave up on it). */
  stop(): void;
}

/** How often watched bodies are looked at, at most (finer for short windows). */
const SWEEP_MS = 1000;

class Watched implements WatchedBody {
  /** When the current window began, and the body's bytes and chunks within it. */
  since: number;
  bytes = 0;
  chunks = 0;
  #stopped = false;

  constructor(
    readonly watch: BodyRateWatch,
    readonly req: IncomingMessage,
    readonly onStall: (problem: MembraneError) => void,
  ) {
    this.since = Date.now();
  }

  received(bytes: number): void {
    this.bytes += bytes;
    this.chunks += 1;
    // Cheap bound first: only a body near its allowance reads the clock.
    if (this.chunks <= FREE_CHUNKS_PER_SECOND + this.bytes / MIN_AVERAGE_CHUNK_BYTES) return;
    const seconds = Math.max(1, (Date.now() - this.since) / 1000);
    if (this.chunks > FREE_CHUNKS_PER_SECOND * seconds + this.bytes / MIN_AVERAGE_CHUNK_BYTES) this.stall(TOO_MANY_CHUNKS);
  }

  /** Starts a new window. */
  restart(now: number): void {
    this.since = now;
    this.bytes = 0;
    this.chunks = 0;
  }

  stall(problem: MembraneError): void {
    if (this.#stopped) return;
    this.stop();
    this.onStall(problem);
  }

  stop(): void {
    this.#stopped = true;
    this.watch.forget(this);
  }
}

const TOO_MANY_CHUNKS = new BadRequestError(
  `the request body arrives in too many small chunks (more than ${FREE_CHUNKS_PER_SECOND} a second beyond one for every ${MIN_AVERAGE_CHUNK_BYTES} bytes)`,
);

export class BodyRateWatch {
  readonly #options: BodyRateOptions;
  readonly #watched = new Set<Watched>();
  readonly #sweepMs: number;
  readonly #tooSlow: RequestTimeoutError;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: BodyRateOptions) {
    this.#options = options;
    this.#sweepMs = Math.max(10, Math.min(SWEEP_MS, Math.floor(options.windowMs / 4)));
    this.#tooSlow = new RequestTimeoutError(
      `the request body arrived more slowly than ${options.minBytesPerSecond} bytes per second (over ${options.windowMs / 1000} s)`,
    );
  }

  /** The least number of bytes a window must bring. */
  get minimumPerWindow(): number {
    return (this.#options.minBytesPerSecond * this.#options.windowMs) / 1000;
  }

  /**
   * Watches `req`'s body, which its reader reports chunk by chunk, until
   * the reader stops it; `onStall` is called (once) with a 408 if a window
   * passes in which the body was being read but brought too little, or
   * with a 400 as soon as it arrives in too many small chunks.
   */
  watch(req: IncomingMessage, onStall: (problem: MembraneError) => void): WatchedBody {
    const watched = new Watched(this, req, onStall);
    this.#watched.add(watched);
    if (this.#options.minBytesPerSecond > 0) this.#timer ??= setInterval(this.#sweep, this.#sweepMs).unref();
    return watched;
  }

  /** Number of bodies watched now (for tests: nothing is left behind). */
  get size(): number {
    return this.#watched.size;
  }

  forget(watched: Watched): void {
    this.#watched.delete(watched);
    if (this.#watched.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
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
      if (req.readableFlowing !== true) {
        // Membrane is not reading it now: the requester is not the one holding it up.
        watched.restart(now);
      } else if (now - watched.since >= this.#options.windowMs) {
        if (watched.bytes < this.minimumPerWindow && !req.complete) watched.stall(this.#tooSlow);
        else watched.restart(now);
      }
    }
  };
}
