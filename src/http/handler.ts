/**
 * The wire: authenticate the bearer token, route by the kind of capability
 * it designates, map errors. The request path is ignored; only the token
 * (and, for `query` and exported capabilities, the query string) matters.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { MethodNotAllowedError, ServiceUnavailableError, UnauthorizedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Proxy } from '../proxy/proxy.js';
import type { MembraneService } from '../service/membrane-service.js';
import { isWellFormedToken } from '../token.js';
import { readBody } from '../body.js';
import { readJson } from './json-body.js';
import { sendError, sendJson } from './respond.js';

export interface HandlerContext {
  service: MembraneService;
  proxy: Proxy;
  logger: Logger;
  /** Largest control-plane request body, in bytes. */
  controlBodyLimit: number;
  /** True once shutdown has begun: health checks answer 503. */
  draining: () => boolean;
}

const ACCEPTED = { statusCode: 202, message: 'Accepted' } as const;
const REVOKE_METHODS = ['GET', 'POST', 'DELETE'] as const;

export function createRequestHandler(context: HandlerContext): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void handle(context, req, res);
  };
}

async function handle(context: HandlerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  let kind = 'none';
  let status = 0;
  try {
    if (isHealthCheck(req)) {
      if (context.draining()) throw new ServiceUnavailableError('the server is shutting down');
      sendJson(res, 200, { status: 'ok' });
      status = 200;
      return;
    }
    const capability = await context.service.authenticate(bearerToken(req));
    kind = capability.kind;
    switch (capability.kind) {
      case 'exported': {
        status = (await context.proxy.forward(req, res, capability.target)).status;
        return;
      }
      case 'create': {
        allowMethods(req, 'tenant create', ['POST']);
        const membrane = await context.service.createMembrane(capability.tenantId, await readJson(req, context.controlBodyLimit));
        status = reply(res, 201, membrane);
        return;
      }
      case 'query': {
        allowMethods(req, 'tenant query', ['GET']);
        await readBody(req, context.controlBodyLimit);
        status = reply(res, 200, await context.service.queryMembranes(capability.tenantId, rawQuery(req.url)));
        return;
      }
      case 'deleteSelf': {
        allowMethods(req, 'tenant deleteSelf', REVOKE_METHODS);
        await readBody(req, context.controlBodyLimit);
        await context.service.deleteTenant(capability.tenantId);
        status = reply(res, 202, ACCEPTED);
        return;
      }
      case 'export': {
        allowMethods(req, 'membrane export', ['POST']);
        const config = await readJson(req, context.controlBodyLimit);
        const uri = await context.service.export(capability.membraneId, config);
        status = reply(res, 201, { capability: uri });
        return;
      }
      case 'revoke': {
        allowMethods(req, 'membrane revoke', REVOKE_METHODS);
        await readBody(req, context.controlBodyLimit);
        await context.service.revokeMembrane(capability.membraneId);
        status = reply(res, 202, ACCEPTED);
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
  } finally {
    context.logger.debug({ method: req.method, kind, status, ms: Math.round((performance.now() - started) * 1000) / 1000 }, 'request');
  }
}

function reply(res: ServerResponse, status: number, body: unknown): number {
  sendJson(res, status, body);
  return status;
}

function isHealthCheck(req: IncomingMessage): boolean {
  const url = req.url ?? '';
  return (
    (req.method === 'GET' || req.method === 'HEAD') &&
    (url === '/healthz' || url.startsWith('/healthz?')) &&
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
