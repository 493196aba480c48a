/**
 * Reading a whole request body into memory, bounded three ways: one body
 * may hold at most `limit` bytes (413 beyond); all bodies held at once may
 * hold at most a shared budget, with fair shares per tenant and per
 * capability (503 and `Retry-After` beyond); and a body must keep arriving
 * at the minimum body rate (408 otherwise).
 *
 * A body costs about what it weighs, however it is cut into chunks: its
 * bytes are copied into one buffer as they arrive (never kept as a list of
 * the parser's chunks, each an object of its own), sized from
 * `Content-Length` when there is one and otherwise doubled as it fills.
 * Budget is reserved before memory is taken: the declared length at once
 * (so an oversized wave of uploads is refused before anything is read),
 * or each growth of the buffer for a body without a length.
 */
import type { IncomingMessage } from 'node:http';
import type { BodyRateWatch } from './body-rate.js';
import { BadRequestError, PayloadTooLargeError, ServiceUnavailableError } from './errors.js';
import type { Abortable } from './in-flight.js';
import type { Holder, Refusal, SharedLimit } from './shares.js';

/** Bytes of request bodies held for one request, reserved from the shared budget and given back together. */
export class BodyBudgetLease {
  #reserved = 0;

  constructor(
    readonly budget: SharedLimit,
    readonly holder: Holder,
  ) {}

  /** Reserves `bytes` more; throws 503 if the budget or a share is spent. */
  reserve(bytes: number): void {
    const refusal = this.budget.take(this.holder, bytes);
    if (refusal !== undefined) throw new ServiceUnavailableError(BUDGET_MESSAGES[refusal], { 'retry-after': '1' });
    this.#reserved += bytes;
  }

  /** Gives back everything reserved. */
  release(): void {
    this.budget.release(this.holder, this.#reserved);
    this.#reserved = 0;
  }
}

const BUDGET_MESSAGES: Record<Refusal, string> = {
  total: 'too many request bodies are held in memory right now; try again shortly',
  tenant: "this tenant's capabilities hold their share of the memory for request bodies; try again shortly",
  capability: 'this capability holds its share of the memory for request bodies; try again shortly',
};

export interface ReadBodyOptions {
  /** Largest body, in bytes (413 beyond). */
  limit: number;
  /** Where the body's memory is reserved; without one, only `limit` bounds it. */
  lease?: BodyBudgetLease | undefined;
  /** Cuts the body off if it arrives below the minimum rate (408) or in too many small chunks (400). */
  rate?: BodyRateWatch | undefined;
  /** Reads the body to its end but keeps none of it (a body the request ignores): resolves to an empty buffer, and takes no memory. */
  discard?: boolean | undefined;
  /** The invocation the body belongs to: aborting it stops the read (which rejects with the reason). */
  invocation?: Abortable | undefined;
}

/** First size of the buffer of a body without a length (it doubles as it fills). */
const INITIAL_CAPACITY = 16 * 1024;

/**
 * Reads the whole body, refusing as soon as `Content-Length`, the bytes
 * received, the budget or the rate say so. On refusal the rest is left
 * unread (the caller closes the connection after answering).
 */
export function readBody(req: IncomingMessage, options: ReadBodyOptions): Promise<Buffer> {
  const { limit, lease } = options;
  const tooLarge = (): PayloadTooLargeError => new PayloadTooLargeError(`the request body must be at most ${limit} bytes`);
  const header = req.headers['content-length'];
  const declared = header === undefined ? undefined : Number(header);
  if (declared !== undefined && declared > limit) return Promise.reject(tooLarge());
  if (req.readableEnded) return Promise.resolve(Buffer.alloc(0));
  try {
    if (declared !== undefined && options.discard !== true) lease?.reserve(declared);
  } catch (error) {
    return Promise.reject(error as Error);
  }
  return new Promise((resolve, reject) => {
    let buffer = Buffer.allocUnsafe(declared === undefined ? 0 : Math.min(declared, 64 * 1024));
    let received = 0;
    let settled = false;
    const finish = (): void => {
      settled = true;
      watched?.stop();
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onCut);
      req.off('close', onCut);
    };
    const refuse = (error: Error): void => {
      if (settled) return;
      finish();
      req.pause();
      reject(error);
    };
    /** Room for `more` bytes: the buffer doubled (within the declared length or the limit), its growth reserved first when no length was declared. */
    const grow = (more: number): void => {
      const needed = received + more;
      const ceiling = declared ?? limit;
      let capacity = Math.max(buffer.length * 2, declared === undefined ? INITIAL_CAPACITY : 64 * 1024);
      while (capacity < needed) capacity *= 2;
      capacity = Math.min(capacity, ceiling);
      if (declared === undefined) lease?.reserve(capacity - buffer.length);
      const larger = Buffer.allocUnsafe(capacity);
      buffer.copy(larger, 0, 0, received);
      buffer = larger;
    };
    const onData = (chunk: Buffer): void => {
      if (received + chunk.length > limit) {
        refuse(tooLarge());
        return;
      }
      if (options.discard === true) {
        received += chunk.length;
        watched?.received(chunk.length);
        return;
      }
      try {
        if (received + chunk.length > buffer.length) grow(chunk.length);
      } catch (error) {
        refuse(error as Error);
        return;
      }
      chunk.copy(buffer, received);
      received += chunk.length;
      watched?.received(chunk.length);
    };
    const onEnd = (): void => {
      if (settled) return;
      finish();
      resolve(options.discard === true ? Buffer.alloc(0) : buffer.subarray(0, received));
    };
    // The connection went before the body was complete (the client left, or its body was malformed).
    const onCut = (): void => refuse(new BadRequestError('the request body ended before it was complete'));
    const watched = options.rate?.watch(req, refuse);
    options.invocation?.whenAborted(refuse);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onCut);
    req.on('close', onCut);
  });
}
