/**
 * `membrane`: the operator's command. It opens the store directly (it does
 * not talk to a running server), so `init` and `tenant create` work whether
 * or not a server is running on the same data directory.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error. Errors are one line on
 * stderr.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { openStore, startMembrane } from '../app.js';
import { defaultAuthority, resolveOptions, resolveServeConfig, SERVE_OPTIONS } from '../config.js';
import { ConfigurationError } from '../errors.js';
import { createLogger } from '../log.js';
import { MembraneService, type RootCapabilities } from '../service/membrane-service.js';

class UsageError extends Error {}

const VERSION = '0.1.0';

const USAGE = `membrane: operator commands for the Membrane capability service

Usage:
  membrane serve [options]                 run the service (see options below)
  membrane init [--data-dir DIR] [--authority HOST[:PORT]] [--json]
                                           create a store and its first tenant; print its root capabilities
  membrane tenant create [--data-dir DIR] [--authority HOST[:PORT]] [--json]
                                           add a tenant to an existing store; print its root capabilities
  membrane --help | --version

Options of serve (each also read from the environment variable shown):
${Object.values(SERVE_OPTIONS)
  .map((spec) => `  --${`${spec.flag} ${spec.flag === 'allow-targets' ? 'LIST' : 'VALUE'}`.padEnd(28)} ${spec.env.padEnd(28)} ${spec.help}`)
  .join('\n')}

The master key comes from MEMBRANE_MASTER_KEY (base64 of 32 bytes) or, if that is
unset, from DATA_DIR/master.key (created with mode 0600 by init or the first serve).
`;

const STORE_FLAGS = {
  'data-dir': { type: 'string' },
  authority: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export async function main(argv: readonly string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`membrane: ${error.message} (see membrane --help)\n`);
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
      return createTenant(rest, { init: true });
    case 'tenant':
      if (rest[0] !== 'create') throw new UsageError(`unknown command "tenant ${rest[0] ?? ''}"; did you mean "tenant create"?`);
      return createTenant(rest.slice(1), { init: false });
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

async function createTenant(args: readonly string[], { init }: { init: boolean }): Promise<number> {
  const { values } = parse(args, STORE_FLAGS);
  const flags = { 'data-dir': values['data-dir'], authority: values.authority };
  const options = resolveOptions(['dataDir', 'authority', 'port'], flags, process.env);
  const dataDir = options.dataDir as string;
  const authority = (options.authority as string | undefined) ?? defaultAuthority(options.port as number);
  const { store, key } = await openStore(dataDir, process.env.MEMBRANE_MASTER_KEY, { create: init });
  try {
    const service = new MembraneService(store, key, { authority, cacheSize: 1 });
    const roots = await service.createTenant({ onlyIfEmpty: init });
    if (roots === undefined) {
      throw new ConfigurationError(`${dataDir} already holds a tenant; add another with \`membrane tenant create --data-dir ${dataDir}\``);
    }
    process.stdout.write(values.json === true ? `${JSON.stringify(roots)}\n` : formatRoots(roots));
    return 0;
  } finally {
    await store.close();
  }
}

function formatRoots(roots: RootCapabilities): string {
  return `create:     ${roots.create}\nquery:      ${roots.query}\ndeleteSelf: ${roots.deleteSelf}\n`;
}

async function serve(args: readonly string[]): Promise<number> {
  const flagOptions = Object.fromEntries(Object.values(SERVE_OPTIONS).map((spec) => [spec.flag, { type: 'string' as const }]));
  const { values } = parse(args, flagOptions);
  const config = resolveServeConfig(values as Record<string, string | undefined>, process.env);
  const logger = createLogger(config.logLevel);
  const running = await startMembrane(config, logger);
  if (running.bootstrap !== undefined) {
    process.stdout.write(
      `\nMembrane created a tenant on its new store. Its root capabilities are shown this once;\n` +
        `anyone holding them controls the tenant, so keep them secret:\n\n` +
        formatRoots(running.bootstrap).replace(/^(?=.)/gm, '  ') +
        '\n',
    );
  }
  logger.info({ url: running.url, authority: running.authority, dataDir: config.dataDir }, 'listening');

  return new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals += 1;
      if (signals > 1) {
        logger.warn({ signal }, 'second signal: exiting without draining');
        logger.flush();
        process.exit(1);
      }
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
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
