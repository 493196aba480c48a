/**
 * Which headers cross the membrane, in each direction.
 *
 * Hop-by-hop headers never cross: `Connection` and every header it names,
 * `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
 * Toward the target, the requester's `Authorization` (its capability),
 * `Host`, `Expect`, `X-Original-URL` and `X-Rewrite-URL` never cross
 * either, and a header the export config sets replaces the requester's
 * header of that name.
 * Headers travel as flat [name, value, name, value, …] arrays, keeping the
 * sender's case, order and repeated fields.
 */

import type { IncomingMessage } from 'node:http';

const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/**
 * Toward the target only: the capability, the target's own host,
 * 100-continue (answered by Membrane itself), and the headers by which
 * some servers (IIS, older Symfony and Zend) let a request name another
 * path than its request line's: the path is the config's alone.
 */
const REQUEST_ONLY: ReadonlySet<string> = new Set(['authorization', 'host', 'expect', 'x-original-url', 'x-rewrite-url']);

function isHopByHop(lowerName: string): boolean {
  return HOP_BY_HOP.has(lowerName) || lowerName.startsWith('proxy-');
}

/** Lower-cased header names listed in every `Connection` header of a raw header list. */
function namedByConnection(raw: readonly string[]): ReadonlySet<string> | undefined {
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 10 && raw[i]!.toLowerCase() === 'connection') {
      named ??= new Set();
      for (const token of raw[i + 1]!.split(',')) {
        const name = token.trim().toLowerCase();
        if (name !== '') named.add(name);
      }
    }
  }
  return named;
}

/**
 * The requester's headers as they go to the target: hop-by-hop, capability,
 * host and expect removed, any name in `dropped` (lower-case: the names the
 * config or a signer sets, so theirs win) removed, and any name starting
 * with `droppedPrefix` removed. Names are compared with `_` as `-`.
 */
export function requestHeadersToTarget(raw: readonly string[], dropped: ReadonlySet<string>, droppedPrefix?: string): string[] {
  const named = namedByConnection(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    // `_` read as `-`: servers that pass headers on as variables (CGI, PHP, some proxies) read X_Api_Key as X-Api-Key.
    let lower = raw[i]!.toLowerCase();
    if (lower.includes('_')) lower = lower.replace(/_/g, '-');
    if (isHopByHop(lower) || REQUEST_ONLY.has(lower) || dropped.has(lower) || named?.has(lower)) continue;
    if (droppedPrefix !== undefined && lower.startsWith(droppedPrefix)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/**
 * The target's response headers as they go back to the requester; without
 * Content-Length when `dropLength` (an answer without a body to describe).
 */
export function responseHeadersToClient(raw: readonly string[], dropLength = false): string[] {
  const named = namedByConnection(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (isHopByHop(lower) || named?.has(lower) || (dropLength && lower === 'content-length')) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/** True when the request announces a body (a non-zero Content-Length, or any Transfer-Encoding). */
export function requestHasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * One field line per name: repeated headers merged into the first, values
 * joined with `, ` (RFC 9110 §5.3; `; ` for Cookie, RFC 6265 §5.4). Signed
 * requests are sent this way, so that what a verifier reads from its header
 * map is exactly what was signed.
 */
export function mergeRepeatedHeaders(flat: readonly string[]): string[] {
  const out: string[] = [];
  const position = new Map<string, number>();
  for (let i = 0; i < flat.length; i += 2) {
    const lower = flat[i]!.toLowerCase();
    const at = position.get(lower);
    if (at === undefined) {
      position.set(lower, out.length);
      out.push(flat[i]!, flat[i + 1]!);
    } else {
      out[at + 1] += `${lower === 'cookie' ? '; ' : ', '}${flat[i + 1]!}`;
    }
  }
  return out;
}
