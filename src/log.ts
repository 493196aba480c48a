/**
 * The operational log (pino, JSON lines on stdout). Log lines carry no
 * tokens, secrets, header values or query strings; the redaction list is a
 * second line of defence for fields that must never appear.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'membrane' },
      redact: {
        paths: ['authorization', 'token', 'capability', 'config', 'headers', '*.authorization', '*.token', '*.headers'],
        censor: '[redacted]',
      },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
