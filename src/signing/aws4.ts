/**
 * AWS Signature Version 4 (AWS4-HMAC-SHA256), as AWS specifies it:
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
 *
 * Written here rather than driving @smithy/signature-v4 because Membrane
 * signs on the hot path of every invocation: this version is synchronous,
 * exposes the canonical request and string to sign (checked against AWS's
 * own test suite), and signs exactly the headers Membrane chooses. The
 * tests use @smithy/signature-v4 as the independent oracle.
 *
 * Membrane signs `host`, `content-type`, `content-md5` and every `x-amz-*`
 * header it sends (AWS requires host and the x-amz-* headers; signing fewer
 * of the rest keeps intermediaries that touch other headers harmless), and
 * the SHA-256 of the body. Only the export config may add x-amz-* headers:
 * they select what a request does, and a holder must not widen it. For
 * `s3`, path segments are encoded once (and sent that way) and
 * `x-amz-content-sha256` carries the body's hash; for every other service
 * the path is normalized and encoded twice.
 */
import { createHmac, hash } from 'node:crypto';
import { BadRequestError } from '../errors.js';
import type { OutgoingRequest, SignatureScheme, Signer } from './signer.js';

export interface Aws4HmacSha256Config {
  awsAccessKeyId: string;
  secretAccessKey: string;
  region: string;
  service: string;
  sessionToken?: string;
}

export const AWS4_ALGORITHM = 'AWS4-HMAC-SHA256';
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** Percent-encodes everything but RFC 3986 unreserved characters, with upper-case hex over UTF-8. */
export function uriEscape(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * The canonical URI. Non-S3: empty, `.` and `..` segments resolved, then
 * the path (as sent) encoded again. S3: each segment decoded and encoded
 * once, nothing normalized.
 */
export function canonicalPath(path: string, service: string): string {
  if (service === 's3') return path.split('/').map((segment) => uriEscape(decodeURIComponent(segment))).join('/');
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const normalized = `${path.startsWith('/') ? '/' : ''}${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return uriEscape(normalized).replace(/%2F/g, '/');
}

/** The canonical query: each name and value decoded and encoded, sorted by name, then value. */
export function canonicalQuery(query: string): string {
  const pairs: [string, string][] = [];
  for (const piece of query.split('&')) {
    if (piece === '') continue;
    const equals = piece.indexOf('=');
    const name = equals === -1 ? piece : piece.slice(0, equals);
    const value = equals === -1 ? '' : piece.slice(equals + 1);
    pairs.push([uriEscape(decodeURIComponent(name)), uriEscape(decodeURIComponent(value))]);
  }
  pairs.sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
  return pairs.map(([name, value]) => `${name}=${value}`).join('&');
}

/** Canonical headers and the signed-header list: names lower-cased, values trimmed, runs of spaces collapsed, repeats joined with `,`. */
export function canonicalHeaders(headers: readonly (readonly [string, string])[]): { canonical: string; signed: string } {
  const values = new Map<string, string[]>();
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    const list = values.get(lower);
    const trimmed = value.trim().replace(/\s+/g, ' ');
    if (list === undefined) values.set(lower, [trimmed]);
    else list.push(trimmed);
  }
  const names = [...values.keys()].sort();
  return {
    canonical: names.map((name) => `${name}:${values.get(name)!.join(',')}\n`).join(''),
    signed: names.join(';'),
  };
}

export function deriveSigningKey(secretAccessKey: string, dateStamp: string, region: string, service: string): Buffer {
  let key: Buffer | string = `AWS4${secretAccessKey}`;
  for (const part of [dateStamp, region, service, 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  return key as Buffer;
}

export interface Aws4Input {
  method: string;
  /** Path as sent (or, in AWS's test suite, as written in the request line). */
  path: string;
  query: string;
  /** Exactly the headers to sign, including host and x-amz-date. */
  headers: readonly (readonly [string, string])[];
  payloadHash: string;
  /** `YYYYMMDDTHHMMSSZ` */
  amzDate: string;
  accessKeyId: string;
  region: string;
  service: string;
  signingKey: Buffer;
  /** canonicalPath(path, service), when the caller has it already. */
  canonicalPath?: string;
}

export interface Aws4Signature {
  canonicalRequest: string;
  stringToSign: string;
  signature: string;
  authorization: string;
}

export function signAws4(input: Aws4Input): Aws4Signature {
  const { canonical, signed } = canonicalHeaders(input.headers);
  const canonicalRequest = [
    input.method,
    input.canonicalPath ?? canonicalPath(input.path, input.service),
    canonicalQuery(input.query),
    canonical,
    signed,
    input.payloadHash,
  ].join('\n');
  const scope = `${input.amzDate.slice(0, 8)}/${input.region}/${input.service}/aws4_request`;
  const stringToSign = [AWS4_ALGORITHM, input.amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  const signature = createHmac('sha256', input.signingKey).update(stringToSign).digest('hex');
  return {
    canonicalRequest,
    stringToSign,
    signature,
    authorization: `${AWS4_ALGORITHM} Credential=${input.accessKeyId}/${scope}, SignedHeaders=${signed}, Signature=${signature}`,
  };
}

export function sha256Hex(data: string | Buffer): string {
  return hash('sha256', data, 'hex');
}

// The last second formatted: a busy signer signs many requests in each.
let lastSecond = NaN;
let lastAmzDate = '';

/** `YYYYMMDDTHHMMSSZ` for a date. */
export function amzDate(date: Date): string {
  const second = Math.floor(date.getTime() / 1000);
  if (second !== lastSecond) {
    lastSecond = second;
    lastAmzDate = date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  }
  return lastAmzDate;
}

/** Query parameters that would make AWS read the request as a presigned URL. */
const PRESIGN_PARAMETERS = new Set([
  'x-amz-algorithm',
  'x-amz-credential',
  'x-amz-date',
  'x-amz-expires',
  'x-amz-security-token',
  'x-amz-signature',
  'x-amz-signedheaders',
]);

/**
 * Why a query string cannot be signed unambiguously, or undefined. A `+`
 * means a space to some readers and a plus to others; malformed
 * percent-encoding has no meaning; presigning parameters would change how
 * AWS reads the request.
 */
function queryProblem(query: string): string | undefined {
  if (query.includes('+')) return "contains '+', which AWS may read as a space or a plus; write %20 or %2B";
  for (const piece of query.split('&')) {
    const name = piece.split('=', 1)[0]!;
    let decoded: string;
    try {
      decoded = decodeURIComponent(name);
      decodeURIComponent(piece.slice(name.length + 1));
    } catch {
      return 'has malformed percent-encoding';
    }
    if (PRESIGN_PARAMETERS.has(decoded.toLowerCase())) return `contains ${decoded}, a parameter of presigned requests`;
  }
  return undefined;
}

const SIGNED_HEADER = /^(?:content-type|content-md5|x-amz-.*)$/i;

export const aws4: SignatureScheme<Aws4HmacSha256Config> = {
  name: 'aws4-hmac-sha256',
  configSchema: {
    type: 'object',
    additionalProperties: false,
    required: ['awsAccessKeyId', 'secretAccessKey', 'region', 'service'],
    properties: {
      awsAccessKeyId: { type: 'string', maxLength: 128, pattern: '^\\w+$', description: 'an access key id (letters, digits, "_")' },
      secretAccessKey: { type: 'string', minLength: 1, maxLength: 256 },
      region: {
        type: 'string',
        maxLength: 64,
        pattern: '^[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*$',
        description: 'a plain identifier (letters, digits, "-", "_", ".")',
      },
      service: {
        type: 'string',
        maxLength: 64,
        pattern: '^[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*$',
        description: 'a plain identifier (letters, digits, "-", "_", ".")',
      },
      sessionToken: { type: 'string', minLength: 1, maxLength: 8192, pattern: '^[\\x21-\\x7E]+$', description: 'printable ASCII' },
    },
  },
  coversBody: true,
  headerNames: new Set(['authorization', 'x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256']),
  // x-amz-* headers choose what an AWS request does (X-Amz-Target, x-amz-copy-source, x-amz-acl…).
  configOnlyHeaderPrefix: 'x-amz-',

  // S3 reads the path as sent, so it is sent exactly as it is signed.
  wirePath: (config, pathname) => (config.service === 's3' ? canonicalPath(pathname, 's3') : pathname),

  checkUri(url) {
    try {
      decodeURIComponent(url.pathname);
    } catch {
      return 'has malformed percent-encoding in its path';
    }
    const problem = queryProblem(url.search.slice(1));
    return problem === undefined ? undefined : `has a query string that ${problem}`;
  },

  createSigner(config): Signer {
    let keyDate = '';
    let key: Buffer = Buffer.alloc(0);
    const s3 = config.service === 's3';
    // A capability sends to one path (only its query may vary): canonicalized once.
    let lastPath: string | undefined;
    let lastCanonicalPath = '';
    return {
      sign(request: OutgoingRequest, now: Date): string[] {
        const problem = queryProblem(request.query);
        if (problem !== undefined) throw new BadRequestError(`this capability signs its requests, and the query string ${problem}`);
        const date = amzDate(now);
        if (date.slice(0, 8) !== keyDate) {
          keyDate = date.slice(0, 8);
          key = deriveSigningKey(config.secretAccessKey, keyDate, config.region, config.service);
        }
        const payloadHash = request.body === null || request.body.length === 0 ? EMPTY_SHA256 : sha256Hex(request.body);
        const added = ['X-Amz-Date', date];
        if (config.sessionToken !== undefined) added.push('X-Amz-Security-Token', config.sessionToken);
        if (s3) added.push('X-Amz-Content-Sha256', payloadHash);
        const signed: [string, string][] = [['host', request.host]];
        const { headers } = request;
        for (let i = 0; i < headers.length; i += 2) {
          if (SIGNED_HEADER.test(headers[i]!)) signed.push([headers[i]!, headers[i + 1]!]);
        }
        for (let i = 0; i < added.length; i += 2) signed.push([added[i]!, added[i + 1]!]);
        if (request.path !== lastPath) {
          lastPath = request.path;
          lastCanonicalPath = canonicalPath(request.path, config.service);
        }
        const { authorization } = signAws4({
          method: request.method,
          path: request.path,
          canonicalPath: lastCanonicalPath,
          query: request.query,
          headers: signed,
          payloadHash,
          amzDate: date,
          accessKeyId: config.awsAccessKeyId,
          region: config.region,
          service: config.service,
          signingKey: key,
        });
        added.push('Authorization', authorization);
        return added;
      },
    };
  },
};
