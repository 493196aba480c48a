/**
 * Where audit lines go: a file (appended), stdout, or nowhere.
 *
 * File sink fsync policy: a durable write (control-plane actions) is
 * written and fsynced before it resolves; a buffered write (invocations) is
 * written within one event-loop turn and fsynced at most a second later, so
 * a crash loses at most the last second of invocation lines. The file is
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

export class FileAuditSink implements AuditSink {
  readonly #path: string;
  readonly #onFailure: (error: Error) => void;
  #fd: number | undefined;
  #pending: string[] = [];
  #flushScheduled = false;
  #dirty = false;
  /** Serializes every write and sync on the file, in order. */
  #chain: Promise<void> = Promise.resolve();
  readonly #timer: NodeJS.Timeout;

  constructor(path: string, onFailure: (error: Error) => void = () => undefined) {
    this.#path = path;
    this.#onFailure = onFailure;
    this.#timer = setInterval(() => {
      if (this.#dirty) this.#enqueue(() => this.#sync()).catch((error: Error) => this.#onFailure(error));
    }, FSYNC_INTERVAL_MS);
    this.#timer.unref();
  }

  writeDurable(line: string): Promise<void> {
    const lines = [...this.#pending.splice(0), line];
    return this.#enqueue(async () => {
      await this.#append(lines.join('\n') + '\n');
      await this.#sync();
    }).catch((error: Error) => {
      throw new AuditUnavailableError(`the audit file cannot be written (${(error as NodeJS.ErrnoException).code ?? error.message})`);
    });
  }

  write(line: string): void {
    this.#pending.push(line);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      const lines = this.#pending.splice(0);
      if (lines.length === 0) return;
      this.#enqueue(() => this.#append(lines.join('\n') + '\n')).catch((error: Error) => this.#onFailure(error));
    });
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    const lines = this.#pending.splice(0);
    await this.#enqueue(async () => {
      if (lines.length > 0) await this.#append(lines.join('\n') + '\n');
      if (this.#dirty) await this.#sync();
    }).catch((error: Error) => this.#onFailure(error));
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #enqueue(step: () => Promise<void>): Promise<void> {
    const run = this.#chain.then(step);
    this.#chain = run.catch(() => undefined);
    return run;
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
    await new Promise<void>((resolve, reject) => fsync(this.#fd!, (error) => (error ? reject(error) : resolve())));
    this.#dirty = false;
  }
}
