/**
 * Joins small chunks into one, copying each into a block as it comes, so
 * that what waits to be sent costs what it weighs: a stream of one-byte
 * chunks becomes one write of many bytes, and no parser slice (each an
 * object of its own, pinning the buffer it was cut from) is kept.
 */

/** Chunks at least this large are best sent on as they are. */
export const PASS_THROUGH_BYTES = 8 * 1024;
/** Joined chunks are sent once this many bytes wait. */
export const JOIN_BYTES = 64 * 1024;

/** First size of the block chunks are copied into (it doubles as it fills, up to JOIN_BYTES). */
const FIRST_BLOCK_BYTES = 4 * 1024;

export class ChunkJoiner {
  /** A lone chunk waiting, kept as it is: most bodies are one small chunk, and copying it would be waste. */
  #first: Buffer | undefined;
  #block: Buffer | undefined;
  #length = 0;

  /** Bytes waiting. */
  get length(): number {
    return this.#length;
  }

  /** Adds a chunk (smaller than JOIN_BYTES); true once JOIN_BYTES or more wait, so that the caller takes them. */
  add(chunk: Buffer): boolean {
    if (this.#length === 0) {
      this.#first = chunk;
      this.#length = chunk.length;
      return this.#length >= JOIN_BYTES;
    }
    if (this.#first !== undefined) {
      const first = this.#first;
      this.#first = undefined;
      this.#length = 0;
      this.#append(first);
    }
    this.#append(chunk);
    return this.#length >= JOIN_BYTES;
  }

  /** The bytes waiting, as one buffer of their own (undefined when none). */
  take(): Buffer | undefined {
    const length = this.#length;
    if (length === 0) return undefined;
    this.#length = 0;
    if (this.#first !== undefined) {
      const first = this.#first;
      this.#first = undefined;
      return first;
    }
    const block = this.#block!;
    // A full block is handed over whole; a part of one is copied out, and the block kept for the next chunks.
    if (length === block.length) {
      this.#block = undefined;
      return block;
    }
    return Buffer.from(block.subarray(0, length));
  }

  /** Forgets what waits. */
  clear(): void {
    this.#length = 0;
    this.#first = undefined;
    this.#block = undefined;
  }

  #append(chunk: Buffer): void {
    const needed = this.#length + chunk.length;
    if (this.#block === undefined || needed > this.#block.length) {
      let capacity = Math.max(FIRST_BLOCK_BYTES, this.#block?.length ?? 0);
      while (capacity < needed) capacity *= 2;
      const larger = Buffer.allocUnsafe(Math.min(Math.max(capacity, needed), Math.max(JOIN_BYTES, needed)));
      this.#block?.copy(larger, 0, 0, this.#length);
      this.#block = larger;
    }
    chunk.copy(this.#block, this.#length);
    this.#length = needed;
  }
}
