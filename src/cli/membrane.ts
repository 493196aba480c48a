/**
 * `membrane`: the operator's command. It opens the store directly (it does
 * not talk to a running server), so `init` and `tenant create` work whether
 * or not a server is running on the same data directory.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error (an unknown command or
 * option, a missing value, an invalid value of a flag or of a setting's
 * environment variable). Errors are one line on stderr. Every command and
 * subcommand prints its own help when `--help` or `-h` stands anywhere
 * among its arguments.
 */
import { readFileSync } from 'node:fs';
import { createTenant, openStore, requireStore, startMembrane } from '../app.js';
import { auditId, loadAuditKey, openAuditTrail } from '../audit/audit-trail.js';
import { defaultAuthority, resolveOptions, resolveServeConfig } from '../config.js';
import { ConfigurationError, InvalidSettingError } from '../errors.js';
import { createLogger } from '../log.js';
import { keyFilePath, type KeyRing, loadMasterKey, MasterKey, sameKeys, writeKeyFile } from '../secrets.js';
import { MembraneService, resealStore, type ResealResult, type RootCapabilities } from '../service/membrane-service.js';
import type { Store } from '../store/store.js';
import { hashToken, isWellFormedToken, parseCapabilityUri, redactTokens } from '../token.js';
import { asksForHelp, commandHelp, groupHelp, parseCommandLine, UsageError, type CommandSpec, type GroupSpec } from './command-line.js';
import {
  AUDIT_HASH_COMMAND,
  INIT_COMMAND,
  KEYS_GROUP,
  KEYS_ROTATE_COMMAND,
  programHelp,
  SERVE_COMMAND,
  TENANT_CREATE_COMMAND,
  TENANT_GROUP,
} from './membrane-commands.js';
import { didYouMean } from './nearest.js';
import { ProfileStore } from './profile-store.js';
import { RotationLock } from './rotation-lock.js';
import { onShutdownSignals } from './shutdown-signals.js';

const VERSION = '0.1.0';

type Run = (args: readonly string[]) => Promise<number>;
type Command = { spec: CommandSpec; run: Run };
type Group = GroupSpec & { commands: Readonly<Record<string, Command>> };

const COMMANDS: Readonly<Record<string, Command | Group>> = {
  serve: { spec: SERVE_COMMAND, run: (args) => serve(args) },
  init: { spec: INIT_COMMAND, run: (args) => tenantCommand(INIT_COMMAND, args) },
  tenant: { ...TENANT_GROUP, commands: { create: { spec: TENANT_CREATE_COMMAND, run: (args) => tenantCommand(TENANT_CREATE_COMMAND, args) } } },
  'audit-hash': { spec: AUDIT_HASH_COMMAND, run: (args) => auditHash(args) },
  keys: { ...KEYS_GROUP, commands: { rotate: { spec: KEYS_ROTATE_COMMAND, run: (args) => rotateKeys(args) } } },
};

/** What a command line asks for: a text to print (help, version), or a command to run. */
type Request = { print: string } | { command: Command; args: readonly string[] };

export async function main(argv: readonly string[]): Promise<number> {
  let running: Command | undefined;
  try {
    const request = resolve(argv);
    if ('print' in request) {
      process.stdout.write(request.print);
      return 0;
    }
    running = request.command;
    return await request.command.run(request.args);
  } catch (error) {
    if (error instanceof UsageError || error instanceof InvalidSettingError) {
      const helpOf = (error instanceof UsageError ? error.helpOf : undefined) ?? running?.spec.name ?? 'membrane';
      process.stderr.write(`membrane: ${redactTokens(error.message)} (see ${helpOf} --help)\n`);
      return 2;
    }
    process.stderr.write(`membrane: ${(error as Error).message ?? String(error)}\n`);
    return 1;
  }
}

/**
 * Finds what a command line asks for. `--help` or `-h` anywhere among a
 * command's arguments asks for its help, as does `membrane help COMMAND`;
 * a mistyped command is a UsageError naming the nearest one.
 */
function resolve(argv: readonly string[]): Request {
  const [word, ...rest] = argv;
  if (word === undefined) throw new UsageError(`a command is needed: ${Object.keys(COMMANDS).join(', ')}`);
  if (word === 'help') return rest.length === 0 ? { print: programHelp(VERSION) } : resolve([...rest, '--help']);
  if (word === '--version') return { print: `${VERSION}\n` };
  if (word.startsWith('-') && asksForHelp(argv)) return { print: programHelp(VERSION) };
  const entry = COMMANDS[word];
  if (entry === undefined) throw new UsageError(`unknown command "${word}"${didYouMean(word, Object.keys(COMMANDS))}`, 'membrane');
  if ('spec' in entry) return asksForHelp(rest) ? { print: commandHelp(entry.spec) } : { command: entry, args: rest };
  const [sub, ...subRest] = rest;
  const names = Object.keys(entry.commands);
  if (sub === undefined || sub.startsWith('-')) {
    if (asksForHelp(rest)) return { print: groupHelp(entry) };
    throw new UsageError(`${word} needs a command: ${names.map((name) => `${word} ${name}`).join(', ')}`, entry.name);
  }
  const command = entry.commands[sub];
  if (command === undefined) throw new UsageError(`unknown command "${word} ${sub}"${didYouMean(sub, names, (name) => `"${word} ${name}"`)}`, entry.name);
  return asksForHelp(subRest) ? { print: commandHelp(command.spec) } : { command, args: subRest };
}

/** `init` (the store's first tenant) and `tenant create` (another tenant). */
async function tenantCommand(command: typeof INIT_COMMAND | typeof TENANT_CREATE_COMMAND, args: readonly string[]): Promise<number> {
  const init = command === INIT_COMMAND;
  const { values } = parseCommandLine(command, args);
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
  const parsed = parseCommandLine(AUDIT_HASH_COMMAND, args);
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
  const { values } = parseCommandLine(KEYS_ROTATE_COMMAND, args);
  const dataDir = resolveOptions(['dataDir'], { 'data-dir': values['data-dir'] }, process.env).dataDir as string;
  const fromEnvironment = process.env.MEMBRANE_MASTER_KEY !== undefined && process.env.MEMBRANE_MASTER_KEY !== '';
  requireStore(dataDir);
  const lock = RotationLock.acquire(dataDir, (message) => process.stderr.write(`membrane: warning: ${message}\n`));
  try {
    // Opened under the lock, so the keys read are the ones no other rotation is changing.
    const { store, key } = await openStore(dataDir, process.env.MEMBRANE_MASTER_KEY, { create: false });
    try {
      const { current, result } = fromEnvironment ? { current: key.current, result: await resealStore(store, key) } : await rotateKeyFile(dataDir, key, store, lock);
      // Nothing the retired keys open may stay behind in the store's files (old row versions, the write-ahead log).
      if (result.unreadable === 0) await store.eraseReplaced();
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
  const { values } = parseCommandLine(SERVE_COMMAND, args);
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
