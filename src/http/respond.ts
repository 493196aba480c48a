/** Writing JSON answers and errors; every error body is `{"error", "message"}`. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { MembraneError } from '../errors.js';
import { requestHasBody } from '../proxy/headers.js';

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(payload)),
    // Answers may carry capabilities: no cache may keep them.
    'cache-control': 'no-store',
  });
  res.end(payload);
}

export const INTERNAL_ERROR_BODY = {
  error: 'Internal Server Error',
  message: 'an unexpected error occurred; the operator can find it in the server log',
} as const;

/**
 * Answers with `error` and returns the status sent. If the request body was
 * not read to its end, the connection is closed after the answer rather
 * than reading an unbounded remainder.
 */
export function sendError(req: IncomingMessage, res: ServerResponse, error: unknown): number {
  const extra: Record<string, string> = requestHasBody(req) && !req.complete ? { connection: 'close' } : {};
  if (error instanceof MembraneError) {
    sendJson(res, error.status, { error: error.reason, message: error.message }, { ...error.headers, ...extra });
    return error.status;
  }
  sendJson(res, 500, INTERNAL_ERROR_BODY, extra);
  return 500;
}

const RAW_REASONS: Record<number, string> = {
  400: 'Bad Request',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
};

/**
 * Answers on a raw socket, for requests Node's parser refused before they
 * became requests (malformed, oversized or timed-out heads) and for the
 * CONNECT method: still a JSON error, then the connection is closed.
 */
export function sendRawError(socket: Duplex, status: number, message: string, extra = ''): void {
  // A response already under way on this connection must not get a second head in its body.
  const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (!socket.writable || current?.headersSent === true) {
    socket.destroy();
    return;
  }
  const reason = RAW_REASONS[status] ?? 'Bad Request';
  const body = JSON.stringify({ error: reason, message });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}

/**
 * The answer to a request Node's HTTP parser refused. When the refused bytes
 * follow a request that arrived whole and is still being answered
 * (pipelined garbage), that answer is completed, so that what the client is
 * told matches what was done, and then the connection is closed; the
 * garbage gets no answer of its own. When they are the body of the request
 * being answered (bad chunking), that request is refused.
 */
export function answerClientError(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || error.code === 'EPIPE') {
    socket.destroy();
    return;
  }
  const pending = (socket as Duplex & { _httpMessage?: (ServerResponse & { req?: IncomingMessage }) | null })._httpMessage;
  if (pending?.req?.complete === true) {
    pending.shouldKeepAlive = false;
    pending.once('finish', () => socket.end());
    pending.once('close', () => socket.destroy());
    return;
  }
  if (error.code === 'HPE_HEADER_OVERFLOW') {
    sendRawError(socket, 431, 'the request head is too large');
  } else if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT' || error.code === 'ERR_HTTP_HEADERS_TIMEOUT') {
    sendRawError(socket, 408, 'the request was not received in time');
  } else {
    sendRawError(socket, 400, 'the request is not valid HTTP/1.1');
  }
}

/** The answer to an `Expect` other than 100-continue: 417, in JSON like every error. */
export function answerExpectation(_req: IncomingMessage, res: ServerResponse): void {
  sendJson(res, 417, { error: 'Expectation Failed', message: 'the only expectation understood is Expect: 100-continue' }, { connection: 'close' });
}
