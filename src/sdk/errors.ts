/** Errors of the SDK: each says which kind of failure it is. */

/** The string given is not a capability URI (`cpblty://AUTHORITY/#CPBLTY1-…`). */
export class InvalidCapabilityError extends TypeError {
  readonly code = 'MEMBRANE_INVALID_CAPABILITY';
  constructor(what = 'capability') {
    super(`${what} is not a capability URI (cpblty://AUTHORITY/#CPBLTY1-…)`);
  }
}

/** Membrane (or, for an exported capability, its target) answered with an error status. */
export class MembraneHttpError extends Error {
  readonly code = 'MEMBRANE_HTTP_ERROR';
  /** The HTTP status, e.g. 401. */
  readonly status: number;
  /** The `error` field of the answer (its reason phrase), or the status text. */
  readonly error: string;
  constructor(status: number, error: string, message: string) {
    super(message);
    this.status = status;
    this.error = error;
  }
}

/** No answer: the service could not be reached, or the exchange broke. */
export class MembraneConnectionError extends Error {
  readonly code = 'MEMBRANE_CONNECTION_ERROR';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
