/**
 * The wire contract's JSON shapes, as TypeScript types shared by the
 * server and the SDK. Types only: importing this module loads nothing.
 */
import type { Aws4HmacSha256Config } from './signing/aws4.js';
import type { Cap1HmacSha512Config } from './signing/cap1.js';

export type { Aws4HmacSha256Config, Cap1HmacSha512Config };

/** A tenant's root capabilities, as `membrane init` prints them. */
export interface RootCapabilities {
  create: string;
  query: string;
  deleteSelf: string;
}

export interface MembraneCapabilities {
  export: string;
  revoke: string;
}

/** A membrane, as `create` answers and `query` lists it. */
export interface MembraneView {
  id: string;
  capabilities: MembraneCapabilities;
}

export interface QueryResult {
  membranes: MembraneView[];
  completed: boolean;
}

export interface TlsConfig {
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized?: boolean;
}

/** Names exactly one signature scheme and holds its config. */
export type HmacConfig = { 'aws4-hmac-sha256': Aws4HmacSha256Config } | { 'cap1-hmac-sha512': Cap1HmacSha512Config };

export interface UriExportConfig {
  uri: string;
  method?: string;
  headers?: Record<string, string>;
  allowQuery?: boolean;
  timeoutMs?: number;
  tls?: TlsConfig;
  hmac?: HmacConfig;
}

export interface ReExportConfig {
  capability: string;
}

export type ExportConfig = UriExportConfig | ReExportConfig;

/** The body of every error answer. */
export interface ErrorBody {
  error: string;
  message: string;
}

/** The body of every 202. */
export interface AcceptedBody {
  statusCode: 202;
  message: 'Accepted';
}
