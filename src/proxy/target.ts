/**
 * A Target is an export config made ready to forward to: parsed once when
 * a capability is resolved, then reused for every invocation.
 */
import { createHash } from 'node:crypto';
import type { HmacConfig, TlsConfig, UriExportConfig } from '../service/export-config.js';

export interface Target {
  /** `scheme://host:port` of the target. */
  origin: string;
  /** Path and query of the config's uri. */
  path: string;
  /** True when `path` already carries a query string. */
  pathHasQuery: boolean;
  /** Fixed method, or undefined to use the requester's. */
  method: string | undefined;
  /** Config headers, flat [name, value, …]. */
  headers: readonly string[];
  /** Lower-cased names of the config headers. */
  headerNames: ReadonlySet<string>;
  allowQuery: boolean;
  timeoutMs: number | undefined;
  tls: TlsConfig | undefined;
  /** Identifies `tls` for sharing one connection pool among identical TLS settings. */
  tlsId: string | undefined;
  hmac: HmacConfig | undefined;
}

export function prepareTarget(config: UriExportConfig): Target {
  const url = new URL(config.uri);
  const headers: string[] = [];
  const headerNames = new Set<string>();
  for (const [name, value] of Object.entries(config.headers ?? {})) {
    headers.push(name, value);
    headerNames.add(name.toLowerCase());
  }
  return {
    origin: url.origin,
    path: url.pathname + url.search,
    pathHasQuery: url.search !== '',
    method: config.method,
    headers,
    headerNames,
    allowQuery: config.allowQuery === true,
    timeoutMs: config.timeoutMs,
    tls: config.tls,
    tlsId:
      config.tls === undefined
        ? undefined
        : createHash('sha256')
            .update(JSON.stringify([config.tls.ca, config.tls.cert, config.tls.key, config.tls.rejectUnauthorized]))
            .digest('base64'),
    hmac: config.hmac,
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
