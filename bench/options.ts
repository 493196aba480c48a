/** A benchmark's command line: an unknown or malformed option exits 2 with one line on stderr. */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The command line parsed by `parseArgs`; an unknown or malformed option exits with a one-line message. */
export function commandLine<T extends { options: NonNullable<ParseArgsConfig['options']> }>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    process.stderr.write(`${(error as Error).message.split('\n')[0]}\n`);
    process.exit(2);
  }
}

/** A command-line option that must be a positive number; exits with a one-line message otherwise. */
export function positiveOption(name: string, value: string | undefined): number {
  const number = Number(value);
  if (!(Number.isFinite(number) && number > 0)) {
    process.stderr.write(`--${name} must be a positive number, not ${JSON.stringify(value)}\n`);
    process.exit(2);
  }
  return number;
}
