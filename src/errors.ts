/**
 * Typed errors. Each class maps to exactly one HTTP status and reason phrase;
 * the http layer turns any MembraneError into
 * `{"error": reason, "message": message}` with that status.
 * Messages are shown to clients: they name the problem and never contain a
 * token, a secret or an internal address.
 */
export abstract class MembraneError extends Error {
  abstract readonly status: number;
  abstract readonly reason: string;
  abstract readonly code: string;
  /** Extra response headers (for example `Allow` on 405). */
  readonly headers: Readonly<Record<string, string>> = {};
}

export class BadRequestError extends MembraneError {
  readonly status = 400;
  readonly reason = 'Bad Request';
  readonly code = 'MEMBRANE_BAD_REQUEST';
}

/** Missing, malformed, unknown or revoked token: one message for all four. */
export class UnauthorizedError extends MembraneError {
  static readonly MESSAGE = 'a valid capability token is required (Authorization: Bearer CPBLTY1-…)';
  readonly status = 401;
  readonly reason = 'Unauthorized';
  readonly code = 'MEMBRANE_UNAUTHORIZED';
  override readonly headers = { 'www-authenticate': 'Bearer' };
  constructor() {
    super(UnauthorizedError.MESSAGE);
  }
}

export class MethodNotAllowedError extends MembraneError {
  readonly status = 405;
  readonly reason = 'Method Not Allowed';
  readonly code = 'MEMBRANE_METHOD_NOT_ALLOWED';
  override readonly headers: Readonly<Record<string, string>>;
  constructor(method: string, kind: string, allowed: readonly string[]) {
    super(`a ${kind} capability accepts ${allowed.join(', ')}, not ${method}`);
    this.headers = { allow: allowed.join(', ') };
  }
}

/** The requester's body arrived too slowly (below the minimum body rate) or stopped. */
export class RequestTimeoutError extends MembraneError {
  readonly status = 408;
  readonly reason = 'Request Timeout';
  readonly code = 'MEMBRANE_REQUEST_TIMEOUT';
}

export class ConflictError extends MembraneError {
  readonly status = 409;
  readonly reason = 'Conflict';
  readonly code = 'MEMBRANE_CONFLICT';
}

export class PayloadTooLargeError extends MembraneError {
  readonly status = 413;
  readonly reason = 'Payload Too Large';
  readonly code = 'MEMBRANE_PAYLOAD_TOO_LARGE';
}

export class BadGatewayError extends MembraneError {
  readonly status = 502;
  readonly reason = 'Bad Gateway';
  readonly code = 'MEMBRANE_BAD_GATEWAY';
}

export class ServiceUnavailableError extends MembraneError {
  readonly status = 503;
  readonly reason = 'Service Unavailable';
  readonly code = 'MEMBRANE_SERVICE_UNAVAILABLE';
  override readonly headers: Readonly<Record<string, string>>;
  constructor(message: string, headers: Readonly<Record<string, string>> = {}) {
    super(message);
    this.headers = headers;
  }
}

export class GatewayTimeoutError extends MembraneError {
  readonly status = 504;
  readonly reason = 'Gateway Timeout';
  readonly code = 'MEMBRANE_GATEWAY_TIMEOUT';
}

/** A problem with the operator's setup (flags, key file, store); never sent on the wire. */
export class ConfigurationError extends Error {
  readonly code: string = 'MEMBRANE_CONFIGURATION';
}

/**
 * A setting's value given on the command line or in the environment is
 * invalid, alone or together with another; the message names the flag or
 * variable. The operator's command reports it as a usage error.
 */
export class InvalidSettingError extends ConfigurationError {
  override readonly name = 'InvalidSettingError';
  override readonly code = 'MEMBRANE_INVALID_SETTING';
}
