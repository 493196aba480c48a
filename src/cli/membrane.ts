/**
 * `membrane`: the operator's command. It opens the store directly (it does
 * not talk to a running server), so `init` and `tenant create` work whether
 * or not a server is running on the same data directory.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error. Errors are one line on
 * stderr.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { createTenant, openStore, requireStore, startMembrane } from '../app.js';
import { auditId, loadAuditKey, openAuditTrail } from '../audit/audit-trail.js';
import { defaultAuthority, resolveOptions, resolveServeConfig, SERVE_OPTIONS } from '../config.js';
import { ConfigurationError } from '../errors.js';
import { createLogger } from '../log.js';
import { keyFilePath, type KeyRing, loadMasterKey, MasterKey, sameKeys, writeKeyFile } from '../secrets.js';
import { MembraneService, resealStore, type ResealResult, type RootCapabilities } from '../service/membrane-service.js';
import type { Store } from '../store/store.js';
import { hashToken, isWellFormedToken, parseCapabilityUri, redactTokens } from '../token.js';
import { ProfileStore } from './profile-store.js';
import { RotationLock } from './rotation-lock.js';
import { onShutdownSignals } from './shutdown-signals.js';

class UsageError extends Error {}

const VERSION = '0.1.0';

const USAGE = `membrane: operator commands for the Membrane capability service

Usage:
  membrane serve [options]                 run the service (see options below)
  membrane init [--data-dir DIR] [--authority HOST[:PORT]] [--json] [--capi-profile NAME | --no-capi-profile]
                                           create a store and its first tenant; print its root capabilities
                                           and save them as a capi profile (default: "default")
  membrane tenant create [--data-dir DIR] [--authority HOST[:PORT]] [--json] [--capi-profile NAME]
                                           add a tenant to an existing store; print its root capabilities
                                           (saved as a capi profile only when --capi-profile is given)
  membrane audit-hash [--data-dir DIR] [--json] TOKEN|CAPABILITY|-
                                           print the id a token has in the audit trail (- reads it from stdin)
  membrane keys rotate [--data-dir DIR] [--json]
                                           re-seal every secret under a new master key, online;
                                           one rotation at a time (lock: DATA_DIR/keys-rotate.lock)
  membrane --help | --version

Options of serve (each also read from the environment variable shown):
${Object.values(SERVE_OPTIONS)
  .map((spec) => `  --${`${spec.flag} ${spec.flag === 'allow-targets' ? 'LIST' : 'VALUE'}`.padEnd(28)} ${spec.env.padEnd(28)} ${spec.help}`)
  .join('\n')}

serve also takes --capi-profile NAME / --no-capi-profile for the tenant it creates on an empty store;
init and tenant create take --audit like serve.

SIGINT (Ctrl-C) or SIGTERM makes serve drain: it stops accepting, lets requests in flight finish
(at most --drain-timeout-ms), then exits 0. Signals less than a second after the first are the same
request (Ctrl-C under npm start reaches the server twice: from the terminal and from npm); a signal a
second or more after the first exits at once with 1, cutting what is still in flight.

The master key comes from MEMBRANE_MASTER_KEY (base64 of 32 bytes) or, if that is
unset, from DATA_DIR/master.key (created with mode 0600 by init or the first serve).
`;

/** Where init and a bootstrapping serve save the new tenant's root capabilities for capi. */
const PROFILE_FLAGS = {
  'capi-profile': { type: 'string' },
  'no-capi-profile': { type: 'boolean' },
} as const;

const STORE_FLAGS = {
  'data-dir': { type: 'string' },
  authority: { type: 'string' },
  audit: { type: 'string' },
  json: { type: 'boolean' },
  ...PROFILE_FLAGS,
} as const;

export async function main(argv: readonly string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`membrane: ${redactTokens(error.message)} (see membrane --help)\n`);
      return 2;
    }
    if (error instanceof ConfigurationError) {
      process.stderr.write(`membrane: ${error.message}\n`);
      return 1;
    }
    process.stderr.write(`membrane: ${(error as Error).message ?? String(error)}\n`);
    return 1;
  }
}

async function run(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case 'serve':
      return serve(rest);
    case 'init':
      return tenantCommand(rest, { init: true });
    case 'tenant':
      if (rest[0] !== 'create') throw new UsageError(`unknown command "tenant ${rest[0] ?? ''}"; did you mean "tenant create"?`);
      return tenantCommand(rest.slice(1), { init: false });
    case 'audit-hash':
      return auditHash(rest);
    case 'keys':
      if (rest[0] !== 'rotate') throw new UsageError(`unknown command "keys ${rest[0] ?? ''}"; did you mean "keys rotate"?`);
      return rotateKeys(rest.slice(1));
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;

function parse<T extends OptionsConfig>(args: readonly string[], options: T) {
  try {
    return parseArgs({ args: [...args], options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

async function tenantCommand(args: readonly string[], { init }: { init: boolean }): Promise<number> {
  const { values } = parse(args, STORE_FLAGS);
  const flags = { 'data-dir': values['data-dir'], authority: values.authority };
  const options = resolveOptions(['dataDir', 'authority', 'port', 'audit'], { ...flags, audit: values.audit }, process.env);
  const dataDir = options.dataDir as string;
  const authority = (options.authority as string | undefined) ?? defaultAuthority(options.port as number);
  const { store, key } = await openStore(dataDir, process.env.MEMBRANE_MASTER_KEY, { create: init });
  const audit = await openAuditTrail({
    spec: options.audit as string,
    dataDir,
    store,
    key,
    onFailure: (error, lines) => process.stderr.write(`membrane: warning: the audit trail could not record ${lines} line(s): ${error.message}\n`),
  });
  try {
    const service = new MembraneService(store, key, { authority, cacheSize: 1, auditId: (hash) => audit.idOf(hash) });
    const roots = await createTenant(service, audit, { onlyIfEmpty: init });
    if (roots === undefined) {
      throw new ConfigurationError(`${dataDir} already holds a tenant; add another with \`membrane tenant create --data-dir ${dataDir}\``);
    }
    process.stdout.write(values.json === true ? `${JSON.stringify(roots)}\n` : formatRoots(roots));
    const profile = profileName(values, init);
    if (profile !== undefined) await saveProfile(roots, serviceAddress(authority, process.env.MEMBRANE_TLS_CERT ? 'https' : 'http'), profile);
    return 0;
  } finally {
    await store.close();
  }
}

/**
 * The address capi should use: plain HTTP only for a loopback authority;
 * any other authority is assumed to be served over HTTPS (by Membrane or a
 * TLS terminator in front of it), so capabilities never cross a network in
 * clear text.
 */
function serviceAddress(authority: string, scheme: 'http' | 'https'): string {
  const host = authority.replace(/:\d+$/, '').replace(/^\[|\]$/g, '').toLowerCase();
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
  return `${scheme === 'http' && !loopback ? 'https' : scheme}://${authority}`;
}

/**
 * Prints the audit id a token (or capability URI) has in this store's audit
 * trail, so that an operator holding a capability can find its lines. The
 * token is read from standard input when given as `-`, to keep it out of
 * shell history.
 */
async function auditHash(args: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: { 'data-dir': { type: 'string' }, json: { type: 'boolean' } }, strict: true, allowPositionals: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (parsed.positionals.length !== 1) throw new UsageError('audit-hash takes one token or capability URI (or - to read it from standard input)');
  const given = parsed.positionals[0] === '-' ? readFileSync(0, 'utf8').trim() : parsed.positionals[0]!;
  const token = parseCapabilityUri(given)?.token ?? given;
  if (!isWellFormedToken(token)) throw new UsageError('that is neither a capability token (CPBLTY1-…) nor a capability URI');
  const dataDir = resolveOptions(['dataDir'], { 'data-dir': parsed.values['data-dir'] }, process.env).dataDir as string;
  const { store, key } = await openStore(dataDir, process.env.MEMBRANE_MASTER_KEY, { create: false });
  try {
    const id = auditId(await loadAuditKey(store, key), hashToken(token));
    process.stdout.write(parsed.values.json === true ? `${JSON.stringify({ capability: id })}\n` : `${id}\n`);
    return 0;
  } finally {
    await store.close();
  }
}

/** How long servers have to notice a changed key file before the old key is dropped from it. */
const KEY_FILE_GRACE_MS = 2_000;

/**
 * Rotates the master key while servers keep running. With the key file: a
 * new key is generated and written first in the file (old keys after it, so
 * servers, which follow the file, seal with the new key and still open
 * old values); every sealed value is re-sealed under the new key; after a
 * grace period and a last pass, the file keeps only the new key. With
 * MEMBRANE_MASTER_KEY: the new key must already be first in it
 * (NEW,OLD) and every value is re-sealed under it.
 *
 * The whole rotation holds the data directory's rotation lock, so a second
 * rotation fails at once instead of interleaving with this one. Before
 * every later write the key file is read again: if it is no longer what
 * this run wrote, the run stops and writes nothing more, so that no key is
 * dropped that this run did not retire.
 */
async function rotateKeys(args: readonly string[]): Promise<number> {
  const { values } = parse(args, { 'data-dir': { type: 'string' }, json: { type: 'boolean' } });
  const dataDir = resolveOptions(['dataDir'], { 'data-dir': values['data-dir'] }, process.env).dataDir as string;
  const fromEnvironment = process.env.MEMBRANE_MASTER_KEY !== undefined && process.env.MEMBRANE_MASTER_KEY !== '';
  requireStore(dataDir);
  const lock = RotationLock.acquire(dataDir, (message) => process.stderr.write(`membrane: warning: ${message}\n`));
  try {
    // Opened under the lock, so the keys read are the ones no other rotation is changing.
    const { store, key } = await openStore(dataDir, process.env.MEMBRANE_MASTER_KEY, { create: false });
    try {
      const { current, result } = fromEnvironment ? { current: key.current, result: await resealStore(store, key) } : await rotateKeyFile(dataDir, key, store, lock);
      const keyId = current.id.toString('hex');
      if (values.json === true) process.stdout.write(`${JSON.stringify({ keyId, ...result })}\n`);
      else process.stdout.write(`re-sealed ${result.resealed} values under master key ${keyId}\n`);
      if (result.unreadable > 0) {
        process.stderr.write(`membrane: ${result.unreadable} sealed values could not be opened with any key held; the old keys are kept\n`);
        return 1;
      }
      return 0;
    } finally {
      await store.close();
    }
  } finally {
    lock.release();
  }
}

async function rotateKeyFile(dataDir: string, old: KeyRing, store: Store, lock: RotationLock): Promise<{ current: MasterKey; result: ResealResult }> {
  const current = MasterKey.generate();
  const written = [current, ...old.keys];
  writeKeyFile(dataDir, written);
  const ring = loadMasterKey({ dataDir, create: false });
  /** Throws unless this run still holds the lock and the key file is still what this run wrote. */
  const checkUnchanged = (): void => {
    const path = keyFilePath(dataDir);
    if (!lock.isHeld()) throw new Error(`the key rotation lock ${lock.path} was removed or replaced while this rotation ran; it stops here and leaves ${path} as it is`);
    if (!sameKeys(loadMasterKey({ dataDir, create: false }).keys, written) || !ring.current.id.equals(current.id)) {
      throw new Error(`${path} was changed by someone else while this rotation ran; it stops here and leaves the file as it is (no key removed)`);
    }
  };
  let result = await resealStore(store, ring);
  checkUnchanged();
  await new Promise((resolve) => setTimeout(resolve, KEY_FILE_GRACE_MS));
  const last = await resealStore(store, ring);
  result = { resealed: result.resealed + last.resealed, unreadable: last.unreadable };
  checkUnchanged();
  if (result.unreadable === 0) writeKeyFile(dataDir, [current]);
  return { current, result };
}

/** The capi profile to save root capabilities in, if any. */
function profileName(values: { 'capi-profile'?: string; 'no-capi-profile'?: boolean }, byDefault: boolean): string | undefined {
  if (values['no-capi-profile'] === true) {
    if (values['capi-profile'] !== undefined) throw new UsageError('--capi-profile and --no-capi-profile exclude each other');
    return undefined;
  }
  if (values['capi-profile'] === '') throw new UsageError('--capi-profile needs a profile name');
  return values['capi-profile'] ?? (byDefault ? 'default' : undefined);
}

/**
 * Saves a new tenant's root capabilities and the service address as a capi
 * profile, so that capi works with no copy-paste. A profile that already
 * holds other capabilities is kept under a new name, never overwritten.
 * Failing to save is a warning: the capabilities were printed.
 */
async function saveProfile(roots: RootCapabilities, address: string, name: string): Promise<void> {
  const store = new ProfileStore();
  try {
    const existing = await store.credentials(name);
    if (Object.values(existing).some((value) => value !== undefined) && existing.create !== roots.create) {
      const taken = new Set(await store.profiles());
      const stamp = `${name}-${new Date().toISOString().replace(/[-:.]/g, '')}`;
      let kept = stamp;
      for (let n = 2; taken.has(kept); n++) kept = `${stamp}-${n}`;
      await store.renameProfile(name, kept);
      process.stderr.write(`membrane: the capi profile "${name}" held other capabilities; it is kept as "${kept}"\n`);
    }
    await store.setCredentials(name, roots);
    await store.setSettings(name, { address });
    process.stderr.write(`membrane: saved the root capabilities as capi profile "${name}" (${store.credentialsPath})\n`);
  } catch (error) {
    process.stderr.write(`membrane: warning: could not save the capi profile "${name}": ${(error as Error).message}\n`);
  }
}

function formatRoots(roots: RootCapabilities): string {
  return `create:     ${roots.create}\nquery:      ${roots.query}\ndeleteSelf: ${roots.deleteSelf}\n`;
}

/**
 * Failures to write that must not end a server: a closed stdout (its reader
 * went away: pino stops logging on EPIPE by itself, and the stdout audit
 * sink counts its lines as lost), and a file reaching the file size limit
 * (Node ignores SIGXFSZ, so such a write fails with EFBIG, which the audit
 * trail counts or refuses; signal-exit, loaded by proper-lockfile, would
 * re-raise the signal and kill the process unless another listener exists).
 */
function keepServingThroughOutputFailures(): void {
  process.stdout.on('error', () => undefined);
  process.on('SIGXFSZ', () => undefined);
}

async function serve(args: readonly string[]): Promise<number> {
  const flagOptions = {
    ...Object.fromEntries(Object.values(SERVE_OPTIONS).map((spec) => [spec.flag, { type: 'string' as const }])),
    ...PROFILE_FLAGS,
  };
  const { values } = parse(args, flagOptions);
  const profile = profileName(values as { 'capi-profile'?: string; 'no-capi-profile'?: boolean }, true);
  const config = resolveServeConfig(values as Record<string, string | undefined>, process.env);
  const logger = createLogger(config.logLevel);
  keepServingThroughOutputFailures();
  const running = await startMembrane(config, logger);
  if (running.bootstrap !== undefined) {
    process.stdout.write(
      `\nMembrane created a tenant on its new store. Its root capabilities are shown this once;\n` +
        `anyone holding them controls the tenant, so keep them secret:\n\n` +
        formatRoots(running.bootstrap).replace(/^(?=.)/gm, '  ') +
        '\n',
    );
    if (profile !== undefined) await saveProfile(running.bootstrap, serviceAddress(running.authority, running.url.startsWith('https:') ? 'https' : 'http'), profile);
  }
  logger.info({ url: running.url, authority: running.authority, dataDir: config.dataDir }, 'listening');
  if (running.adminUrl !== undefined) logger.info({ url: running.adminUrl }, 'admin listening (/metrics)');

  return new Promise<number>((resolve) => {
    onShutdownSignals({
      drain: (signal) => {
        logger.info({ signal }, 'draining');
        void running.close().then(
          () => {
            logger.info('stopped');
            logger.flush();
            resolve(0);
          },
          (error: unknown) => {
            logger.error({ err: error }, 'error while stopping');
            logger.flush();
            resolve(1);
          },
        );
      },
      repeated: (signal) => logger.info({ signal }, 'signal repeated within a second of the first: still draining'),
      force: (signal) => {
        logger.warn({ signal }, 'second signal: exiting without draining');
        logger.flush();
        process.exit(1);
      },
    });
  });
}
