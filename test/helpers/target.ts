/** Real HTTP(S) target servers on loopback for invocation tests. */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export interface ReceivedRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  headers: IncomingMessage['headers'];
  body: Buffer;
  bodySha256: string;
  /** Subject CN of the client certificate, when the target asked for one. */
  clientCertificate?: string;
}

export interface TestTarget {
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** Connections the target has accepted (to observe pooling). */
  connections: number;
  close(): Promise<void>;
}

export type Respond = (req: IncomingMessage, res: ServerResponse, received: ReceivedRequest) => void;

/** Answers every request with a JSON echo of it (after reading the whole body), unless `respond` is given. */
export async function startTarget(options: { respond?: Respond; tls?: ServerOptions } = {}): Promise<TestTarget> {
  const requests: ReceivedRequest[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
      if (size <= 1 << 20) chunks.push(chunk);
    });
    req.on('end', () => {
      const socket = req.socket as Socket & { getPeerCertificate?: () => { subject?: { CN?: string } } };
      const received: ReceivedRequest = {
        method: req.method!,
        url: req.url!,
        rawHeaders: req.rawHeaders,
        headers: req.headers,
        body: Buffer.concat(chunks),
        bodySha256: hash.digest('hex'),
        clientCertificate: socket.getPeerCertificate?.()?.subject?.CN,
      };
      requests.push(received);
      if (options.respond !== undefined) {
        options.respond(req, res, received);
        return;
      }
      const body = JSON.stringify({
        method: received.method,
        url: received.url,
        rawHeaders: received.rawHeaders,
        bodyLength: size,
        bodySha256: received.bodySha256,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-target': 'echo' });
      res.end(body);
    });
  };
  const server: Server = options.tls === undefined ? createServer(handler) : createHttpsServer(options.tls, handler);
  const target = { connections: 0 } as TestTarget;
  server.on('connection', () => (target.connections += 1));
  server.on('secureConnection', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(target, {
    url: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

/** A port on loopback that nothing listens on. */
export async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
