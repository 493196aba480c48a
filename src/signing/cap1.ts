/**
 * CAP1-HMAC-SHA512, byte for byte as the original reference implementation
 * (npm `cap1-hmac-sha512`, no longer published) computes it, quirks
 * included; see CAP1-HMAC-SHA512.md in the design documents. Targets verify
 * with that implementation, so nothing here may be "fixed". Written by hand
 * because no maintained library implements it.
 *
 * The signature covers method, path, query and every header given to
 * `cap1Sign` (Membrane gives every header it sends but Content-Length, which
 * the HTTP client may rewrite or drop), but not the body, so bodies keep
 * streaming.
 */
import { createHmac, hash, timingSafeEqual } from 'node:crypto';
import { posix } from 'node:path';
import { BadRequestError } from '../errors.js';
import type { OutgoingRequest, SignatureScheme, Signer } from './signer.js';

export interface Cap1HmacSha512Config {
  key: string;
  keyId: string;
}

export const CAP1_ALGORITHM = 'CAP1-HMAC-SHA512';

/** Header value as the reference saw it: any JS value, converted with String(). */
export type HeaderValue = string | number | readonly string[] | null | undefined;

export interface Cap1SignInput {
  /** Processed in insertion order; names case-insensitive. */
  headers: Readonly<Record<string, HeaderValue>> | readonly (readonly [string, HeaderValue])[];
  httpRequestMethod?: string | undefined;
  key: string;
  keyId: string;
  path?: string | undefined;
  queryString?: string | null | undefined;
}

export interface Cap1Signature {
  algorithm: string;
  authorization: string;
  credential: string;
  'x-cap-date': string;
  signedHeaders: string;
  signature: string;
  /** Not in the reference's result; exposed for tests. */
  canonicalRequest: string;
  stringToSign: string;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

const b64url = (bytes: Buffer): string => bytes.toString('base64url');

/** JS String() of a header value, as the reference converted it (undefined becomes ""). */
function text(value: HeaderValue): string {
  return value === undefined ? '' : String(value);
}

/** Whitespace collapsed outside double quotes, kept inside; a missing closing quote is added. */
export function trimall(value: HeaderValue): string {
  return text(value)
    .split('"')
    .map((fragment, index) => (index % 2 === 0 ? fragment.replace(/\s+/g, ' ') : `"${fragment}"`))
    .join('')
    .trim();
}

// The last second formatted: a busy signer signs many requests in each.
let lastSecond = NaN;
let lastIsoBasic = '';

/** `YYYYMMDDTHHMMSSZ` of a Date, whole seconds. */
function isoBasic(date: Date): string {
  const second = Math.floor(date.getTime() / 1000);
  if (second !== lastSecond) {
    lastSecond = second;
    lastIsoBasic = date.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
  }
  return lastIsoBasic;
}

export function canonicalUri(path: string): string {
  return encodeURIComponent(posix.normalize(decodeURIComponent(path)));
}

export function canonicalQueryString(queryString: string | null | undefined): string {
  if (queryString === null || queryString === undefined || queryString === '') return '';
  return queryString
    .split('&')
    .sort()
    .map((piece) => {
      const [name, value] = piece.split('=');
      return `${encodeURIComponent(decodeURIComponent(String(name)))}=${encodeURIComponent(decodeURIComponent(String(value)))}`;
    })
    .join('&');
}

/**
 * The key for the next HMAC: the reference passed each MAC on as a latin1
 * ("binary") string, which Node then encodes as UTF-8.
 */
function chained(mac: Buffer): string {
  return mac.toString('latin1');
}

export function deriveCap1SigningKey(secret: string, dateStamp: string, host: string): string {
  const kDate = createHmac('sha512', `CAP1${secret}`).update(dateStamp).digest();
  const kHost = createHmac('sha512', chained(kDate)).update(host).digest();
  return chained(createHmac('sha512', chained(kHost)).update('cap1_request').digest());
}

/** Signs as the reference `sign` does. Throws as it does (no host header; unparsable date; malformed percent-encoding). */
export function cap1Sign(input: Cap1SignInput, now: Date = new Date(), signingKey?: string): Cap1Signature {
  const entries = Array.isArray(input.headers) ? input.headers : Object.entries(input.headers);
  let host: string | undefined;
  let extendedDate: string | undefined;
  const kept: [string, HeaderValue][] = [];
  for (const [name, value] of entries as [string, HeaderValue][]) {
    const lower = name.toLowerCase();
    if (lower === 'host') host = value === undefined || value === null ? undefined : text(value);
    if (lower === 'x-cap-date') {
      const d = text(value);
      extendedDate = `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}T${d.slice(9, 11)}:${d.slice(11, 13)}:${d.slice(13, 15)}Z`;
    }
    if (!HOP_BY_HOP.has(lower)) kept.push([name, value]);
  }
  if (!host) throw new Error('Host header not found.');

  let isoDateBasic: string;
  if (extendedDate !== undefined) {
    const parsed = new Date(extendedDate);
    if (Number.isNaN(parsed.getTime())) throw new RangeError('Invalid time value');
    isoDateBasic = isoBasic(parsed);
  } else {
    isoDateBasic = isoBasic(now);
    kept.push(['X-Cap-Date', isoDateBasic]);
  }
  const dateStamp = isoDateBasic.slice(0, isoDateBasic.indexOf('T'));

  const values = new Map<string, HeaderValue>();
  for (const [name, value] of kept) values.set(name.toLowerCase(), value);
  const names = [...values.keys()].sort();
  const canonicalHeaders = names.map((name) => `${name}:${trimall(values.get(name))}\n`).join('');
  const signedHeaders = kept.map(([name]) => name.toLowerCase()).sort().join(';');

  const canonicalRequest = [
    (input.httpRequestMethod ?? 'GET').toUpperCase(),
    canonicalUri(input.path ?? '/'),
    canonicalQueryString(input.queryString),
    canonicalHeaders,
    signedHeaders,
  ].join('\n');

  const scope = `${dateStamp}/${host.toLowerCase()}/cap1_request`;
  const stringToSign = [CAP1_ALGORITHM, isoDateBasic, scope, hash('sha512', canonicalRequest, 'base64url')].join('\n');
  const key = signingKey ?? deriveCap1SigningKey(input.key, dateStamp, host);
  const signature = b64url(createHmac('sha512', key).update(stringToSign).digest());
  const credential = `${input.keyId}/${scope}`;
  return {
    algorithm: CAP1_ALGORITHM,
    authorization: `${CAP1_ALGORITHM} Credential=${credential},SignedHeaders=${signedHeaders},Signature=${signature}`,
    credential,
    'x-cap-date': isoDateBasic,
    signedHeaders,
    signature,
    canonicalRequest,
    stringToSign,
  };
}

/** A request as a target sees it; Node's IncomingMessage fits. */
export interface Cap1Request {
  method?: string | undefined;
  /** Path and query, e.g. `/orders?id=1`. */
  url?: string | undefined;
  headers: Readonly<Record<string, HeaderValue>>;
}

/** The key for a key id; a falsy answer or a failure means "no such key". */
export type Cap1KeyLookup = (keyId: string) => string | undefined | null | Promise<string | undefined | null>;

const WINDOW_MS = 15 * 60 * 1000;

/**
 * Checks that a request was signed with CAP1-HMAC-SHA512 by a holder of the
 * key its credential names, by the rules of section 8 of the CAP1 document:
 * only the headers the signature lists are used; X-Cap-Date must be within
 * 15 minutes of `now` (exactly 15 accepted); the recomputed Authorization
 * must equal the received one (compared in constant time). Resolves to true
 * or false. One deliberate difference from the reference: a request without
 * an Authorization header is simply false (the reference threw a TypeError).
 */
export async function verifyCap1(request: Cap1Request, keyLookup: Cap1KeyLookup, options: { now?: Date } = {}): Promise<boolean> {
  if (typeof keyLookup !== 'function') throw new Error('secret is not a function');
  const now = (options.now ?? new Date()).getTime();
  const entries = Object.entries(request.headers);
  const authorization = entries.find(([name]) => name.toLowerCase() === 'authorization')?.[1];
  if (authorization === undefined) return false;
  const authorizationText = text(authorization);
  const listed = /SignedHeaders=(.+),Signature/.exec(authorizationText)?.[1]?.split(';');
  if (listed === undefined) return false;
  const signedNames = new Set(listed);
  const filtered = entries.filter(([name]) => signedNames.has(name.toLowerCase()));

  const dateHeader = entries.find(([name]) => name.toLowerCase() === 'x-cap-date')?.[1];
  if (dateHeader === undefined) return false;
  const d = text(dateHeader);
  const signedAt = Date.parse(`${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}T${d.slice(9, 11)}:${d.slice(11, 13)}:${d.slice(13, 15)}Z`);
  if (!(Math.abs(now - signedAt) <= WINDOW_MS)) return false;

  if (!authorizationText.startsWith(`${CAP1_ALGORITHM} `)) return false;
  const parts = authorizationText.slice(CAP1_ALGORITHM.length + 1).trim().split(',');
  if (parts.length !== 3 || !parts[0]!.startsWith('Credential=')) return false;
  const credential = parts[0]!.slice('Credential='.length).split('/');
  if (credential.length !== 4 || credential[0] === '') return false;
  const keyId = credential[0]!;

  let key: string | undefined | null;
  try {
    key = await keyLookup(keyId);
  } catch {
    return false;
  }
  if (!key) return false;

  const url = request.url ?? '/';
  const mark = url.indexOf('?');
  let expected: string;
  try {
    expected = cap1Sign({
      headers: filtered,
      httpRequestMethod: request.method,
      key,
      keyId,
      path: mark === -1 ? url : url.slice(0, mark),
      queryString: mark === -1 ? '' : url.slice(mark + 1),
    }).authorization;
  } catch {
    return false;
  }
  const a = Buffer.from(expected);
  const b = Buffer.from(authorizationText);
  return a.length === b.length && timingSafeEqual(a, b);
}

export const cap1: SignatureScheme<Cap1HmacSha512Config> = {
  name: 'cap1-hmac-sha512',
  configSchema: {
    type: 'object',
    additionalProperties: false,
    required: ['key', 'keyId'],
    properties: {
      key: {
        type: 'string',
        minLength: 1,
        maxLength: 1024,
        pattern: '^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{3})?$',
        description: 'base64url text without padding',
      },
      keyId: {
        type: 'string',
        minLength: 1,
        maxLength: 256,
        pattern: '^[\\x21-\\x2B\\x2D\\x2E\\x30-\\x7E]+$',
        description: 'printable ASCII without "/" or ","',
      },
    },
  },
  coversBody: false,
  headerNames: new Set(['authorization', 'x-cap-date']),

  checkUri(url) {
    try {
      canonicalUri(url.pathname);
      canonicalQueryString(url.search.slice(1));
      return undefined;
    } catch {
      return 'has malformed percent-encoding';
    }
  },

  createSigner(config): Signer {
    let keyDate = '';
    let keyHost = '';
    let key = '';
    return {
      sign(request: OutgoingRequest, now: Date): string[] {
        const date = isoBasic(now);
        const dateStamp = date.slice(0, 8);
        if (dateStamp !== keyDate || request.host !== keyHost) {
          [keyDate, keyHost] = [dateStamp, request.host];
          key = deriveCap1SigningKey(config.key, dateStamp, request.host);
        }
        const headers: [string, string][] = [['host', request.host]];
        for (let i = 0; i < request.headers.length; i += 2) {
          // The HTTP client frames the body itself and may drop or rewrite Content-Length.
          if (request.headers[i]!.toLowerCase() !== 'content-length') headers.push([request.headers[i]!, request.headers[i + 1]!]);
        }
        headers.push(['X-Cap-Date', date]);
        let authorization: string;
        try {
          authorization = cap1Sign(
            { headers, httpRequestMethod: request.method, key: config.key, keyId: config.keyId, path: request.path, queryString: request.query },
            now,
            key,
          ).authorization;
        } catch {
          throw new BadRequestError('this capability signs its requests, and the query string has malformed percent-encoding');
        }
        return ['X-Cap-Date', date, 'Authorization', authorization];
      },
    };
  },
};
