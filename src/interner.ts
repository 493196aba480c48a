/**
 * Shares equal immutable values among many holders (the prepared targets
 * in the resolution cache), so that a hundred thousand capabilities of one
 * origin hold one origin string, one header list, one TLS config.
 * Bounded: beyond `max` distinct values the oldest is forgotten, which ends
 * its sharing and nothing else.
 */
export class Interner {
  readonly #values = new Map<string, unknown>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  /** The value held for `key`, made by `make` if there is none. Keys of different kinds of value must not collide. */
  get<T>(key: string, make: () => T): T {
    let value = this.#values.get(key) as T | undefined;
    if (value === undefined) {
      value = make();
      this.#values.set(key, value);
      if (this.#values.size > this.#max) this.#values.delete(this.#values.keys().next().value!);
    }
    return value;
  }

  /** The shared copy of a string. */
  string(value: string): string {
    return this.get(`s${value}`, () => value);
  }
}
