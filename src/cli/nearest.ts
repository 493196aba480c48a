/**
 * "Did you mean …?" for both command-line tools: the valid word nearest to
 * a mistyped one, by optimal string alignment distance (Levenshtein plus
 * swapped neighbours, so `srve` → `serve` and `prot` → `port` are each one
 * step away).
 */

/** Optimal string alignment distance between two words (insertions, deletions, substitutions, adjacent swaps). */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const columns = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: columns }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < columns; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate nearest to `word`, if one is near enough to be what was
 * meant: at most a third of the word's length away (at least one step), or
 * one of which the word is a prefix (`--allow` → `--allow-targets`).
 * Case is ignored. Ties go to the first candidate.
 */
export function nearest(word: string, candidates: Iterable<string>): string | undefined {
  const typed = word.toLowerCase();
  if (typed === '') return undefined;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(typed, candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  if (best !== undefined && bestDistance <= Math.max(1, Math.floor(typed.length / 3))) return best;
  for (const candidate of candidates) if (typed.length >= 3 && candidate.toLowerCase().startsWith(typed)) return candidate;
  return undefined;
}

/** `; did you mean "X"?` for a message, or nothing when no candidate is near. */
export function didYouMean(word: string, candidates: Iterable<string>, quote: (candidate: string) => string = (candidate) => `"${candidate}"`): string {
  const found = nearest(word, candidates);
  return found === undefined ? '' : `; did you mean ${quote(found)}?`;
}
