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
    // IPv4-translated (::ffff:0:0:0/96) and IPv4-compatible (::/96) forms are judged by the IPv4 inside.
    ['::ffff:0:127.0.0.1', /^loopback, inside an IPv6 address$/],
    ['::ffff:0:a9fe:a9fe', /^link-local.*, inside an IPv6 address$/],
    ['0:0:0:0:ffff:0:10.1.2.3', /^private, inside an IPv6 address$/],
    ['::127.0.0.1', /^loopback, inside an IPv6 address$/],
    ['::7f00:1', /^loopback, inside an IPv6 address$/],
    ['::169.254.169.254', /^link-local.*, inside an IPv6 address$/],
    ['::192.168.0.1', /^private, inside an IPv6 address$/],
    ['::2', /^unspecified, inside an IPv6 address$/],
    ['::ffff:0:192.0.2.1', /^documentation \(TEST-NET-1\), inside an IPv6 address$/],
    // Local-use NAT64 is refused whatever it embeds.
    ['64:ff9b:1::808:808', /^local-use NAT64$/],
    ['64:ff9b:1::a9fe:a9fe', /^local-use NAT64$/],
    ['64:ff9b:1:ffff:ffff:ffff:ffff:ffff', /^local-use NAT64$/],
    // Documentation and reserved ranges.
    ['192.0.2.1', /^documentation \(TEST-NET-1\)$/],
    ['198.51.100.7', /^documentation \(TEST-NET-2\)$/],
    ['203.0.113.255', /^documentation \(TEST-NET-3\)$/],
    ['192.88.99.1', /^reserved \(6to4 relay anycast\)$/],
    ['192.0.0.8', /^reserved \(IETF protocol assignments\)$/],
    ['198.19.255.255', /^reserved \(benchmarking\)$/],
    ['100::1', /^discard-only$/],
    ['100::ffff:ffff:ffff:ffff', /^discard-only$/],
    ['2001:db8::1', /^documentation$/],
    ['2001:db8:ffff::1', /^documentation$/],
    ['3fff::1', /^documentation$/],
    ['3fff:fff:ffff::1', /^documentation$/],
    ['2001::1', /^reserved \(IETF protocol assignments, Teredo among them\)$/],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', /Teredo/],
    ['2001:2::1', /IETF protocol assignments/],
    ['2001:1ff:ffff::1', /IETF protocol assignments/],
    ['5f00::1', /^reserved \(SRv6 segment identifiers\)$/],
    // Outside 2000::/3 nothing is global unicast.
    ['100:0:0:1::1', /^reserved \(not global unicast\)$/],
    ['1::1', /^reserved \(not global unicast\)$/],
    ['4000::1', /^reserved \(not global unicast\)$/],
    ['e000::1', /^reserved \(not global unicast\)$/],
  ];
  for (const [address, reason] of refused) {
    test(`refuses ${address}`, () => assert.match(policy.refusal(address) ?? '', reason));
  }

  test('allows public addresses', () => {
    for (const address of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '2001:4860:4860::8888', '::ffff:8.8.8.8', '2606:4700::1111']) {
      assert.equal(policy.refusal(address), undefined, address);
    }
  });

  test('allows public addresses next to the new ranges, and IPv6 forms embedding a public IPv4 address', () => {
    for (const address of [
      '192.0.1.255', '192.0.3.0', '198.51.99.255', '198.51.101.0', '203.0.112.255', '203.0.114.0', '192.88.98.255', '192.88.100.0',
      '2001:200::1', '2001:db7:ffff::1', '2001:db9::1', '3fff:1000::1', '2000::1', '3ffe::1',
      '64:ff9b::8.8.8.8', '::ffff:0:8.8.8.8', '::8.8.8.8', '2002:808:808::1',
    ]) {
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

  test('the allow list overrides the new denies too, also for the IPv4 inside an IPv6 address', () => {
    const allowing = new TargetPolicy(['192.0.2.0/24', '2001:db8::/32', '64:ff9b:1::/48', '100::/64', '2001::/32']);
    for (const address of ['192.0.2.7', '2001:db8::7', '64:ff9b:1::1', '100::7', '2001::7', '::ffff:0:192.0.2.7', '::192.0.2.7', '64:ff9b::192.0.2.7']) {
      assert.equal(allowing.refusal(address), undefined, address);
    }
    assert.match(allowing.refusal('198.51.100.1') ?? '', /TEST-NET-2/);
    assert.match(allowing.refusal('2001:2::1') ?? '', /IETF protocol assignments/);
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
        ['http://[64:ff9b:1::808:808]/', /config\.uri's host is a local-use NAT64 address/],
        ['http://[::ffff:0:127.0.0.1]/', /loopback, inside an IPv6 address/],
        ['http://[::ffff:0:a9fe:a9fe]/', /link-local.*, inside an IPv6 address/],
        ['http://[::127.0.0.1]/', /loopback, inside an IPv6 address/],
        ['http://[::10.0.0.1]/', /private, inside an IPv6 address/],
        ['http://192.0.2.1/', /is a documentation \(TEST-NET-1\) address/],
        ['http://198.51.100.1/', /is a documentation \(TEST-NET-2\) address/],
        ['http://203.0.113.1/', /is a documentation \(TEST-NET-3\) address/],
        ['http://192.88.99.1/', /is a reserved \(6to4 relay anycast\) address/],
        ['http://[100::1]/', /is a discard-only address/],
        ['http://[2001:db8::1]/', /is a documentation address/],
        ['http://[3fff::1]/', /is a documentation address/],
        ['http://[2001::1]/', /is a reserved \(IETF protocol assignments, Teredo among them\) address/],
        ['http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/', /Teredo/],
        ['http://[5f00::1]/', /SRv6/],
        ['http://[4000::1]/', /is a reserved \(not global unicast\) address/],
      ];
      for (const [uri, message] of cases) {
        const result = await call(membrane.url, exportCap, { body: { uri } });
        assert.equal(result.status, 400, uri);
        assert.match(result.json.message, message, uri);
        assert.match(result.json.message, /--allow-targets/);
      }
      // A name that does not resolve is accepted; the connect-time check guards it.
      assert.equal((await call(membrane.url, exportCap, { body: { uri: 'https://not-resolvable.invalid/' } })).status, 201);
      for (const uri of ['https://93.184.216.34/', 'https://[64:ff9b::93.184.216.34]/', 'https://[::ffff:0:93.184.216.34]/', 'https://[::93.184.216.34]/']) {
        assert.equal((await call(membrane.url, exportCap, { body: { uri } })).status, 201, uri);
      }
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

  test('an allow list entry admits an address of a newly refused range, and an IPv4 range admits its IPv6 embeddings', async () => {
    const membrane = await startTestMembrane({ allowTargets: ['2001:db8::/32', '192.0.2.0/24'] });
    try {
      const { export: exportCap } = await membrane.control.createMembrane(membrane.roots.create, 'allowed-ranges');
      for (const uri of ['https://[2001:db8::1]/', 'https://192.0.2.1/', 'https://[::ffff:0:192.0.2.1]/', 'https://[::192.0.2.1]/', 'https://[64:ff9b::192.0.2.1]/']) {
        assert.equal((await call(membrane.url, exportCap, { body: { uri } })).status, 201, uri);
      }
      for (const uri of ['https://198.51.100.1/', 'https://[64:ff9b:1::192.0.2.1]/']) {
        assert.equal((await call(membrane.url, exportCap, { body: { uri } })).status, 400, uri);
      }
    } finally {
      await membrane.stop();
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
