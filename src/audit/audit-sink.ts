/**
 * Where audit lines go: a file (appended), stdout, or nowhere.
 *
 * File sink fsync policy: a durable write (control-plane actions) is
 * written and fsynced before it resolves; buffered lines (invocations) are
 * written in batches, at least every 50 ms, and fsynced at least once a
 * second, so a crash loses at most about the last second of them. The file is
 * opened O_APPEND, so several processes (a server and `membrane tenant
 * create`) can append to one file without tearing lines. A new file is
 * created with mode 0600; with `exactMode`, an existing one is set to 0600.
 *
 * Rotation: before each batch is written (not per line), the sink compares
 * the file it holds open with the one at its path; when the file was moved
 * away or deleted, it fsyncs and closes the old one and opens (creates) the
 * path again.
 *
 * Failures: every line a sink could not write (or fsync) is reported
 * through `onFailure`, with how many lines were lost, whether the line was
 * durable or buffered.
 */
import { closeSync, fchmodSync, fstatSync, fsync, openSync, statSync, write } from 'node:fs';

/** The sink could not take a line; the message says why (no secrets in it). */
export class AuditUnavailableError extends Error {
  readonly code = 'MEMBRANE_AUDIT_UNAVAILABLE';
}

/** Reports `lines` audit lines lost to `error`. */
export type AuditFailureHandler = (error: Error, lines: number) => void;

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

const noop = (): void => undefined;

/** Why a line could not be written, for an AuditUnavailableError: an errno code, or the message. */
function reason(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message;
}

/**
 * Writes each line to a stream (stdout) as it comes; no fsync. Once the
 * stream fails (a closed pipe: EPIPE), it is broken for good: durable
 * writes are refused and every later line is counted as lost, without
 * touching the stream again.
 */
export class StreamAuditSink implements AuditSink {
  readonly #stream: NodeJS.WritableStream;
  readonly #onFailure: AuditFailureHandler;
  #broken: Error | undefined;
  readonly #afterWrite = (error?: Error | null): void => {
    if (error) this.#fail(error);
  };

  constructor(stream: NodeJS.WritableStream, onFailure: AuditFailureHandler = noop) {
    this.#stream = stream;
    this.#onFailure = onFailure;
    // Without a listener, the stream's 'error' event would end the process.
    stream.on('error', (error: Error) => (this.#broken ??= error));
  }

  writeDurable(line: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const refuse = (error: Error): void => {
        this.#fail(error);
        reject(new AuditUnavailableError(`the audit stream cannot be written (${reason(error)})`));
      };
      if (this.#broken !== undefined) refuse(this.#broken);
      else this.#stream.write(`${line}\n`, (error?: Error | null) => (error ? refuse(error) : resolve()));
    });
  }

  write(line: string): void {
    if (this.#broken !== undefined) this.#fail(this.#broken);
    else this.#stream.write(`${line}\n`, this.#afterWrite);
  }

  async close(): Promise<void> {}

  #fail(error: Error): void {
    this.#broken ??= error;
    this.#onFailure(error, 1);
  }
}

const FSYNC_INTERVAL_MS = 1000;
/** Buffered lines are written at least this often, or as soon as this many bytes wait. */
const FLUSH_INTERVAL_MS = 50;
const FLUSH_BYTES = 64 * 1024;
const NEWLINE = 0x0a;

/** Lines waiting to be written together; `written` is set once their write is scheduled. */
class Batch {
  lines: string[] = [];
  bytes = 0;
  durable = false;
  written: Promise<void> | undefined;
}

export class FileAuditSink implements AuditSink {
  readonly #path: string;
  readonly #onFailure: AuditFailureHandler;
  readonly #exactMode: boolean;
  #fd: number | undefined;
  #batch = new Batch();
  #flushTimer: NodeJS.Timeout | undefined;
  /** Lines written since the last fsync (lost, and counted, if it fails). */
  #unsynced = 0;
  /** The last write ended inside a line: the next write to this file starts a new line. */
  #torn = false;
  /**
   * The last step (a batch's write or an fsync) scheduled. Steps run one
   * after another, so lines keep their order and only one step at a time
   * uses (or replaces) the file descriptor. It never rejects.
   */
  #tail: Promise<void> = Promise.resolve();
  readonly #syncTimer: NodeJS.Timeout;

  constructor(path: string, onFailure: AuditFailureHandler = noop, options: { exactMode?: boolean } = {}) {
    this.#path = path;
    this.#onFailure = onFailure;
    this.#exactMode = options.exactMode === true;
    this.#syncTimer = setInterval(() => {
      if (this.#unsynced > 0) this.#step(() => this.#fsync()).catch(noop);
    }, FSYNC_INTERVAL_MS);
    this.#syncTimer.unref();
  }

  async writeDurable(line: string): Promise<void> {
    this.#queue(line).durable = true;
    try {
      await this.#flush();
    } catch (error) {
      throw new AuditUnavailableError(`the audit file cannot be written (${reason(error)})`);
    }
  }

  write(line: string): void {
    if (this.#queue(line).bytes >= FLUSH_BYTES) this.#flush().catch(noop);
    else this.#flushTimer ??= setTimeout(() => this.#flush().catch(noop), FLUSH_INTERVAL_MS);
  }

  async close(): Promise<void> {
    clearInterval(this.#syncTimer);
    await this.#flush().catch(noop);
    await this.#step(() => this.#closeFile()).catch(noop);
  }

  #queue(line: string): Batch {
    const batch = this.#batch;
    batch.lines.push(line);
    batch.bytes += line.length + 1;
    return batch;
  }

  /**
   * Schedules the queued lines to be written after the steps already
   * scheduled (lines queued meanwhile join them); resolves or rejects with
   * that write. With nothing queued, resolves once every step has run.
   */
  #flush(): Promise<void> {
    if (this.#flushTimer !== undefined) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = undefined;
    }
    const batch = this.#batch;
    if (batch.lines.length === 0) return this.#tail;
    return (batch.written ??= this.#step(() => {
      this.#batch = new Batch();
      return this.#writeBatch(batch);
    }));
  }

  #step(run: () => Promise<void>): Promise<void> {
    const result = this.#tail.then(run);
    this.#tail = result.then(noop, noop);
    return result;
  }

  /** Writes a batch (fsynced if it holds a durable line); counts the lines lost if it fails. */
  async #writeBatch(batch: Batch): Promise<void> {
    const text = `${batch.lines.join('\n')}\n`;
    let buffer: Buffer | undefined;
    let offset = 0;
    try {
      const fd = await this.#openFile();
      buffer = Buffer.from(this.#torn ? `\n${text}` : text, 'utf8');
      while (offset < buffer.length) {
        offset += await new Promise<number>((resolve, reject) =>
          write(fd, buffer!, offset, buffer!.length - offset, null, (error, written) => (error ? reject(error) : resolve(written))),
        );
      }
      this.#torn = false;
    } catch (error) {
      const complete = buffer === undefined ? 0 : countLines(buffer.subarray(this.#torn ? 1 : 0, offset));
      if (offset > 0) this.#torn = buffer![offset - 1] !== NEWLINE;
      this.#unsynced += complete;
      this.#onFailure(error as Error, batch.lines.length - complete);
      throw error;
    }
    this.#unsynced += batch.lines.length;
    if (batch.durable) await this.#fsync();
  }

  /** The file descriptor of the file at the path: opened (created) if need be, reopened if that file was moved or deleted. */
  async #openFile(): Promise<number> {
    if (this.#fd !== undefined) {
      if (!this.#moved(this.#fd)) return this.#fd;
      await this.#closeFile();
    }
    const fd = openSync(this.#path, 'a', 0o600);
    try {
      if (this.#exactMode && (fstatSync(fd).mode & 0o777) !== 0o600) fchmodSync(fd, 0o600);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    this.#fd = fd;
    this.#torn = false;
    return fd;
  }

  /** True when the path no longer names the open file (moved away, deleted, replaced). */
  #moved(fd: number): boolean {
    let named;
    try {
      named = statSync(this.#path, { bigint: true });
    } catch (error) {
      // Only a missing file is a reason to reopen; on any other error the open file is kept.
      return (error as NodeJS.ErrnoException).code === 'ENOENT';
    }
    const open = fstatSync(fd, { bigint: true });
    return named.ino !== open.ino || named.dev !== open.dev;
  }

  /** Fsyncs (failures are counted) and closes the open file, if any. */
  async #closeFile(): Promise<void> {
    const fd = this.#fd;
    if (fd === undefined) return;
    await this.#fsync().catch(noop);
    this.#fd = undefined;
    closeSync(fd);
  }

  /** Fsyncs the lines written since the last fsync; if it fails, they are counted as lost. */
  async #fsync(): Promise<void> {
    const fd = this.#fd;
    const lines = this.#unsynced;
    if (fd === undefined || lines === 0) return;
    this.#unsynced = 0;
    try {
      await new Promise<void>((resolve, reject) => fsync(fd, (error) => (error ? reject(error) : resolve())));
    } catch (error) {
      this.#onFailure(error as Error, lines);
      throw error;
    }
  }
}

function countLines(bytes: Buffer): number {
  let count = 0;
  for (let at = bytes.indexOf(NEWLINE); at !== -1; at = bytes.indexOf(NEWLINE, at + 1)) count += 1;
  return count;
}
