/**
 * Prometheus metrics (prom-client), served on the admin listener only
 * (`--admin-port`; off by default, loopback unless told otherwise).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Store } from './store/store.js';

export class Metrics {
  readonly registry = new Registry();
  readonly invocations = new Counter({
    name: 'membrane_invocations_total',
    help: 'Invocations of exported capabilities, by status class of the answer and signature scheme',
    labelNames: ['status_class', 'scheme'] as const,
    registers: [this.registry],
  });
  readonly invocationSeconds = new Histogram({
    name: 'membrane_invocation_duration_seconds',
    help: 'Time from request to the end of the answer, by signature scheme',
    labelNames: ['scheme'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  /** Reads the number of invocations in flight (see countInFlight). */
  #inFlightNow: () => number = () => 0;
  readonly inFlight: Gauge = new Gauge({
    name: 'membrane_invocations_in_flight',
    help: 'Invocations being forwarded now',
    registers: [this.registry],
    // Read when scraped rather than kept up to date on every invocation.
    collect: (): void => this.inFlight.set(this.#inFlightNow()),
  });
  readonly targetErrors = new Counter({
    name: 'membrane_target_errors_total',
    help: 'Invocations that failed toward the target, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly controlPlane = new Counter({
    name: 'membrane_control_plane_requests_total',
    help: 'Control-plane requests, by action and status class',
    labelNames: ['action', 'status_class'] as const,
    registers: [this.registry],
  });
  readonly revocations = new Counter({
    name: 'membrane_revocations_total',
    help: 'Revocations: of a membrane, or of a whole tenant (deleteSelf)',
    labelNames: ['of'] as const,
    registers: [this.registry],
  });
  readonly storeSeconds = new Histogram({
    name: 'membrane_store_operation_duration_seconds',
    help: 'Store operations, by operation',
    labelNames: ['operation'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly auditFailures = new Counter({ name: 'membrane_audit_failures_total', help: 'Audit lines that could not be written', registers: [this.registry] });

  /** Per scheme, the label children: the histogram's, and the counter's by status class (index: classIndex). */
  readonly #invocationChildren = new Map<string, { seconds: { observe(value: number): void }; counts: ({ inc(): void } | undefined)[] }>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'membrane_' });
  }

  /** The in-flight gauge reports what `read` returns when scraped. */
  countInFlight(read: () => number): void {
    this.#inFlightNow = read;
  }

  /** Counts an invocation; label children are cached, as this runs on every invocation. */
  invocation(status: number, scheme: string, seconds: number): void {
    let children = this.#invocationChildren.get(scheme);
    if (children === undefined) {
      children = { seconds: this.invocationSeconds.labels(scheme), counts: [] };
      this.#invocationChildren.set(scheme, children);
    }
    (children.counts[classIndex(status)] ??= this.invocations.labels(statusClass(status), scheme)).inc();
    children.seconds.observe(seconds);
  }

  /** Counts a control-plane request by its action and the status class of its answer. */
  controlPlaneRequest(action: string, status: number): void {
    this.controlPlane.inc({ action, status_class: statusClass(status) });
  }
}

/** The first digit of a status, or 0 when nothing was answered (outside 100–599). */
function classIndex(status: number): number {
  return status >= 100 && status < 600 ? Math.floor(status / 100) : 0;
}

/** `2xx`, `4xx`…, or `none` when nothing was answered. */
function statusClass(status: number): string {
  const index = classIndex(status);
  return index === 0 ? 'none' : `${index}xx`;
}

/** A Store that times every operation it passes on. */
export function instrumentStore(store: Store, metrics: Metrics): Store {
  return new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== 'function' || typeof property !== 'string') return value;
      return (...args: unknown[]) => {
        const end = metrics.storeSeconds.startTimer({ operation: property });
        const result = (value as (...a: unknown[]) => unknown).apply(target, args);
        // Operations are asynchronous but for a few synchronous ones (sealedColumns): timed all the same.
        if (result instanceof Promise) return result.finally(end);
        end();
        return result;
      };
    },
  });
}
