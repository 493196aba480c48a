/**
 * Forwards an invocation to its target and streams the answer back.
 *
 * Connections to targets are pooled and kept alive (one undici Agent for
 * default TLS settings, one per distinct `tls` config). Request and
 * response bodies stream with backpressure; the one exception is a request
 * body that a signature covers, which is buffered (up to a limit) to hash it.
 * A signed request goes out with one field line per header name and an
 * explicit Host, exactly as its signer saw it.
 * Failures before the target answers become typed errors (502, 504) whose
 * messages name the kind of failure but never an address; a failure after
 * the answer has started cuts the stream to the requester.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import { Agent, type Dispatcher } from 'undici';
import { BodyBudgetLease, readBody } from '../body.js';
import type { BodyRateWatch } from '../body-rate.js';
import { BadGatewayError, GatewayTimeoutError, MembraneError } from '../errors.js';
import type { InFlight } from '../in-flight.js';
import type { Holder, SharedLimit } from '../shares.js';
import { ChunkJoiner, PASS_THROUGH_BYTES } from './chunk-joiner.js';
import { ConnectionShares, type ConnectionSlot } from './connection-shares.js';
import { mergeRepeatedHeaders, requestHasBody, requestHeadersToTarget, responseHeadersToClient } from './headers.js';
import { splitPath, targetPath, type Target } from './target.js';
import { TARGET_DENIED, type TargetPolicy } from './target-policy.js';
import { UploadRelay } from './upload-relay.js';

export interface ProxyOptions {
  /** Which addresses targets may have; checked on every connection. */
  targetPolicy: TargetPolicy;
  /** Fair shares of the connections to each target (the pool's size is their total). */
  connections: ConnectionShares;
  /** The memory that request bodies buffered for signing may hold, with fair shares. */
  bodyBudget: SharedLimit;
  /** The minimum rate of request bodies. */
  bodyRate: BodyRateWatch;
  /** Upper bound of a target's idle timeout (headers and between body chunks). */
  targetTimeoutMs: number;
  connectTimeoutMs: number;
  /** Largest body of a request whose signature covers the body (it is buffered to be hashed). */
  signedBodyLimit: number;
  /** Most distinct TLS configs with a live connection pool. */
  maxTlsPools?: number;
  /** Told of every failure toward a target, by reason (for metrics). */
  onTargetError?: (reason: TargetErrorReason) => void;
}

/** Who invokes, and how the invocation can be ended from outside (revocation). */
export interface Invocation {
  holder: Holder;
  inFlight: InFlight;
}

export type TargetErrorReason = 'timeout' | 'refused' | 'dns' | 'tls' | 'protocol' | 'reset' | 'denied' | 'cut' | 'other';

/** How an invocation ended, for the audit trail. */
export interface ForwardOutcome {
  status: number;
  /** True when the response stream was cut after it started. */
  cut: boolean;
  /** Request body bytes sent on to the target. */
  bytesIn: number;
  /** Response bytes written to the requester (head and body). */
  bytesOut: number;
}

export class TargetProxy {
  readonly #options: ProxyOptions;
  readonly #defaultAgent: Agent;
  readonly #tlsAgents: LRUCache<string, Agent>;
  readonly #literalRefusals = new WeakMap<Target, string>();

  constructor(options: ProxyOptions) {
    this.#options = options;
    this.#defaultAgent = this.#createAgent({});
    this.#tlsAgents = new LRUCache<string, Agent>({
      max: options.maxTlsPools ?? 256,
      dispose: (agent) => void agent.close(),
    });
  }

  /**
   * Sends `req` to `target` and streams the answer into `res`. Rejects with a
   * MembraneError only while nothing has been written to `res`.
   */
  forward(req: IncomingMessage, res: ServerResponse, target: Target, invocation: Invocation): Promise<ForwardOutcome> {
    // Not async: an unsigned invocation (the common case) goes out in this
    // tick and settles with the exchange, without an extra promise around it.
    try {
      this.#checkLiteralAddress(target);
      const method = target.method ?? req.method ?? 'GET';
      const path = targetPath(target, req.url ?? '/');
      const headers = requestHeadersToTarget(req.rawHeaders, target.headerNames, target.droppedPrefix);
      headers.push(...target.headers);
      if (target.signing !== undefined) return this.#forwardSigned(req, res, target, invocation, method, path, headers);
      const slot = this.#connection(target, invocation);
      if (slot instanceof Promise) return slot.then((acquired) => this.#send(req, res, target, invocation, acquired, method, path, headers, null));
      return this.#send(req, res, target, invocation, slot, method, path, headers, null);
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  /** A place among the connections to the target (waiting, within the holder's shares, if need be). */
  #connection(target: Target, invocation: Invocation): ConnectionSlot | Promise<ConnectionSlot> {
    return this.#options.connections.acquire(target.poolKey, invocation.holder, invocation.inFlight);
  }

  /** A literal address is connected to without a lookup, so it is checked here (once per prepared target: the policy does not change while serving). */
  #checkLiteralAddress(target: Target): void {
    if (target.literalAddress === undefined) return;
    let reason = this.#literalRefusals.get(target);
    if (reason === undefined) this.#literalRefusals.set(target, (reason = this.#options.targetPolicy.refusal(target.literalAddress) ?? ''));
    if (reason !== '') {
      this.#options.onTargetError?.('denied');
      throw new BadGatewayError(`the target's address is ${reason}, which this server's target policy does not allow`);
    }
  }

  /**
   * Buffers the body if the signature covers it (before taking a
   * connection, so that a slow upload holds no connection to the target),
   * signs the request, sends it.
   */
  async #forwardSigned(req: IncomingMessage, res: ServerResponse, target: Target, invocation: Invocation, method: string, path: string, unsigned: string[]): Promise<ForwardOutcome> {
    const { scheme, signer } = target.signing!;
    const headers = mergeRepeatedHeaders(unsigned);
    const lease = scheme.coversBody ? new BodyBudgetLease(this.#options.bodyBudget, invocation.holder) : undefined;
    try {
      const buffered =
        lease === undefined
          ? null
          : await readBody(req, {
              limit: this.#options.signedBodyLimit,
              lease,
              rate: this.#options.bodyRate,
              invocation: invocation.inFlight,
            });
      const slot = await this.#connection(target, invocation);
      try {
        const signature = signer.sign({ method, host: target.host, ...splitPath(path), headers, body: buffered }, new Date());
        headers.push('host', target.host, ...signature);
      } catch (error) {
        slot.release();
        throw error;
      }
      // The body's memory is given back once the target answers (it has the body then), not when the answer has been relayed.
      const onAnswer = lease === undefined ? undefined : () => lease.release();
      return await this.#send(req, res, target, invocation, slot, method, path, headers, buffered === null || buffered.length === 0 ? null : buffered, onAnswer);
    } finally {
      lease?.release();
    }
  }

  /**
   * Dispatches the request to the target on the connection slot it holds;
   * the exchange relays the answer and gives the slot back when it ends.
   * `buffered`: the body as signed, or null to relay the requester's body, if any.
   */
  #send(
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    invocation: Invocation,
    slot: ConnectionSlot,
    method: string,
    path: string,
    headers: string[],
    buffered: Buffer | null,
    onAnswer?: () => void,
  ): Promise<ForwardOutcome> {
    const counted = { bytesIn: buffered === null ? 0 : buffered.length };
    // Unread body bytes may already sit in the request's buffer (small bodies
    // arrive with the head), so the test is "not yet consumed", not "not yet received".
    const relay =
      buffered === null && requestHasBody(req) && !req.readableEnded
        ? new UploadRelay(req, counted, this.#options.bodyRate.watch(req, (problem) => invocation.inFlight.abort(problem)))
        : undefined;
    const timeout = Math.min(target.timeoutMs ?? this.#options.targetTimeoutMs, this.#options.targetTimeoutMs);
    return new Promise<ForwardOutcome>((resolve, reject) => {
      const exchange = new Exchange(req, res, {
        // A HEAD answer describes a body it does not carry; relayed to a
        // requester that did not ask with HEAD, its Content-Length would be a lie.
        dropLength: method === 'HEAD' && req.method !== 'HEAD',
        relay,
        counted,
        onTargetError: this.#options.onTargetError,
        slot,
        onAnswer,
        resolve,
        reject,
      });
      invocation.inFlight.whenAborted((reason) => exchange.abort(reason));
      this.#dispatcherFor(target).dispatch(
        { origin: target.origin, path, method: method as Dispatcher.HttpMethod, headers, body: relay ?? buffered, headersTimeout: timeout, bodyTimeout: timeout },
        exchange,
      );
    });
  }

  async close(): Promise<void> {
    const agents = [this.#defaultAgent, ...this.#tlsAgents.values()];
    this.#tlsAgents.clear();
    await Promise.all(agents.map((agent) => agent.close()));
  }

  #dispatcherFor(target: Target): Agent {
    if (target.tls === undefined || target.tlsId === undefined) return this.#defaultAgent;
    let agent = this.#tlsAgents.get(target.tlsId);
    if (agent === undefined) {
      const { ca, cert, key, rejectUnauthorized } = target.tls;
      agent = this.#createAgent({ ca, cert, key, rejectUnauthorized: rejectUnauthorized !== false });
      this.#tlsAgents.set(target.tlsId, agent);
    }
    return agent;
  }

  #createAgent(tls: { ca?: string; cert?: string; key?: string; rejectUnauthorized?: boolean }): Agent {
    return new Agent({
      connect: {
        ...tls,
        timeout: Math.min(this.#options.connectTimeoutMs, this.#options.targetTimeoutMs),
        // Every address a target name resolves to is checked at connect time (DNS rebinding).
        lookup: this.#options.targetPolicy.lookup(),
      },
      // The shares let at most this many requests at a target at once: none queues in undici.
      connections: this.#options.connections.perTarget,
      // Targets answer over HTTP/1.1; never pipeline, never follow redirects.
      pipelining: 1,
    });
  }
}

/** How long a response head waits for the first body byte before it is sent on alone. */
const HEAD_HOLD_MS = 100;

/**
 * One forwarded exchange, as an undici dispatch handler relaying the
 * target's answer into the requester's response. (A handler, rather than
 * undici's `stream()`, because `stream()` adds an AbortSignal, a promise and
 * stream-finished listeners per request, and commits the head as soon as it
 * arrives.)
 *
 * The head is held until the first body byte or the end of the response
 * (or HEAD_HOLD_MS, for answers that stream slowly), so that a target
 * failing right after its head still gets the requester a 502 rather than
 * a closed connection. Once the head is out, a failure can only cut the
 * stream. The requester leaving aborts the invocation (see the handler),
 * and so the exchange; a requester reading slowly pauses the target
 * (backpressure).
 */
class Exchange implements Dispatcher.DispatchHandler {
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #options: ExchangeOptions;
  /** The requester's socket (detached from the response once it finishes) and its count of bytes written before this answer. */
  readonly #socket: ServerResponse['socket'];
  readonly #bytesWrittenBefore: number;
  #controller: Dispatcher.DispatchController | undefined;
  /** Why the exchange was aborted before undici started it, if it was. */
  #abortReason: Error | undefined;
  #status = 0;
  /** The head waiting to be sent, once the target has answered. */
  #head: string[] | undefined;
  #headSent = false;
  #headTimer: NodeJS.Timeout | undefined;
  #settled = false;
  #resume: (() => void) | undefined;
  /** Small chunks of the answer waiting to be written together. */
  #joined: ChunkJoiner | undefined;
  #flushScheduled = false;
  /** Paused until the requester drains. */
  #draining = false;

  constructor(req: IncomingMessage, res: ServerResponse, options: ExchangeOptions) {
    this.#req = req;
    this.#res = res;
    this.#options = options;
    this.#socket = res.socket;
    this.#bytesWrittenBefore = res.socket?.bytesWritten ?? 0;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#abortReason !== undefined) controller.abort(this.#abortReason);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number): void {
    if (statusCode < 200 || this.#settled) return;
    this.#status = statusCode;
    this.#options.onAnswer?.();
    // A 204 or 304 has no body; a Content-Length on one (which RFC 9110 §8.6
    // allows on a 304) makes some clients, undici among them, refuse the answer.
    const dropLength = this.#options.dropLength || statusCode === 204 || statusCode === 304;
    const head = responseHeadersToClient(latin1Strings(controller.rawHeaders), dropLength);
    // The target answered before reading the whole upload (a 401 or 413,
    // say): the rest of it will never be read, so this connection cannot
    // carry another request. Close it after the answer instead of leaving
    // the requester's upload stalled on it.
    if (this.#options.relay !== undefined && !this.#req.complete) head.push('connection', 'close');
    this.#head = head;
    // The body usually arrives in the same read as the head; if it has not
    // by the time this read is processed, hold the head only briefly.
    queueMicrotask(this.#holdHead);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled || !this.#sendHead()) return;
    // A requester gone (its invocation is being aborted) would never drain.
    if (this.#res.destroyed) {
      controller.abort(new Error('the requester went away'));
      return;
    }
    // Small chunks (a stream of tiny events, a target writing byte by byte) are joined before they are written.
    if (chunk.length >= PASS_THROUGH_BYTES) {
      this.#flush();
      this.#write(chunk);
      return;
    }
    if ((this.#joined ??= new ChunkJoiner()).add(chunk)) this.#flush();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushLater);
    }
  }

  onResponseEnd(): void {
    if (this.#settled || !this.#sendHead()) return;
    this.#flush();
    this.#res.end();
    this.#settle(false);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.#settled) return;
    // undici holds a 204 or 304 with a non-zero Content-Length to a body it
    // will never read: such an answer is complete without one.
    if (!this.#headSent && (this.#status === 204 || this.#status === 304) && (error as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      this.onResponseEnd();
      return;
    }
    if (this.#headSent || this.#res.destroyed) {
      if (this.#headSent) this.#options.onTargetError?.('cut');
      this.#res.destroy();
      this.#settle(true);
      return;
    }
    const { failure, reason } = upstreamError(error);
    if (reason !== undefined) this.#options.onTargetError?.(reason);
    this.#fail(failure);
  }

  /** Writes the joined chunks waiting, if any. */
  #flush(): void {
    const joined = this.#joined?.take();
    if (joined !== undefined) this.#write(joined);
  }

  readonly #flushLater = (): void => {
    this.#flushScheduled = false;
    if (!this.#settled && !this.#res.destroyed) this.#flush();
  };

  /** Writes to the requester; when it cannot take more for now, pauses the target until it drains. */
  #write(data: Buffer): void {
    if (this.#res.write(data) || this.#draining) return;
    this.#draining = true;
    this.#controller?.pause();
    this.#res.once('drain', (this.#resume ??= () => {
      this.#draining = false;
      this.#controller?.resume();
    }));
  }

  /** Sends the held head; false (and a 502 instead) when the target's head cannot be relayed. */
  #sendHead(): boolean {
    if (this.#headSent) return true;
    this.#clearHeadTimer();
    try {
      this.#res.writeHead(this.#status, this.#head!);
    } catch {
      this.#options.onTargetError?.('protocol');
      this.#controller?.abort(new Error('unrelayable response head'));
      this.#fail(new BadGatewayError("the target's response headers cannot be relayed"));
      return false;
    }
    this.#headSent = true;
    return true;
  }

  readonly #holdHead = (): void => {
    if (this.#headSent || this.#settled) return;
    this.#headTimer = setTimeout(() => {
      this.#headTimer = undefined;
      if (!this.#settled && this.#sendHead()) this.#res.flushHeaders();
    }, HEAD_HOLD_MS);
  };

  #clearHeadTimer(): void {
    if (this.#headTimer === undefined) return;
    clearTimeout(this.#headTimer);
    this.#headTimer = undefined;
  }

  /**
   * Ends the exchange from outside: before the answer has started, it
   * rejects with `reason` (a MembraneError is answered as it is); after,
   * the answer is cut.
   */
  abort(reason: Error): void {
    if (this.#settled) return;
    if (this.#controller === undefined) this.#abortReason = reason;
    else this.#controller.abort(reason);
  }

  #finish(): void {
    this.#settled = true;
    this.#clearHeadTimer();
    if (this.#resume !== undefined) this.#res.off('drain', this.#resume);
    this.#options.relay?.detach();
    this.#joined?.clear();
    this.#options.slot.release();
  }

  #settle(cut: boolean): void {
    this.#finish();
    const bytesOut = (this.#socket?.bytesWritten ?? this.#bytesWrittenBefore) - this.#bytesWrittenBefore;
    this.#options.resolve({ status: this.#status, cut, bytesIn: this.#options.counted.bytesIn, bytesOut });
  }

  #fail(failure: MembraneError): void {
    this.#finish();
    this.#options.reject(failure);
  }
}

interface ExchangeOptions {
  dropLength: boolean;
  /** The requester's body as it streams to the target, if it does. */
  relay: UploadRelay | undefined;
  counted: { bytesIn: number };
  onTargetError: ((reason: TargetErrorReason) => void) | undefined;
  /** The place among the target's connections, given back when the exchange ends. */
  slot: ConnectionSlot;
  /** Told when the target's answer begins. */
  onAnswer: (() => void) | undefined;
  resolve: (outcome: ForwardOutcome) => void;
  reject: (failure: MembraneError) => void;
}

/** undici's raw response head as strings, byte for byte (latin1), as Node writes them back. */
function latin1Strings(raw: Dispatcher.DispatchController['rawHeaders']): string[] {
  if (!Array.isArray(raw)) return [];
  const out = new Array<string>(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const item = raw[i]!;
    out[i] = typeof item === 'string' ? item : item.toString('latin1');
  }
  return out;
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

/** OpenSSL verification results (Node sets them as the error code) and Node's TLS error codes. */
const TLS_CODE = /CERT|CRL|SSL|TLS|OSSL|UNABLE_TO_|SIGNATURE|INVALID_CA|PATH_LENGTH_EXCEEDED|INVALID_PURPOSE|HOSTNAME_MISMATCH/;

/** Maps a failure to reach the target to 502 or 504 (without addresses or stack traces) and a reason for metrics. */
function upstreamError(error: unknown): { failure: MembraneError; reason?: TargetErrorReason } {
  if (error instanceof MembraneError) return { failure: error };
  const code = String((error as { code?: unknown }).code ?? '');
  const bad = (message: string, reason: TargetErrorReason) => ({ failure: new BadGatewayError(message), reason });
  if (TIMEOUT_CODES.has(code)) return { failure: new GatewayTimeoutError('the target did not answer in time'), reason: 'timeout' };
  if (code === TARGET_DENIED) return bad(`${(error as Error).message}, which this server's target policy does not allow`, 'denied');
  if (code === 'ECONNREFUSED') return bad('the target refused the connection', 'refused');
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return bad("the target's host name could not be resolved", 'dns');
  if (TLS_CODE.test(code)) return bad('the TLS handshake with the target failed', 'tls');
  if (code.startsWith('HPE_') || code === 'UND_ERR_INFO' || code === 'UND_ERR_HEADERS_OVERFLOW') return bad("the target's response was not valid HTTP", 'protocol');
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') return bad('the target closed the connection before answering', 'reset');
  return bad('the target could not be reached', 'other');
}
