/** The registered signature schemes: one line each, keyed by their `hmac` selector name. */
import { aws4 } from './aws4.js';
import { cap1 } from './cap1.js';
import type { SignatureScheme } from './signer.js';

export const SCHEMES: ReadonlyMap<string, SignatureScheme<never>> = new Map<string, SignatureScheme<never>>([
  [aws4.name, aws4],
  [cap1.name, cap1],
]);
