/**
 * Membrane's client SDK: invoke capabilities, manage membranes, and verify
 * CAP1-HMAC-SHA512 signatures in a target.
 *
 *   import { Membrane, request, requestReply, verifyCap1 } from 'membrane/sdk';
 */
export { request, requestReply, type CapabilityResponse, type ClientOptions, type RequestInit } from './client.js';
export { InvalidCapabilityError, MembraneConnectionError, MembraneHttpError } from './errors.js';
export { Membrane, type QueryOptions } from './membrane.js';
export { verifyCap1, type Cap1KeyLookup, type Cap1Request } from '../signing/cap1.js';
export type * from '../wire.js';
