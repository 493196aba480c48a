/** A small HTTP client for tests: invoke a capability, read status, headers and body. */
import { request } from 'undici';

export interface CallInit {
  method?: string;
  /** A string or Buffer is sent as is; anything else as JSON. */
  body?: unknown;
  headers?: Record<string, string | string[]>;
  /** Request path and query (the path is ignored by Membrane, the query is not). */
  path?: string;
}

export interface CallResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, or undefined if it is not JSON. */
  json: any;
}

/** The token part of a capability URI. */
export function tokenOf(capability: string): string {
  return capability.slice(capability.indexOf('#') + 1);
}

/** Calls `baseUrl` with `Authorization: Bearer <token of capability>` (no header if capability is undefined). */
export async function call(baseUrl: string, capability: string | undefined, init: CallInit = {}): Promise<CallResult> {
  const headers: Record<string, string | string[]> = { ...(init.headers ?? {}) };
  if (capability !== undefined) headers.authorization = `Bearer ${tokenOf(capability)}`;
  let body: string | Buffer | undefined;
  if (init.body !== undefined) body = typeof init.body === 'string' || Buffer.isBuffer(init.body) ? init.body : JSON.stringify(init.body);
  const response = await request(new URL(init.path ?? '/', baseUrl), {
    method: (init.method ?? (body === undefined ? 'GET' : 'POST')) as 'GET',
    headers,
    body,
  });
  const text = await response.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.statusCode, headers: response.headers, text, json };
}

/** Conveniences over `call` for the control plane, asserting success. */
export class ControlPlane {
  constructor(readonly baseUrl: string) {}

  async createMembrane(create: string, id: string): Promise<{ export: string; revoke: string }> {
    const result = await call(this.baseUrl, create, { body: { id } });
    if (result.status !== 201) throw new Error(`create ${id}: ${result.status} ${result.text}`);
    return result.json.capabilities;
  }

  async export(exportCapability: string, config: unknown): Promise<string> {
    const result = await call(this.baseUrl, exportCapability, { body: config });
    if (result.status !== 201) throw new Error(`export: ${result.status} ${result.text}`);
    return result.json.capability;
  }

  async revoke(revoke: string): Promise<void> {
    const result = await call(this.baseUrl, revoke, { method: 'POST' });
    if (result.status !== 202) throw new Error(`revoke: ${result.status} ${result.text}`);
  }

  /** The status an invocation of `capability` answers with. */
  async statusOf(capability: string): Promise<number> {
    return (await call(this.baseUrl, capability)).status;
  }
}
