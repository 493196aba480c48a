/**
 * A Target is an export config made ready to forward to: parsed once when
 * a capability is resolved, then reused for every invocation.
 */
import { hash } from 'node:crypto';
import { isIP } from 'node:net';
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
  /** The signature scheme and its signer, when the config names one. */
  signing: { scheme: SignatureScheme<never>; signer: Signer } | undefined;
}

/** Values many targets have in common (origins, header lists, TLS configs), shared. */
const shared = new Interner(10_000);

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
  const headerNames = shared.get(`n${JSON.stringify([configHeaders.map(([name]) => name.toLowerCase()), signerHeaderNames])}`, () => {
    const names = new Set<string>(signerHeaderNames);
    for (const [name] of configHeaders) names.add(name.toLowerCase());
    return names as ReadonlySet<string>;
  });
  const literal = url.hostname.replace(/^\[|\]$/g, '');
  const tlsId = config.tls === undefined ? undefined : hash('sha256', JSON.stringify([config.tls.ca, config.tls.cert, config.tls.key, config.tls.rejectUnauthorized]), 'base64');
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
  return target.path + (target.pathHasQuery ? '&' : '?') + requestUrl.slice(mark + 1);
}

/** A request path split into path and query (without `?`). */
export function splitPath(path: string): { path: string; query: string } {
  const mark = path.indexOf('?');
  return mark === -1 ? { path, query: '' } : { path: path.slice(0, mark), query: path.slice(mark + 1) };
}
