/**
 * Store on an embedded SQLite file (better-sqlite3), WAL journal with
 * synchronous=FULL: when a method returns, its transaction is on disk and
 * survives kill -9 (and power loss). Several processes may open the same
 * file (a running server and `membrane tenant create`); writers queue on
 * SQLite's lock for up to `busyTimeoutMs`.
 */
import Database from 'better-sqlite3';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import {
  CHAIN_LENGTH_LIMIT,
  type CapabilityKind,
  type CapabilityRecord,
  type CreateMembraneResult,
  type ListMembranesQuery,
  type MembraneListing,
  type NewExportedCapability,
  type NewMembrane,
  type SealedCell,
  type Store,
  type TenantRootHashes,
} from '../store.js';
import { ConfigurationError } from '../../errors.js';
import { MIGRATIONS } from './migrations.js';

export const DATABASE_FILE_NAME = 'membrane.db';

export interface SqliteStoreOptions {
  /** Directory holding the database file; created (mode 0700) if missing. */
  dataDir: string;
  busyTimeoutMs?: number;
}

interface ChainRow {
  id: number;
  token_hash: Buffer;
  membrane_name: string | null;
  kind: CapabilityKind;
  tenant_id: number;
  membrane_id: number | null;
  sealed_config: Buffer | null;
  membrane_revoked: 0 | 1;
  tenant_deleted: 0 | 1;
}

interface MembraneRow {
  name: string;
  sealed_export_token: Buffer;
  sealed_revoke_token: Buffer;
}

/** Sealed columns: table, column, and the row key column. */
const SEALED_COLUMNS: Record<string, { table: string; column: string; key: string }> = {
  'membranes.sealed_export_token': { table: 'membranes', column: 'sealed_export_token', key: 'id' },
  'membranes.sealed_revoke_token': { table: 'membranes', column: 'sealed_revoke_token', key: 'id' },
  'capabilities.sealed_config': { table: 'capabilities', column: 'sealed_config', key: 'id' },
  'meta.value': { table: 'meta', column: 'value', key: 'key' },
};

export class SqliteStore implements Store {
  readonly #db: Database.Database;
  readonly #statements;

  private constructor(db: Database.Database) {
    this.#db = db;
    this.#statements = {
      anyTenant: db.prepare('SELECT 1 FROM tenants LIMIT 1').pluck(),
      ping: db.prepare('SELECT 1').pluck(),
      getMeta: db.prepare('SELECT value FROM meta WHERE key = ?').pluck(),
      insertMeta: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING'),
      insertTenant: db.prepare('INSERT INTO tenants (created_at) VALUES (?)'),
      deleteTenant: db.prepare('UPDATE tenants SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL'),
      revokeTenantMembranes: db
        .prepare('UPDATE membranes SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL RETURNING id')
        .pluck(),
      tenantLive: db.prepare('SELECT 1 FROM tenants WHERE id = ? AND deleted_at IS NULL').pluck(),
      insertMembrane: db.prepare(
        'INSERT INTO membranes (tenant_id, name, sealed_export_token, sealed_revoke_token, created_at) VALUES (?, ?, ?, ?, ?)',
      ),
      revokeMembrane: db.prepare('UPDATE membranes SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
      insertExported: db.prepare(
        `INSERT INTO capabilities (token_hash, kind, tenant_id, membrane_id, parent_id, sealed_config, created_at)
         SELECT ?, 'exported', m.tenant_id, m.id, ?, ?, ?
           FROM membranes m JOIN tenants t ON t.id = m.tenant_id
          WHERE m.id = ? AND m.revoked_at IS NULL AND t.deleted_at IS NULL`,
      ),
      insertCapability: db.prepare(
        `INSERT INTO capabilities (token_hash, kind, tenant_id, membrane_id, parent_id, sealed_config, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ),
      // One round trip for the whole chain: the capability itself at depth
      // 0, then each parent up to the root, at most one link past the limit.
      findChain: db.prepare(`
        WITH RECURSIVE chain (depth, id, token_hash, kind, tenant_id, membrane_id, parent_id, sealed_config) AS (
          SELECT 0, id, token_hash, kind, tenant_id, membrane_id, parent_id, sealed_config
            FROM capabilities WHERE token_hash = ?
          UNION ALL
          SELECT chain.depth + 1, c.id, c.token_hash, c.kind, c.tenant_id, c.membrane_id, c.parent_id, c.sealed_config
            FROM capabilities c JOIN chain ON c.id = chain.parent_id
           WHERE chain.depth < ${CHAIN_LENGTH_LIMIT}
        )
        SELECT chain.id, chain.token_hash, chain.kind, chain.tenant_id, chain.membrane_id, chain.sealed_config,
               m.name AS membrane_name,
               m.revoked_at IS NOT NULL AS membrane_revoked,
               t.deleted_at IS NOT NULL AS tenant_deleted
          FROM chain
          JOIN tenants t ON t.id = chain.tenant_id
          LEFT JOIN membranes m ON m.id = chain.membrane_id
         ORDER BY chain.depth`),
      listAll: db.prepare(
        `SELECT name, sealed_export_token, sealed_revoke_token FROM membranes
          WHERE tenant_id = ? AND revoked_at IS NULL AND name > ? ORDER BY name LIMIT ?`,
      ),
      listFirst: db.prepare(
        `SELECT name, sealed_export_token, sealed_revoke_token FROM membranes
          WHERE tenant_id = ? AND revoked_at IS NULL ORDER BY name LIMIT ?`,
      ),
      listByName: db.prepare(
        `SELECT name, sealed_export_token, sealed_revoke_token FROM membranes
          WHERE tenant_id = ? AND revoked_at IS NULL AND name = ?`,
      ),
      listByNameAfter: db.prepare(
        `SELECT name, sealed_export_token, sealed_revoke_token FROM membranes
          WHERE tenant_id = ? AND revoked_at IS NULL AND name = ? AND name > ?`,
      ),
    };
  }

  static open(options: SqliteStoreOptions): SqliteStore {
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const path = join(options.dataDir, DATABASE_FILE_NAME);
    // Create the file private; SQLite gives its -wal and -shm files the same mode.
    closeSync(openSync(path, 'a', 0o600));
    const db = new Database(path);
    try {
      db.pragma(`busy_timeout = ${Math.trunc(options.busyTimeoutMs ?? 10_000)}`);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      // Space freed by an update or delete is zeroed, never left holding the old value (see eraseReplaced).
      db.pragma('secure_delete = ON');
      migrate(db);
      return new SqliteStore(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  async isEmpty(): Promise<boolean> {
    return this.#statements.anyTenant.get() === undefined;
  }

  async ping(): Promise<void> {
    this.#statements.ping.get();
  }

  async getMeta(key: string): Promise<Buffer | undefined> {
    return this.#statements.getMeta.get(key) as Buffer | undefined;
  }

  async initMeta(key: string, value: Buffer): Promise<Buffer> {
    return this.#db.transaction(() => {
      this.#statements.insertMeta.run(key, value);
      return this.#statements.getMeta.get(key) as Buffer;
    }).immediate();
  }

  async createTenant(roots: TenantRootHashes, options: { onlyIfEmpty: boolean }): Promise<number | undefined> {
    return this.#db.transaction(() => {
      if (options.onlyIfEmpty && this.#statements.anyTenant.get() !== undefined) return undefined;
      const now = Date.now();
      const tenantId = Number(this.#statements.insertTenant.run(now).lastInsertRowid);
      for (const [kind, hash] of Object.entries(roots) as [CapabilityKind, Buffer][]) {
        this.#statements.insertCapability.run(hash, kind, tenantId, null, null, null, now);
      }
      return tenantId;
    }).immediate();
  }

  async deleteTenant(tenantId: number): Promise<number[]> {
    return this.#db.transaction(() => {
      const now = Date.now();
      this.#statements.deleteTenant.run(now, tenantId);
      return this.#statements.revokeTenantMembranes.all(now, tenantId) as number[];
    }).immediate();
  }

  async createMembrane(membrane: NewMembrane): Promise<CreateMembraneResult> {
    return this.#db.transaction((): CreateMembraneResult => {
      if (this.#statements.tenantLive.get(membrane.tenantId) === undefined) return { outcome: 'tenant-deleted' };
      const now = Date.now();
      let membraneId: number;
      try {
        membraneId = Number(
          this.#statements.insertMembrane.run(
            membrane.tenantId,
            membrane.name,
            membrane.sealedExportToken,
            membrane.sealedRevokeToken,
            now,
          ).lastInsertRowid,
        );
      } catch (error) {
        if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') return { outcome: 'duplicate' };
        throw error;
      }
      this.#statements.insertCapability.run(membrane.exportHash, 'export', membrane.tenantId, membraneId, null, null, now);
      this.#statements.insertCapability.run(membrane.revokeHash, 'revoke', membrane.tenantId, membraneId, null, null, now);
      return { outcome: 'created', membraneId };
    }).immediate();
  }

  async listMembranes(query: ListMembranesQuery): Promise<MembraneListing[]> {
    let rows: MembraneRow[];
    if (query.name !== undefined) {
      rows = (
        query.after === undefined
          ? this.#statements.listByName.all(query.tenantId, query.name)
          : this.#statements.listByNameAfter.all(query.tenantId, query.name, query.after)
      ) as MembraneRow[];
    } else if (query.after !== undefined) {
      rows = this.#statements.listAll.all(query.tenantId, query.after, query.limit) as MembraneRow[];
    } else {
      rows = this.#statements.listFirst.all(query.tenantId, query.limit) as MembraneRow[];
    }
    return rows.map((row) => ({
      name: row.name,
      sealedExportToken: row.sealed_export_token,
      sealedRevokeToken: row.sealed_revoke_token,
    }));
  }

  async revokeMembrane(membraneId: number): Promise<boolean> {
    return this.#statements.revokeMembrane.run(Date.now(), membraneId).changes > 0;
  }

  async insertExportedCapability(capability: NewExportedCapability): Promise<number | undefined> {
    const result = this.#statements.insertExported.run(
      capability.hash,
      capability.parentId,
      capability.sealedConfig,
      Date.now(),
      capability.membraneId,
    );
    return result.changes === 0 ? undefined : Number(result.lastInsertRowid);
  }

  /**
   * Bulk loading (imports, benchmarks): inserts many exported capabilities
   * in one transaction, with the same checks as insertExportedCapability.
   * Returns their ids (undefined where the membrane was not live).
   */
  insertExportedCapabilities(capabilities: readonly NewExportedCapability[]): (number | undefined)[] {
    return this.#db.transaction(() =>
      capabilities.map((capability) => {
        const result = this.#statements.insertExported.run(capability.hash, capability.parentId, capability.sealedConfig, Date.now(), capability.membraneId);
        return result.changes === 0 ? undefined : Number(result.lastInsertRowid);
      }),
    )();
  }

  async findCapability(hash: Buffer): Promise<CapabilityRecord | undefined> {
    const rows = this.#statements.findChain.all(hash) as ChainRow[];
    const self = rows[0];
    if (self === undefined) return undefined;
    return {
      id: self.id,
      kind: self.kind,
      tenantId: self.tenant_id,
      tenantDeleted: self.tenant_deleted === 1,
      membraneId: self.membrane_id,
      chain: rows.map((row) => ({
        capabilityId: row.id,
        tokenHash: row.token_hash,
        membraneId: row.membrane_id,
        membraneName: row.membrane_name,
        membraneRevoked: row.membrane_revoked === 1,
      })),
      sealedConfig: rows[rows.length - 1]!.sealed_config,
    };
  }

  sealedColumns(): readonly string[] {
    return Object.keys(SEALED_COLUMNS);
  }

  async findSealed(column: string, keyId: Buffer, after: string | number | null, limit: number): Promise<SealedCell[]> {
    const { table, column: name, key } = sealedColumn(column);
    const rows = this.#db
      .prepare(
        `SELECT ${key} AS row, ${name} AS value FROM ${table}
          WHERE ${name} IS NOT NULL AND substr(${name}, 2, 8) <> ? AND (? IS NULL OR ${key} > ?)
          ORDER BY ${key} LIMIT ?`,
      )
      .all(keyId, after, after, limit) as SealedCell[];
    return rows;
  }

  async replaceSealed(column: string, row: string | number, expected: Buffer, value: Buffer): Promise<boolean> {
    const { table, column: name, key } = sealedColumn(column);
    return this.#db.prepare(`UPDATE ${table} SET ${name} = ? WHERE ${key} = ? AND ${name} = ?`).run(value, row, expected).changes > 0;
  }

  /**
   * With secure_delete on, the database file keeps no replaced value in
   * the space it freed. A store written by an earlier Membrane (without
   * secure_delete) may: it is rewritten once (VACUUM), and marked so. The
   * write-ahead log still holds older versions of the pages written since
   * it was last reset (it is reused, not shrunk): a TRUNCATE checkpoint
   * copies its latest pages into the database file and truncates it to
   * zero bytes. Both wait (busy timeout) for other connections' readers
   * and writers, and are retried while those keep them busy.
   */
  async eraseReplaced(): Promise<void> {
    const deadline = Date.now() + ERASE_TIMEOUT_MS;
    const retry = async (what: string): Promise<void> => {
      if (Date.now() > deadline) {
        throw new Error(`${what} of ${this.#db.name} could not be done within ${ERASE_TIMEOUT_MS / 1000} s (other processes kept it busy); run the rotation again`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    };
    while (this.#statements.getMeta.get(FREED_SPACE_ZEROED) === undefined) {
      try {
        this.#db.exec('VACUUM');
        this.#statements.insertMeta.run(FREED_SPACE_ZEROED, Buffer.of(1));
      } catch (error) {
        if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
        await retry('the rewrite (VACUUM)');
      }
    }
    for (;;) {
      const [result] = this.#db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number; log: number; checkpointed: number }[];
      if (result !== undefined && result.busy === 0 && result.log === 0) return;
      await retry('emptying the write-ahead log');
    }
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close();
  }
}

/** How long eraseReplaced keeps trying to empty the write-ahead log. */
const ERASE_TIMEOUT_MS = 60_000;

function sealedColumn(column: string): { table: string; column: string; key: string } {
  const found = SEALED_COLUMNS[column];
  if (found === undefined) throw new Error(`no sealed column ${column}`);
  return found;
}

function migrate(db: Database.Database): void {
  const latest = MIGRATIONS.length;
  db.transaction(() => {
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > latest) {
      throw new ConfigurationError(
        `the store has schema version ${current}, newer than this Membrane understands (${latest}); upgrade Membrane`,
      );
    }
    for (const migration of MIGRATIONS.slice(current)) {
      db.exec(migration.sql);
      db.pragma(`user_version = ${migration.version}`);
    }
    // A new store zeroes freed space from its first write; one made by an earlier Membrane may hold replaced values in it.
    if (current === 0) db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(FREED_SPACE_ZEROED, Buffer.of(1));
  }).immediate();
}

/** The meta key recording that no freed space of the store holds a replaced value (every write so far was made with secure_delete). */
const FREED_SPACE_ZEROED = 'freed-space-zeroed';
