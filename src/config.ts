/**
 * Operator settings: each from a flag, else its environment variable, else
 * its default; each checked against a JSON Schema, with errors naming the
 * flag or variable the bad value came from.
 */
import { isIP } from 'node:net';
import { InvalidSettingError } from './errors.js';
import { LOG_LEVELS, type LogLevel } from './log.js';
import { compileValidator } from './schema.js';
import { shareOf } from './shares.js';
import { validateAuthority } from './token.js';

export interface ServeConfig {
  dataDir: string;
  host: string;
  port: number;
  /** host[:port] in issued capability URIs; default `localhost:<listening port>`. */
  authority: string | undefined;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  /** CIDRs and host names targets may use despite the default target policy (loopback, private, link-local… refused). */
  allowTargets: string[];
  targetTimeoutMs: number;
  connectTimeoutMs: number;
  connectionsPerTarget: number;
  /** Fraction of each shared bound (invocations in flight, connections to a target, body memory) one tenant's capabilities may hold. */
  tenantShare: number;
  /** Fraction of each shared bound one capability may hold. */
  capabilityShare: number;
  /** Longest wait for a connection to a target (503 beyond). */
  queueTimeoutMs: number;
  /** Most bytes of request bodies held in memory at once, across all requests. */
  bodyMemoryLimit: number;
  /** Least rate a request body must keep up, bytes per second (0: no minimum). */
  minBodyRate: number;
  /** The window over which the body rate is measured. */
  bodyRateWindowMs: number;
  cacheSize: number;
  controlBodyLimit: number;
  signedBodyLimit: number;
  maxHeaderSize: number;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
  maxInFlight: number;
  drainTimeoutMs: number;
  logLevel: LogLevel;
  /** `file` (DATA_DIR/audit.log), `file:PATH`, `stdout` or `off`. */
  audit: string;
  /** Port of the admin listener (/metrics); undefined: no admin listener. */
  adminPort: number | undefined;
  adminHost: string;
  /** MEMBRANE_MASTER_KEY (environment only: a key never belongs on a command line). */
  masterKey: string | undefined;
}

type Kind = 'string' | 'integer' | 'number' | 'list';

interface OptionSpec {
  flag: string;
  env: string;
  kind: Kind;
  schema: object;
  default?: unknown;
  check?: (value: never) => string | undefined;
  help: string;
}

const INTEGER = (minimum: number, maximum: number): object => ({ type: 'integer', minimum, maximum });
const FRACTION = { type: 'number', exclusiveMinimum: 0, maximum: 1 };

export const SERVE_OPTIONS = {
  dataDir: { flag: 'data-dir', env: 'MEMBRANE_DATA_DIR', kind: 'string', schema: { type: 'string', minLength: 1 }, default: './data', help: 'data directory (SQLite store, master key file)' },
  host: { flag: 'host', env: 'MEMBRANE_HOST', kind: 'string', schema: { type: 'string', minLength: 1 }, default: '127.0.0.1', help: 'address to listen on' },
  port: { flag: 'port', env: 'MEMBRANE_PORT', kind: 'integer', schema: INTEGER(0, 65535), default: 8080, help: 'port to listen on (0: any free port)' },
  authority: {
    flag: 'authority', env: 'MEMBRANE_AUTHORITY', kind: 'string', schema: { type: 'string', minLength: 1 },
    check: (value: string) => checkAuthority(value),
    help: 'host[:port] written into capability URIs (default localhost:PORT)',
  },
  tlsCert: { flag: 'tls-cert', env: 'MEMBRANE_TLS_CERT', kind: 'string', schema: { type: 'string', minLength: 1 }, help: 'PEM certificate file: serve HTTPS' },
  tlsKey: { flag: 'tls-key', env: 'MEMBRANE_TLS_KEY', kind: 'string', schema: { type: 'string', minLength: 1 }, help: 'PEM private key file for --tls-cert' },
  allowTargets: {
    flag: 'allow-targets', env: 'MEMBRANE_ALLOW_TARGETS', kind: 'list',
    schema: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 253 } }, default: [],
    check: (value: string[]) => value.map(checkAllowTarget).find((message) => message !== undefined),
    help: 'comma-separated CIDRs and host names targets may use despite the target policy',
  },
  targetTimeoutMs: { flag: 'target-timeout-ms', env: 'MEMBRANE_TARGET_TIMEOUT_MS', kind: 'integer', schema: INTEGER(1, 2_147_483_647), default: 60_000, help: "upper bound of a target's idle timeout" },
  connectTimeoutMs: { flag: 'connect-timeout-ms', env: 'MEMBRANE_CONNECT_TIMEOUT_MS', kind: 'integer', schema: INTEGER(1, 2_147_483_647), default: 10_000, help: 'timeout for connecting to a target' },
  connectionsPerTarget: { flag: 'connections-per-target', env: 'MEMBRANE_CONNECTIONS_PER_TARGET', kind: 'integer', schema: INTEGER(1, 100_000), default: 256, help: 'most connections to one target at once (more requests queue)' },
  tenantShare: {
    flag: 'tenant-share', env: 'MEMBRANE_TENANT_SHARE', kind: 'number', schema: FRACTION, default: 0.5,
    help: "fraction of each shared bound (in flight, connections per target, body memory) one tenant's capabilities may hold",
  },
  capabilityShare: { flag: 'capability-share', env: 'MEMBRANE_CAPABILITY_SHARE', kind: 'number', schema: FRACTION, default: 0.25, help: 'fraction of each shared bound one capability may hold' },
  queueTimeoutMs: { flag: 'queue-timeout-ms', env: 'MEMBRANE_QUEUE_TIMEOUT_MS', kind: 'integer', schema: INTEGER(1, 2_147_483_647), default: 10_000, help: 'longest wait for a connection to a target (503 beyond)' },
  bodyMemoryLimit: {
    flag: 'body-memory-limit', env: 'MEMBRANE_BODY_MEMORY_LIMIT', kind: 'integer', schema: INTEGER(65_536, 68_719_476_736), default: 134_217_728,
    help: 'most bytes of request bodies held in memory at once, all requests together (503 beyond)',
  },
  minBodyRate: { flag: 'min-body-rate', env: 'MEMBRANE_MIN_BODY_RATE', kind: 'integer', schema: INTEGER(0, 1_073_741_824), default: 1_024, help: 'least rate a request body must keep up, bytes per second (408 below; 0: none)' },
  bodyRateWindowMs: { flag: 'body-rate-window-ms', env: 'MEMBRANE_BODY_RATE_WINDOW_MS', kind: 'integer', schema: INTEGER(100, 3_600_000), default: 10_000, help: 'window over which --min-body-rate is measured' },
  cacheSize: { flag: 'cache-size', env: 'MEMBRANE_CACHE_SIZE', kind: 'integer', schema: INTEGER(1, 100_000_000), default: 10_000, help: 'resolved capabilities kept in memory (about 0.8 KB each)' },
  controlBodyLimit: { flag: 'control-body-limit', env: 'MEMBRANE_CONTROL_BODY_LIMIT', kind: 'integer', schema: INTEGER(1024, 16_777_216), default: 65_536, help: 'largest control-plane request body, bytes' },
  signedBodyLimit: { flag: 'signed-body-limit', env: 'MEMBRANE_SIGNED_BODY_LIMIT', kind: 'integer', schema: INTEGER(0, 1_073_741_824), default: 6_291_456, help: 'largest request body a signature covers, bytes (it is buffered)' },
  maxHeaderSize: { flag: 'max-header-size', env: 'MEMBRANE_MAX_HEADER_SIZE', kind: 'integer', schema: INTEGER(1024, 1_048_576), default: 16_384, help: 'largest request head, bytes (431 beyond)' },
  headersTimeoutMs: { flag: 'headers-timeout-ms', env: 'MEMBRANE_HEADERS_TIMEOUT_MS', kind: 'integer', schema: INTEGER(100, 600_000), default: 20_000, help: 'time a client has to send a request head (408 beyond)' },
  idleTimeoutMs: { flag: 'idle-timeout-ms', env: 'MEMBRANE_IDLE_TIMEOUT_MS', kind: 'integer', schema: INTEGER(100, 86_400_000), default: 120_000, help: 'a connection idle this long is closed (a stalled request gets 408)' },
  maxInFlight: { flag: 'max-in-flight', env: 'MEMBRANE_MAX_IN_FLIGHT', kind: 'integer', schema: INTEGER(1, 1_000_000), default: 2_048, help: 'most invocations in flight at once (503 beyond)' },
  drainTimeoutMs: { flag: 'drain-timeout-ms', env: 'MEMBRANE_DRAIN_TIMEOUT_MS', kind: 'integer', schema: INTEGER(0, 2_147_483_647), default: 30_000, help: 'on SIGTERM or SIGINT, how long in-flight requests may finish' },
  audit: {
    flag: 'audit', env: 'MEMBRANE_AUDIT', kind: 'string',
    schema: { type: 'string', pattern: '^(?:off|stdout|file|file:.+)$', description: 'off, stdout, file (DATA_DIR/audit.log) or file:PATH' },
    default: 'file', help: 'audit trail: file (DATA_DIR/audit.log), file:PATH, stdout or off',
  },
  adminPort: { flag: 'admin-port', env: 'MEMBRANE_ADMIN_PORT', kind: 'integer', schema: INTEGER(0, 65535), help: 'serve /metrics (Prometheus) on this port; off when unset' },
  adminHost: { flag: 'admin-host', env: 'MEMBRANE_ADMIN_HOST', kind: 'string', schema: { type: 'string', minLength: 1 }, default: '127.0.0.1', help: 'address of the admin listener' },
  logLevel: { flag: 'log-level', env: 'MEMBRANE_LOG_LEVEL', kind: 'string', schema: { type: 'string', enum: LOG_LEVELS, description: `one of ${LOG_LEVELS.join(', ')}` }, default: 'info', help: 'log level' },
} satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof SERVE_OPTIONS;

/** Control-plane bodies of the largest size (--control-body-limit) that may be held in memory at once, all holders together: their budget. */
export const CONTROL_BODIES_AT_ONCE = 256;

const validators = new Map(
  Object.entries(SERVE_OPTIONS).map(([name, spec]) => [name, compileValidator<unknown>(spec.schema, `--${spec.flag}`)]),
);

/**
 * Resolves the named options from parsed flags (by flag name) and the
 * environment. Throws InvalidSettingError naming the flag or variable.
 */
export function resolveOptions<N extends OptionName>(
  names: readonly N[],
  flags: Readonly<Record<string, string | undefined>>,
  env: NodeJS.ProcessEnv,
): { [K in N]: unknown } {
  const resolved = {} as { [K in N]: unknown };
  for (const name of names) {
    const spec: OptionSpec = SERVE_OPTIONS[name];
    const fromFlag = flags[spec.flag];
    const text = fromFlag ?? (env[spec.env] === '' ? undefined : env[spec.env]);
    if (text === undefined) {
      resolved[name] = spec.default;
      continue;
    }
    const source = fromFlag !== undefined ? `--${spec.flag}` : spec.env;
    const value = convert(text, spec.kind);
    const checked = validators.get(name)!(value, source);
    if (!checked.ok) throw new InvalidSettingError(checked.message);
    const problem = spec.check?.(value as never);
    if (problem !== undefined) throw new InvalidSettingError(`${source}: ${problem}`);
    resolved[name] = value;
  }
  return resolved;
}

export function resolveServeConfig(flags: Readonly<Record<string, string | undefined>>, env: NodeJS.ProcessEnv): ServeConfig {
  const options = resolveOptions(Object.keys(SERVE_OPTIONS) as OptionName[], flags, env);
  if ((options.idleTimeoutMs as number) <= (options.headersTimeoutMs as number)) {
    throw new InvalidSettingError('--idle-timeout-ms (MEMBRANE_IDLE_TIMEOUT_MS) must be longer than --headers-timeout-ms, or a slow head would be closed without an answer');
  }
  if ((options.idleTimeoutMs as number) <= (options.targetTimeoutMs as number)) {
    throw new InvalidSettingError('--idle-timeout-ms (MEMBRANE_IDLE_TIMEOUT_MS) must be longer than --target-timeout-ms, or a slow target would have its requester cut off first');
  }
  // The largest body one holder may have buffered must fit in the smallest share of the body memory a holder can get.
  const smallestShare = Math.min(options.tenantShare as number, options.capabilityShare as number);
  const holderShare = shareOf(options.bodyMemoryLimit as number, smallestShare);
  if ((options.signedBodyLimit as number) > holderShare) {
    throw new InvalidSettingError(
      `--body-memory-limit (MEMBRANE_BODY_MEMORY_LIMIT) times the smaller of --tenant-share and --capability-share is ${holderShare} bytes, less than the largest signed body (${options.signedBodyLimit}, --signed-body-limit): such a body could never be buffered`,
    );
  }
  if (smallestShare * CONTROL_BODIES_AT_ONCE < 1) {
    throw new InvalidSettingError(`--tenant-share and --capability-share must be at least 1/${CONTROL_BODIES_AT_ONCE}, or a holder could never send a control-plane body of the largest size`);
  }
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) {
    throw new InvalidSettingError('--tls-cert and --tls-key (MEMBRANE_TLS_CERT, MEMBRANE_TLS_KEY) must be given together');
  }
  return { ...(options as Omit<ServeConfig, 'masterKey'>), masterKey: env.MEMBRANE_MASTER_KEY };
}

/** The authority to use when none is configured. */
export function defaultAuthority(port: number): string {
  return `localhost:${port}`;
}

function convert(text: string, kind: Kind): unknown {
  if (kind === 'integer') return /^-?[0-9]{1,16}$/.test(text.trim()) ? Number(text.trim()) : text;
  if (kind === 'number') return /^-?(?:[0-9]{1,16}(?:\.[0-9]{1,16})?|\.[0-9]{1,16})$/.test(text.trim()) ? Number(text.trim()) : text;
  if (kind === 'list') return text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  return text;
}

function checkAuthority(value: string): string | undefined {
  try {
    validateAuthority(value);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

function checkAllowTarget(entry: string): string | undefined {
  const slash = entry.indexOf('/');
  if (slash === -1) {
    return isIP(entry) !== 0 || HOST_NAME.test(entry) ? undefined : `"${entry}" is neither a CIDR nor a host name`;
  }
  const address = entry.slice(0, slash);
  const prefix = entry.slice(slash + 1);
  const family = isIP(address);
  const max = family === 4 ? 32 : 128;
  if (family === 0 || !/^[0-9]{1,3}$/.test(prefix) || Number(prefix) > max) return `"${entry}" is not a valid CIDR`;
  return undefined;
}
