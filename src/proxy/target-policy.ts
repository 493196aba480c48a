/**
 * Which addresses targets may have (SSRF defence).
 *
 * By default a target may not be on any address that is not global unicast:
 * the ranges below, taken from the IANA IPv4 and IPv6 Special-Purpose
 * Address Registries (RFC 6890 and the RFCs it names), multicast, and every
 * IPv6 address outside 2000::/3 (the only block IANA allocates for global
 * unicast). IPv6 forms that embed an IPv4 address (IPv4-mapped,
 * IPv4-translated, IPv4-compatible, NAT64 64:ff9b::/96, 6to4) are judged by
 * the IPv4 address they embed. A network-specific NAT64 prefix (RFC 6052
 * section 2.2, chosen by the operator) cannot be recognised: the IPv4
 * address inside one is not judged. The operator's allow list (CIDRs and
 * host names) overrides all of this.
 *
 * The policy is applied at export (to literal addresses and to every
 * address a host name resolves to) and again at connect time, on the
 * address actually connected to, so DNS rebinding cannot get through.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

interface Range {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
  reason: string;
}

/** Denied ranges, in order: the first one an address is in names the reason. */
const DENIED: readonly Range[] = [
  { address: '0.0.0.0', prefix: 8, family: 'ipv4', reason: 'unspecified' }, // "this network", RFC 791
  { address: '127.0.0.0', prefix: 8, family: 'ipv4', reason: 'loopback' }, // RFC 1122
  { address: '10.0.0.0', prefix: 8, family: 'ipv4', reason: 'private' }, // RFC 1918
  { address: '172.16.0.0', prefix: 12, family: 'ipv4', reason: 'private' }, // RFC 1918
  { address: '192.168.0.0', prefix: 16, family: 'ipv4', reason: 'private' }, // RFC 1918
  { address: '169.254.0.0', prefix: 16, family: 'ipv4', reason: 'link-local (cloud metadata)' }, // RFC 3927
  { address: '100.64.0.0', prefix: 10, family: 'ipv4', reason: 'carrier-grade NAT' }, // RFC 6598
  { address: '192.0.0.0', prefix: 24, family: 'ipv4', reason: 'reserved (IETF protocol assignments)' }, // RFC 6890
  { address: '192.0.2.0', prefix: 24, family: 'ipv4', reason: 'documentation (TEST-NET-1)' }, // RFC 5737
  { address: '198.51.100.0', prefix: 24, family: 'ipv4', reason: 'documentation (TEST-NET-2)' }, // RFC 5737
  { address: '203.0.113.0', prefix: 24, family: 'ipv4', reason: 'documentation (TEST-NET-3)' }, // RFC 5737
  { address: '192.88.99.0', prefix: 24, family: 'ipv4', reason: 'reserved (6to4 relay anycast)' }, // RFC 7526
  { address: '198.18.0.0', prefix: 15, family: 'ipv4', reason: 'reserved (benchmarking)' }, // RFC 2544
  { address: '224.0.0.0', prefix: 4, family: 'ipv4', reason: 'multicast' }, // RFC 5771
  { address: '240.0.0.0', prefix: 4, family: 'ipv4', reason: 'reserved' }, // RFC 1112; with 255.255.255.255, limited broadcast (RFC 919)
  { address: '::', prefix: 128, family: 'ipv6', reason: 'unspecified' }, // RFC 4291
  { address: '::1', prefix: 128, family: 'ipv6', reason: 'loopback' }, // RFC 4291
  { address: '64:ff9b:1::', prefix: 48, family: 'ipv6', reason: 'local-use NAT64' }, // RFC 8215
  { address: '100::', prefix: 64, family: 'ipv6', reason: 'discard-only' }, // RFC 6666
  { address: '2001::', prefix: 23, family: 'ipv6', reason: 'reserved (IETF protocol assignments, Teredo among them)' }, // RFC 2928, RFC 4380
  { address: '2001:db8::', prefix: 32, family: 'ipv6', reason: 'documentation' }, // RFC 3849
  { address: '3fff::', prefix: 20, family: 'ipv6', reason: 'documentation' }, // RFC 9637
  { address: '5f00::', prefix: 16, family: 'ipv6', reason: 'reserved (SRv6 segment identifiers)' }, // RFC 9602
  { address: 'fc00::', prefix: 7, family: 'ipv6', reason: 'unique-local' }, // RFC 4193
  { address: 'fe80::', prefix: 10, family: 'ipv6', reason: 'link-local' }, // RFC 4291
  { address: 'fec0::', prefix: 10, family: 'ipv6', reason: 'site-local' }, // RFC 3879
  { address: 'ff00::', prefix: 8, family: 'ipv6', reason: 'multicast' }, // RFC 4291
  // Everything else outside 2000::/3 is reserved by the IETF (RFC 4291
  // section 2.4, IANA IPv6 Address Space); the embedding forms inside ::/8
  // are judged by their IPv4 address before these are consulted.
  { address: '::', prefix: 3, family: 'ipv6', reason: 'reserved (not global unicast)' },
  { address: '4000::', prefix: 2, family: 'ipv6', reason: 'reserved (not global unicast)' },
  { address: '8000::', prefix: 1, family: 'ipv6', reason: 'reserved (not global unicast)' },
];

/** Error code of a connection refused by the policy. */
export const TARGET_DENIED = 'MEMBRANE_TARGET_DENIED';

export class TargetDeniedError extends Error {
  readonly code = TARGET_DENIED;
}

export class TargetPolicy {
  /**
   * Every denied range of a family in one list, for the common check; per
   * range, to name the reason. Kept apart by family because a BlockList
   * matches an IPv4 address against IPv6 ranges as ::ffff:a.b.c.d.
   */
  readonly #deniedAll = { ipv4: new BlockList(), ipv6: new BlockList() };
  readonly #denied: { list: BlockList; family: 'ipv4' | 'ipv6'; reason: string }[];
  readonly #allowed = new BlockList();
  readonly #allowedHosts: ReadonlySet<string>;

  /** `allow`: CIDRs (`10.0.0.0/8`), addresses and host names allowed anyway. */
  constructor(allow: readonly string[] = []) {
    this.#denied = DENIED.map((range) => {
      const list = new BlockList();
      list.addSubnet(range.address, range.prefix, range.family);
      this.#deniedAll[range.family].addSubnet(range.address, range.prefix, range.family);
      return { list, family: range.family, reason: range.reason };
    });
    const hosts = new Set<string>();
    for (const entry of allow) {
      const [address, prefix] = entry.split('/');
      const family = isIP(address!);
      if (family === 0) hosts.add(entry.toLowerCase().replace(/\.$/, ''));
      else this.#allowed.addSubnet(address!, prefix === undefined ? (family === 4 ? 32 : 128) : Number(prefix), family === 4 ? 'ipv4' : 'ipv6');
    }
    this.#allowedHosts = hosts;
  }

  /** True when the host name is on the allow list (its addresses are then not checked). */
  allowsHost(hostname: string): boolean {
    return this.#allowedHosts.has(hostname.toLowerCase().replace(/\.$/, ''));
  }

  /** Why an address is refused (e.g. "loopback"), or undefined when it is allowed. */
  refusal(address: string): string | undefined {
    const family = isIP(address);
    if (family === 0) return 'not an IP address';
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (this.#allowed.check(address, type)) return undefined;
    const embedded = family === 6 ? embeddedIpv4(address) : undefined;
    if (embedded !== undefined) {
      // Judged by the IPv4 address alone (the embedding prefixes themselves lie outside 2000::/3).
      const reason = this.refusal(embedded);
      return reason === undefined ? undefined : `${reason}, inside an IPv6 address`;
    }
    if (!this.#deniedAll[type].check(address, type)) return undefined;
    return this.#denied.find((range) => range.family === type && range.list.check(address, type))?.reason;
  }

  /**
   * A `lookup` for net/tls connect options: resolves as dns.lookup does,
   * then fails with TargetDeniedError if any address is refused.
   */
  lookup(): LookupFunction {
    return (hostname, options: LookupOptions, callback) => {
      dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
        if (error) return callback(error, '', 0);
        if (!this.allowsHost(hostname)) {
          for (const { address } of addresses) {
            const reason = this.refusal(address);
            if (reason !== undefined) return callback(new TargetDeniedError(`the target's address is ${reason}`), '', 0);
          }
        }
        if (options.all === true) return (callback as (error: null, addresses: LookupAddress[]) => void)(null, addresses);
        return callback(null, addresses[0]!.address, addresses[0]!.family);
      });
    };
  }
}

/**
 * The IPv4 address inside an IPv6 address of a form that embeds one:
 * IPv4-mapped ::ffff:a.b.c.d (::ffff:0:0/96, RFC 4291), IPv4-translated
 * ::ffff:0:a.b.c.d (::ffff:0:0:0/96, RFC 2765), IPv4-compatible ::a.b.c.d
 * (::/96, deprecated by RFC 4291; :: and ::1 themselves excepted), NAT64
 * with the well-known prefix (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16,
 * RFC 3056).
 */
function embeddedIpv4(address: string): string | undefined {
  const words = expandIpv6(address);
  if (words === undefined) return undefined;
  const v4 = (high: number, low: number): string => `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  const zero = (from: number, to: number): boolean => words.slice(from, to).every((word) => word === 0);
  if (zero(0, 5) && words[5] === 0xffff) return v4(words[6]!, words[7]!);
  if (zero(0, 4) && words[4] === 0xffff && words[5] === 0) return v4(words[6]!, words[7]!);
  if (zero(0, 6) && (words[6] !== 0 || words[7]! > 1)) return v4(words[6]!, words[7]!);
  if (words[0] === 0x64 && words[1] === 0xff9b && zero(2, 6)) return v4(words[6]!, words[7]!);
  if (words[0] === 0x2002) return v4(words[1]!, words[2]!);
  return undefined;
}

/** The eight 16-bit words of an IPv6 address (which may end in dotted IPv4). */
function expandIpv6(address: string): number[] | undefined {
  let text = address.split('%')[0]!;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const parts = dotted[1]!.split('.').map(Number);
    text = text.slice(0, -dotted[1]!.length) + `${((parts[0]! << 8) | parts[1]!).toString(16)}:${((parts[2]! << 8) | parts[3]!).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const missing = 8 - left.length - right.length;
  if (tail === undefined ? missing !== 0 : missing < 0) return undefined;
  return [...left, ...Array<string>(tail === undefined ? 0 : missing).fill('0'), ...right].map((word) => parseInt(word, 16));
}
