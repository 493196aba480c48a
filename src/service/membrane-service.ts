/**
 * Domain rules of the Membrane service: tenants, membranes, export,
 * re-export, query, revocation, and resolving a token to what it may do.
 *
 * Liveness is derived, never copied: a tenant's root capabilities live while
 * the tenant does; a membrane's `export` capability while the membrane and
 * its tenant do; an exported capability while every membrane on its chain
 * (its own, its parent's, … up to the root export) does. Revoking a membrane
 * is therefore one write, and everything below it dies with it. A
 * membrane's `revoke` capability never dies: revoking twice answers 202 twice.
 */
import { BadRequestError, ConflictError, UnauthorizedError } from '../errors.js';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { prepareTarget, type Target } from '../proxy/target.js';
import { TargetPolicy } from '../proxy/target-policy.js';
import { compileValidator } from '../schema.js';
import { SEALED_AUDIT_KEY } from '../audit/audit-trail.js';
import type { KeyRing, Sealer } from '../secrets.js';
import type { Holder } from '../shares.js';
import { CHAIN_LENGTH_LIMIT, type CapabilityRecord, type Store } from '../store/store.js';
import { capabilityUri, generateToken, hashToken, hashTokenBase64, parseCapabilityUri } from '../token.js';
import { CapabilityCache } from './capability-cache.js';
import { InvocationsInFlight, type Interruptible } from './invocations-in-flight.js';
import { Interner } from '../interner.js';
import type { MembraneView, QueryResult, RootCapabilities, UriExportConfig } from '../wire.js';
import { isReExport, parseExportConfig } from './export-config.js';

/** Purposes (GCM additional data) of the values this service seals (bulk loaders seal with them too). */
export const SEALED = {
  exportToken: 'membrane.export-token',
  revokeToken: 'membrane.revoke-token',
  config: 'capability.config',
  keyCheck: 'meta.key-check',
} as const;

/** The purpose of each sealed cell of the store (meta cells by their key). */
function purposeOf(column: string, row: string | number): string | undefined {
  switch (column) {
    case 'membranes.sealed_export_token':
      return SEALED.exportToken;
    case 'membranes.sealed_revoke_token':
      return SEALED.revokeToken;
    case 'capabilities.sealed_config':
      return SEALED.config;
    case 'meta.value':
      return row === 'key-check' ? SEALED.keyCheck : row === 'audit-key' ? SEALED_AUDIT_KEY : undefined;
    default:
      return undefined;
  }
}

export interface ResealResult {
  /** Values now sealed under the ring's current key. */
  resealed: number;
  /** Values that could not be opened with any key of the ring (left as they are). */
  unreadable: number;
}

/**
 * Re-seals every sealed value of the store that is not sealed under the
 * ring's current key: opens it with whichever key of the ring sealed it and
 * seals it again, replacing it only if it did not change meanwhile (a
 * value that did is taken up again on the next pass). Repeats until a pass
 * finds nothing left, so values written during the run are covered too.
 */
export async function resealStore(store: Store, ring: KeyRing, batch = 500): Promise<ResealResult> {
  const result: ResealResult = { resealed: 0, unreadable: 0 };
  const unreadable = new Set<string>();
  for (;;) {
    let found = 0;
    const current = ring.current;
    for (const column of store.sealedColumns()) {
      let after: string | number | null = null;
      for (;;) {
        const cells = await store.findSealed(column, current.id, after, batch);
        if (cells.length === 0) break;
        for (const cell of cells) {
          after = cell.row;
          const where = `${column}:${cell.row}`;
          const purpose = purposeOf(column, cell.row);
          if (purpose === undefined || unreadable.has(where)) continue;
          let opened: Buffer;
          try {
            opened = ring.unseal(cell.value, purpose);
          } catch {
            unreadable.add(where);
            result.unreadable += 1;
            continue;
          }
          found += 1;
          if (await store.replaceSealed(column, cell.row, cell.value, current.seal(opened, purpose))) result.resealed += 1;
        }
      }
    }
    if (found === 0) return result;
  }
}

export const QUERY_LIMIT_MAX = 1000;

export type { MembraneView, QueryResult, RootCapabilities };

/**
 * What a valid, live token entitles its holder to, and what the audit
 * trail says of it. `holder` counts its use of shared resources against
 * its tenant's and its own fair shares.
 */
export type Capability =
  | { kind: 'create' | 'query' | 'deleteSelf'; tenantId: number; holder: Holder; audit: CapabilityAudit }
  | { kind: 'export' | 'revoke'; membraneId: number; holder: Holder; audit: CapabilityAudit }
  | ExportedCapability;

export interface ExportedCapability {
  kind: 'exported';
  holder: Holder;
  target: Target;
  /** Every membrane on the capability's chain: revoking any of them kills it. */
  membraneIds: readonly number[];
  audit: CapabilityAudit;
}

/**
 * Audit fields of a capability: its id and owner, and for a re-export its
 * parent, the root of its chain and the chain's length. A fixed set of
 * fields, so that an audit line stays small however deep the chain; the
 * links between parent and root are in the audit lines of the re-exports
 * that made them (`membrane.export`: `parent` and `created`).
 */
export interface CapabilityAudit {
  capability: string;
  tenant: number;
  membrane?: string;
  parent?: string;
  root?: string;
  chainLength?: number;
}

export interface MembraneServiceOptions {
  /** host[:port] written into every capability URI this service issues. */
  authority: string;
  /** Most resolved exported capabilities kept in memory. */
  cacheSize: number;
  /** Which target addresses exports may name (default: the default policy, nothing allowed beyond it). */
  targetPolicy?: TargetPolicy;
  /** The audit id of a token hash (see AuditTrail.idOf). */
  auditId: (tokenHash: Buffer) => string;
}

interface NewMembraneBody {
  id: string;
}

const validateNewMembrane = compileValidator<NewMembraneBody>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['id'],
    properties: { id: { type: 'string', minLength: 1, maxLength: 512 } },
  },
  'membrane',
);

/**
 * Control characters would let a membrane id spoof terminal or log output
 * (C0 and C1 include every other character Python's str.splitlines breaks
 * lines at: \v, \f, \x1c-\x1e, \x85); lone surrogates are not text.
 */
const UNPRINTABLE = /[\u0000-\u001F\u007F-\u009F]|\p{Cs}/u;
/** Unicode line and paragraph separators: a reader splitting lines on them would see a forged audit line. */
const SEPARATORS = /[\u2028\u2029]/;

export class MembraneService {
  readonly #store: Store;
  readonly #key: Sealer;
  readonly #authority: string;
  readonly #cache: CapabilityCache<ExportedCapability>;
  readonly #inFlight = new InvocationsInFlight<ExportedCapability>();
  /** Membrane names, shared among the cached capabilities exported through them. */
  readonly #names = new Interner(10_000);
  readonly #targetPolicy: TargetPolicy;
  readonly #auditId: (tokenHash: Buffer) => string;

  constructor(store: Store, key: Sealer, options: MembraneServiceOptions) {
    this.#auditId = options.auditId;
    this.#store = store;
    this.#key = key;
    this.#authority = options.authority;
    this.#cache = new CapabilityCache(options.cacheSize);
    this.#targetPolicy = options.targetPolicy ?? new TargetPolicy();
  }

  get authority(): string {
    return this.#authority;
  }

  /** Resolves when the store answers (readiness). */
  ready(): Promise<void> {
    return this.#store.ping();
  }

  /**
   * Checks that `key` is the key this store's secrets are sealed under (the
   * first process to open a store records a sealed check value).
   */
  static async verifyKey(store: Store, key: Sealer): Promise<boolean> {
    const stored = await store.initMeta('key-check', key.seal('membrane', SEALED.keyCheck));
    try {
      key.unseal(stored, SEALED.keyCheck);
      return true;
    } catch {
      return false;
    }
  }

  /** Creates a tenant and returns its root capabilities (the only time they are shown). */
  async createTenant(options: { onlyIfEmpty?: boolean } = {}): Promise<RootCapabilities | undefined> {
    return (await this.createTenantWithId(options))?.roots;
  }

  /** As createTenant, with the new tenant's id (for the audit trail). */
  async createTenantWithId(options: { onlyIfEmpty?: boolean } = {}): Promise<{ tenantId: number; roots: RootCapabilities } | undefined> {
    const tokens = { create: generateToken(), query: generateToken(), deleteSelf: generateToken() };
    const tenantId = await this.#store.createTenant(
      { create: hashToken(tokens.create), query: hashToken(tokens.query), deleteSelf: hashToken(tokens.deleteSelf) },
      { onlyIfEmpty: options.onlyIfEmpty === true },
    );
    if (tenantId === undefined) return undefined;
    return {
      tenantId,
      roots: { create: this.#uri(tokens.create), query: this.#uri(tokens.query), deleteSelf: this.#uri(tokens.deleteSelf) },
    };
  }

  /**
   * Counts revocations (of a membrane or a whole tenant). An invocation
   * resolved without the cache reads it before resolving and passes it to
   * `track`, which refuses if a revocation happened in between.
   */
  get revocations(): number {
    return this.#cache.epoch;
  }

  /**
   * Records an invocation in flight so that revoking a membrane on its
   * chain aborts it (with 401, or a cut stream once it answered). False,
   * and nothing recorded, if a revocation has happened since
   * `revocationsSeen` was read: the capability must be resolved again.
   */
  track(capability: ExportedCapability, invocation: Interruptible, revocationsSeen: number): boolean {
    if (this.#cache.epoch !== revocationsSeen) return false;
    this.#inFlight.add(capability, invocation);
    return true;
  }

  /** Forgets an invocation recorded by `track` once it has ended. */
  untrack(capability: ExportedCapability, invocation: Interruptible): void {
    this.#inFlight.remove(capability, invocation);
  }

  /** Number of membranes with an invocation in flight (for tests: nothing is left behind). */
  get membranesInFlight(): number {
    return this.#inFlight.size;
  }

  /** The capability a token designates if it is in the resolution cache (live: revocation evicts), without a store read. */
  cached(token: string): Capability | undefined {
    return this.#cache.get(hashTokenBase64(token));
  }

  /** Resolves a well-formed token to a live capability; UnauthorizedError otherwise. */
  async authenticate(token: string): Promise<Capability> {
    const cacheKey = hashTokenBase64(token);
    const cached = this.#cache.get(cacheKey);
    if (cached !== undefined) return cached;
    const hash = Buffer.from(cacheKey, 'base64');

    const epoch = this.#cache.epoch;
    const record = await this.#store.findCapability(hash);
    if (record === undefined || !isAlive(record)) throw new UnauthorizedError();
    const self = record.chain[0]!;
    const audit: CapabilityAudit = { capability: this.#auditId(hash), tenant: record.tenantId };
    if (self.membraneName !== null) audit.membrane = this.#names.string(self.membraneName);
    // A re-export counts against its root's share: however it is delegated, one exported capability's tree holds one capability's share.
    const holder: Holder = { tenant: record.tenantId, capability: record.chain[record.chain.length - 1]!.capabilityId };
    switch (record.kind) {
      case 'create':
      case 'query':
      case 'deleteSelf':
        return { kind: record.kind, tenantId: record.tenantId, holder, audit };
      case 'export':
      case 'revoke':
        return { kind: record.kind, membraneId: record.membraneId!, holder, audit };
      case 'exported': {
        const { chain } = record;
        if (chain.length > 1) {
          audit.parent = this.#auditId(chain[1]!.tokenHash);
          audit.root = this.#auditId(chain[chain.length - 1]!.tokenHash);
          audit.chainLength = chain.length;
        }
        const membraneIds = chain.map((link) => link.membraneId!);
        const capability: ExportedCapability = {
          kind: 'exported',
          holder,
          target: prepareTarget(this.#openConfig(record.sealedConfig!)),
          membraneIds,
          audit,
        };
        this.#cache.set(cacheKey, capability, epoch);
        return capability;
      }
    }
  }

  async createMembrane(tenantId: number, body: unknown): Promise<MembraneView> {
    const checked = validateNewMembrane(body);
    if (!checked.ok) throw new BadRequestError(checked.message);
    const name = checked.value.id;
    if (UNPRINTABLE.test(name)) {
      throw new BadRequestError('membrane.id must not contain control characters or unpaired surrogates');
    }
    if (SEPARATORS.test(name)) throw new BadRequestError('membrane.id must not contain line or paragraph separators (U+2028, U+2029)');
    const exportToken = generateToken();
    const revokeToken = generateToken();
    const result = await this.#store.createMembrane({
      tenantId,
      name,
      exportHash: hashToken(exportToken),
      revokeHash: hashToken(revokeToken),
      sealedExportToken: this.#key.seal(exportToken, SEALED.exportToken),
      sealedRevokeToken: this.#key.seal(revokeToken, SEALED.revokeToken),
    });
    if (result.outcome === 'duplicate') throw new ConflictError(`a membrane with id ${JSON.stringify(name)} already exists`);
    if (result.outcome === 'tenant-deleted') throw new UnauthorizedError();
    return { id: name, capabilities: { export: this.#uri(exportToken), revoke: this.#uri(revokeToken) } };
  }

  async queryMembranes(tenantId: number, rawQuery: string): Promise<QueryResult> {
    const query = parseMembraneQuery(rawQuery);
    const rows = await this.#store.listMembranes({
      tenantId,
      name: query.id,
      after: query.lastId,
      limit: query.limit + 1,
    });
    const page = rows.slice(0, query.limit);
    return {
      membranes: page.map((row) => ({
        id: row.name,
        capabilities: {
          export: this.#uri(this.#key.unsealText(row.sealedExportToken, SEALED.exportToken)),
          revoke: this.#uri(this.#key.unsealText(row.sealedRevokeToken, SEALED.revokeToken)),
        },
      })),
      completed: rows.length <= query.limit,
    };
  }

  /** Revokes every membrane of the tenant and kills its root capabilities. */
  async deleteTenant(tenantId: number): Promise<void> {
    this.#revoked(await this.#store.deleteTenant(tenantId));
  }

  /**
   * Revokes a membrane (idempotent). When this resolves, nothing below it
   * resolves any more, and every invocation of a capability below it that
   * was in flight has been aborted.
   */
  async revokeMembrane(membraneId: number): Promise<void> {
    if (await this.#store.revokeMembrane(membraneId)) this.#revoked([membraneId]);
  }

  /**
   * After a revocation has committed: nothing cached below it survives,
   * nothing in flight below it goes on. Only for membranes this revocation
   * revoked: revoking one again (which answers 202 forever) changes nothing,
   * so it costs nothing either.
   */
  #revoked(membraneIds: readonly number[]): void {
    if (membraneIds.length === 0) return;
    this.#cache.revokeMembranes(membraneIds);
    this.#inFlight.interrupt(membraneIds, new UnauthorizedError());
  }

  /**
   * Exports a new capability through a membrane and returns its URI. If the
   * membrane was revoked meanwhile (while the body arrived), nothing is
   * exported: the export capability itself is dead, so 401.
   */
  async export(membraneId: number, body: unknown): Promise<string> {
    const config = parseExportConfig(body);
    if (!isReExport(config)) await this.#checkTarget(new URL(config.uri));
    const token = generateToken();
    const id = await this.#store.insertExportedCapability({
      hash: hashToken(token),
      membraneId,
      ...(isReExport(config)
        ? { sealedConfig: null, parentId: await this.#reExportable(config.capability) }
        : { sealedConfig: this.#key.seal(JSON.stringify(config), SEALED.config), parentId: null }),
    });
    if (id === undefined) throw new UnauthorizedError();
    return this.#uri(token);
  }

  /** The id of the capability a re-export names, if it may be re-exported. */
  async #reExportable(uri: string): Promise<number> {
    const parsed = parseCapabilityUri(uri);
    if (parsed === undefined) {
      throw new BadRequestError('config.capability must be a capability URI (cpblty://AUTHORITY/#CPBLTY1-…)');
    }
    if (parsed.authority.toLowerCase() !== this.#authority.toLowerCase()) {
      throw new BadRequestError(`config.capability belongs to another service (${parsed.authority}), not ${this.#authority}`);
    }
    const parent = await this.#store.findCapability(hashToken(parsed.token));
    if (parent === undefined || !isAlive(parent)) {
      throw new BadRequestError('config.capability is unknown or revoked');
    }
    if (parent.kind !== 'exported') {
      throw new BadRequestError(
        `config.capability is ${parent.kind === 'export' ? 'an' : 'a'} ${parent.kind} capability; only exported capabilities can be re-exported`,
      );
    }
    if (parent.chain.length >= CHAIN_LENGTH_LIMIT) {
      throw new BadRequestError(
        `config.capability is already ${CHAIN_LENGTH_LIMIT} capabilities down from its original export, the longest chain allowed; it cannot be re-exported further`,
      );
    }
    return parent.id;
  }

  /**
   * The target policy at export: a literal address must be allowed, and so
   * must every address a host name resolves to. A name that does not
   * resolve (yet) is accepted; the connect-time check still guards it.
   */
  async #checkTarget(url: URL): Promise<void> {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) !== 0) {
      const reason = this.#targetPolicy.refusal(host);
      if (reason !== undefined) throw new BadRequestError(`config.uri's host is a ${reason} address, which targets may not have (the operator can allow it with --allow-targets)`);
      return;
    }
    if (this.#targetPolicy.allowsHost(host)) return;
    let addresses: { address: string }[];
    try {
      addresses = await lookup(host, { all: true, verbatim: true });
    } catch {
      return;
    }
    for (const { address } of addresses) {
      const reason = this.#targetPolicy.refusal(address);
      if (reason !== undefined) throw new BadRequestError(`config.uri's host resolves to a ${reason} address, which targets may not have (the operator can allow it with --allow-targets)`);
    }
  }

  #openConfig(sealed: Buffer): UriExportConfig {
    return JSON.parse(this.#key.unsealText(sealed, SEALED.config)) as UriExportConfig;
  }

  #uri(token: string): string {
    return capabilityUri(this.#authority, token);
  }
}

function isAlive(record: CapabilityRecord): boolean {
  switch (record.kind) {
    case 'create':
    case 'query':
    case 'deleteSelf':
      return !record.tenantDeleted;
    case 'export':
      return !record.tenantDeleted && !record.chain[0]!.membraneRevoked;
    case 'revoke':
      return true;
    case 'exported':
      // A chain longer than the limit (which the store cuts off, so its end has no config) is never alive.
      return record.chain.length <= CHAIN_LENGTH_LIMIT && record.sealedConfig !== null && record.chain.every((link) => !link.membraneRevoked);
  }
}

export interface MembraneQuery {
  id: string | undefined;
  lastId: string | undefined;
  limit: number;
}

const QUERY_PARAMETERS = new Set(['id', 'lastId', 'limit']);

/**
 * Parses the `query` capability's query string: `id`, `lastId`, `limit`.
 * An empty value means the parameter is absent (the original SDK sends
 * `lastId=` for an undefined lastId). `limit` defaults to 1, is clamped to
 * 1000, and anything but a positive decimal integer is a 400. Unknown or
 * repeated parameters and malformed percent-encoding are refused.
 */
export function parseMembraneQuery(rawQuery: string): MembraneQuery {
  const values = new Map<string, string>();
  for (const piece of rawQuery === '' ? [] : rawQuery.split('&')) {
    if (piece === '') continue;
    const equals = piece.indexOf('=');
    const name = decodeQueryComponent(equals === -1 ? piece : piece.slice(0, equals));
    const value = decodeQueryComponent(equals === -1 ? '' : piece.slice(equals + 1));
    if (!QUERY_PARAMETERS.has(name)) {
      throw new BadRequestError(`unknown query parameter ${JSON.stringify(name.slice(0, 64))} (expected id, lastId, limit)`);
    }
    if (values.has(name)) throw new BadRequestError(`query parameter ${name} is given more than once`);
    values.set(name, value);
  }
  const id = values.get('id') || undefined;
  const lastId = values.get('lastId') || undefined;
  for (const [name, value] of [['id', id], ['lastId', lastId]] as const) {
    if (value !== undefined && [...value].length > 512) throw new BadRequestError(`query parameter ${name} must be at most 512 characters`);
  }
  const rawLimit = values.get('limit') || undefined;
  let limit = 1;
  if (rawLimit !== undefined) {
    if (!/^[0-9]+$/.test(rawLimit) || /^0+$/.test(rawLimit)) {
      throw new BadRequestError('query parameter limit must be a positive integer');
    }
    const digits = rawLimit.replace(/^0+/, '');
    limit = digits.length > 4 ? QUERY_LIMIT_MAX : Math.min(Number(digits), QUERY_LIMIT_MAX);
  }
  return { id, lastId, limit };
}

function decodeQueryComponent(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    throw new BadRequestError('the query string has malformed percent-encoding');
  }
}
