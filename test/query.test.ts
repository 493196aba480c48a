/** The tenant `query` capability: filters, ordering, pagination, limits. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { call } from './helpers/client.js';
import { startTestMembrane, type TestMembrane } from './helpers/membrane.js';

let membrane: TestMembrane;
let query: string;
/** In binary (code point) order, which is the order query must use. */
const IDS = ['A', 'B', 'a', 'a-1', 'a0', 'b', 'z', 'é', '中', '🦊'];

before(async () => {
  membrane = await startTestMembrane();
  const tenant = (await membrane.service.createTenant())!;
  query = tenant.query;
  for (const id of [...IDS].reverse()) await membrane.control.createMembrane(tenant.create, id);
  // A revoked membrane must not appear.
  const gone = await membrane.control.createMembrane(tenant.create, 'gone');
  await membrane.control.revoke(gone.revoke);
});
after(() => membrane.stop());

async function page(queryString: string): Promise<{ ids: string[]; completed: boolean }> {
  const result = await call(membrane.url, query, { path: `/${queryString}` });
  assert.equal(result.status, 200, result.text);
  return { ids: result.json.membranes.map((m: { id: string }) => m.id), completed: result.json.completed };
}

describe('query', () => {
  test('without parameters: the first membrane only (limit defaults to 1)', async () => {
    assert.deepEqual(await page(''), { ids: ['A'], completed: false });
  });

  test('ordered by id in code point order, live membranes only', async () => {
    assert.deepEqual(await page('?limit=1000'), { ids: IDS, completed: true });
  });

  test('pages of 3 with lastId walk every membrane exactly once', async () => {
    const seen: string[] = [];
    let lastId: string | undefined;
    let completed = false;
    let pages = 0;
    while (!completed) {
      const result = await page(`?limit=3${lastId === undefined ? '' : `&lastId=${encodeURIComponent(lastId)}`}`);
      seen.push(...result.ids);
      completed = result.completed;
      lastId = result.ids.at(-1);
      pages += 1;
      assert.ok(pages <= 4);
    }
    assert.deepEqual(seen, IDS);
    assert.equal(pages, 4);
  });

  test('boundaries: a page ending exactly at the last membrane is completed', async () => {
    assert.deepEqual(await page(`?limit=${IDS.length}`), { ids: IDS, completed: true });
    assert.deepEqual(await page(`?limit=${IDS.length - 1}`), { ids: IDS.slice(0, -1), completed: false });
    assert.deepEqual(await page(`?lastId=${encodeURIComponent(IDS.at(-2)!)}&limit=1`), { ids: [IDS.at(-1)!], completed: true });
    assert.deepEqual(await page(`?lastId=${encodeURIComponent(IDS.at(-1)!)}&limit=5`), { ids: [], completed: true });
    assert.deepEqual(await page('?lastId=%F0%9F%A6%8A%F0%9F%A6%8A'), { ids: [], completed: true });
  });

  test('lastId need not be an existing id', async () => {
    assert.deepEqual(await page('?lastId=a-&limit=2'), { ids: ['a-1', 'a0'], completed: false });
  });

  test('id selects one membrane; an unknown or revoked id gives an empty, completed page', async () => {
    assert.deepEqual(await page('?id=%E4%B8%AD'), { ids: ['中'], completed: true });
    assert.deepEqual(await page('?id=nope&limit=10'), { ids: [], completed: true });
    assert.deepEqual(await page('?id=gone'), { ids: [], completed: true });
  });

  test('id and lastId together both apply, in code point order', async () => {
    assert.deepEqual(await page('?id=b&lastId=a'), { ids: ['b'], completed: true });
    assert.deepEqual(await page('?id=a&lastId=b'), { ids: [], completed: true });
    // 中 (U+4E2D) sorts before 🦊 (U+1F98A) by code point, though not by UTF-16 code unit.
    assert.deepEqual(await page('?id=%E4%B8%AD&lastId=%F0%9F%A6%8A'), { ids: [], completed: true });
    assert.deepEqual(await page('?id=%F0%9F%A6%8A&lastId=%E4%B8%AD'), { ids: ['🦊'], completed: true });
  });

  test('form encoding: + is a space', async () => {
    const tenant = (await membrane.service.createTenant())!;
    await membrane.control.createMembrane(tenant.create, 'with space');
    const result = await call(membrane.url, tenant.query, { path: '/?id=with+space' });
    assert.deepEqual(result.json.membranes.map((m: { id: string }) => m.id), ['with space']);
  });

  test('limit above 1000 means 1000', async () => {
    const tenant = (await membrane.service.createTenant())!;
    const tenantId = await tenantIdOf(tenant.create);
    for (let i = 0; i < 1001; i++) {
      await membrane.service.createMembrane(tenantId, { id: `m${String(i).padStart(4, '0')}` });
    }
    for (const limit of ['1001', '5000', '99999999999999999999999']) {
      const result = await call(membrane.url, tenant.query, { path: `/?limit=${limit}` });
      assert.equal(result.json.membranes.length, 1000);
      assert.equal(result.json.completed, false);
    }
    const rest = await call(membrane.url, tenant.query, { path: '/?limit=1000&lastId=m0999' });
    assert.deepEqual(rest.json.membranes.map((m: { id: string }) => m.id), ['m1000']);
    assert.equal(rest.json.completed, true);
  });

  test('limit that is not a positive integer is a 400', async () => {
    for (const limit of ['0', '-1', '1.5', 'abc', '1e3', '+5', ' 5', '0x10', '000']) {
      const result = await call(membrane.url, query, { path: `/?limit=${encodeURIComponent(limit)}` });
      assert.equal(result.status, 400, limit);
      assert.deepEqual(result.json, { error: 'Bad Request', message: 'query parameter limit must be a positive integer' });
    }
    assert.deepEqual(await page('?limit=007'), { ids: IDS.slice(0, 7), completed: false });
  });

  test('empty parameters mean absent (the original SDK sends lastId= for undefined)', async () => {
    assert.deepEqual(await page('?id=&lastId=&limit='), { ids: ['A'], completed: false });
    assert.deepEqual(await page('?lastId=&limit=2'), { ids: ['A', 'B'], completed: false });
  });

  test('unknown, repeated and malformed parameters are a 400', async () => {
    const cases: [string, RegExp][] = [
      ['?limit=1&limit=2', /limit is given more than once/],
      ['?id=a&id=b', /id is given more than once/],
      ['?offset=3', /unknown query parameter "offset"/],
      ['?id=%E4%B8', /malformed percent-encoding/],
      ['?id=%zz', /malformed percent-encoding/],
      [`?id=${'x'.repeat(513)}`, /id must be at most 512 characters/],
      [`?lastId=${'x'.repeat(513)}`, /lastId must be at most 512 characters/],
    ];
    for (const [queryString, message] of cases) {
      const result = await call(membrane.url, query, { path: `/${queryString}` });
      assert.equal(result.status, 400, queryString);
      assert.equal(result.json.error, 'Bad Request');
      assert.match(result.json.message, message);
    }
  });
});

/** The tenant id behind a create capability, through the service's own authentication. */
async function tenantIdOf(create: string): Promise<number> {
  const capability = await membrane.service.authenticate(create.slice(create.indexOf('#') + 1));
  assert.equal(capability.kind, 'create');
  return (capability as { tenantId: number }).tenantId;
}
