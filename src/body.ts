/** Reading a whole request body into memory, bounded. */
import type { IncomingMessage } from 'node:http';
import { BadRequestError, PayloadTooLargeError } from './errors.js';

/**
 * Reads the whole body, refusing with 413 as soon as `Content-Length` or
 * the bytes received exceed `limit`. On refusal the rest is left unread
 * (the caller closes the connection after answering).
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): PayloadTooLargeError => new PayloadTooLargeError(`the request body must be at most ${limit} bytes`);
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) return Promise.reject(tooLarge());
  if (req.readableEnded) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onCut);
      req.off('close', onCut);
    };
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      if (received > limit) {
        cleanup();
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks, received));
    };
    // The connection went before the body was complete (the client left, or its body was malformed).
    const onCut = (): void => {
      cleanup();
      reject(new BadRequestError('the request body ended before it was complete'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onCut);
    req.on('close', onCut);
  });
}
