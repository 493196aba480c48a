/**
 * Versioned schema of the SQLite store. PRAGMA user_version holds the number
 * of migrations applied; each migration runs once, in order, in its own
 * transaction. A store written by a newer Membrane (higher version) is
 * refused rather than guessed at. Rows are never deleted, so row ids are
 * never reused.
 */
export interface Migration {
  version: number;
  description: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'tenants, membranes, capabilities, meta',
    sql: `
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
      ) STRICT, WITHOUT ROWID;

      CREATE TABLE tenants (
        id INTEGER PRIMARY KEY,
        created_at INTEGER NOT NULL,
        deleted_at INTEGER
      ) STRICT;

      CREATE TABLE membranes (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants (id),
        name TEXT NOT NULL,
        sealed_export_token BLOB NOT NULL,
        sealed_revoke_token BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
      ) STRICT;

      -- Names are unique among a tenant's live membranes only; this index
      -- also serves the ordered, paginated query.
      CREATE UNIQUE INDEX membranes_live_name ON membranes (tenant_id, name) WHERE revoked_at IS NULL;

      CREATE TABLE capabilities (
        id INTEGER PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        kind TEXT NOT NULL CHECK (kind IN ('create', 'query', 'deleteSelf', 'export', 'revoke', 'exported')),
        tenant_id INTEGER NOT NULL REFERENCES tenants (id),
        membrane_id INTEGER REFERENCES membranes (id),
        parent_id INTEGER REFERENCES capabilities (id),
        sealed_config BLOB,
        created_at INTEGER NOT NULL,
        -- a tenant's root capabilities have no membrane; all others have one
        CHECK ((kind IN ('create', 'query', 'deleteSelf')) = (membrane_id IS NULL)),
        -- an exported capability is a root (has a config) or a re-export (has a parent), never both
        CHECK (CASE WHEN kind = 'exported' THEN (sealed_config IS NULL) <> (parent_id IS NULL)
                    ELSE sealed_config IS NULL AND parent_id IS NULL END)
      ) STRICT;
    `,
  },
];
