/**
 * Invoking capabilities: `request` (a streaming response) and `requestReply`
 * (a parsed JSON answer). A capability URI names the service's authority;
 * the call goes to `https://AUTHORITY/` unless told otherwise (`scheme`,
 * for local plain-HTTP use, or `address`, a base URL that overrides the
 * authority), with `Authorization: Bearer TOKEN`.
 */
import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { Agent, request as undiciRequest, type Dispatcher } from 'undici';
import { parseCapabilityUri } from '../token.js';
import type { ErrorBody } from '../wire.js';
import { InvalidCapabilityError, MembraneConnectionError, MembraneHttpError } from './errors.js';

export interface ClientOptions {
  /** `https` (the default) or `http` (for local use without TLS). */
  scheme?: 'https' | 'http';
  /** Base URL to call instead of `scheme://AUTHORITY` (e.g. `http://127.0.0.1:8080`). */
  address?: string;
  /** Certificate authorities to trust instead of the default ones (PEM). */
  ca?: string | Buffer | readonly (string | Buffer)[];
  /** An undici dispatcher to use (overrides `ca`). */
  dispatcher?: Dispatcher;
}

export interface RequestInit extends ClientOptions {
  method?: string;
  headers?: Readonly<Record<string, string | readonly string[]>>;
  body?: string | Uint8Array | Readable | null;
  /** Query string for the invocation (Membrane ignores the path; an exported capability may take the query). */
  query?: string | URLSearchParams | Readonly<Record<string, string>>;
  signal?: AbortSignal;
}

export interface CapabilityResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body as a stream; also has `.json()`, `.text()`, `.arrayBuffer()`. */
  body: Dispatcher.ResponseData['body'];
}

const agents = new Map<string, Agent>();

function dispatcherFor(options: ClientOptions): Dispatcher | undefined {
  if (options.dispatcher !== undefined) return options.dispatcher;
  if (options.ca === undefined) return undefined;
  const ca = (Array.isArray(options.ca) ? options.ca : [options.ca]).map((pem) => pem.toString());
  const key = ca.join('\n');
  let agent = agents.get(key);
  if (agent === undefined) {
    agent = new Agent({ connect: { ca } });
    agents.set(key, agent);
  }
  return agent;
}

/** The token and the URL to call for a capability URI. */
export function target(capability: string, options: ClientOptions): { token: string; url: URL } {
  const parsed = typeof capability === 'string' ? parseCapabilityUri(capability) : undefined;
  if (parsed === undefined) throw new InvalidCapabilityError();
  const base = options.address ?? `${options.scheme ?? 'https'}://${parsed.authority}`;
  let url: URL;
  try {
    url = new URL('/', base);
  } catch {
    throw new TypeError(`address ${JSON.stringify(options.address)} is not a URL`);
  }
  return { token: parsed.token, url };
}

/** Invokes a capability; resolves once the answer's head has arrived, with its body as a stream. */
export async function request(capability: string, init: RequestInit = {}): Promise<CapabilityResponse> {
  const { token, url } = target(capability, init);
  if (init.query !== undefined) {
    // URLSearchParams writes a space as "+", which some readers (AWS) take for a plus; a real plus is %2B.
    url.search =
      typeof init.query === 'string'
        ? init.query
        : new URLSearchParams(init.query as Record<string, string>).toString().replace(/\+/g, '%20');
  }
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(init.headers ?? {})) {
    if (name.toLowerCase() !== 'authorization') headers[name] = typeof value === 'string' ? value : [...(value as readonly string[])];
  }
  headers.authorization = `Bearer ${token}`;
  try {
    const response = await undiciRequest(url, {
      method: (init.method ?? (init.body === undefined || init.body === null ? 'GET' : 'POST')) as Dispatcher.HttpMethod,
      headers,
      body: init.body ?? null,
      dispatcher: dispatcherFor(init),
      signal: init.signal,
    });
    return { status: response.statusCode, headers: response.headers, body: response.body };
  } catch (error) {
    throw new MembraneConnectionError(`no answer from ${url.origin}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * Invokes a capability and parses its JSON answer (undefined for an empty
 * body). An error status (400 or above, or any status other than
 * `expectStatus` when given) becomes a MembraneHttpError carrying the
 * status and the answer's `error` and `message`.
 */
export async function requestReply<T = unknown>(capability: string, init: RequestInit & { expectStatus?: number } = {}): Promise<T> {
  const response = await request(capability, init);
  let text: string;
  try {
    text = await response.body.text();
  } catch (error) {
    throw new MembraneConnectionError(`the answer broke off: ${(error as Error).message}`, { cause: error });
  }
  let parsed: unknown;
  if (text !== '') {
    try {
      parsed = JSON.parse(text);
    } catch {
      if (response.status >= 400) throw new MembraneHttpError(response.status, STATUS_CODES[response.status] ?? 'Error', text.slice(0, 200));
      throw new MembraneHttpError(response.status, 'Invalid Response', 'the answer is not JSON');
    }
  }
  if (response.status >= 400 || (init.expectStatus !== undefined && response.status !== init.expectStatus)) {
    const body = (parsed ?? {}) as Partial<ErrorBody>;
    throw new MembraneHttpError(
      response.status,
      typeof body.error === 'string' ? body.error : (STATUS_CODES[response.status] ?? 'Error'),
      typeof body.message === 'string'
        ? body.message
        : response.status < 400
          ? `expected status ${init.expectStatus}, got ${response.status}${typeof response.headers.location === 'string' ? ` (redirect to ${response.headers.location})` : ''}`
          : `status ${response.status}`,
    );
  }
  return parsed as T;
}
