/**
 * A typed, promise-based client for the Membrane service's control plane.
 * Each call expects exactly the status and shape the wire contract gives
 * its success (201, 200 or 202); anything else, a redirect included, is a
 * MembraneHttpError rather than a silent success.
 */
import type { ExportConfig, MembraneView, QueryResult } from '../wire.js';
import { requestReply, type ClientOptions, type RequestInit } from './client.js';
import { MembraneHttpError } from './errors.js';

export interface QueryOptions {
  /** Only the membrane with this id. */
  id?: string;
  /** Only membranes whose ids sort after this one (the last id of the previous page). */
  lastId?: string;
  /** Page size: 1 (the default) to 1000. */
  limit?: number;
}

export class Membrane {
  readonly #options: ClientOptions;

  constructor(options: ClientOptions = {}) {
    this.#options = options;
  }

  /** Creates a membrane with a tenant's `create` capability. */
  async create(createCapability: string, membrane: { id: string }): Promise<MembraneView> {
    const view = await this.#call<MembraneView>(createCapability, 201, { method: 'POST', body: JSON.stringify(membrane), headers: JSON_BODY });
    return expectShape(view, isMembraneView(view), 'a membrane', 201);
  }

  /** Exports a capability through a membrane with its `export` capability. */
  async export(exportCapability: string, config: ExportConfig): Promise<{ capability: string }> {
    const result = await this.#call<{ capability: string }>(exportCapability, 201, { method: 'POST', body: JSON.stringify(config), headers: JSON_BODY });
    return expectShape(result, typeof result?.capability === 'string', 'a capability', 201);
  }

  /** One page of a tenant's live membranes, ordered by id. */
  async query(queryCapability: string, query: QueryOptions = {}): Promise<QueryResult> {
    const parameters: Record<string, string> = {};
    if (query.id !== undefined) parameters.id = query.id;
    if (query.lastId !== undefined) parameters.lastId = query.lastId;
    if (query.limit !== undefined) parameters.limit = String(query.limit);
    const result = await this.#call<QueryResult>(queryCapability, 200, { method: 'GET', query: parameters });
    return expectShape(
      result,
      Array.isArray(result?.membranes) && typeof result.completed === 'boolean' && result.membranes.every(isMembraneView),
      'a page of membranes',
      200,
    );
  }

  /** Every live membrane (or the one with `id`), page by page. */
  async *queryAll(queryCapability: string, query: Omit<QueryOptions, 'lastId'> = {}): AsyncGenerator<MembraneView, void, undefined> {
    let lastId: string | undefined;
    for (;;) {
      const page = await this.query(queryCapability, { ...query, limit: query.limit ?? 1000, lastId });
      yield* page.membranes;
      if (page.completed || page.membranes.length === 0) return;
      lastId = page.membranes.at(-1)!.id;
    }
  }

  /** Revokes a membrane with its `revoke` capability; revoking again is fine. */
  async revoke(revokeCapability: string): Promise<void> {
    await this.#call(revokeCapability, 202, { method: 'POST' });
  }

  /** Revokes every membrane of the tenant; its root capabilities die too. */
  async deleteSelf(deleteSelfCapability: string): Promise<void> {
    await this.#call(deleteSelfCapability, 202, { method: 'POST' });
  }

  #call<T>(capability: string, expectStatus: number, init: RequestInit): Promise<T> {
    return requestReply<T>(capability, { ...this.#options, ...init, expectStatus });
  }
}

function isMembraneView(value: unknown): value is MembraneView {
  const view = value as MembraneView | undefined;
  return typeof view?.id === 'string' && typeof view.capabilities?.export === 'string' && typeof view.capabilities.revoke === 'string';
}

function expectShape<T>(value: T, ok: boolean, what: string, status: number): T {
  if (!ok) throw new MembraneHttpError(status, 'Invalid Response', `the answer is not ${what}`);
  return value;
}

const JSON_BODY = { 'content-type': 'application/json' } as const;
