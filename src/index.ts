/** Public entry points of the package. */
export { startMembrane, openStore, type RunningMembrane } from './app.js';
export { resolveServeConfig, type ServeConfig } from './config.js';
export * from './errors.js';
export { createLogger } from './log.js';
export { capabilityUri, parseCapabilityUri, isWellFormedToken, hashToken } from './token.js';
