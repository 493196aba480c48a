/**
 * A Target is an export config made ready to forward to: parsed once when
 * a capability is resolved, then reused for every invocation.
 */
import { hash } from 'node:crypto';
import { isIP } from 'node:net';
import { BadRequestError } from '../errors.js';
import { schemeOf, type TlsConfig, type UriExportConfig } from '../service/export-config.js';
import type { SignatureScheme, Signer } from '../signing/signer.js';
import { Interner } from '../interner.js';

export interface Target {
  /** `scheme://host:port` of the target. */
  origin: string;
  /** The Host header sent to the target (port only when not the default). */
  host: string;
  /** The target's address when its URI names one literally (then no lookup happens to check). */
  literalAddress: string | undefined;
  /** Path and query of the config's uri. */
  path: string;
  /** True when `path` already carries a query string. */
  pathHasQuery: boolean;
  /** Fixed method, or undefined to use the requester's. */
  method: string | undefined;
  /** Config headers, flat [name, value, …]. */
  headers: readonly string[];
  /** Lower-cased names of the requester's headers that must not reach the target: the config's and the signer's. */
  headerNames: ReadonlySet<string>;
  /** The requester's headers whose lower-cased names start with this never reach the target either. */
  droppedPrefix: string | undefined;
  allowQuery: boolean;
  timeoutMs: number | undefined;
  tls: TlsConfig | undefined;
  /** Identifies `tls` for sharing one connection pool among identical TLS settings. */
  tlsId: string | undefined;
  /** Identifies the connection pool requests to this target use (origin and TLS settings). */
  poolKey: string;
  /** Names of the query parameters the config's uri fixes (decoded, lower-cased): a requester's query may not repeat them. */
  fixedQueryNames: ReadonlySet<string> | undefined;
  /** The signature scheme and its signer, when the config names one. */
  signing: { scheme: SignatureScheme<never>; signer: Signer } | undefined;
}

/** Values many targets have in common (origins, header lists, TLS configs), shared. */
const shared = new Interner(10_000);

/**
 * Headers by which many frameworks (Rails, Express's method-override,
 * ASP.NET, Google's APIs…) let a request name another method: dropped
 * from the requester's headers when the config fixes the method, so that
 * the method stays fixed for whoever reads them.
 */
const METHOD_OVERRIDE_HEADERS: readonly string[] = ['x-http-method-override', 'x-http-method', 'x-method-override'];

export function prepareTarget(config: UriExportConfig): Target {
  const url = new URL(config.uri);
  let signing: Target['signing'];
  let pathname = url.pathname;
  let signerHeaderNames: readonly string[] = [];
  if (config.hmac !== undefined) {
    const scheme = schemeOf(config.hmac);
    const schemeConfig = (config.hmac as Record<string, unknown>)[scheme.name] as never;
    signerHeaderNames = [...scheme.headerNames];
    signing = { scheme, signer: scheme.createSigner(schemeConfig) };
    pathname = scheme.wirePath?.(schemeConfig, pathname) ?? pathname;
  }
  const configHeaders = Object.entries(config.headers ?? {});
  const headers = shared.get(`h${JSON.stringify(configHeaders)}`, () => Object.freeze(configHeaders.flat()));
  const droppedNames = [...signerHeaderNames, ...(config.method === undefined ? [] : METHOD_OVERRIDE_HEADERS)];
  const headerNames = shared.get(`n${JSON.stringify([configHeaders.map(([name]) => name.toLowerCase()), droppedNames])}`, () => {
    const names = new Set<string>(droppedNames);
    for (const [name] of configHeaders) names.add(name.toLowerCase());
    return names as ReadonlySet<string>;
  });
  const literal = url.hostname.replace(/^\[|\]$/g, '');
  const tlsId = config.tls === undefined ? undefined : hash('sha256', JSON.stringify([config.tls.ca, config.tls.cert, config.tls.key, config.tls.rejectUnauthorized]), 'base64');
  const fixedQueryNames = config.allowQuery === true ? fixedParameterNames(url.search.slice(1), config.method !== undefined) : undefined;
  return {
    origin: shared.string(url.origin),
    host: shared.string(url.host),
    literalAddress: isIP(literal) === 0 ? undefined : shared.string(literal),
    path: pathname + url.search,
    pathHasQuery: url.search !== '',
    method: config.method === undefined ? undefined : shared.string(config.method),
    headers,
    headerNames,
    droppedPrefix: signing?.scheme.configOnlyHeaderPrefix,
    allowQuery: config.allowQuery === true,
    timeoutMs: config.timeoutMs,
    tls: tlsId === undefined ? undefined : shared.get(`t${tlsId}`, () => config.tls),
    tlsId,
    poolKey: shared.string(tlsId === undefined ? url.origin : `${url.origin} ${tlsId}`),
    fixedQueryNames,
    signing,
  };
}

/**
 * The path to request from the target: the config's path, plus the
 * requester's query string when the config allows it (joined with `&` when
 * the config's uri already has a query). The requester's path is ignored.
 */
export function targetPath(target: Target, requestUrl: string): string {
  if (!target.allowQuery) return target.path;
  const mark = requestUrl.indexOf('?');
  if (mark === -1 || mark === requestUrl.length - 1) return target.path;
  const query = requestUrl.slice(mark + 1);
  if (target.fixedQueryNames !== undefined) {
    const repeated = queryNames(query).find((name) => target.fixedQueryNames!.has(name));
    if (repeated !== undefined) {
      throw new BadRequestError('the query string names a parameter the capability fixes; it cannot be given again');
    }
  }
  return target.path + (target.pathHasQuery ? '&' : '?') + query;
}

/**
 * Query parameters by which frameworks (Laravel and Symfony, Express's
 * method-override) let a request name another method: a holder may not
 * send them when the config fixes the method.
 */
const METHOD_OVERRIDE_PARAMETERS: readonly string[] = ['_method'];

/** The names a requester's query may not give: those the config's uri has, and the method overrides when the method is fixed. Undefined when there are none. */
function fixedParameterNames(query: string, methodFixed: boolean): ReadonlySet<string> | undefined {
  const names = new Set(queryNames(query).filter((name) => name !== ''));
  if (methodFixed) for (const name of METHOD_OVERRIDE_PARAMETERS) names.add(name);
  return names.size === 0 ? undefined : names;
}

/**
 * The parameter names of a query string (`&` and `;` separate), each in
 * the one form that any reader's spelling of it comes down to (see
 * canonicalName).
 */
function queryNames(query: string): string[] {
  const names: string[] = [];
  for (const piece of query.split(/[&;]/)) {
    if (piece === '') continue;
    const equals = piece.indexOf('=');
    names.push(canonicalName(equals === -1 ? piece : piece.slice(0, equals)));
  }
  return names;
}

/** How many times a name is decoded at most (some readers decode twice). */
const DECODINGS = 3;

/**
 * A parameter name as readers may take it, so that every spelling of one
 * name compares equal: `+` as a space; percent-decoded leniently (as PHP's
 * urldecode: a malformed escape is left as written), again while escapes
 * remain (for readers that decode twice); cut at a NUL; without leading
 * whitespace; without a trailing `[…]` (PHP and Rails read `a[]` and
 * `a[x]` as `a`); with `.`, spaces and an unclosed `[` as `_` (PHP reads
 * `a.b`, `a b` and `a[b` as `a_b`); and case-folded beyond lower-casing
 * (compatibility forms such as `ﬀ` as `ff`; `ſ`, `ı` and `İ`, which
 * Python, Java and Go match against `s` and `i`). So `region`, `REGION`,
 * `reg%69on`, `region[]`, `%2572egion` and ` region` are one name, and
 * `user.id` is `user_id`.
 */
function canonicalName(raw: string): string {
  let name = raw.replace(/\+/g, ' ');
  for (let i = 0; i < DECODINGS && /%[0-9A-Fa-f]{2}/.test(name); i++) name = decodeLeniently(name);
  const nul = name.indexOf('\0');
  if (nul !== -1) name = name.slice(0, nul);
  name = name.replace(/^\s+/, '');
  const bracket = name.indexOf('[');
  if (bracket > 0 && name.indexOf(']', bracket) !== -1) name = name.slice(0, bracket);
  return name
    .replace(/[.\s[]/g, '_')
    .normalize('NFKC')
    .toUpperCase()
    .toLowerCase()
    .replace(/i\u0307/g, 'i');
}

/** Percent-decoding that leaves a malformed escape as it is written, and reads the bytes as UTF-8 (a malformed sequence as U+FFFD). */
function decodeLeniently(text: string): string {
  const parts = text.split(/(%[0-9A-Fa-f]{2})/);
  return Buffer.concat(parts.map((part, i) => (i % 2 === 1 ? Buffer.of(parseInt(part.slice(1), 16)) : Buffer.from(part, 'utf8')))).toString('utf8');
}

/** A request path split into path and query (without `?`). */
export function splitPath(path: string): { path: string; query: string } {
  const mark = path.indexOf('?');
  return mark === -1 ? { path, query: '' } : { path: path.slice(0, mark), query: path.slice(mark + 1) };
}
