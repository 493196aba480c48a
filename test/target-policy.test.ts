/** The target policy (SSRF defence): which addresses exports may name, at export and at connect time. */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { TargetPolicy } from '../src/proxy/target-policy.js';
import { call } from './helpers/client.js';
import { startTestMembrane, tempDir } from './helpers/membrane.js';
import { startTarget } from './helpers/target.js';

describe('TargetPolicy', () => {
  const policy = new TargetPolicy();
  const refused: [string, RegExp][] = [
    ['127.0.0.1', /loopback/],
    ['127.255.255.254', /loopback/],
    ['10.0.0.1', /private/],
    ['172.16.0.1', /private/],
    ['172.31.255.255', /private/],
    ['192.168.1.1', /private/],
    ['169.254.169.254', /link-local/],
    ['169.254.0.1', /link-local/],
    ['100.64.0.1', /carrier-grade NAT/],
    ['100.127.255.255', /carrier-grade NAT/],
    ['0.0.0.0', /unspecified/],
    ['224.0.0.1', /multicast/],
    ['255.255.255.255', /reserved/],
    ['::1', /loopback/],
    ['::', /unspecified/],
    ['fc00::1', /unique-local/],
    ['fd12:3456::1', /unique-local/],
    ['fe80::1', /link-local/],
    ['ff02::1', /multicast/],
    ['::ffff:127.0.0.1', /loopback, inside an IPv6 address/],
    ['::ffff:7f00:1', /loopback, inside an IPv6 address/],
    ['::ffff:169.254.169.254', /link-local.*inside an IPv6 address/],
    ['::ffff:10.1.2.3', /private, inside/],
    ['64:ff9b::a9fe:a9fe', /link-local.*inside an IPv6 address/],
    ['2002:c0a8:0101::1', /private, inside an IPv6 address/],
  ];
  for (const [address, reason] of refused) {
    test(`refuses ${address}`, () => assert.match(policy.refusal(address) ?? '', reason));
  }

  test('allows public addresses', () => {
    for (const address of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '2001:4860:4860::8888', '::ffff:8.8.8.8', '2606:4700::1111']) {
      assert.equal(policy.refusal(address), undefined, address);
    }
  });

  test('the allow list admits CIDRs, single addresses and host names', () => {
    const allowing = new TargetPolicy(['10.1.0.0/16', '192.168.5.5', 'fd00::/8', 'Internal.Example.']);
    assert.equal(allowing.refusal('10.1.200.3'), undefined);
    assert.match(allowing.refusal('10.2.0.1') ?? '', /private/);
    assert.equal(allowing.refusal('192.168.5.5'), undefined);
    assert.match(allowing.refusal('192.168.5.6') ?? '', /private/);
    assert.equal(allowing.refusal('fd00::99'), undefined);
    assert.equal(allowing.refusal('::ffff:10.1.0.1'), undefined);
    assert.ok(allowing.allowsHost('internal.example'));
    assert.ok(!allowing.allowsHost('other.example'));
  });

  test('lookup refuses a name that resolves to a refused address, and passes allowed ones on', async () => {
    const resolve = (p: TargetPolicy, name: string): Promise<string> =>
      new Promise((ok, fail) => p.lookup()(name, { all: false }, (error, address) => (error ? fail(error) : ok(String(address)))));
    await assert.rejects(resolve(policy, 'localhost'), (error: NodeJS.ErrnoException) => error.code === 'MEMBRANE_TARGET_DENIED' && /loopback/.test(error.message));
    assert.match(await resolve(new TargetPolicy(['127.0.0.0/8', '::1/128']), 'localhost'), /^(127\.0\.0\.1|::1)$/);
    assert.match(await resolve(new TargetPolicy(['localhost']), 'localhost'), /^(127\.0\.0\.1|::1)$/);
  });
});

describe('the policy at export and at connect time', () => {
  test('exports to refused addresses get a 400 naming the reason; allowed ones pass', async () => {
    const membrane = await startTestMembrane({ allowTargets: [] });
    try {
      const { export: exportCap } = await membrane.control.createMembrane(membrane.roots.create, 'policy');
      const cases: [string, RegExp][] = [
        ['http://127.0.0.1:8080/', /config\.uri's host is a loopback address/],
        ['http://[::1]/', /config\.uri's host is a loopback address/],
        ['http://169.254.169.254/latest/meta-data/', /config\.uri's host is a link-local \(cloud metadata\) address/],
        ['http://10.0.0.8/', /is a private address/],
        ['http://100.100.100.100/', /carrier-grade NAT/],
        ['http://[fd00::1]/', /unique-local/],
        ['http://[fe80::1]/', /link-local/],
        ['http://0.0.0.0/', /unspecified/],
        ['http://[::ffff:127.0.0.1]/', /loopback, inside an IPv6 address/],
        ['http://2130706433/', /loopback/],
        ['http://0x7f.1/', /loopback/],
        ['http://localhost:9/', /config\.uri's host resolves to a loopback address/],
      ];
      for (const [uri, message] of cases) {
        const result = await call(membrane.url, exportCap, { body: { uri } });
        assert.equal(result.status, 400, uri);
        assert.match(result.json.message, message, uri);
        assert.match(result.json.message, /--allow-targets/);
      }
      // A name that does not resolve is accepted; the connect-time check guards it.
      assert.equal((await call(membrane.url, exportCap, { body: { uri: 'https://not-resolvable.invalid/' } })).status, 201);
      assert.equal((await call(membrane.url, exportCap, { body: { uri: 'https://93.184.216.34/' } })).status, 201);
    } finally {
      await membrane.stop();
    }
  });

  test('an allow list entry admits a host name or a CIDR', async () => {
    const target = await startTarget();
    const membrane = await startTestMembrane({ allowTargets: ['localhost'] });
    try {
      const { export: exportCap } = await membrane.control.createMembrane(membrane.roots.create, 'allowed');
      const byName = await membrane.control.export(exportCap, { uri: `http://localhost:${target.port}/named` });
      assert.equal((await call(membrane.url, byName)).json.url, '/named');
      const literal = await call(membrane.url, exportCap, { body: { uri: `http://127.0.0.1:${target.port}/literal` } });
      assert.equal(literal.status, 400);
    } finally {
      await membrane.stop();
      await target.close();
    }
  });

  test('the connect-time check refuses an address the policy no longer allows (literal or resolved)', async () => {
    const target = await startTarget();
    const dataDir = await tempDir();
    try {
      const permissive = await startTestMembrane({ dataDir, allowTargets: ['127.0.0.0/8', '::1/128'] });
      const { export: exportCap } = await permissive.control.createMembrane(permissive.roots.create, 'rebinding');
      const byName = await permissive.control.export(exportCap, { uri: `http://localhost:${target.port}/a` });
      const byAddress = await permissive.control.export(exportCap, { uri: `http://127.0.0.1:${target.port}/b` });
      assert.equal(await permissive.control.statusOf(byName), 200);
      assert.equal(await permissive.control.statusOf(byAddress), 200);
      await permissive.stop({ keepData: true });

      // The same store, served under the default policy: a name now resolving to a
      // refused address is stopped at connect time, as DNS rebinding would be.
      const strict = await startTestMembrane({ dataDir, allowTargets: [] });
      const before = target.requests.length;
      for (const capability of [byName, byAddress]) {
        const result = await call(strict.url, capability);
        assert.equal(result.status, 502);
        assert.match(result.json.message, /the target's address is loopback, which this server's target policy does not allow/);
        assert.ok(!result.text.includes('127.0.0.1'));
      }
      assert.equal(target.requests.length, before);
      await strict.stop({ keepData: true });
    } finally {
      await target.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
