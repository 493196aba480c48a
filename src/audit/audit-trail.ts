/**
 * The audit trail: one JSON line per control-plane action and per
 * invocation, carrying who (tenant, membrane, capability id) did what
 * (action, target host and method) with what result (status, bytes,
 * duration). Never a token, a secret, a header value, a path or a query.
 * Every line has a bounded size: a delegated capability is named by
 * itself, its parent, its root and its chain's length, never by its whole
 * chain.
 *
 * A capability id is an HMAC-SHA256 of the token's hash under the audit
 * key (first 16 bytes, base64url): the same token always has the same id,
 * so lines correlate, but an id reveals nothing of the token.
 *
 * Policy: a mutating control-plane action (membrane create, export,
 * revoke, tenant deleteSelf, tenant create) first writes a durable
 * `request` line; if that fails the action is refused (503) and nothing
 * happens, so control-plane changes fail closed. After the action a
 * `response` line records its status. Reads and invocations write one
 * buffered line each and fail open: an invocation is not refused because
 * the audit sink fails; the failure is logged and counted. The sink counts
 * every line it loses (through `onFailure`), durable lines included.
 *
 * A line is one line for any reader: JSON.stringify escapes C0 controls,
 * and the trail escapes the other characters that some readers (Python's
 * str.splitlines) take as line breaks: U+0085, U+2028 and U+2029.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { ServiceUnavailableError } from '../errors.js';
import type { Sealer } from '../secrets.js';
import type { Store } from '../store/store.js';
import { hashToken, parseCapabilityUri } from '../token.js';
import { join } from 'node:path';
import { AuditUnavailableError, FileAuditSink, NullAuditSink, StreamAuditSink, type AuditFailureHandler, type AuditSink } from './audit-sink.js';

export type AuditAction =
  | 'tenant.create'
  | 'tenant.deleteSelf'
  | 'membrane.create'
  | 'membrane.query'
  | 'membrane.export'
  | 'membrane.revoke'
  | 'capability.invoke'
  | 'capability.denied';

export interface AuditFields {
  tenant?: number;
  membrane?: string;
  /** Id of the capability presented. */
  capability?: string;
  /** Ids of capabilities the action created. */
  created?: string[];
  /** Id of the capability a re-export was made from (of the presented one, when it is a re-export). */
  parent?: string;
  /** Id of the original (uri) export at the root of the presented capability's chain, when it is a re-export. */
  root?: string;
  /** Number of capabilities on the presented capability's chain, itself and its root included, when it is a re-export. */
  chainLength?: number;
  target?: { host: string; method: string };
  status?: number;
  bytesIn?: number;
  bytesOut?: number;
  message?: string;
}

export interface AuditEntry {
  id: string;
  action: AuditAction;
  started: number;
  fields: AuditFields;
}

/** The purpose (GCM additional data) of the sealed audit key. */
export const SEALED_AUDIT_KEY = 'meta.audit-key';

/** The store's audit key (created on first use, sealed under the master key). */
export async function loadAuditKey(store: Store, key: Sealer): Promise<Buffer> {
  const sealed = await store.initMeta('audit-key', key.seal(randomBytes(32), SEALED_AUDIT_KEY));
  return key.unseal(sealed, SEALED_AUDIT_KEY);
}

/** A capability's audit id: HMAC-SHA256 of its token's hash under the audit key, first 16 bytes, base64url. */
export function auditId(auditKey: Buffer, tokenHash: Buffer): string {
  return createHmac('sha256', auditKey).update(tokenHash).digest().subarray(0, 16).toString('base64url');
}

/** Line ids: unique per process (a random prefix) and cheap (a counter). */
const ID_PREFIX = randomBytes(4).toString('hex');
let idCounter = 0;
function nextId(): string {
  idCounter += 1;
  return `${ID_PREFIX}${idCounter.toString(36)}`;
}

/** Characters outside C0 that readers may take as line breaks (JSON.stringify writes them raw). */
const LINE_BREAKS = /[\u0085\u2028\u2029]/g;
const escapeLineBreak = (char: string): string => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;
/** JSON text made safe for a line: the characters JSON.stringify leaves raw that readers may take as line breaks, escaped. */
const oneLine = (json: string): string => json.replace(LINE_BREAKS, escapeLineBreak);

/** The current time as ISO 8601, formatted once per millisecond (a busy server writes many lines in each). */
let isoMillisecond = 0;
let isoText = '';
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMillisecond) {
    isoMillisecond = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

/** What an invocation line says of the capability invoked: the same for each of its invocations. */
export interface InvocationSubject {
  audit: Pick<AuditFields, 'capability' | 'tenant' | 'membrane' | 'parent' | 'root' | 'chainLength'>;
  target: { host: string };
}

export class AuditTrail {
  readonly #sink: AuditSink;
  readonly #key: Buffer;
  /** Per invocation subject, its fields serialized: from `"capability"` to the target's `"host"`. */
  readonly #subjects = new WeakMap<InvocationSubject, string>();
  /** False when the sink is off: callers may skip building events. */
  readonly enabled: boolean;

  constructor(sink: AuditSink, key: Buffer, options: { enabled: boolean }) {
    this.#sink = sink;
    this.#key = key;
    this.enabled = options.enabled;
  }

  /** The capability id of a token hash. */
  idOf(tokenHash: Buffer): string {
    return auditId(this.#key, tokenHash);
  }

  /** The capability id of a token. */
  idOfToken(token: string): string {
    return this.idOf(hashToken(token));
  }

  /** The capability id of a capability URI, if it is one. */
  idOfUri(uri: unknown): string | undefined {
    const parsed = typeof uri === 'string' ? parseCapabilityUri(uri) : undefined;
    return parsed === undefined ? undefined : this.idOfToken(parsed.token);
  }

  /** Writes the durable `request` line of a mutating action; 503 if it cannot. */
  async begin(action: AuditAction, fields: AuditFields): Promise<AuditEntry> {
    const entry: AuditEntry = { id: nextId(), action, started: performance.now(), fields };
    try {
      await this.#sink.writeDurable(this.#line(entry, 'request', fields));
    } catch (error) {
      const reason = error instanceof AuditUnavailableError ? error.message : 'the audit trail cannot be written';
      throw new ServiceUnavailableError(`${reason}; control-plane changes are refused until it can be`);
    }
    return entry;
  }

  /** Writes the `response` line of a mutating action (durably; a failure is only counted and logged, by the sink, as the action has happened). */
  async end(entry: AuditEntry, fields: AuditFields): Promise<void> {
    await this.#sink.writeDurable(this.#line(entry, 'response', { ...entry.fields, ...fields })).catch(() => undefined);
  }

  /** One buffered line for a read, an invocation or a refusal. */
  event(action: AuditAction, started: number, fields: AuditFields): void {
    if (!this.enabled) return;
    this.#sink.write(this.#line({ id: nextId(), action, started, fields }, 'event', fields));
  }

  /**
   * The buffered `capability.invoke` line of one invocation: the same line
   * `event` would write for the subject's fields, the target (host and
   * `method`), `status`, `bytesIn` and `bytesOut`. The subject's part is
   * serialized once per subject object (the resolution cache keeps one per
   * capability), the rest written out: this runs on every invocation.
   */
  invocation(subject: InvocationSubject, started: number, method: string, status: number, bytesIn: number, bytesOut: number): void {
    if (!this.enabled) return;
    let fields = this.#subjects.get(subject);
    if (fields === undefined) {
      const { capability, tenant, membrane, parent, root, chainLength } = subject.audit;
      const json = JSON.stringify({ capability, tenant, membrane, parent, root, chainLength, target: { host: subject.target.host } });
      // Without the closing `}}`, so that the target's method follows its host.
      fields = oneLine(json.slice(1, -2));
      this.#subjects.set(subject, fields);
    }
    this.#sink.write(
      `{"time":"${isoNow()}","type":"audit","id":"${nextId()}","phase":"event","action":"capability.invoke",${fields},"method":${oneLine(JSON.stringify(method))}},` +
        `"status":${status},"bytesIn":${bytesIn},"bytesOut":${bytesOut},"durationMs":${durationSince(started)}}`,
    );
  }

  close(): Promise<void> {
    return this.#sink.close();
  }

  /**
   * `{"time", "type", "id", "phase", "action", …fields, "durationMs"}` as one
   * line. Written out rather than spread into one object for JSON.stringify:
   * this runs on every invocation. The fixed keys need no escaping.
   */
  #line(entry: AuditEntry, phase: 'request' | 'response' | 'event', fields: AuditFields): string {
    const rest = JSON.stringify(fields);
    const duration = phase === 'request' ? '' : `,"durationMs":${durationSince(entry.started)}`;
    return oneLine(`{"time":"${isoNow()}","type":"audit","id":"${entry.id}","phase":"${phase}","action":"${entry.action}"${rest.length > 2 ? `,${rest.slice(1, -1)}` : ''}${duration}}`);
  }
}

/** Milliseconds since `started` (a performance.now() reading), to the microsecond. */
function durationSince(started: number): number {
  return Math.round((performance.now() - started) * 1000) / 1000;
}

/** Opens the audit trail a sink spec names: `off`, `stdout`, `file` (DATA_DIR/audit.log) or `file:PATH`. */
export async function openAuditTrail(options: {
  spec: string;
  dataDir: string;
  store: Store;
  key: Sealer;
  /** Told of every line lost, with how many. */
  onFailure: AuditFailureHandler;
}): Promise<AuditTrail> {
  const auditKey = await loadAuditKey(options.store, options.key);
  const { spec } = options;
  const sink =
    spec === 'off'
      ? new NullAuditSink()
      : spec === 'stdout'
        ? new StreamAuditSink(process.stdout, options.onFailure)
        : spec === 'file'
          ? // The data directory's own file is always 0600; a file named by the operator keeps the mode it has.
            new FileAuditSink(join(options.dataDir, AUDIT_FILE_NAME), options.onFailure, { exactMode: true })
          : new FileAuditSink(spec.slice('file:'.length), options.onFailure);
  return new AuditTrail(sink, auditKey, { enabled: spec !== 'off' });
}

export const AUDIT_FILE_NAME = 'audit.log';
