/**
 * Command lines of the operator's command. Each command declares its
 * usage, what it does and its options with their help; its `--help` and
 * its parsing both come from that one declaration. A mistyped option is a
 * UsageError that names the nearest valid one.
 */
import { parseArgs } from 'node:util';
import { didYouMean } from './nearest.js';

/** A mistake in how a command was called: reported in one line with exit status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'MEMBRANE_USAGE';
  /** The command whose help explains the mistake (`membrane tenant`), when it is not the one that was running. */
  readonly helpOf: string | undefined;
  constructor(message: string, helpOf?: string) {
    super(message);
    this.helpOf = helpOf;
  }
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** How help shows the value of a string option: `DIR`, `NAME`… */
  value?: string;
  /** The environment variable that stands in for the flag, if any. */
  env?: string;
  /** Shown in help when the option has one. */
  default?: unknown;
  help: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

export interface CommandSpec<O extends OptionSpecs = OptionSpecs> {
  /** The words that call it: `membrane tenant create`. */
  name: string;
  /** What the usage line shows after the name. */
  usage: string;
  /** What it does in a few words, for lists of commands. */
  brief: string;
  /** What it does, shown under the usage line. */
  summary: string;
  options: O;
  /** Paragraphs shown after the options. */
  notes?: string;
  /** Positional arguments it takes (`TOKEN`); none when unset. */
  operands?: { min: number; max: number; describe: string };
}

/** A word that gathers commands (`membrane tenant`): its help lists them. */
export interface GroupSpec {
  name: string;
  summary: string;
  commands: Readonly<Record<string, { spec: CommandSpec }>>;
}

const HELP_OPTION: OptionSpec = { type: 'boolean', help: 'print this help and exit' };

/** Whether `--help` or `-h` stands anywhere among the arguments. */
export function asksForHelp(args: readonly string[]): boolean {
  return args.includes('--help') || args.includes('-h');
}

export type OptionValues<O extends OptionSpecs> = { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string };

/**
 * Parses a command's arguments against its declared options. Throws
 * UsageError for an unknown option (naming the nearest declared one), a
 * missing or superfluous value, and positionals it does not take.
 */
export function parseCommandLine<O extends OptionSpecs>(command: CommandSpec<O>, args: readonly string[]): { values: OptionValues<O>; positionals: string[] } {
  const options = Object.fromEntries(Object.entries(command.options).map(([flag, spec]) => [flag, { type: spec.type }]));
  const { tokens } = parseArgs({ args: [...args], options, strict: false, allowPositionals: true, tokens: true });
  for (const token of tokens) {
    if (token.kind === 'option' && !Object.hasOwn(command.options, token.name)) {
      const flags = Object.keys(command.options).map((flag) => `--${flag}`);
      throw new UsageError(`unknown option "${token.rawName}"${didYouMean(token.rawName, flags)}`);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options, strict: true, allowPositionals: command.operands !== undefined });
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/\n/g, ' '));
  }
  const operands = command.operands;
  if (operands !== undefined && (parsed.positionals.length < operands.min || parsed.positionals.length > operands.max)) {
    throw new UsageError(`${command.name.replace(/^membrane /, '')} takes ${operands.describe}`);
  }
  return { values: parsed.values as OptionValues<O>, positionals: parsed.positionals };
}

/** A command's help: usage line, what it does, its options, notes. */
export function commandHelp(command: CommandSpec): string {
  const rows = Object.entries({ ...command.options, help: HELP_OPTION }).map(([flag, spec]) => ({
    flag: `${flag === 'help' ? '-h, ' : ''}--${flag}${spec.value === undefined ? '' : ` ${spec.value}`}`,
    env: spec.env ?? '',
    help: spec.default === undefined || (Array.isArray(spec.default) && spec.default.length === 0) ? spec.help : `${spec.help} (default ${String(spec.default)})`,
  }));
  const withEnv = rows.some((row) => row.env !== '');
  const flagWidth = Math.max(...rows.map((row) => row.flag.length)) + 2;
  const envWidth = Math.max(...rows.map((row) => row.env.length)) + 2;
  const lines = rows.map((row) => `  ${row.flag.padEnd(flagWidth)}${withEnv ? row.env.padEnd(envWidth) : ''}${row.help}`);
  const heading = withEnv ? 'Options (each flag also read from the environment variable shown; a flag wins over its variable):' : 'Options:';
  return `Usage: ${command.name} ${command.usage}\n\n${command.summary}\n\n${heading}\n${lines.join('\n')}\n${command.notes === undefined ? '' : `\n${command.notes}`}`;
}

/** A group's help: the commands it gathers. */
export function groupHelp(group: GroupSpec): string {
  const width = Math.max(...Object.values(group.commands).map(({ spec }) => spec.name.length)) + 2;
  const lines = Object.values(group.commands).map(({ spec }) => `  ${spec.name.padEnd(width)}${spec.brief}`);
  return `Usage: ${group.name} COMMAND [options]\n\n${group.summary}\n\nCommands:\n${lines.join('\n')}\n\n${group.name} COMMAND --help prints a command's own help.\n`;
}
