/**
 * Fair shares of a bounded resource among tenants and capabilities.
 *
 * Every resource a holder can make the server hold (invocations in flight,
 * connections to one target, bytes of request bodies held in memory) has a
 * total bound, and within it no tenant may hold more than its share and no
 * capability more than its own (fractions of the total, at least one unit
 * each). So whatever one tenant's holders do, the rest of the total stays
 * free for the others; and whatever one capability's holders do, the rest
 * of their tenant's share stays free for its other capabilities.
 *
 * A holder is counted by the tenant of the capability presented and by
 * the capability at the root of its chain: a re-export counts against its
 * original export's share, so that re-exporting a capability into other
 * tenants multiplies nothing (a control-plane capability is its own root).
 */

export interface Holder {
  tenant: number;
  capability: number;
}

/** Fractions of each bound one tenant, and one capability, may hold (0 < share ≤ 1). */
export interface ShareFractions {
  tenant: number;
  capability: number;
}

/** Which bound refused: the total, the tenant's share, or the capability's. */
export type Refusal = 'total' | 'tenant' | 'capability';

/** The part of `total` a share of `fraction` allows: at least 1. */
export function shareOf(total: number, fraction: number): number {
  return Math.max(1, Math.floor(total * fraction));
}

/** Amounts held per key; a key holding nothing takes no memory. */
class Tally {
  readonly #held = new Map<number, number>();

  get(key: number): number {
    return this.#held.get(key) ?? 0;
  }

  add(key: number, amount: number): void {
    const next = this.get(key) + amount;
    if (next <= 0) this.#held.delete(key);
    else this.#held.set(key, next);
  }

  get size(): number {
    return this.#held.size;
  }
}

/**
 * A bound with fair shares that refuses at once when taking would exceed
 * it (the in-flight bound, the buffered-body budget).
 */
export class SharedLimit {
  readonly total: number;
  readonly perTenant: number;
  readonly perCapability: number;
  #used = 0;
  readonly #tenants = new Tally();
  readonly #capabilities = new Tally();

  constructor(total: number, fractions: ShareFractions) {
    this.total = total;
    this.perTenant = shareOf(total, fractions.tenant);
    this.perCapability = shareOf(total, fractions.capability);
  }

  /** How much is held now, in all. */
  get used(): number {
    return this.#used;
  }

  /** Takes `amount` for `holder` if the total, its tenant's share and its capability's allow; otherwise takes nothing and names the broadest that refused. */
  take(holder: Holder, amount = 1): Refusal | undefined {
    if (this.#used + amount > this.total) return 'total';
    if (this.#tenants.get(holder.tenant) + amount > this.perTenant) return 'tenant';
    if (this.#capabilities.get(holder.capability) + amount > this.perCapability) return 'capability';
    this.#used += amount;
    this.#tenants.add(holder.tenant, amount);
    this.#capabilities.add(holder.capability, amount);
    return undefined;
  }

  /** Gives back what `take` took. */
  release(holder: Holder, amount = 1): void {
    this.#used -= amount;
    this.#tenants.add(holder.tenant, -amount);
    this.#capabilities.add(holder.capability, -amount);
  }

  /** Number of tenants and capabilities holding something (for tests: nothing is left behind). */
  get holders(): number {
    return this.#tenants.size + this.#capabilities.size;
  }
}
