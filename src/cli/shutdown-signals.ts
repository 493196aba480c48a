/**
 * How a serving process reads SIGINT and SIGTERM. The first asks it to
 * drain. Any that arrives less than a second after the first is the same
 * request: Ctrl-C in a terminal signals every process of the foreground
 * group, so under `npm start` the server receives the terminal's SIGINT
 * and the copy npm forwards to its child at once. One that arrives a
 * second or more after the first forces an immediate exit.
 */
import { performance } from 'node:perf_hooks';

/** Signals closer than this to the first one count as the same request to drain. */
export const SAME_REQUEST_WINDOW_MS = 1_000;

const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const;

export interface ShutdownHandlers {
  /** The first signal: stop accepting, let requests in flight finish. */
  drain(signal: NodeJS.Signals): void;
  /** A signal within the window after the first (nothing to do but note it). */
  repeated?(signal: NodeJS.Signals): void;
  /** A signal after the window: exit now. */
  force(signal: NodeJS.Signals): void;
}

/** Listens for SIGINT and SIGTERM on this process for as long as it runs. */
export function onShutdownSignals(handlers: ShutdownHandlers): void {
  let first: number | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    const at = performance.now();
    if (first === undefined) {
      first = at;
      handlers.drain(signal);
    } else if (at - first < SAME_REQUEST_WINDOW_MS) {
      handlers.repeated?.(signal);
    } else {
      handlers.force(signal);
    }
  };
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, onSignal);
}
