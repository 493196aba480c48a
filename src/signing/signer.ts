/**
 * The signing seam. Each signature scheme is one module exporting a
 * SignerFactory, registered in SIGNERS under its `hmac` selector name. A
 * Signer sees the request exactly as Membrane will send it (final method,
 * URL, headers and buffered body) and returns the headers to add last.
 *
 * No scheme is registered yet: an export whose config carries `hmac` is
 * stored, and invoking it answers 501 until its scheme lands here.
 */
import type { HmacConfig } from '../service/export-config.js';

export interface SignableRequest {
  method: string;
  url: URL;
  /** Flat [name, value, name, value, …] as they will be sent. */
  headers: readonly string[];
  body: Buffer;
}

export interface Signer {
  /** Headers to append (flat [name, value, …]); the request is not modified. */
  sign(request: SignableRequest, now: Date): string[];
}

export type SchemeName = keyof HmacConfig;

export type SignerFactory<S extends SchemeName> = (config: NonNullable<HmacConfig[S]>) => Signer;

export const SIGNERS: { [S in SchemeName]?: SignerFactory<S> } = {};

/** The scheme an hmac selector names (the schema guarantees exactly one). */
export function schemeOf(hmac: HmacConfig): SchemeName {
  return Object.keys(hmac)[0] as SchemeName;
}

/** The Signer for an hmac selector, or undefined when that scheme is not available. */
export function signerFor(hmac: HmacConfig): Signer | undefined {
  const scheme = schemeOf(hmac);
  const factory = SIGNERS[scheme] as SignerFactory<typeof scheme> | undefined;
  return factory?.(hmac[scheme]!);
}
