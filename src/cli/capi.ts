/**
 * `capi`: the client CLI, with the original capability.io CLI's commands,
 * flags, conflicts and implications, over Membrane's SDK.
 *
 * Output is human-readable by default and JSON with `--json`. Exit codes:
 * 0 success, 1 failure (including an error answer), 2 usage error. Errors
 * are one line on stderr.
 */
import { once } from 'node:events';
import { createReadStream, readFileSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yargs, { type Argv } from 'yargs';
import { Membrane } from '../sdk/membrane.js';
import { request, type ClientOptions } from '../sdk/client.js';
import { InvalidCapabilityError, MembraneConnectionError, MembraneHttpError } from '../sdk/errors.js';
import { parseCapabilityUri, redactTokens } from '../token.js';
import type { HmacConfig, MembraneView, QueryResult, TlsConfig, UriExportConfig } from '../wire.js';
import { didYouMean } from './nearest.js';
import { ProfileStore, type MembraneCredentials, type SettingsChange } from './profile-store.js';

const VERSION = '0.1.0';

class UsageError extends Error {}
class CommandError extends Error {}

export interface Io {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const SECRET_HELP = `Secrets stay out of shell history: the value of a capability, key or
certificate flag may be @FILE (read from FILE) or @- (read from standard input),
for example --tls-key @client.key; --header @FILE and --header @- read header
lines, one "Name: value" per line. Standard input serves one flag per command.
These environment variables stand in for their flags when the flag is not given:
CAPI_CAPABILITY (--capability of the membrane commands), and for membrane export
CAPI_HEADERS (header lines in place of --header, with --uri),
CAPI_AWS4_HMAC_SHA256_SECRET_ACCESS_KEY and CAPI_AWS4_HMAC_SHA256_SESSION_TOKEN
(with --aws4-hmac-sha256-aws-access-key-id), CAPI_CAP1_HMAC_SHA512_KEY (with
--cap1-hmac-sha512-key-id) and CAPI_TLS_KEY (with --tls-cert).`;

/**
 * Secret flags an environment variable may stand in for, and the flag that
 * must be given for the variable to apply (so that a variable set for one
 * kind of export never turns another command into a conflict). `value`
 * turns the variable's text into what the flag's own coercion would give.
 */
const ENVIRONMENT_SECRETS: readonly { flag: string; variable: string; when: string; value?: (text: string) => unknown }[] = [
  { flag: 'header', variable: 'CAPI_HEADERS', when: 'uri', value: (text) => headerLines(text, 'CAPI_HEADERS') },
  { flag: 'aws4-hmac-sha256-secret-access-key', variable: 'CAPI_AWS4_HMAC_SHA256_SECRET_ACCESS_KEY', when: 'aws4-hmac-sha256-aws-access-key-id' },
  { flag: 'aws4-hmac-sha256-session-token', variable: 'CAPI_AWS4_HMAC_SHA256_SESSION_TOKEN', when: 'aws4-hmac-sha256-aws-access-key-id' },
  { flag: 'cap1-hmac-sha512-key', variable: 'CAPI_CAP1_HMAC_SHA512_KEY', when: 'cap1-hmac-sha512-key-id' },
  { flag: 'tls-key', variable: 'CAPI_TLS_KEY', when: 'tls-cert' },
];

/** Sets `flag` (both spellings yargs keeps) from a variable, unless given. */
function fromEnvironment(args: Record<string, unknown>, flag: string, variable: string, value: (text: string) => unknown = (text) => text): void {
  const text = process.env[variable];
  if (text === undefined || text === '' || args[flag] !== undefined) return;
  const given = value(text);
  args[flag] = given;
  args[flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())] = given;
}

const AWS_FLAGS = [
  'aws4-hmac-sha256-aws-access-key-id',
  'aws4-hmac-sha256-region',
  'aws4-hmac-sha256-service',
  'aws4-hmac-sha256-secret-access-key',
] as const;
const CAP1_FLAGS = ['cap1-hmac-sha512-key', 'cap1-hmac-sha512-key-id'] as const;
const URI_OPTION_FLAGS = ['allow-query', 'header', 'method', 'timeout-ms', 'tls-ca', 'tls-cert', 'tls-key', 'tls-reject-unauthorized'] as const;

type Args = Record<string, unknown> & { _: (string | number)[] };
type Selected = { command: string; args: Args };

const COMMANDS = ['config', 'profiles', 'membrane', 'invoke'] as const;
const MEMBRANE_COMMANDS = ['create', 'export', 'query', 'revoke', 'delete-self'] as const;

/** "a, b or c". */
function oneOf(words: readonly string[]): string {
  return words.length < 2 ? words.join('') : `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`;
}

/** A level of the command tree as yargs entered it: its command path, the commands under it and the options it knows. */
interface CommandLevel {
  path: string;
  commands: readonly string[];
  options: readonly string[];
}

export async function main(argv: readonly string[], io: Io = process): Promise<number> {
  const print = (text: string): void => void io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  const values = new FlagValues();
  try {
    const selected = await parse(argv, io, values);
    if (selected === undefined) return 0;
    return await run(selected, io, values, print);
  } catch (error) {
    io.stderr.write(`capi: ${redactTokens(describe(error))}\n`);
    return error instanceof UsageError || error instanceof InvalidCapabilityError ? 2 : 1;
  }
}

function describe(error: unknown): string {
  if (error instanceof MembraneHttpError) return `${error.status} ${error.error}: ${error.message}`;
  if (error instanceof MembraneConnectionError) return error.message;
  return ((error as Error).message ?? String(error)).replace(/\s*\n\s*/g, ' ');
}

/**
 * The values of one command's flags given as @FILE (the file's text) or @-
 * (standard input's). Standard input serves one flag at most: a second flag
 * asking for it is a usage error.
 */
class FlagValues {
  #standardInputTaken = false;

  /** Reserves standard input for `--flag`. */
  takeStandardInput(flag: string): void {
    if (this.#standardInputTaken) throw new UsageError(`--${flag}: only one value can be read from standard input`);
    this.#standardInputTaken = true;
  }

  /** The text of @FILE or @- without its final line end; any other value as given. */
  read(flag: string, value: string): string {
    if (!value.startsWith('@')) return value;
    const path = value.slice(1);
    if (path === '-') this.takeStandardInput(flag);
    try {
      return readFileSync(path === '-' ? 0 : path, 'utf8').replace(/\r?\n$/, '');
    } catch (error) {
      throw cannotRead(`--${flag}`, path === '-' ? 'standard input' : path, error);
    }
  }
}

function cannotRead(what: string, path: string, error: unknown): UsageError {
  return new UsageError(`${what}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
}

/**
 * `text` if it is a capability URI; otherwise a usage error saying what is
 * wrong with it (whitespace or quotes pasted around it, or not a capability
 * at all), never quoting it.
 */
function checkedCapability(text: string, source: string): string {
  if (parseCapabilityUri(text) !== undefined) return text;
  const trimmed = text.trim();
  const quoted = /^(["'])([\s\S]*)\1$/.exec(trimmed)?.[2];
  const inside = (quoted ?? trimmed).trim();
  if (parseCapabilityUri(inside) !== undefined) {
    const spaced = trimmed !== text || (quoted !== undefined && quoted !== inside);
    const problems = [...(quoted === undefined ? [] : ['is wrapped in quotes']), ...(spaced ? ['has whitespace around it'] : [])];
    throw new UsageError(`${source}: the capability ${problems.join(' and ')}; remove ${quoted === undefined ? 'it' : 'them'}`);
  }
  throw new UsageError(`${source} is not a capability URI (cpblty://AUTHORITY/#CPBLTY1-…)`);
}

/**
 * The message for a word that yargs does not know at `level`: a mistyped
 * option or command, named as typed, with the nearest valid one. A stray
 * word where no command is expected is not quoted: it may be a value that
 * lost its quotes (half of a header, a secret).
 */
function unknownWordMessage(word: string, argv: readonly string[], level: CommandLevel): string {
  const end = argv.indexOf('--');
  const tokens = end === -1 ? argv : argv.slice(0, end);
  const options = level.options.filter((option) => option.length > 1);
  for (const token of tokens) {
    if (!token.startsWith('-') || token === '-') continue;
    const dashes = token.startsWith('--') ? '--' : '-';
    const name = token.slice(dashes.length).split('=')[0]!;
    if (name === word || name === `no-${word}`) {
      const negation = name === word ? '' : 'no-';
      return `unknown option ${dashes}${name}${didYouMean(word, options, (option) => `--${negation}${option}`)}`;
    }
  }
  if (!tokens.includes(word)) return `unknown option ${word.length === 1 ? '-' : '--'}${word}${didYouMean(word, options, (option) => `--${option}`)}`;
  if (level.commands.length === 0) return `unexpected argument: ${level.path} takes no more arguments (quote a value that has spaces)`;
  return `unknown command "${word}"${didYouMean(word, level.commands) || `; expected ${oneOf(level.commands)}`}`;
}

/** The options yargs knows at a level (yargs 17 has `getOptions()`; its type declarations omit it). */
function optionsOf(y: Argv): { key: Record<string, unknown> } {
  return (y as unknown as { getOptions(): { key: Record<string, unknown> } }).getOptions();
}

async function parse(argv: readonly string[], io: Io, values: FlagValues): Promise<Selected | undefined> {
  let selected: Selected | undefined;
  const select = (command: string) => (args: unknown) => {
    selected = { command, args: args as Args };
  };
  /** The deepest level yargs has entered, for naming what is valid there when a word is not. */
  let level: CommandLevel | undefined;
  const enter =
    (path: string, commands: readonly string[] = []) =>
    (y: Argv): Argv => {
      level = { path, commands, options: Object.keys(optionsOf(y).key) };
      return y;
    };
  const readValue = (flag: string) => (value: unknown) => (typeof value === 'string' ? values.read(flag, value) : value);
  const capabilityValue = (flag: string) => (value: unknown) => (value === undefined ? undefined : checkedCapability(values.read(flag, String(value)), `--${flag}`));
  const headerValue = (value: unknown) => givenHeaders(value, values);
  const connection = (y: Argv): Argv =>
    y
      .option('address', { type: 'string', requiresArg: true, describe: 'Base URL of the Membrane service (default: the profile’s, else https://AUTHORITY)' })
      .option('ca', { type: 'string', requiresArg: true, describe: 'PEM file of certificate authorities to trust (default: the profile’s)' })
      .option('trustedCA-file-path', { type: 'string', requiresArg: true, describe: 'JSON file mapping authorities to PEM CAs (original CLI)' });

  const parser = yargs([...argv])
    .scriptName('capi')
    // yargs' messages in English whatever the locale (updateStrings turns detection off): the unknown-word
    // message below reads them, and the export checks write "Implications failed" themselves.
    .updateStrings({ 'Implications failed:': 'Implications failed:' })
    .usage('$0 <command> [options]\n\nClient of the Membrane capability service.')
    .option('profile', { type: 'string', default: 'default', requiresArg: true, describe: 'Capability profile to use' })
    .option('json', { type: 'boolean', default: false, describe: 'Print JSON for scripts' })
    .command(
      'config',
      'Set a profile’s capabilities and service address, or show the profile',
      (y) =>
        enter('config')(
          y
            .option('create', { type: 'string', requiresArg: true, coerce: capabilityValue('create'), describe: 'The tenant’s create capability' })
            .option('query', { type: 'string', requiresArg: true, coerce: capabilityValue('query'), describe: 'The tenant’s query capability' })
            .option('delete-self', { type: 'string', requiresArg: true, coerce: capabilityValue('delete-self'), describe: 'The tenant’s deleteSelf capability' })
            .option('address', { type: 'string', requiresArg: true, describe: 'Base URL of the Membrane service, e.g. http://localhost:8080 ("": clear it)' })
            .option('ca', { type: 'string', requiresArg: true, describe: 'PEM file of certificate authorities to trust, saved as an absolute path ("": clear it)' })
            .epilogue(SECRET_HELP),
        ),
      select('config'),
    )
    .command('profiles', 'List profiles', (y) => enter('profiles')(y), select('profiles'))
    .command(
      'membrane',
      'Membrane service operations',
      (y) =>
        enter('membrane', MEMBRANE_COMMANDS)(
          connection(y)
            .option('capability', { type: 'string', requiresArg: true, coerce: capabilityValue('capability'), describe: 'Capability to use (default: the profile’s)' })
            .middleware((args) => fromEnvironment(args, 'capability', 'CAPI_CAPABILITY', (text) => checkedCapability(text, 'CAPI_CAPABILITY')), true)
            .command('create', 'Create a membrane', (c) => enter('membrane create')(c.option('id', { type: 'string', demandOption: true, requiresArg: true, describe: 'Membrane id' })), select('membrane create'))
            .command('export', 'Export a capability through a membrane (--capability: its export capability)', exportOptions, select('membrane export'))
            .command(
              'query',
              'Query membranes',
              (c) =>
                enter('membrane query')(
                  c
                    .option('id', { type: 'string', requiresArg: true, describe: 'Membrane id to query for' })
                    .option('last-id', { type: 'string', requiresArg: true, describe: 'Id of the last membrane of the previous page' })
                    .option('limit', {
                      type: 'string',
                      requiresArg: true,
                      describe: 'Limit number of results (1 to 1000)',
                      coerce: (value: string) => {
                        if (!/^[0-9]+$/.test(value) || Number(value) <= 0) throw new UsageError('--limit must be a whole number greater than 0');
                        return Number(value);
                      },
                    })
                    .option('all', { type: 'boolean', default: undefined, describe: 'Every page, not just the first', conflicts: 'last-id' }),
                ),
              select('membrane query'),
            )
            .command('revoke', 'Revoke a membrane (--capability: its revoke capability)', (c) => enter('membrane revoke')(c), select('membrane revoke'))
            .command(
              'delete-self',
              'Revoke every membrane of the tenant, killing its root capabilities (asks first on a terminal)',
              (c) =>
                enter('membrane delete-self')(
                  c.option('yes', {
                    alias: 'y',
                    type: 'boolean',
                    default: undefined,
                    describe: 'Do not ask for confirmation (needed when standard input or standard error is not a terminal)',
                  }),
                ),
              select('membrane delete-self'),
            )
            .epilogue(SECRET_HELP),
        ),
      select('membrane'),
    )
    .command(
      'invoke <capability>',
      'Invoke a capability: the body goes to stdout, the status to stderr',
      (y) =>
        enter('invoke')(
          connection(y)
            .positional('capability', { type: 'string', coerce: capabilityValue('capability'), describe: 'The capability to invoke' })
            .option('method', { type: 'string', requiresArg: true, describe: 'HTTP method (default GET, or POST with --data)' })
            .option('header', { type: 'string', requiresArg: true, coerce: headerValue, describe: 'Header to send, "Name: value" (repeatable); @FILE / @-: header lines' })
            .option('data', { type: 'string', requiresArg: true, describe: 'Body: STRING, @FILE, or @- for standard input' })
            .option('query', { type: 'string', requiresArg: true, describe: 'Query string to send (used when the capability allows it)' })
            .epilogue(SECRET_HELP),
        ),
      select('invoke'),
    )
    .epilogue(SECRET_HELP)
    .strict()
    .help()
    .alias('help', 'h')
    .version(VERSION)
    .wrap(Math.min(100, (io.stdout as { columns?: number }).columns ?? 100))
    .exitProcess(false)
    .fail((message, error) => {
      if (error instanceof UsageError) throw error;
      const unknown = /^Unknown arguments?: (.+)$/.exec(message ?? '');
      if (unknown !== null && level !== undefined) throw new UsageError(unknownWordMessage(unknown[1]!.split(', ')[0]!, argv, level));
      // Keep yargs' lists of failures on one line, comma-separated ("a -> b, a -> c").
      const text = (message ?? error?.message ?? 'invalid arguments')
        .replace(/\s*\n\s*/g, ' ')
        .replace(/(\S) (?=[\w-]+ -> )/g, '$1, ')
        .replace(/:, /, ': ');
      throw new UsageError(text);
    });
  enter('', COMMANDS)(parser);

  function exportOptions(c: Argv): Argv {
    const others = (flags: readonly string[], self: string): string[] => flags.filter((flag) => flag !== self);
    let y = c
      .option('uri', { type: 'string', requiresArg: true, conflicts: 'capability-to-export', describe: 'Fully qualified URI of the target' })
      .option('capability-to-export', {
        type: 'string',
        requiresArg: true,
        coerce: capabilityValue('capability-to-export'),
        conflicts: ['uri', ...URI_OPTION_FLAGS, ...AWS_FLAGS, 'aws4-hmac-sha256-session-token', ...CAP1_FLAGS],
        describe: 'Existing capability to re-export through the membrane',
      })
      .option('allow-query', { type: 'boolean', default: undefined, describe: 'Append the requester’s query string' })
      .option('header', { type: 'string', requiresArg: true, implies: 'uri', coerce: headerValue, describe: 'Header to include, "Name: value" (repeatable); @FILE / @-: header lines' })
      .option('method', { type: 'string', requiresArg: true, implies: 'uri', describe: 'HTTP method to use' })
      .option('timeout-ms', { type: 'string', requiresArg: true, implies: 'uri', describe: 'Idle timeout toward the target, ms' })
      .option('tls-ca', { type: 'string', requiresArg: true, implies: 'uri', coerce: readValue('tls-ca'), describe: 'PEM CAs that replace the default trust store' })
      .option('tls-cert', { type: 'string', requiresArg: true, implies: 'uri', coerce: readValue('tls-cert'), describe: 'PEM client certificate' })
      .option('tls-key', { type: 'string', requiresArg: true, implies: 'uri', coerce: readValue('tls-key'), describe: 'PEM client private key' })
      .option('tls-reject-unauthorized', { type: 'boolean', default: undefined, describe: 'Verify the target’s certificate (--no-tls-reject-unauthorized: do not)' });
    for (const flag of AWS_FLAGS) {
      y = y.option(flag, {
        type: 'string',
        requiresArg: true,
        conflicts: [...CAP1_FLAGS],
        implies: others(AWS_FLAGS, flag),
        coerce: flag === 'aws4-hmac-sha256-secret-access-key' ? readValue(flag) : undefined,
        describe: `AWS4-HMAC-SHA256 ${flag.slice('aws4-hmac-sha256-'.length).replace(/-/g, ' ')}`,
      });
    }
    y = y.option('aws4-hmac-sha256-session-token', {
      type: 'string',
      requiresArg: true,
      conflicts: [...CAP1_FLAGS],
      implies: [...AWS_FLAGS],
      coerce: readValue('aws4-hmac-sha256-session-token'),
      describe: 'AWS4-HMAC-SHA256 session token (temporary credentials)',
    });
    for (const flag of CAP1_FLAGS) {
      y = y.option(flag, {
        type: 'string',
        requiresArg: true,
        conflicts: [...AWS_FLAGS, 'aws4-hmac-sha256-session-token'],
        implies: others(CAP1_FLAGS, flag),
        coerce: flag === 'cap1-hmac-sha512-key' ? readValue(flag) : undefined,
        describe: flag === 'cap1-hmac-sha512-key' ? 'CAP1-HMAC-SHA512 key (base64url)' : 'CAP1-HMAC-SHA512 key id',
      });
    }
    return enter('membrane export')(
      y
        .middleware((args) => {
          for (const { flag, variable, when, value } of ENVIRONMENT_SECRETS) if (args[when] !== undefined) fromEnvironment(args, flag, variable, value);
        }, true)
        .epilogue(SECRET_HELP)
        .check((args) => {
          // yargs counts an absent boolean as present for `implies`; these two are checked here.
          for (const flag of ['allow-query', 'tls-reject-unauthorized']) {
            if (args[flag] !== undefined && args.uri === undefined && args['capability-to-export'] === undefined) {
              throw new UsageError(`Implications failed: ${flag} -> uri`);
            }
          }
          if (args.uri === undefined && args['capability-to-export'] === undefined) {
            throw new UsageError('one of --uri or --capability-to-export is required');
          }
          return true;
        }),
    );
  }

  const parsed = await parser.parseAsync();
  if (selected === undefined && parsed.help !== true && parsed.version !== true) throw new UsageError(`a command is required: ${oneOf(COMMANDS)}`);
  return selected;
}

async function run({ command, args }: Selected, io: Io, values: FlagValues, print: (text: string) => void): Promise<number> {
  const store = new ProfileStore();
  const profile = String(args.profile);
  const json = args.json === true;
  switch (command) {
    case 'config':
      return config(store, profile, args, json, print);
    case 'profiles': {
      const names = await store.profiles();
      print(json ? JSON.stringify(names) : names.join('\n'));
      return 0;
    }
    case 'invoke':
      return invoke(args, await clientOptions(store, profile, args, String(args.capability)), io, values);
    case 'membrane':
      throw new UsageError(`a membrane command is required: ${oneOf(MEMBRANE_COMMANDS)}`);
    case 'membrane delete-self':
      if (args.yes !== true && !isTerminal(io)) {
        throw new UsageError('membrane delete-self asks for confirmation, and there is no terminal to ask on: pass --yes to delete the tenant without asking');
      }
      break;
  }
  const capability = await capabilityFor(store, profile, command, args);
  const client = new Membrane(await clientOptions(store, profile, args, capability));
  switch (command) {
    case 'membrane create': {
      const view = await client.create(capability, { id: String(args.id) });
      print(json ? JSON.stringify(view) : formatMembranes([view]));
      return 0;
    }
    case 'membrane export': {
      const result = await client.export(capability, exportConfig(args));
      print(json ? JSON.stringify(result) : result.capability);
      return 0;
    }
    case 'membrane query': {
      const query = { id: optional(args.id), lastId: optional(args['last-id']), limit: args.limit as number | undefined };
      if (args.all === true) {
        const membranes: MembraneView[] = [];
        for await (const view of client.queryAll(capability, query)) membranes.push(view);
        print(json ? JSON.stringify({ membranes, completed: true }) : formatMembranes(membranes));
        return 0;
      }
      const result: QueryResult = await client.query(capability, query);
      if (json) print(JSON.stringify(result));
      else {
        const more = result.completed ? '' : `\n(more: capi membrane query --last-id ${shellQuote(result.membranes.at(-1)?.id ?? '')})`;
        print((formatMembranes(result.membranes) || '(no membranes)') + more);
      }
      return 0;
    }
    case 'membrane revoke':
      await client.revoke(capability);
      print(json ? JSON.stringify({ statusCode: 202, message: 'Accepted' }) : 'revoked: the membrane and everything exported through it');
      return 0;
    case 'membrane delete-self':
      if (args.yes !== true && !(await confirmedOnTerminal(io, deleteSelfQuestion(profile, capability, typeof args.capability !== 'string')))) {
        throw new CommandError('not confirmed; nothing was deleted');
      }
      await client.deleteSelf(capability);
      print(json ? JSON.stringify({ statusCode: 202, message: 'Accepted' }) : 'deleted: every membrane of the tenant is revoked, and its root capabilities are dead');
      return 0;
  }
  throw new UsageError(`unknown command ${command}`);
}

/** Whether a question can be asked: standard input and standard error are both terminals. */
function isTerminal(io: Io): boolean {
  return (io.stdin as { isTTY?: boolean }).isTTY === true && (io.stderr as { isTTY?: boolean }).isTTY === true;
}

/** What delete-self is about to do, as a question that names the tenant (never a token). */
function deleteSelfQuestion(profile: string, capability: string, fromProfile: boolean): string {
  const tenant = fromProfile ? `the tenant of profile "${profile}"` : 'the tenant of the given deleteSelf capability';
  const service = parseCapabilityUri(capability)?.authority ?? '';
  return (
    `membrane delete-self revokes every membrane of ${tenant} at ${service}: every capability exported through them stops working, ` +
    `and the tenant's root capabilities (create, query, deleteSelf) die with it. It cannot be undone.\n` +
    'Delete the tenant? [y/N] '
  );
}

/** Asks `question` on standard error; true only if the answer line is y or yes (any case). */
async function confirmedOnTerminal(io: Io, question: string): Promise<boolean> {
  io.stderr.write(question);
  const lines = createInterface({ input: io.stdin, terminal: false });
  try {
    const [answer] = (await Promise.race([once(lines, 'line'), once(lines, 'close')])) as [string | undefined];
    if (answer === undefined) io.stderr.write('\n');
    return /^(y|yes)$/i.test((answer ?? '').trim());
  } finally {
    lines.close();
  }
}

const optional = (value: unknown): string | undefined => (value === undefined ? undefined : String(value));

function shellQuote(text: string): string {
  return /^[\w./:-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

function formatMembranes(views: readonly MembraneView[]): string {
  return views.map((view) => `${view.id}\n  export: ${view.capabilities.export}\n  revoke: ${view.capabilities.revoke}`).join('\n');
}

/** Which of a profile's capabilities each command uses when --capability is not given. */
const PROFILE_CAPABILITY: Record<string, keyof MembraneCredentials | undefined> = {
  'membrane create': 'create',
  'membrane query': 'query',
  'membrane delete-self': 'deleteSelf',
  'membrane export': undefined,
  'membrane revoke': undefined,
};

async function capabilityFor(store: ProfileStore, profile: string, command: string, args: Args): Promise<string> {
  if (typeof args.capability === 'string') return args.capability;
  const name = PROFILE_CAPABILITY[command];
  if (name === undefined) {
    const which = command === 'membrane export' ? 'export' : 'revoke';
    throw new UsageError(`--capability is required: the membrane's ${which} capability (capi membrane create prints it)`);
  }
  const capability = (await store.credentials(profile))[name];
  if (capability === undefined) {
    throw new CommandError(`no membrane "${name}" capability in profile "${profile}"; set one with capi config --profile ${profile} --${name === 'deleteSelf' ? 'delete-self' : name} CAPABILITY`);
  }
  return capability;
}

/**
 * How to reach the service for `capability`: `--address`, else the
 * profile's address when the capability belongs to the profile's service
 * (same authority as the profile's capabilities), else https://AUTHORITY.
 * A profile's address is never used for another service's capability.
 */
async function clientOptions(store: ProfileStore, profile: string, args: Args, capability: string): Promise<ClientOptions> {
  const settings = await store.settings(profile);
  const authority = parseCapabilityUri(capability)?.authority ?? '';
  let address = optional(args.address);
  if (address !== undefined) checkAddress(address, '--address');
  else if (settings.address !== undefined) {
    const own = Object.values(await store.credentials(profile)).map((uri) => (uri === undefined ? undefined : parseCapabilityUri(uri)?.authority));
    if (own.some((value) => value !== undefined && value.toLowerCase() === authority.toLowerCase())) {
      checkAddress(settings.address, `the address of profile "${profile}"`);
      address = settings.address;
    }
  }
  let ca: string | undefined;
  if (args.ca !== undefined) ca = readPem(String(args.ca), '--ca');
  else if (args['trustedCA-file-path'] !== undefined) {
    const path = String(args['trustedCA-file-path']);
    let trusted: unknown;
    try {
      trusted = JSON.parse(readFileSync(path, 'utf8'));
    } catch {
      throw new UsageError(`--trustedCA-file-path: ${path} is not a readable JSON file`);
    }
    const entry = (trusted as Record<string, unknown>)[authority];
    if (typeof entry === 'string') ca = entry;
  } else if (settings.ca !== undefined) ca = readPem(settings.ca, `the CA file of profile "${profile}"`);
  return { ...(address === undefined ? {} : { address }), ...(ca === undefined ? {} : { ca }) };
}

function checkAddress(address: string, what: string): void {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new UsageError(`${what} is not a URL (e.g. http://localhost:8080)`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '') {
    throw new UsageError(`${what} must be an http or https base URL, such as https://membrane.example.com`);
  }
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw cannotRead(what, path, error);
  }
}

/** A header to send: its name and its value. */
type Header = readonly [name: string, value: string];

/** RFC 9110 section 5.6.2: a field name is a token. */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** "Name: value", split at the first colon, both sides trimmed; undefined for anything else. */
function headerFrom(text: string): Header | undefined {
  const colon = text.indexOf(':');
  const name = colon === -1 ? '' : text.slice(0, colon).trim();
  return FIELD_NAME.test(name) ? [name, text.slice(colon + 1).trim()] : undefined;
}

/**
 * Header lines (LF or CRLF), one "Name: value" per non-blank line, read
 * from `source` (a file, standard input, a variable): a line that is not
 * one is named by its number, never quoted, as its value may be a secret.
 */
function headerLines(text: string, source: string): Header[] {
  return text.split(/\r?\n/).flatMap((line, index) => {
    if (line.trim() === '') return [];
    const header = headerFrom(line);
    if (header === undefined) throw new UsageError(`${source}: line ${index + 1} is not "Name: value"`);
    return [header];
  });
}

/** The headers of the --header flags: each "Name: value", or @FILE / @- holding header lines. */
function givenHeaders(value: unknown, values: FlagValues): Header[] {
  return ([] as unknown[]).concat(value).flatMap((given, index) => {
    const text = String(given);
    if (text.startsWith('@')) return headerLines(values.read('header', text), `--header ${text}`);
    const header = headerFrom(text);
    // Named by its place, not its text: a header typed without its colon may be a secret.
    if (header === undefined) throw new UsageError(`--header number ${index + 1} is not "Name: value"`);
    return [header];
  });
}

/** The headers as a record; a name given twice (in any case, from any source) is refused. */
function headerRecord(headers: unknown): Record<string, string> | undefined {
  if (headers === undefined) return undefined;
  const record: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, value] of headers as Header[]) {
    if (Object.keys(record).some((existing) => existing.toLowerCase() === name.toLowerCase())) {
      throw new UsageError(`--header ${name} is given twice`);
    }
    record[name] = value;
  }
  return { ...record };
}

function exportConfig(args: Args): UriExportConfig | { capability: string } {
  if (typeof args['capability-to-export'] === 'string') return { capability: args['capability-to-export'] };
  const config: UriExportConfig = { uri: String(args.uri) };
  if (args.method !== undefined) config.method = String(args.method).toUpperCase();
  const headers = headerRecord(args.header);
  if (headers !== undefined) config.headers = headers;
  if (args['allow-query'] !== undefined) config.allowQuery = args['allow-query'] === true;
  if (args['timeout-ms'] !== undefined) {
    const text = String(args['timeout-ms']);
    if (!/^-?[0-9]+$/.test(text)) throw new UsageError('--timeout-ms must be a whole number of milliseconds');
    config.timeoutMs = Number(text);
  }
  const tls: TlsConfig = {};
  if (args['tls-ca'] !== undefined) tls.ca = String(args['tls-ca']);
  if (args['tls-cert'] !== undefined) tls.cert = String(args['tls-cert']);
  if (args['tls-key'] !== undefined) tls.key = String(args['tls-key']);
  if (args['tls-reject-unauthorized'] !== undefined) tls.rejectUnauthorized = args['tls-reject-unauthorized'] === true;
  if (Object.keys(tls).length > 0) config.tls = tls;
  let hmac: HmacConfig | undefined;
  if (args['aws4-hmac-sha256-aws-access-key-id'] !== undefined) {
    hmac = {
      'aws4-hmac-sha256': {
        awsAccessKeyId: String(args['aws4-hmac-sha256-aws-access-key-id']),
        secretAccessKey: String(args['aws4-hmac-sha256-secret-access-key']),
        region: String(args['aws4-hmac-sha256-region']),
        service: String(args['aws4-hmac-sha256-service']),
        ...(args['aws4-hmac-sha256-session-token'] === undefined ? {} : { sessionToken: String(args['aws4-hmac-sha256-session-token']) }),
      },
    };
  } else if (args['cap1-hmac-sha512-key'] !== undefined) {
    hmac = { 'cap1-hmac-sha512': { key: String(args['cap1-hmac-sha512-key']), keyId: String(args['cap1-hmac-sha512-key-id']) } };
  }
  if (hmac !== undefined) config.hmac = hmac;
  return config;
}

async function config(store: ProfileStore, profile: string, args: Args, json: boolean, print: (text: string) => void): Promise<number> {
  const capabilities: MembraneCredentials = {
    create: optional(args.create),
    query: optional(args.query),
    deleteSelf: optional(args['delete-self']),
  };
  // An empty value clears the setting; a CA file is saved as an absolute path, so that it is found from any directory.
  const address = optional(args.address);
  const ca = optional(args.ca);
  const settings: SettingsChange = {
    address: address === '' ? null : address,
    ca: ca === '' ? null : ca === undefined ? undefined : resolve(ca),
  };
  if (typeof settings.address === 'string') checkAddress(settings.address, '--address');
  if (typeof settings.ca === 'string') readPem(settings.ca, '--ca');
  const changing = Object.values(capabilities).some((value) => value !== undefined);
  if (changing) await store.setCredentials(profile, capabilities);
  if (settings.address !== undefined || settings.ca !== undefined) await store.setSettings(profile, settings);

  const saved = await store.credentials(profile);
  const current = await store.settings(profile);
  const preview = (capability: string | undefined): string => (capability === undefined ? '(none)' : `(...${capability.slice(-5)})`);
  const view = {
    profile,
    membrane: {
      ...(current.address === undefined ? {} : { address: current.address }),
      ...(current.ca === undefined ? {} : { ca: current.ca }),
      capabilities: { create: preview(saved.create), query: preview(saved.query), deleteSelf: preview(saved.deleteSelf) },
    },
  };
  if (json) print(JSON.stringify(view));
  else {
    print(
      [
        `profile: ${profile}`,
        `address: ${current.address ?? '(https://AUTHORITY of each capability)'}`,
        `ca: ${current.ca ?? '(system trust store)'}`,
        `create: ${view.membrane.capabilities.create}`,
        `query: ${view.membrane.capabilities.query}`,
        `deleteSelf: ${view.membrane.capabilities.deleteSelf}`,
      ].join('\n'),
    );
  }
  return 0;
}

async function invoke(args: Args, options: ClientOptions, io: Io, values: FlagValues): Promise<number> {
  const data = args.data === undefined ? undefined : String(args.data);
  let body: string | Readable | undefined;
  if (data !== undefined) {
    if (data === '@-') {
      values.takeStandardInput('data');
      body = io.stdin as Readable;
    } else if (data.startsWith('@')) {
      const path = data.slice(1);
      const stream = createReadStream(path);
      await new Promise<void>((resolve, reject) => {
        stream.once('open', () => resolve());
        stream.once('error', (error) => reject(cannotRead('--data', path, error)));
      });
      body = stream;
    } else body = data;
  }
  const response = await request(String(args.capability), {
    ...options,
    method: optional(args.method)?.toUpperCase() ?? (body === undefined ? 'GET' : 'POST'),
    headers: headerRecord(args.header),
    body: body ?? null,
    ...(args.query === undefined ? {} : { query: String(args.query).replace(/^\?/, '') }),
  });
  const status = response.status;
  const succeeded = status >= 200 && status < 300;
  io.stderr.write(
    args.json === true
      ? `${JSON.stringify({ status, headers: response.headers })}\n`
      : `${status} ${STATUS_CODES[status] ?? ''}`.trimEnd() + '\n',
  );
  let lastByte: number | undefined;
  const noteLastByte = async function* (chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of chunks) {
      if (chunk.length > 0) lastByte = chunk[chunk.length - 1];
      yield chunk;
    }
  };
  try {
    await pipeline(response.body, noteLastByte, io.stdout, { end: false });
  } catch (error) {
    throw new CommandError(`the answer broke off: ${(error as Error).message}`);
  }
  // A 2xx body is written exactly as received; an error body ends its line, so that a script's next output starts on a line of its own.
  if (!succeeded && lastByte !== undefined && lastByte !== 0x0a) io.stdout.write('\n');
  return succeeded ? 0 : 1;
}
