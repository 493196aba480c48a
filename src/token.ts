/**
 * Capability tokens and URIs.
 *
 * Token: `CPBLTY1-` + base64url (no padding) of 64 CSPRNG bytes, 94 characters.
 * URI:   `cpblty://AUTHORITY/#TOKEN`.
 * Tokens are stored and looked up only by SHA-256 of the token text.
 */
import { hash, randomBytes } from 'node:crypto';

export const TOKEN_PREFIX = 'CPBLTY1-';
const TOKEN_BYTES = 64;
/** 64 bytes in unpadded base64url are 86 characters. */
const TOKEN_PATTERN = /^CPBLTY1-[A-Za-z0-9_-]{86}$/;
const URI_PATTERN = /^cpblty:\/\/([^/?#\s]+)\/#(CPBLTY1-[A-Za-z0-9_-]{86})$/;

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(TOKEN_BYTES).toString('base64url');
}

export function isWellFormedToken(value: string): boolean {
  return TOKEN_PATTERN.test(value);
}

/** SHA-256 of a token. (Tokens are ASCII, so the UTF-8 that `hash` encodes with is byte for byte the token.) */
export function hashToken(token: string): Buffer {
  return hash('sha256', token, 'buffer');
}

/** hashToken in base64, for use as a map key without a Buffer in between. */
export function hashTokenBase64(token: string): string {
  return hash('sha256', token, 'base64');
}

export function capabilityUri(authority: string, token: string): string {
  return `cpblty://${authority}/#${token}`;
}

export interface ParsedCapabilityUri {
  authority: string;
  token: string;
}

/** Parses `cpblty://AUTHORITY/#TOKEN` (AUTHORITY being host[:port]); undefined for anything else. */
export function parseCapabilityUri(uri: string): ParsedCapabilityUri | undefined {
  const match = URI_PATTERN.exec(uri);
  if (match === null || !isAuthority(match[1]!)) return undefined;
  return { authority: match[1]!, token: match[2]! };
}

const AUTHORITY_PATTERN = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;

/**
 * Checks that `authority` is `host[:port]` (a DNS name, IPv4 address or
 * bracketed IPv6 address, optional port 1-65535) and returns it unchanged.
 */
export function validateAuthority(authority: string): string {
  if (!isAuthority(authority)) throw new Error(`authority "${authority}" is not host[:port]`);
  return authority;
}

function isAuthority(text: string): boolean {
  const match = AUTHORITY_PATTERN.exec(text);
  const port = match?.[1];
  return match !== null && (port === undefined || (Number(port) >= 1 && Number(port) <= 65535));
}

/** Replaces every token in a text (an error message quoting arguments, say) with `CPBLTY1-…`. */
export function redactTokens(text: string): string {
  return text.replace(/CPBLTY1-[A-Za-z0-9_-]+/g, 'CPBLTY1-…');
}
