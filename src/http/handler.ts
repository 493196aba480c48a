/**
 * The wire: authenticate the bearer token, route by the kind of capability
 * it designates, map errors. The request path is ignored; only the token
 * (and, for `query` and exported capabilities, the query string) matters.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { AuditAction, AuditFields, AuditTrail } from '../audit/audit-trail.js';
import { BodyBudgetLease, readBody } from '../body.js';
import type { BodyRateWatch } from '../body-rate.js';
import { BadRequestError, MembraneError, MethodNotAllowedError, ServiceUnavailableError, UnauthorizedError } from '../errors.js';
import { InFlight } from '../in-flight.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ForwardOutcome, TargetProxy } from '../proxy/proxy.js';
import type { Capability, ExportedCapability, MembraneService } from '../service/membrane-service.js';
import type { Holder, Refusal, SharedLimit } from '../shares.js';
import { isWellFormedToken } from '../token.js';
import { readJson } from './json-body.js';
import { RequesterConnections } from './requester-connections.js';
import { sendError, sendJson } from './respond.js';

export interface HandlerContext {
  service: MembraneService;
  proxy: TargetProxy;
  audit: AuditTrail;
  metrics: Metrics;
  logger: Logger;
  /** Largest control-plane request body, in bytes. */
  controlBodyLimit: number;
  /** Invocations forwarded at once, with fair shares per tenant and capability; beyond them, 503. */
  inFlight: SharedLimit;
  /** Memory control-plane bodies may hold, with fair shares (apart from invocations' bodies, so that those cannot crowd out the control plane). */
  controlBodyBudget: SharedLimit;
  /** The minimum rate of request bodies. */
  bodyRate: BodyRateWatch;
  /** True once shutdown has begun: health checks answer 503. */
  draining: () => boolean;
}

const ACCEPTED = { statusCode: 202, message: 'Accepted' } as const;
const ACTION_OF: Record<Exclude<Capability['kind'], 'exported'>, AuditAction> = {
  create: 'membrane.create',
  query: 'membrane.query',
  deleteSelf: 'tenant.deleteSelf',
  export: 'membrane.export',
  revoke: 'membrane.revoke',
};
const REVOKE_METHODS = ['GET', 'POST', 'DELETE'] as const;

const IN_FLIGHT_MESSAGES: Record<Refusal, string> = {
  total: 'too many invocations are in flight; try again shortly',
  tenant: "too many invocations of this tenant's capabilities are in flight; try again shortly",
  capability: 'too many invocations of this capability are in flight; try again shortly',
};

/** How often an invocation resolved from the store is resolved again because a revocation happened meanwhile, before it is refused. */
const RESOLUTION_ATTEMPTS = 8;

export function createRequestHandler(context: HandlerContext): (req: IncomingMessage, res: ServerResponse) => void {
  context.metrics.countInFlight(() => context.inFlight.used);
  const requesters = new RequesterConnections();
  return (req, res) => {
    void handle(context, requesters, req, res);
  };
}

async function handle(context: HandlerContext, requesters: RequesterConnections, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  let kind = 'none';
  let status = 0;
  /** A control-plane request whose outcome nothing else records yet (refused before its action began). */
  let unrecorded: { action: AuditAction; audit: AuditFields } | undefined;
  try {
    checkHost(req);
    if (isProbe(req, '/healthz')) {
      if (context.draining()) throw new ServiceUnavailableError('the server is shutting down');
      status = reply(res, 200, { status: 'ok' });
      return;
    }
    if (isProbe(req, '/readyz')) {
      if (context.draining()) throw new ServiceUnavailableError('the server is shutting down');
      await context.service.ready().catch(() => {
        throw new ServiceUnavailableError('the store does not answer');
      });
      status = reply(res, 200, { status: 'ready' });
      return;
    }
    const url = req.url ?? '';
    if (!url.startsWith('/')) {
      throw new BadRequestError('the request target must be a path: Membrane is not a forward proxy');
    }
    // RFC 9112 §3.2: a request target has no fragment; forwarded, a `#` would cut the target's request line short for some readers.
    if (url.includes('#')) throw new BadRequestError('the request target must not contain "#"');
    const token = bearerToken(req);
    // Read before resolving: an invocation is tracked only if no revocation happened since (see MembraneService.track).
    const revocationsSeen = context.service.revocations;
    const capability = context.service.cached(token) ?? (await authenticate(context, token, started));
    kind = capability.kind;
    const { audit } = capability;
    if (capability.kind !== 'exported') unrecorded = { action: ACTION_OF[capability.kind], audit };
    switch (capability.kind) {
      case 'exported':
        status = await invoke(context, requesters, req, res, capability, token, revocationsSeen, started);
        return;
      case 'create': {
        allowMethods(req, 'tenant create', ['POST']);
        const body = await readControlJson(context, req, capability.holder);
        unrecorded = undefined; // audited() records the outcome from here on
        status = await audited(context, res, 'membrane.create', audit, async () => {
          const view = await context.service.createMembrane(capability.tenantId, body);
          const created = [context.audit.idOfUri(view.capabilities.export)!, context.audit.idOfUri(view.capabilities.revoke)!];
          return { status: 201, body: view, fields: { membrane: view.id, created } };
        });
        return;
      }
      case 'query': {
        allowMethods(req, 'tenant query', ['GET']);
        await ignoreBody(context, req);
        unrecorded = undefined; // recorded below, either way
        const result = await context.service.queryMembranes(capability.tenantId, rawQuery(req.url)).catch((error: unknown) => {
          recordEvent(context, 'membrane.query', started, audit, statusOf(error));
          throw error;
        });
        status = reply(res, 200, result);
        recordEvent(context, 'membrane.query', started, audit, status);
        return;
      }
      case 'deleteSelf': {
        allowMethods(req, 'tenant deleteSelf', REVOKE_METHODS);
        await ignoreBody(context, req);
        unrecorded = undefined; // audited() records the outcome from here on
        status = await audited(context, res, 'tenant.deleteSelf', audit, async () => {
          await context.service.deleteTenant(capability.tenantId);
          context.metrics.revocations.inc({ of: 'tenant' });
          return { status: 202, body: ACCEPTED };
        });
        return;
      }
      case 'export': {
        allowMethods(req, 'membrane export', ['POST']);
        const config = await readControlJson(context, req, capability.holder);
        const parent = context.audit.idOfUri((config as { capability?: unknown } | null)?.capability);
        unrecorded = undefined; // audited() records the outcome from here on
        status = await audited(context, res, 'membrane.export', { ...audit, ...(parent === undefined ? {} : { parent }) }, async () => {
          const uri = await context.service.export(capability.membraneId, config);
          return { status: 201, body: { capability: uri }, fields: { created: [context.audit.idOfUri(uri)!] } };
        });
        return;
      }
      case 'revoke': {
        allowMethods(req, 'membrane revoke', REVOKE_METHODS);
        await ignoreBody(context, req);
        unrecorded = undefined; // audited() records the outcome from here on
        status = await audited(context, res, 'membrane.revoke', audit, async () => {
          await context.service.revokeMembrane(capability.membraneId);
          context.metrics.revocations.inc({ of: 'membrane' });
          return { status: 202, body: ACCEPTED };
        });
        return;
      }
    }
  } catch (error) {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    status = sendError(req, res, error);
    if (status === 500) context.logger.error({ err: error, kind }, 'unexpected error while handling a request');
    if (unrecorded !== undefined) recordEvent(context, unrecorded.action, started, unrecorded.audit, status);
  } finally {
    if (context.logger.isLevelEnabled('debug')) {
      context.logger.debug({ method: req.method, kind, status, ms: Math.round((performance.now() - started) * 1000) / 1000 }, 'request');
    }
  }
}

/** Resolves a token without the cache; a 401 is audited as a denied capability. */
function authenticate(context: HandlerContext, token: string, started: number): Promise<Capability> {
  return context.service.authenticate(token).catch((error: unknown) => {
    if (error instanceof UnauthorizedError) context.audit.event('capability.denied', started, { capability: context.audit.idOfToken(token), status: 401 });
    throw error;
  });
}

/** A control-plane JSON body, read within the control-plane limit, the control plane's memory budget and the minimum rate. */
async function readControlJson(context: HandlerContext, req: IncomingMessage, holder: Holder): Promise<unknown> {
  const lease = new BodyBudgetLease(context.controlBodyBudget, holder);
  try {
    return await readJson(req, { limit: context.controlBodyLimit, lease, rate: context.bodyRate });
  } finally {
    lease.release();
  }
}

/** The body of a request that ignores it (query, revoke, deleteSelf): read to its end, within the limit and the rate, and kept nowhere. */
async function ignoreBody(context: HandlerContext, req: IncomingMessage): Promise<void> {
  await readBody(req, { limit: context.controlBodyLimit, rate: context.bodyRate, discard: true });
}

/**
 * Forwards an invocation within the in-flight bound and its shares, then
 * counts and audits it (refused or not); resolves to its status. While it
 * is in flight, a revocation of a membrane on its chain aborts it.
 */
async function invoke(
  context: HandlerContext,
  requesters: RequesterConnections,
  req: IncomingMessage,
  res: ServerResponse,
  resolved: ExportedCapability,
  token: string,
  revocationsSeen: number,
  started: number,
): Promise<number> {
  let capability = resolved;
  const inFlight = new InFlight();
  // The requester leaving ends the invocation at whatever step it is.
  requesters.add(req.socket, inFlight);
  let tracked = false;
  let admitted = false;
  let outcome: ForwardOutcome | undefined;
  let status = 0;
  try {
    // Tracked (synchronously, for a cached capability) before anything is
    // awaited, so that a revocation either came first and is seen here, or
    // comes later and aborts this invocation.
    for (let attempt = 1, seen = revocationsSeen; !(tracked = context.service.track(capability, inFlight, seen)); attempt++) {
      if (attempt === RESOLUTION_ATTEMPTS) throw new ServiceUnavailableError('revocations are under way; try again shortly', { 'retry-after': '1' });
      seen = context.service.revocations;
      capability = (await authenticate(context, token, started)) as ExportedCapability;
    }
    const refusal = context.inFlight.take(capability.holder);
    if (refusal !== undefined) throw new ServiceUnavailableError(IN_FLIGHT_MESSAGES[refusal], { 'retry-after': '1' });
    admitted = true;
    outcome = await context.proxy.forward(req, res, capability.target, { holder: capability.holder, inFlight });
    status = outcome.status;
    return status;
  } catch (error) {
    status = statusOf(error);
    throw error;
  } finally {
    requesters.remove(req.socket, inFlight);
    if (admitted) context.inFlight.release(capability.holder);
    if (tracked) context.service.untrack(capability, inFlight);
    const { target } = capability;
    context.metrics.invocation(status, target.signing?.scheme.name ?? 'none', (performance.now() - started) / 1000);
    context.audit.invocation(capability, started, target.method ?? req.method ?? 'GET', status, outcome?.bytesIn ?? 0, outcome?.bytesOut ?? 0);
  }
}

/**
 * Runs a mutating control-plane action between its audit `request` line
 * (which must be written first: fail closed) and its `response` line
 * (written before the answer is sent), and sends the answer.
 */
async function audited(
  context: HandlerContext,
  res: ServerResponse,
  action: AuditAction,
  fields: AuditFields,
  perform: () => Promise<{ status: number; body: unknown; fields?: AuditFields }>,
): Promise<number> {
  const entry = await context.audit.begin(action, fields).catch((error: unknown) => {
    context.metrics.controlPlaneRequest(action, statusOf(error));
    throw error;
  });
  let result: Awaited<ReturnType<typeof perform>>;
  try {
    result = await perform();
  } catch (error) {
    context.metrics.controlPlaneRequest(action, statusOf(error));
    await context.audit.end(entry, { status: statusOf(error), ...(error instanceof MembraneError ? { message: error.message } : {}) });
    throw error;
  }
  context.metrics.controlPlaneRequest(action, result.status);
  await context.audit.end(entry, { status: result.status, ...result.fields });
  return reply(res, result.status, result.body);
}

/** A control-plane request recorded in one buffered audit line, and counted. */
function recordEvent(context: HandlerContext, action: AuditAction, started: number, audit: AuditFields, status: number): void {
  context.audit.event(action, started, { ...audit, status });
  context.metrics.controlPlaneRequest(action, status);
}

function statusOf(error: unknown): number {
  return error instanceof MembraneError ? error.status : 500;
}

/**
 * HTTP/1.1 requires exactly one Host header (RFC 9112 §3.2). Membrane
 * ignores its value, but two are refused rather than guessed between.
 */
function checkHost(req: IncomingMessage): void {
  let count = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') count += 1;
  if (count > 1) throw new BadRequestError('the request has more than one Host header');
  if (count === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) throw new BadRequestError('the request has no Host header');
}

function reply(res: ServerResponse, status: number, body: unknown): number {
  sendJson(res, status, body);
  return status;
}

/** `GET|HEAD /healthz` or `/readyz` without credentials (with them, the path is ignored as always). */
function isProbe(req: IncomingMessage, path: string): boolean {
  const url = req.url ?? '';
  return (
    (req.method === 'GET' || req.method === 'HEAD') &&
    (url === path || url.startsWith(`${path}?`)) &&
    req.headers.authorization === undefined
  );
}

/**
 * The token from `Authorization: Bearer TOKEN`. Missing or malformed, which
 * includes more than one Authorization header (ambiguous, so refused, not
 * guessed between): 401, the same answer as unknown or revoked.
 */
function bearerToken(req: IncomingMessage): string {
  let value: string | undefined;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 13 && raw[i]!.toLowerCase() === 'authorization') {
      if (value !== undefined) throw new UnauthorizedError();
      value = raw[i + 1]!;
    }
  }
  if (value === undefined) throw new UnauthorizedError();
  const match = /^bearer +([^ ]+) *$/i.exec(value);
  if (match === null || !isWellFormedToken(match[1]!)) throw new UnauthorizedError();
  return match[1]!;
}

function allowMethods(req: IncomingMessage, kind: string, allowed: readonly string[]): void {
  if (!allowed.includes(req.method ?? '')) throw new MethodNotAllowedError(req.method ?? '', kind, allowed);
}

function rawQuery(url: string | undefined): string {
  const mark = (url ?? '').indexOf('?');
  return mark === -1 ? '' : url!.slice(mark + 1);
}
