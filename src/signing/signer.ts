/**
 * The signing seam. A signature scheme is one module exporting a
 * SignatureScheme, registered by one line in `schemes.ts` under its `hmac`
 * selector name. The scheme owns the JSON Schema of its config, the
 * export-time checks of the target URI, and a factory for Signers.
 *
 * A Signer sees the request exactly as Membrane will send it (final method,
 * host, path, query, headers and, when the signature covers it, the body)
 * and returns the headers to add last. Headers named in `headerNames` are
 * the signer's alone: Membrane drops them from every other source.
 */

/** The request as it will go to the target. */
export interface OutgoingRequest {
  method: string;
  /** Host header value, as sent. */
  host: string;
  /** Path as sent (percent-encoded wire form), without the query. */
  path: string;
  /** Query string as sent, without `?`; empty when there is none. */
  query: string;
  /** Headers as sent, flat [name, value, …]; one field line per name. */
  headers: readonly string[];
  /** The whole body when the scheme's signature covers it, else null. */
  body: Buffer | null;
}

export interface Signer {
  /** Headers to append, flat [name, value, …]. Throws BadRequestError for a request it cannot sign unambiguously. */
  sign(request: OutgoingRequest, now: Date): string[];
}

export interface SignatureScheme<C = unknown> {
  /** The `hmac` selector naming this scheme, e.g. `aws4-hmac-sha256`. */
  readonly name: string;
  /** JSON Schema of the scheme's config object. */
  readonly configSchema: object;
  /** True when the signature covers the body, which is then buffered (up to the signed-body limit). */
  readonly coversBody: boolean;
  /** Lower-case names of the headers the scheme sets. */
  readonly headerNames: ReadonlySet<string>;
  /**
   * A lower-case name prefix of headers only the export config may set: the
   * requester's are dropped, so that a holder cannot widen the signed action.
   */
  readonly configOnlyHeaderPrefix?: string;
  /** The path to send for a config's URI path, when the scheme needs it in a particular encoding. */
  wirePath?(config: C, pathname: string): string;
  /** Export-time check of the target URI; a message naming the problem, or undefined. */
  checkUri(url: URL): string | undefined;
  createSigner(config: C): Signer;
}
