/**
 * Invocations in flight by the connection their requester sent them on.
 * When that connection closes, each of them is aborted, at whatever step
 * it is: waiting for a connection to its target, reading its body, or
 * exchanging with the target. Pipelined requests included: Node never
 * closes the response of a request still queued behind another, so the
 * connection, not the response, is what tells that the requester left.
 * One 'close' listener per connection, however many requests it carries.
 */
import type { Socket } from 'node:net';
import { BadRequestError } from '../errors.js';
import type { InFlight } from '../in-flight.js';

/** Why an invocation whose requester went away before its answer was complete ended (recorded as its status). */
const REQUESTER_LEFT = new BadRequestError('the requester went away before its answer was complete');

export class RequesterConnections {
  readonly #invocations = new WeakMap<Socket, Set<InFlight>>();

  /** Records an invocation that came on `socket` (aborted at once if the socket is already closed). */
  add(socket: Socket, invocation: InFlight): void {
    if (socket.destroyed) {
      invocation.abort(REQUESTER_LEFT);
      return;
    }
    let invocations = this.#invocations.get(socket);
    if (invocations === undefined) {
      const onSocket = new Set<InFlight>();
      this.#invocations.set(socket, (invocations = onSocket));
      socket.once('close', () => {
        this.#invocations.delete(socket);
        for (const each of onSocket) each.abort(REQUESTER_LEFT);
      });
    }
    invocations.add(invocation);
  }

  /** Forgets an invocation that has ended. */
  remove(socket: Socket, invocation: InFlight): void {
    this.#invocations.get(socket)?.delete(invocation);
  }
}
