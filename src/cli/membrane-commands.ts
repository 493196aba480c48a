/**
 * What each command of `membrane` takes and does, as its help shows it.
 * The options of `serve` come from the service's settings (config.ts), so
 * every setting is a flag with its environment variable and default.
 */
import { SERVE_OPTIONS, type OptionName } from '../config.js';
import type { CommandSpec, GroupSpec, OptionSpec } from './command-line.js';

type TextOption = OptionSpec & { type: 'string' };
type SwitchOption = OptionSpec & { type: 'boolean' };

/** How help shows a setting's value, where its kind alone would say too little. */
const SETTING_VALUES: Partial<Record<OptionName, string>> = {
  dataDir: 'DIR',
  host: 'HOST',
  authority: 'HOST[:PORT]',
  tlsCert: 'FILE',
  tlsKey: 'FILE',
  audit: 'SPEC',
  adminHost: 'HOST',
  logLevel: 'LEVEL',
};

/** The flag of one of the service's settings, with its variable and default. */
function setting(name: OptionName): TextOption {
  const spec = SERVE_OPTIONS[name];
  const value = SETTING_VALUES[name] ?? (spec.kind === 'integer' ? 'N' : spec.kind === 'list' ? 'LIST' : 'VALUE');
  return { type: 'string', value, env: spec.env, default: 'default' in spec ? spec.default : undefined, help: spec.help };
}

const JSON_OPTION: SwitchOption = { type: 'boolean', help: 'print the result as one JSON object' };

const CAPI_PROFILE: TextOption = { type: 'string', value: 'NAME', help: 'save the new tenant’s root capabilities as this capi profile' };
const NO_CAPI_PROFILE: SwitchOption = { type: 'boolean', help: 'save no capi profile' };

const MASTER_KEY_NOTE = `The master key comes from MEMBRANE_MASTER_KEY (base64 of 32 bytes; several, comma-separated:
the first seals) or, if that is unset, from DATA_DIR/master.key (created with mode 0600 by init
or the first serve).
`;

export const SERVE_COMMAND = {
  name: 'membrane serve',
  usage: '[options]',
  brief: 'run the service',
  summary: `Runs the Membrane service. On its first start with an empty store it creates a tenant, prints
that tenant's root capabilities (create, query, deleteSelf) once and saves them as a capi
profile ("default" unless --capi-profile names another). GET /healthz without an Authorization
header answers 200 once it is ready.`,
  options: {
    ...Object.fromEntries((Object.keys(SERVE_OPTIONS) as OptionName[]).map((name) => [SERVE_OPTIONS[name].flag, setting(name)])),
    'capi-profile': CAPI_PROFILE,
    'no-capi-profile': NO_CAPI_PROFILE,
  } as Record<string, OptionSpec>,
  notes: `${MASTER_KEY_NOTE}
Signals: SIGINT (Ctrl-C) or SIGTERM makes serve drain: it stops accepting, lets requests in
flight finish (at most --drain-timeout-ms), then exits 0. Signals less than a second after the
first are the same request (Ctrl-C under npm start reaches the server twice: from the terminal
and from npm); a signal a second or more after the first exits at once with 1, cutting what is
still in flight.
`,
} satisfies CommandSpec;

const TENANT_OPTIONS = {
  'data-dir': setting('dataDir'),
  authority: setting('authority'),
  audit: setting('audit'),
  json: JSON_OPTION,
  'capi-profile': CAPI_PROFILE,
  'no-capi-profile': NO_CAPI_PROFILE,
};

export const INIT_COMMAND = {
  name: 'membrane init',
  usage: '[--data-dir DIR] [--authority HOST[:PORT]] [--audit SPEC] [--json] [--capi-profile NAME | --no-capi-profile]',
  brief: 'create a store and its first tenant; print its root capabilities',
  summary: `Creates a store and its first tenant, prints the tenant's root capabilities (create, query,
deleteSelf) and saves them, with the service's address, as a capi profile ("default" unless
--capi-profile names another). Refuses a store that already holds a tenant. Capability URIs
name --authority, by default localhost:PORT with PORT from MEMBRANE_PORT (8080).`,
  options: TENANT_OPTIONS,
  notes: MASTER_KEY_NOTE,
} satisfies CommandSpec;

export const TENANT_CREATE_COMMAND = {
  name: 'membrane tenant create',
  usage: '[--data-dir DIR] [--authority HOST[:PORT]] [--audit SPEC] [--json] [--capi-profile NAME]',
  brief: 'add a tenant to an existing store; print its root capabilities',
  summary: `Adds a tenant to an existing store and prints its root capabilities (create, query,
deleteSelf); saves them as a capi profile only when --capi-profile is given. Works while a
server runs on the same store.`,
  options: TENANT_OPTIONS,
  notes: MASTER_KEY_NOTE,
} satisfies CommandSpec;

export const AUDIT_HASH_COMMAND = {
  name: 'membrane audit-hash',
  usage: '[--data-dir DIR] [--json] TOKEN|CAPABILITY|-',
  brief: 'print the id a token has in the audit trail',
  summary: `Prints the id a capability token (or capability URI) has in the store's audit trail, so that
its lines can be found. With - it reads the token from standard input, keeping it out of shell
history.`,
  options: { 'data-dir': setting('dataDir'), json: JSON_OPTION },
  operands: { min: 1, max: 1, describe: 'one token or capability URI (or - to read it from standard input)' },
  notes: MASTER_KEY_NOTE,
} satisfies CommandSpec;

export const KEYS_ROTATE_COMMAND = {
  name: 'membrane keys rotate',
  usage: '[--data-dir DIR] [--json]',
  brief: 're-seal every secret under a new master key, online',
  summary: `Re-seals every secret of the store under a new master key while servers keep running. With
the key file, a new key is written first in DATA_DIR/master.key, every value is re-sealed, and
after a grace period the file keeps only the new key. With MEMBRANE_MASTER_KEY, the new key
must already be first in it (NEW,OLD). One rotation at a time (lock: DATA_DIR/keys-rotate.lock).`,
  options: { 'data-dir': setting('dataDir'), json: JSON_OPTION },
  notes: MASTER_KEY_NOTE,
} satisfies CommandSpec;

export const TENANT_GROUP = {
  name: 'membrane tenant',
  summary: 'Tenants of a store.',
  commands: { create: { spec: TENANT_CREATE_COMMAND } },
} satisfies GroupSpec;

export const KEYS_GROUP = {
  name: 'membrane keys',
  summary: 'The master key that seals every secret of a store.',
  commands: { rotate: { spec: KEYS_ROTATE_COMMAND } },
} satisfies GroupSpec;

/** `membrane --help`: the commands, how to get each one's help, exit codes. */
export function programHelp(version: string): string {
  const commands = [SERVE_COMMAND, INIT_COMMAND, TENANT_CREATE_COMMAND, AUDIT_HASH_COMMAND, KEYS_ROTATE_COMMAND];
  const rows = [
    ...commands.map((command) => [command.name.replace(/^membrane /, ''), command.brief]),
    ['help [COMMAND]', 'print the help of membrane or of a command'],
    ['--version', `print the version (${version})`],
  ];
  const width = Math.max(...rows.map(([name]) => name!.length)) + 2;
  return `membrane: operator commands for the Membrane capability service

Usage: membrane COMMAND [options]

Commands:
${rows.map(([name, brief]) => `  ${name!.padEnd(width)}${brief}`).join('\n')}

membrane COMMAND --help (or -h, anywhere among its arguments) prints a command's own help: its
usage, its options and what it does.

Exit status: 0 success; 1 failure; 2 usage error (an unknown command or option, a missing or
invalid value of a flag or of an environment variable).

${MASTER_KEY_NOTE}`;
}
