/**
 * The requester's body as the stream undici sends to the target, with
 * backpressure both ways.
 *
 * Small chunks are joined before they go on: the HTTP parser hands over
 * each chunk of a chunked body as it is, so a body of one-byte chunks
 * would otherwise become one write to the target (and one chunk header)
 * per byte. Chunks read from the requester in one go (one read from its
 * connection) are joined into one, up to JOIN_BYTES; a chunk of
 * PASS_THROUGH_BYTES or more goes on as it is. (Node's HTTP server hands
 * the chunks of one read over one per tick, so they are joined until the
 * event loop turns: setImmediate, not nextTick.)
 *
 * It is a stream of its own, which undici may destroy on failure without
 * destroying the requester's socket (which must still carry the answer).
 */
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import type { WatchedBody } from '../body-rate.js';
import { ChunkJoiner, JOIN_BYTES, PASS_THROUGH_BYTES } from './chunk-joiner.js';

export class UploadRelay extends Readable {
  readonly #req: IncomingMessage;
  readonly #counted: { bytesIn: number };
  readonly #watched: WatchedBody;
  readonly #waiting = new ChunkJoiner();
  #joinScheduled = false;
  #detached = false;

  /** `counted.bytesIn` grows by every byte read from the requester; `watched` is told of every chunk (and stopped with the relay). */
  constructor(req: IncomingMessage, counted: { bytesIn: number }, watched: WatchedBody) {
    super({ highWaterMark: JOIN_BYTES });
    this.#req = req;
    this.#counted = counted;
    this.#watched = watched;
    req.on('data', this.#onData);
    req.on('end', this.#onEnd);
    req.on('error', this.#onError);
    req.on('aborted', this.#onAborted);
  }

  /**
   * Stops relaying (the exchange has ended): the requester's body is no
   * longer read into this stream, and the rest of an unfinished one is not
   * read at all (its connection is closed after the answer).
   */
  detach(): void {
    this.#detached = true;
    this.#watched.stop();
    if (!this.#req.complete) this.#req.pause();
    this.#req.off('data', this.#onData);
    this.#req.off('end', this.#onEnd);
    this.#req.off('error', this.#onError);
    this.#req.off('aborted', this.#onAborted);
    this.#waiting.clear();
  }

  override _read(): void {
    this.#req.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.detach();
    callback(error);
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#counted.bytesIn += chunk.length;
    this.#watched.received(chunk.length); // may end the exchange, and so detach this relay
    if (this.#detached) return;
    if (chunk.length >= PASS_THROUGH_BYTES) {
      this.#join();
      this.#send(chunk);
      return;
    }
    if (this.#waiting.add(chunk)) this.#join();
    else if (!this.#joinScheduled) {
      this.#joinScheduled = true;
      setImmediate(this.#joinLater);
    }
  };

  readonly #joinLater = (): void => {
    this.#joinScheduled = false;
    this.#join();
  };

  /** Sends the chunks waiting as one. */
  #join(): void {
    const joined = this.#waiting.take();
    if (joined !== undefined) this.#send(joined);
  }

  #send(chunk: Buffer): void {
    if (!this.destroyed && !this.push(chunk)) this.#req.pause();
  }

  readonly #onEnd = (): void => {
    this.#join();
    if (!this.destroyed) this.push(null);
  };

  readonly #onError = (error: Error): void => {
    this.destroy(error);
  };

  readonly #onAborted = (): void => {
    this.destroy(new Error('requester aborted'));
  };
}
