/** A typed, promise-based client for the Membrane service's control plane. */
import type { ExportConfig, MembraneView, QueryResult } from '../wire.js';
import { requestReply, type ClientOptions } from './client.js';

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
  create(createCapability: string, membrane: { id: string }): Promise<MembraneView> {
    return requestReply<MembraneView>(createCapability, { ...this.#options, method: 'POST', body: JSON.stringify(membrane), headers: JSON_BODY });
  }

  /** Exports a capability through a membrane with its `export` capability. */
  export(exportCapability: string, config: ExportConfig): Promise<{ capability: string }> {
    return requestReply(exportCapability, { ...this.#options, method: 'POST', body: JSON.stringify(config), headers: JSON_BODY });
  }

  /** One page of a tenant's live membranes, ordered by id. */
  query(queryCapability: string, query: QueryOptions = {}): Promise<QueryResult> {
    const parameters: Record<string, string> = {};
    if (query.id !== undefined) parameters.id = query.id;
    if (query.lastId !== undefined) parameters.lastId = query.lastId;
    if (query.limit !== undefined) parameters.limit = String(query.limit);
    return requestReply<QueryResult>(queryCapability, { ...this.#options, method: 'GET', query: parameters });
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
    await requestReply(revokeCapability, { ...this.#options, method: 'POST' });
  }

  /** Revokes every membrane of the tenant; its root capabilities die too. */
  async deleteSelf(deleteSelfCapability: string): Promise<void> {
    await requestReply(deleteSelfCapability, { ...this.#options, method: 'POST' });
  }
}

const JSON_BODY = { 'content-type': 'application/json' } as const;
