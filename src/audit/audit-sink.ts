/**
 * Where audit lines go: a file (appended), stdout, or nowhere.
 *
 * File sink fsync policy: a durable write (control-plane actions) is
 * written and fsynced before it resolves; buffered lines (invocations) are
 * written in batches, at least every 50 ms, and fsynced at least once a
 * second, so a crash loses at most about the last second of them. The file is
 * opened O_APPEND (mode 0600), so several processes (a server and
 * `membrane tenant create`) can append to one file without tearing lines.
 */
import { closeSync, fsync, openSync, write } from 'node:fs';

/** The sink could not take a line; the message says why (no secrets in it). */
export class AuditUnavailableError extends Error {
  readonly code = 'MEMBRANE_AUDIT_UNAVAILABLE';
}

export interface AuditSink {
  /** Appends a line and resolves once it is durable; rejects with AuditUnavailableError otherwise. */
  writeDurable(line: string): Promise<void>;
  /** Appends a line in the background; failures are reported through `onFailure`. */
  write(line: string): void;
  /** Flushes, syncs and closes. */
  close(): Promise<void>;
}

export class NullAuditSink implements AuditSink {
  async writeDurable(): Promise<void> {}
  write(): void {}
  async close(): Promise<void> {}
}

export class StreamAuditSink implements AuditSink {
  readonly #stream: NodeJS.WritableStream;
  constructor(stream: NodeJS.WritableStream) {
    this.#stream = stream;
  }
  writeDurable(line: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.#stream.write(`${line}\n`, (error) => (error ? reject(new AuditUnavailableError(`the audit stream failed: ${error.message}`)) : resolve())),
    );
  }
  write(line: string): void {
    this.#stream.write(`${line}\n`);
  }
  async close(): Promise<void> {}
}

const FSYNC_INTERVAL_MS = 1000;
/** Buffered lines are written at least this often, or as soon as this many bytes wait. */
const FLUSH_INTERVAL_MS = 50;
const FLUSH_BYTES = 64 * 1024;

export class FileAuditSink implements AuditSink {
  readonly #path: string;
  readonly #onFailure: (error: Error) => void;
  #fd: number | undefined;
  #pending: string[] = [];
  #pendingBytes = 0;
  #flushTimer: NodeJS.Timeout | undefined;
  #dirty = false;
  /** The write in progress, if any; flushes never overlap, so lines keep their order. */
  #flushing: Promise<void> | undefined;
  readonly #syncTimer: NodeJS.Timeout;

  constructor(path: string, onFailure: (error: Error) => void = () => undefined) {
    this.#path = path;
    this.#onFailure = onFailure;
    this.#syncTimer = setInterval(() => {
      if (this.#dirty) this.#sync().catch((error: Error) => this.#onFailure(error));
    }, FSYNC_INTERVAL_MS);
    this.#syncTimer.unref();
  }

  async writeDurable(line: string): Promise<void> {
    this.#queue(line);
    try {
      await this.#flush();
      await this.#sync();
    } catch (error) {
      throw new AuditUnavailableError(`the audit file cannot be written (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
  }

  write(line: string): void {
    this.#queue(line);
    if (this.#pendingBytes >= FLUSH_BYTES) this.#flushInBackground();
    else this.#flushTimer ??= setTimeout(() => this.#flushInBackground(), FLUSH_INTERVAL_MS);
  }

  async close(): Promise<void> {
    clearInterval(this.#syncTimer);
    try {
      await this.#flush();
      if (this.#dirty) await this.#sync();
    } catch (error) {
      this.#onFailure(error as Error);
    }
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #queue(line: string): void {
    this.#pending.push(line);
    this.#pendingBytes += line.length + 1;
  }

  #flushInBackground(): void {
    this.#flush().catch((error: Error) => this.#onFailure(error));
  }

  /** Writes every queued line (after any write already in progress). */
  async #flush(): Promise<void> {
    if (this.#flushTimer !== undefined) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = undefined;
    }
    while (this.#flushing !== undefined) await this.#flushing.catch(() => undefined);
    if (this.#pending.length === 0) return;
    const text = `${this.#pending.join('\n')}\n`;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#flushing = this.#append(text);
    try {
      await this.#flushing;
    } finally {
      this.#flushing = undefined;
    }
  }

  async #append(text: string): Promise<void> {
    // (Re)opened lazily, so a sink that could not open its file recovers once it can.
    this.#fd ??= openSync(this.#path, 'a', 0o600);
    const buffer = Buffer.from(text, 'utf8');
    let offset = 0;
    while (offset < buffer.length) {
      offset += await new Promise<number>((resolve, reject) =>
        write(this.#fd!, buffer, offset, buffer.length - offset, null, (error, written) => (error ? reject(error) : resolve(written))),
      );
    }
    this.#dirty = true;
  }

  async #sync(): Promise<void> {
    if (this.#fd === undefined) return;
    this.#dirty = false;
    await new Promise<void>((resolve, reject) => fsync(this.#fd!, (error) => (error ? reject(error) : resolve())));
  }
}
