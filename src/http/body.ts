/** Reading control-plane request bodies: bounded, strict UTF-8, strict JSON. */
import type { IncomingMessage } from 'node:http';
import { BadRequestError, PayloadTooLargeError } from '../errors.js';

/**
 * Reads the whole body, refusing with 413 as soon as `Content-Length` or
 * the bytes received exceed `limit`. On refusal the rest is left unread
 * (the caller closes the connection after answering).
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): PayloadTooLargeError => new PayloadTooLargeError(`the request body must be at most ${limit} bytes`);
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) return Promise.reject(tooLarge());
  if (req.complete) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
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
    const onError = (error: Error): void => {
      cleanup();
      reject(error);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Reads and parses a JSON body. A byte order mark, invalid UTF-8 or invalid JSON is a 400. */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const body = await readBody(req, limit);
  if (body.length === 0) throw new BadRequestError('the request body must be a JSON object, and it is empty');
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw new BadRequestError('the request body is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new BadRequestError('the request body is not valid JSON');
  }
}
