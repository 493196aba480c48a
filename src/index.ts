/** Public entry points of the package. */
export { startMembrane, openStore, type RunningMembrane } from './app.js';
export { resolveServeConfig, type ServeConfig } from './config.js';
export * from './errors.js';
export { createLogger } from './log.js';
export { capabilityUri, parseCapabilityUri, isWellFormedToken, hashToken } from './token.js';
export { verifyCap1, cap1Sign, type Cap1KeyLookup, type Cap1Request } from './signing/cap1.js';
