/**
 * The storage seam. The service owns every domain rule (who may do what,
 * when a capability is alive); a Store only keeps rows and answers
 * questions about them, each in one round trip. SQLite implements it now;
 * a PostgreSQL implementation must satisfy the same contract:
 *
 * - every mutating method has committed durably when its promise resolves;
 * - `findCapability` returns the capability and, for a re-export, every link
 *   of its chain up to the root in a single query; of a chain longer than
 *   CHAIN_LENGTH_LIMIT it returns the first CHAIN_LENGTH_LIMIT + 1 links
 *   (and no config, as the root is not among them);
 * - membrane names are unique among a tenant's live (unrevoked) membranes;
 * - membranes are listed in binary (UTF-8 byte / code point) order of name.
 *
 * Tokens never reach a Store: only their SHA-256 hashes and, where the
 * contract needs the token back, a sealed copy.
 */

/**
 * The most capabilities one chain may hold: an original (uri) export and
 * the re-exports below it, one under the other. `findCapability` reads at
 * most one link more than this, however long a chain in the store is.
 */
export const CHAIN_LENGTH_LIMIT = 32;

export type CapabilityKind = 'create' | 'query' | 'deleteSelf' | 'export' | 'revoke' | 'exported';

export const CAPABILITY_KINDS: readonly CapabilityKind[] = ['create', 'query', 'deleteSelf', 'export', 'revoke', 'exported'];

/** One link of a capability's chain: the capability itself first, its root last. */
export interface ChainLink {
  capabilityId: number;
  /** SHA-256 of the link's token (for audit ids; never the token). */
  tokenHash: Buffer;
  /** The membrane the link's capability belongs to; null for a tenant's root capabilities. */
  membraneId: number | null;
  /** The membrane's id as its tenant named it. */
  membraneName: string | null;
  membraneRevoked: boolean;
}

export interface CapabilityRecord {
  id: number;
  kind: CapabilityKind;
  tenantId: number;
  tenantDeleted: boolean;
  membraneId: number | null;
  /** From the capability itself (index 0) to the root of its chain. */
  chain: ChainLink[];
  /** The sealed export config of the chain's root (exported capabilities only; null when the chain was cut off). */
  sealedConfig: Buffer | null;
}

export interface TenantRootHashes {
  create: Buffer;
  query: Buffer;
  deleteSelf: Buffer;
}

export interface NewMembrane {
  tenantId: number;
  name: string;
  exportHash: Buffer;
  revokeHash: Buffer;
  sealedExportToken: Buffer;
  sealedRevokeToken: Buffer;
}

export type CreateMembraneResult =
  | { outcome: 'created'; membraneId: number }
  | { outcome: 'duplicate' }
  | { outcome: 'tenant-deleted' };

export interface NewExportedCapability {
  hash: Buffer;
  /** The exporting membrane; its tenant owns the capability. */
  membraneId: number;
  /** Set for a uri export (the chain's root); null for a re-export. */
  sealedConfig: Buffer | null;
  /** Set for a re-export: the capability it was made from. */
  parentId: number | null;
}

export interface MembraneListing {
  name: string;
  sealedExportToken: Buffer;
  sealedRevokeToken: Buffer;
}

export interface ListMembranesQuery {
  tenantId: number;
  /** Only the membrane with exactly this name. */
  name?: string | undefined;
  /** Only membranes whose names sort after this one. */
  after?: string | undefined;
  limit: number;
}

export interface Store {
  /** True when the store holds no tenant at all (never bootstrapped). */
  isEmpty(): Promise<boolean>;
  getMeta(key: string): Promise<Buffer | undefined>;
  /** Resolves when the store answers a trivial query (readiness). */
  ping(): Promise<void>;
  /** Sets a meta value only if the key is absent; returns the value now stored. */
  initMeta(key: string, value: Buffer): Promise<Buffer>;

  /**
   * Creates a tenant with its three root capabilities and returns its id.
   * With `onlyIfEmpty`, does so only if the store holds no tenant yet
   * (atomically), and returns undefined otherwise.
   */
  createTenant(roots: TenantRootHashes, options: { onlyIfEmpty: boolean }): Promise<number | undefined>;
  /** Marks the tenant deleted and revokes all its live membranes; returns their ids. */
  deleteTenant(tenantId: number): Promise<number[]>;

  createMembrane(membrane: NewMembrane): Promise<CreateMembraneResult>;
  listMembranes(query: ListMembranesQuery): Promise<MembraneListing[]>;
  /** Marks the membrane revoked; false if it already was. */
  revokeMembrane(membraneId: number): Promise<boolean>;

  /**
   * Adds an exported capability, atomically only if its membrane is live and
   * its tenant not deleted; returns its id, or undefined if not added.
   */
  insertExportedCapability(capability: NewExportedCapability): Promise<number | undefined>;
  findCapability(hash: Buffer): Promise<CapabilityRecord | undefined>;

  /** Names of the columns that hold sealed values, e.g. `membranes.sealed_export_token` (`meta.value` for meta). */
  sealedColumns(): readonly string[];
  /**
   * Up to `limit` cells of a sealed column whose value was not sealed under
   * `keyId` (the key id is bytes 1-8 of a sealed value), in row order after
   * `after` (null: from the start).
   */
  findSealed(column: string, keyId: Buffer, after: string | number | null, limit: number): Promise<SealedCell[]>;
  /** Replaces a sealed cell's value if it still holds `expected`; false if it changed meanwhile. */
  replaceSealed(column: string, row: string | number, expected: Buffer, value: Buffer): Promise<boolean>;
  /**
   * Erases from the store's files every copy of a value that was since
   * replaced or deleted (older row versions, freed space, logs), so that
   * after a key rotation no file holds anything a retired key opens.
   * Rejects if it cannot finish (the store stays consistent).
   */
  eraseReplaced(): Promise<void>;

  close(): Promise<void>;
}

export interface SealedCell {
  /** The row's key: an id, or for meta the meta key. */
  row: string | number;
  value: Buffer;
}
