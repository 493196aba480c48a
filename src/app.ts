/**
 * Wiring: opens the store and master key, builds the service, proxy and
 * HTTP(S) server, and shuts them down in order. Used by `membrane serve`
 * and, in-process, by the tests.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import { CONTROL_BODIES_AT_ONCE, defaultAuthority, type ServeConfig } from './config.js';
import { ConfigurationError } from './errors.js';
import { openAuditTrail, type AuditTrail } from './audit/audit-trail.js';
import { BodyRateWatch } from './body-rate.js';
import { createRequestHandler } from './http/handler.js';
import { answerClientError, answerExpectation, sendJson, sendRawError } from './http/respond.js';
import { instrumentStore, Metrics } from './metrics.js';
import type { Logger } from './log.js';
import { ConnectionShares } from './proxy/connection-shares.js';
import { TargetProxy } from './proxy/proxy.js';
import { TargetPolicy } from './proxy/target-policy.js';
import { loadMasterKey, type KeyRing } from './secrets.js';
import { MembraneService, type RootCapabilities } from './service/membrane-service.js';
import { SharedLimit } from './shares.js';
import { DATABASE_FILE_NAME, SqliteStore } from './store/sqlite/sqlite-store.js';
import type { Store } from './store/store.js';

export interface OpenedStore {
  store: Store;
  key: KeyRing;
}

/**
 * Opens the store in `dataDir` with its master key. With `create`, a new
 * store and key file are made if missing; without it, a missing store is a
 * ConfigurationError. A key that does not match the store is refused.
 */
/** Throws unless `dataDir` holds a store. */
export function requireStore(dataDir: string): void {
  if (!existsSync(join(dataDir, DATABASE_FILE_NAME))) {
    throw new ConfigurationError(`no Membrane store in ${dataDir} (create one with \`membrane init --data-dir ${dataDir}\`)`);
  }
}

export async function openStore(dataDir: string, masterKey: string | undefined, options: { create: boolean }): Promise<OpenedStore> {
  if (!options.create) requireStore(dataDir);
  const store = SqliteStore.open({ dataDir });
  try {
    const key = loadMasterKey({ dataDir, envValue: masterKey, create: options.create });
    if (!(await MembraneService.verifyKey(store, key))) {
      throw new ConfigurationError(`the master key does not match the store in ${dataDir}`);
    }
    return { store, key };
  } catch (error) {
    await store.close();
    throw error;
  }
}

export interface HeldResources {
  /** Invocations in flight. */
  invocations: number;
  /** Bytes of request bodies reserved in memory. */
  bodyBytes: number;
  /** Targets with requests active or waiting for a connection. */
  targets: number;
  /** Request bodies watched for their rate. */
  watchedBodies: number;
  /** Membranes with an invocation in flight below them. */
  membranesInFlight: number;
}

export interface RunningMembrane {
  /** Base URL the server answers on (http:// or https://). */
  url: string;
  /** Base URL of the admin listener (/metrics), when there is one. */
  adminUrl: string | undefined;
  port: number;
  authority: string;
  service: MembraneService;
  /** Root capabilities of the tenant created because the store was empty, if any. */
  bootstrap: RootCapabilities | undefined;
  /** The audit trail (its ids let tests and tools correlate lines). */
  audit: AuditTrail;
  /** What requests hold now of the shared bounds (all zero when nothing is in flight: nothing is left behind). */
  held(): HeldResources;
  /** Stops accepting, lets in-flight requests finish (up to the drain timeout), then closes everything. */
  close(): Promise<void>;
}

export async function startMembrane(config: ServeConfig, logger: Logger): Promise<RunningMembrane> {
  const tls =
    config.tlsCert !== undefined && config.tlsKey !== undefined
      ? { cert: readTlsFile(config.tlsCert, '--tls-cert'), key: readTlsFile(config.tlsKey, '--tls-key') }
      : undefined;
  const metrics = new Metrics();
  const opened = await openStore(config.dataDir, config.masterKey, { create: true });
  const store = instrumentStore(opened.store, metrics);
  const { key } = opened;
  const audit = await openAuditTrail({
    spec: config.audit,
    dataDir: config.dataDir,
    store,
    key,
    onFailure: (error, lines) => {
      metrics.auditFailures.inc(lines);
      logger.error({ err: { message: error.message }, lines }, 'the audit trail could not record lines');
    },
  });
  const targetPolicy = new TargetPolicy(config.allowTargets);
  const fractions = { tenant: config.tenantShare, capability: config.capabilityShare };
  const bodyBudget = new SharedLimit(config.bodyMemoryLimit, fractions);
  const controlBodyBudget = new SharedLimit(config.controlBodyLimit * CONTROL_BODIES_AT_ONCE, fractions);
  const bodyRate = new BodyRateWatch({ minBytesPerSecond: config.minBodyRate, windowMs: config.bodyRateWindowMs });
  const connections = new ConnectionShares({ perTarget: config.connectionsPerTarget, fractions, waitTimeoutMs: config.queueTimeoutMs });
  const inFlight = new SharedLimit(config.maxInFlight, fractions);
  const proxy = new TargetProxy({
    targetPolicy,
    onTargetError: (reason) => metrics.targetErrors.inc({ reason }),
    connections,
    bodyBudget,
    bodyRate,
    targetTimeoutMs: config.targetTimeoutMs,
    connectTimeoutMs: config.connectTimeoutMs,
    signedBodyLimit: config.signedBodyLimit,
  });
  let server: Server;
  let admin: Server | undefined;
  try {
    if (config.adminPort !== undefined) {
      admin = createHttpServer((req, res) => {
        if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
          void metrics.registry.metrics().then((text) => {
            res.writeHead(200, { 'content-type': metrics.registry.contentType });
            res.end(text);
          });
          return;
        }
        sendJson(res, 404, { error: 'Not Found', message: 'the admin listener serves GET /metrics' });
      });
      await listen(admin, config.adminPort, config.adminHost);
    }
    // Bodies may stream for as long as they keep moving (no whole-request
    // deadline, which would cut long uploads); a head must arrive within
    // headersTimeout, and a connection idle for idleTimeout is closed.
    const options = {
      // Host is checked by the handler, so that its absence gets a JSON 400 like every refusal.
      requireHostHeader: false,
      requestTimeout: 0,
      headersTimeout: config.headersTimeoutMs,
      maxHeaderSize: config.maxHeaderSize,
      connectionsCheckingInterval: Math.min(1_000, config.headersTimeoutMs),
    };
    server = tls === undefined ? createHttpServer(options) : createHttpsServer({ ...options, ...tls });
    server.setTimeout(config.idleTimeoutMs, (socket: Socket & { _httpMessage?: unknown }) => {
      // A request stalled mid-way gets a 408; an idle keep-alive connection is just closed.
      if (socket._httpMessage) sendRawError(socket, 408, 'the connection was idle too long');
      else socket.destroy();
    });
    await listen(server, config.port, config.host);
  } catch (error) {
    if (admin?.listening) await new Promise<void>((resolve) => admin!.close(() => resolve()));
    await proxy.close();
    await audit.close();
    await store.close();
    throw error;
  }
  // No await between listening and attaching the handler: a request cannot
  // be parsed before this synchronous block ends.
  const port = (server.address() as AddressInfo).port;
  const authority = config.authority ?? defaultAuthority(port);
  const service = new MembraneService(store, key, { authority, cacheSize: config.cacheSize, targetPolicy, auditId: (hash) => audit.idOf(hash) });
  let draining = false;
  server.on(
    'request',
    createRequestHandler({
      service,
      proxy,
      audit,
      metrics,
      logger,
      controlBodyLimit: config.controlBodyLimit,
      inFlight,
      controlBodyBudget,
      bodyRate,
      draining: () => draining,
    }),
  );
  server.on('clientError', answerClientError);
  server.on('checkExpectation', answerExpectation);
  // Membrane is not a forward proxy: no tunnels.
  server.on('connect', (_req, socket: Duplex) => sendRawError(socket, 405, 'CONNECT is not supported', 'allow: GET, POST, DELETE\r\n'));

  const scheme = tls === undefined ? 'http' : 'https';
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;

  const adminHost = config.adminHost.includes(':') ? `[${config.adminHost}]` : config.adminHost;

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const sweep = setInterval(() => server.closeIdleConnections(), 50);
      const deadline = setTimeout(() => {
        logger.warn({ drainTimeoutMs: config.drainTimeoutMs }, 'drain timeout reached; closing remaining connections');
        server.closeAllConnections();
      }, config.drainTimeoutMs);
      await closed;
      clearInterval(sweep);
      clearTimeout(deadline);
      if (admin !== undefined) await new Promise<void>((resolve) => admin!.close(() => resolve()));
      bodyRate.close();
      await proxy.close();
      await audit.close();
      await store.close();
    })());

  let bootstrap: RootCapabilities | undefined;
  try {
    if (await store.isEmpty()) bootstrap = await createTenant(service, audit, { onlyIfEmpty: true });
  } catch (error) {
    await close();
    throw error;
  }
  return {
    url: `${scheme}://${host}:${port}`,
    adminUrl: admin === undefined ? undefined : `http://${adminHost}:${(admin.address() as AddressInfo).port}`,
    port,
    authority,
    service,
    bootstrap,
    audit,
    held: () => ({
      invocations: inFlight.used,
      bodyBytes: bodyBudget.used + controlBodyBudget.used,
      targets: connections.targets,
      watchedBodies: bodyRate.size,
      membranesInFlight: service.membranesInFlight,
    }),
    close,
  };
}

/**
 * Creates a tenant between audit `request` and `response` lines (refused if
 * the audit trail cannot be written). With `onlyIfEmpty`, only when the
 * store holds no tenant yet; undefined otherwise.
 */
export async function createTenant(service: MembraneService, audit: AuditTrail, options: { onlyIfEmpty?: boolean } = {}): Promise<RootCapabilities | undefined> {
  const entry = await audit.begin('tenant.create', {});
  let created: Awaited<ReturnType<MembraneService['createTenantWithId']>>;
  try {
    created = await service.createTenantWithId(options);
  } catch (error) {
    await audit.end(entry, { status: 500 });
    throw error;
  }
  if (created === undefined) {
    await audit.end(entry, { status: 409, message: 'the store already holds a tenant' });
    return undefined;
  }
  const { roots, tenantId } = created;
  await audit.end(entry, { status: 201, tenant: tenantId, created: [roots.create, roots.query, roots.deleteSelf].map((uri) => audit.idOfUri(uri)!) });
  return roots;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function readTlsFile(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new ConfigurationError(`${flag}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}
