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
import { PassThrough } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { Agent, type Dispatcher } from 'undici';
import { readBody } from '../body.js';
import { BadGatewayError, GatewayTimeoutError, MembraneError } from '../errors.js';
import { mergeRepeatedHeaders, requestHasBody, requestHeadersToTarget, responseHeadersToClient } from './headers.js';
import { splitPath, targetPath, type Target } from './target.js';
import { TARGET_DENIED, type TargetPolicy } from './target-policy.js';

export interface ProxyOptions {
  /** Which addresses targets may have; checked on every connection. */
  targetPolicy: TargetPolicy;
  /** Most connections to one target origin at once (further requests queue). */
  connectionsPerTarget?: number;
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
  async forward(req: IncomingMessage, res: ServerResponse, target: Target): Promise<ForwardOutcome> {
    // A literal address is connected to without a lookup, so it is checked here
    // (once per prepared target: the policy does not change while serving).
    if (target.literalAddress !== undefined) {
      let reason = this.#literalRefusals.get(target);
      if (reason === undefined) this.#literalRefusals.set(target, (reason = this.#options.targetPolicy.refusal(target.literalAddress) ?? ''));
      if (reason !== '') {
        this.#options.onTargetError?.('denied');
        throw new BadGatewayError(`the target's address is ${reason}, which this server's target policy does not allow`);
      }
    }
    const method = target.method ?? req.method ?? 'GET';
    const path = targetPath(target, req.url ?? '/');
    let headers = requestHeadersToTarget(req.rawHeaders, target.headerNames, target.droppedPrefix);
    headers.push(...target.headers);

    let body: Buffer | PassThrough | null = null;
    if (target.signing !== undefined) {
      const { scheme, signer } = target.signing;
      headers = mergeRepeatedHeaders(headers);
      const buffered = scheme.coversBody ? await readBody(req, this.#options.signedBodyLimit) : null;
      const signature = signer.sign({ method, host: target.host, ...splitPath(path), headers, body: buffered }, new Date());
      headers.push('host', target.host, ...signature);
      body = buffered === null || buffered.length === 0 ? null : buffered;
    }
    const counted = { bytesIn: Buffer.isBuffer(body) ? body.length : 0 };
    if (body === null && requestHasBody(req) && !req.complete) body = relay(req, counted);
    // The socket is detached from the response once it finishes: keep it.
    const socket = res.socket;
    const written = socket?.bytesWritten ?? 0;
    const bytesOut = (): number => (socket?.bytesWritten ?? written) - written;

    const abort = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onClose);

    // A HEAD answer describes a body it does not carry; relayed to a
    // requester that did not ask with HEAD, its Content-Length would be a lie.
    const dropLength = method === 'HEAD' && req.method !== 'HEAD';
    const timeout = Math.min(target.timeoutMs ?? this.#options.targetTimeoutMs, this.#options.targetTimeoutMs);
    let started = false;
    let status = 0;
    try {
      await this.#dispatcherFor(target).stream(
        {
          origin: target.origin,
          path,
          method: method as Dispatcher.HttpMethod,
          headers,
          body,
          headersTimeout: timeout,
          bodyTimeout: timeout,
          signal: abort.signal,
          responseHeaders: 'raw',
        },
        ({ statusCode, headers: responseHeaders }) => {
          started = true;
          status = statusCode;
          const out = responseHeadersToClient(responseHeaders as unknown as string[], dropLength);
          // The target answered before reading the whole upload (a 401 or 413,
          // say): the rest of it will never be read, so this connection cannot
          // carry another request. Close it after the answer instead of
          // leaving the requester's upload stalled on it.
          if (!req.complete && body !== null && !Buffer.isBuffer(body)) out.push('connection', 'close');
          res.writeHead(statusCode, out);
          return res;
        },
      );
      if (!req.complete) req.unpipe();
      return { status, cut: false, bytesIn: counted.bytesIn, bytesOut: bytesOut() };
    } catch (error) {
      if (started || res.destroyed) {
        if (started) this.#options.onTargetError?.('cut');
        res.destroy();
        return { status, cut: true, bytesIn: counted.bytesIn, bytesOut: bytesOut() };
      }
      const { failure, reason } = upstreamError(error);
      if (reason !== undefined) this.#options.onTargetError?.(reason);
      throw failure;
    } finally {
      res.off('close', onClose);
    }
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
      connections: this.#options.connectionsPerTarget ?? null,
      // Targets answer over HTTP/1.1; never pipeline, never follow redirects.
      pipelining: 1,
    });
  }
}

/**
 * The requester's body as a stream undici may destroy on failure without
 * destroying the requester's socket, which must still carry the 502.
 */
function relay(req: IncomingMessage, counted: { bytesIn: number }): PassThrough {
  const pass = new PassThrough();
  req.on('data', (chunk: Buffer) => (counted.bytesIn += chunk.length));
  req.on('error', (error) => pass.destroy(error));
  req.on('aborted', () => pass.destroy(new Error('requester aborted')));
  req.pipe(pass);
  return pass;
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
