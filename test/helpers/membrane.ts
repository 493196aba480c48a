/** Starts a real Membrane server in this process, on a loopback port and a fresh data directory. */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMembrane, type HeldResources, type RunningMembrane } from '../../src/app.js';
import type { ServeConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import type { RootCapabilities } from '../../src/service/membrane-service.js';
import { ControlPlane } from './client.js';

export interface TestMembrane extends RunningMembrane {
  dataDir: string;
  roots: RootCapabilities;
  control: ControlPlane;
  /** Stops the server and removes its data directory (unless `keepData`). */
  stop(options?: { keepData?: boolean }): Promise<void>;
}

/** Directories made by tempDir, removed when the test process ends whatever the tests did with them. */
const made: string[] = [];
process.once('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

export async function tempDir(prefix = 'membrane-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export function testConfig(dataDir: string, overrides: Partial<ServeConfig> = {}): ServeConfig {
  return {
    dataDir,
    host: '127.0.0.1',
    port: 0,
    authority: undefined,
    tlsCert: undefined,
    tlsKey: undefined,
    allowTargets: ['127.0.0.0/8'],
    targetTimeoutMs: 10_000,
    connectTimeoutMs: 5_000,
    connectionsPerTarget: 256,
    tenantShare: 0.5,
    capabilityShare: 0.25,
    queueTimeoutMs: 10_000,
    bodyMemoryLimit: 134_217_728,
    minBodyRate: 1_024,
    bodyRateWindowMs: 10_000,
    cacheSize: 10_000,
    controlBodyLimit: 65_536,
    signedBodyLimit: 6_291_456,
    maxHeaderSize: 16_384,
    headersTimeoutMs: 20_000,
    idleTimeoutMs: 120_000,
    maxInFlight: 2_048,
    drainTimeoutMs: 5_000,
    logLevel: 'silent',
    audit: 'file',
    adminPort: undefined,
    adminHost: '127.0.0.1',
    masterKey: undefined,
    ...overrides,
  };
}

export async function startTestMembrane(overrides: Partial<ServeConfig> = {}): Promise<TestMembrane> {
  const dataDir = overrides.dataDir ?? (await tempDir());
  const running = await startMembrane(testConfig(dataDir, overrides), createLogger('silent'));
  const roots = running.bootstrap ?? (await running.service.createTenant())!;
  return {
    ...running,
    dataDir,
    roots,
    control: new ControlPlane(running.url),
    async stop(options = {}) {
      await running.close();
      if (options.keepData !== true) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** What a server holds when no request is in flight. */
export const NOTHING_HELD: HeldResources = { invocations: 0, bodyBytes: 0, targets: 0, watchedBodies: 0, membranesInFlight: 0 };

/** Waits (up to `ms`) until the server holds nothing of its shared bounds, then asserts it: nothing a request took is left behind. */
export async function assertNothingHeld(membrane: RunningMembrane, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && JSON.stringify(membrane.held()) !== JSON.stringify(NOTHING_HELD)) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.deepEqual(membrane.held(), NOTHING_HELD);
}
