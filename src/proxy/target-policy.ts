/**
 * Which addresses targets may have (SSRF defence).
 *
 * By default a target may not be on loopback, private (RFC 1918),
 * link-local (including the 169.254.169.254 metadata service), CGNAT,
 * IPv6 unique-local or link-local, unspecified, multicast, reserved or
 * broadcast addresses, nor on an IPv6 form that embeds such an IPv4
 * address (IPv4-mapped, NAT64, 6to4). The operator's allow list (CIDRs and
 * host names) overrides this.
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

const DENIED: readonly Range[] = [
  { address: '0.0.0.0', prefix: 8, family: 'ipv4', reason: 'unspecified' },
  { address: '127.0.0.0', prefix: 8, family: 'ipv4', reason: 'loopback' },
  { address: '10.0.0.0', prefix: 8, family: 'ipv4', reason: 'private' },
  { address: '172.16.0.0', prefix: 12, family: 'ipv4', reason: 'private' },
  { address: '192.168.0.0', prefix: 16, family: 'ipv4', reason: 'private' },
  { address: '169.254.0.0', prefix: 16, family: 'ipv4', reason: 'link-local (cloud metadata)' },
  { address: '100.64.0.0', prefix: 10, family: 'ipv4', reason: 'carrier-grade NAT' },
  { address: '192.0.0.0', prefix: 24, family: 'ipv4', reason: 'reserved' },
  { address: '198.18.0.0', prefix: 15, family: 'ipv4', reason: 'reserved' },
  { address: '224.0.0.0', prefix: 4, family: 'ipv4', reason: 'multicast' },
  { address: '240.0.0.0', prefix: 4, family: 'ipv4', reason: 'reserved' },
  { address: '::', prefix: 128, family: 'ipv6', reason: 'unspecified' },
  { address: '::1', prefix: 128, family: 'ipv6', reason: 'loopback' },
  { address: 'fc00::', prefix: 7, family: 'ipv6', reason: 'unique-local' },
  { address: 'fe80::', prefix: 10, family: 'ipv6', reason: 'link-local' },
  { address: 'fec0::', prefix: 10, family: 'ipv6', reason: 'site-local' },
  { address: 'ff00::', prefix: 8, family: 'ipv6', reason: 'multicast' },
];

/** Error code of a connection refused by the policy. */
export const TARGET_DENIED = 'MEMBRANE_TARGET_DENIED';

export class TargetDeniedError extends Error {
  readonly code = TARGET_DENIED;
}

export class TargetPolicy {
  /** Every denied range in one list, for the common check; per range, to name the reason. */
  readonly #deniedAll = new BlockList();
  readonly #denied: { list: BlockList; reason: string }[];
  readonly #allowed = new BlockList();
  readonly #allowedHosts: ReadonlySet<string>;

  /** `allow`: CIDRs (`10.0.0.0/8`), addresses and host names allowed anyway. */
  constructor(allow: readonly string[] = []) {
    this.#denied = DENIED.map((range) => {
      const list = new BlockList();
      list.addSubnet(range.address, range.prefix, range.family);
      this.#deniedAll.addSubnet(range.address, range.prefix, range.family);
      return { list, reason: range.reason };
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
      if (this.#allowed.check(embedded, 'ipv4')) return undefined;
      const reason = this.refusal(embedded);
      if (reason !== undefined) return `${reason}, inside an IPv6 address`;
    }
    if (!this.#deniedAll.check(address, type)) return undefined;
    return this.#denied.find(({ list }) => list.check(address, type))?.reason;
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

/** The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address. */
function embeddedIpv4(address: string): string | undefined {
  const words = expandIpv6(address);
  if (words === undefined) return undefined;
  const v4 = (high: number, low: number): string => `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  const zero = (from: number, to: number): boolean => words.slice(from, to).every((word) => word === 0);
  if (zero(0, 5) && words[5] === 0xffff) return v4(words[6]!, words[7]!);
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
