/**
 * The export config: what a membrane's `export` capability accepts.
 *
 * Exactly one of `uri` (a new capability for an HTTP target) or `capability`
 * (re-export of an existing exported capability). Unknown fields, wrong
 * types and ambiguous values are refused with a 400 that names the field.
 * Validation is a JSON Schema (Ajv) for shape and types, then the checks a
 * schema cannot express (URI parts, header name clashes, PEM contents).
 */
import { METHODS } from 'node:http';
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { BadRequestError } from '../errors.js';
import { compileValidator, fieldSegment, type Validation } from '../schema.js';
import { SCHEMES } from '../signing/schemes.js';
import type { ExportConfig, HmacConfig, ReExportConfig, TlsConfig, UriExportConfig } from '../wire.js';
import type { SignatureScheme } from '../signing/signer.js';

export type { ExportConfig, ReExportConfig, TlsConfig, UriExportConfig };

export function isReExport(config: ExportConfig): config is ReExportConfig {
  return 'capability' in config;
}

/** Methods a capability may fix. CONNECT opens a tunnel, not an HTTP action. */
export const EXPORTABLE_METHODS: readonly string[] = METHODS.filter((method) => method !== 'CONNECT');

/**
 * Header names a config may not set: hop-by-hop headers, and the headers
 * that frame the request or name the target, which Membrane controls.
 */
export const RESERVED_HEADER_NAMES: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'content-length',
  'expect',
]);

const TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_VALUE = '^[\\t\\x20-\\x7E]*$';
const PEM_TEXT = { type: 'string', minLength: 1, maxLength: 65_536 };

const hmacSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  maxProperties: 1,
  description: `an object naming exactly one signature scheme: ${[...SCHEMES.keys()].join(' or ')}`,
  properties: Object.fromEntries([...SCHEMES].map(([name, scheme]) => [name, scheme.configSchema])),
};

const uriExportSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['uri'],
  properties: {
    uri: { type: 'string', minLength: 1, maxLength: 8192 },
    method: { type: 'string', enum: EXPORTABLE_METHODS, description: 'an HTTP method in upper case, such as "POST"' },
    headers: {
      type: 'object',
      maxProperties: 64,
      propertyNames: { maxLength: 256, pattern: TOKEN, description: 'an HTTP header name' },
      additionalProperties: {
        type: 'string',
        maxLength: 8192,
        pattern: HEADER_VALUE,
        description: 'printable ASCII (no control characters or line breaks)',
      },
    },
    allowQuery: { type: 'boolean' },
    timeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647 },
    tls: {
      type: 'object',
      additionalProperties: false,
      properties: {
        ca: PEM_TEXT,
        cert: PEM_TEXT,
        key: PEM_TEXT,
        rejectUnauthorized: { type: 'boolean' },
      },
    },
    hmac: hmacSchema,
  },
};

const reExportSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['capability'],
  properties: {
    capability: { type: 'string', minLength: 1, maxLength: 1024 },
  },
};

const validateUriExport = compileValidator<UriExportConfig>(uriExportSchema, 'config');
const validateReExport = compileValidator<ReExportConfig>(reExportSchema, 'config');

/** Fields that belong to a uri export and make no sense on a re-export. */
const URI_OPTIONS = Object.keys(uriExportSchema.properties).filter((name) => name !== 'uri');

/** Validates a parsed JSON body as an export config; throws BadRequestError naming the field. */
export function parseExportConfig(body: unknown): ExportConfig {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequestError('the export config must be a JSON object');
  }
  const hasUri = Object.hasOwn(body, 'uri');
  const hasCapability = Object.hasOwn(body, 'capability');
  if (hasUri === hasCapability) {
    throw new BadRequestError(
      hasUri ? 'config must have exactly one of uri and capability, not both' : 'config must have exactly one of uri and capability',
    );
  }
  if (hasCapability) {
    const misplaced = URI_OPTIONS.find((name) => Object.hasOwn(body, name));
    if (misplaced !== undefined) {
      throw new BadRequestError(`config.${misplaced} applies only to uri exports, not to re-exports of a capability`);
    }
    return check(validateReExport(body));
  }
  const config = check(validateUriExport(body));
  checkUri(config);
  checkHeaders(config.headers);
  checkTls(config);
  checkSignature(config);
  return config;
}

function check<T>(result: Validation<T>): T {
  if (!result.ok) throw new BadRequestError(result.message);
  return result.value;
}

function checkUri(config: UriExportConfig): void {
  let url: URL;
  try {
    url = new URL(config.uri);
  } catch {
    throw new BadRequestError('config.uri must be an absolute http or https URI');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new BadRequestError('config.uri must use the http or https scheme');
  }
  if (url.username !== '' || url.password !== '') {
    throw new BadRequestError('config.uri must not contain user info; send credentials with config.headers');
  }
  if (config.uri.includes('#')) {
    throw new BadRequestError('config.uri must not contain a fragment');
  }
  if (/[\s\x00-\x1F\x7F]/.test(config.uri)) {
    throw new BadRequestError('config.uri must not contain whitespace or control characters');
  }
}

function checkHeaders(headers: Record<string, string> | undefined): void {
  if (headers === undefined) return;
  const seen = new Set<string>();
  for (const name of Object.keys(headers)) {
    const lower = name.toLowerCase();
    const path = `config.headers${fieldSegment(name)}`;
    if (RESERVED_HEADER_NAMES.has(lower) || lower.startsWith('proxy-')) {
      throw new BadRequestError(`${path} is a header Membrane controls and cannot be set`);
    }
    if (seen.has(lower)) {
      throw new BadRequestError(`${path} is given twice (header names are case-insensitive)`);
    }
    seen.add(lower);
  }
}

/** The chosen scheme's own demands on the URI, and its headers kept its own. */
function checkSignature(config: UriExportConfig): void {
  if (config.hmac === undefined) return;
  const scheme = schemeOf(config.hmac);
  const problem = scheme.checkUri(new URL(config.uri));
  if (problem !== undefined) throw new BadRequestError(`config.uri ${problem}, which config.hmac.${scheme.name} cannot sign`);
  const clash = Object.keys(config.headers ?? {}).find((name) => scheme.headerNames.has(name.toLowerCase()));
  if (clash !== undefined) {
    throw new BadRequestError(`config.headers${fieldSegment(clash)} is set by the ${scheme.name} signature and cannot be given`);
  }
}

/** The registered scheme an hmac selector names (validation guarantees exactly one, registered). */
export function schemeOf(hmac: HmacConfig | Readonly<Record<string, unknown>>): SignatureScheme<never> {
  return SCHEMES.get(Object.keys(hmac)[0]!)!;
}

function checkTls(config: UriExportConfig): void {
  const tls = config.tls;
  if (tls === undefined) return;
  if (new URL(config.uri).protocol !== 'https:') {
    throw new BadRequestError('config.tls applies only to https URIs');
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new BadRequestError('config.tls.cert and config.tls.key must be given together');
  }
  if (tls.ca !== undefined) parseCertificates(tls.ca, 'config.tls.ca');
  if (tls.cert !== undefined && tls.key !== undefined) {
    const [leaf] = parseCertificates(tls.cert, 'config.tls.cert');
    let key: KeyObject;
    try {
      key = createPrivateKey(tls.key);
    } catch {
      throw new BadRequestError('config.tls.key must be an unencrypted PEM private key');
    }
    if (!leaf!.checkPrivateKey(key)) {
      throw new BadRequestError('config.tls.key is not the private key of config.tls.cert');
    }
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g;

/** One or more PEM certificates and nothing else but whitespace between them. */
function parseCertificates(pem: string, field: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0 || pem.replace(PEM_CERTIFICATE, '').trim() !== '') {
    throw new BadRequestError(`${field} must be one or more PEM certificates`);
  }
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new BadRequestError(`${field} must be one or more PEM certificates`);
    }
  });
}
