/**
 * The race at the heart of revocation: a capability resolved from the
 * store just before a revocation commits, its answer arriving just after.
 * On a real SQLite store whose answers to findCapability are held until
 * the test lets them go (the read itself happens at once, before the
 * revocation), the service must neither cache that answer nor let an
 * invocation of it be tracked as live; resolved again, it is refused.
 * And an invocation tracked before a revocation is aborted by it.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { MembraneError, UnauthorizedError } from '../src/errors.js';
import { TargetPolicy } from '../src/proxy/target-policy.js';
import { loadMasterKey } from '../src/secrets.js';
import { MembraneService, type ExportedCapability } from '../src/service/membrane-service.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import type { Store } from '../src/store/store.js';
import { tokenOf } from './helpers/client.js';
import { tempDir } from './helpers/membrane.js';

let dataDir: string;
let real: SqliteStore;
let service: MembraneService;
/** While set, findCapability's answers wait for it (the store has been read already). */
let held: Promise<void> | undefined;

before(async () => {
  dataDir = await tempDir();
  real = SqliteStore.open({ dataDir });
  const store = new Proxy(real, {
    get(target, property) {
      if (property === 'findCapability') {
        return async (hash: Buffer) => {
          const record = await target.findCapability(hash);
          await held;
          return record;
        };
      }
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as Store;
  const key = loadMasterKey({ dataDir, create: true });
  service = new MembraneService(store, key, { authority: 'localhost:1', cacheSize: 100, targetPolicy: new TargetPolicy(['127.0.0.0/8']), auditId: () => 'id' });
});
after(async () => {
  await real.close();
  await rm(dataDir, { recursive: true, force: true });
});

let membranes = 0;
/** A membrane with one capability exported through it: the capability's token and the membrane's id. */
async function exported(): Promise<{ token: string; membraneId: number }> {
  const tenant = (await service.createTenantWithId())!;
  membranes += 1;
  const view = await service.createMembrane(tenant.tenantId, { id: `m${membranes}` });
  const exportCapability = await service.authenticate(tokenOf(view.capabilities.export));
  assert.equal(exportCapability.kind, 'export');
  const membraneId = exportCapability.kind === 'export' ? exportCapability.membraneId : -1;
  const uri = await service.export(membraneId, { uri: 'http://127.0.0.1:9/target' });
  return { token: tokenOf(uri), membraneId };
}

class Recorded {
  reasons: MembraneError[] = [];
  abort(reason: MembraneError): void {
    this.reasons.push(reason);
  }
}

test('an answer read before a revocation and arriving after it is neither cached nor tracked; resolved again it is refused', async () => {
  const { token, membraneId } = await exported();
  const seen = service.revocations;
  let release: () => void = () => undefined;
  held = new Promise((resolve) => (release = resolve));
  const pending = service.authenticate(token);
  await service.revokeMembrane(membraneId);
  release();
  held = undefined;
  const stale = (await pending) as ExportedCapability;
  assert.equal(stale.kind, 'exported', 'the store was read before the revocation');
  assert.equal(service.cached(token), undefined, 'not cached');
  const invocation = new Recorded();
  assert.equal(service.track(stale, invocation, seen), false, 'not tracked as live');
  assert.equal(service.membranesInFlight, 0);
  await assert.rejects(service.authenticate(token), UnauthorizedError);
});

test('an invocation tracked before a revocation is aborted by it with 401, and then forgotten', async () => {
  const { token, membraneId } = await exported();
  const seen = service.revocations;
  const capability = (await service.authenticate(token)) as ExportedCapability;
  const invocation = new Recorded();
  assert.equal(service.track(capability, invocation, seen), true);
  assert.equal(service.membranesInFlight, 1);
  await service.revokeMembrane(membraneId);
  assert.equal(invocation.reasons.length, 1);
  assert.ok(invocation.reasons[0] instanceof UnauthorizedError);
  // Revoking it again changes nothing and aborts nothing more.
  const revocations = service.revocations;
  await service.revokeMembrane(membraneId);
  assert.equal(service.revocations, revocations);
  assert.equal(invocation.reasons.length, 1);
  service.untrack(capability, invocation);
  assert.equal(service.membranesInFlight, 0);
});
