/** Control-plane request bodies: bounded, strict UTF-8, strict JSON. */
import type { IncomingMessage } from 'node:http';
import { readBody, type ReadBodyOptions } from '../body.js';
import { BadRequestError } from '../errors.js';
import { jsonProblem } from './strict-json.js';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Deeper than any control-plane body needs to be. */
const MAX_DEPTH = 16;

/**
 * Reads and parses a JSON body. A byte order mark, invalid UTF-8, invalid
 * JSON, duplicate keys, keys naming object internals and nesting deeper
 * than 16 levels are each a 400.
 */
export async function readJson(req: IncomingMessage, options: ReadBodyOptions): Promise<unknown> {
  const body = await readBody(req, options);
  if (body.length === 0) throw new BadRequestError('the request body must be a JSON object, and it is empty');
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw new BadRequestError('the request body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BadRequestError('the request body is not valid JSON');
  }
  const problem = jsonProblem(text, MAX_DEPTH);
  if (problem !== undefined) throw new BadRequestError(`the request body is refused: ${problem}`);
  return value;
}
