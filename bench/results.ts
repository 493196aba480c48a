/** Where a benchmark leaves its figures: bench/results/KIND-DATE.json, with the date and the machine. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RESULTS = fileURLToPath(new URL('../../bench/results/', import.meta.url));

/** Writes one result file and prints its path. */
export function writeResults(kind: string, figures: Record<string, unknown>): string {
  mkdirSync(RESULTS, { recursive: true });
  const date = new Date().toISOString();
  const file = join(RESULTS, `${kind}-${date.replace(/[:.]/g, '-')}.json`);
  const machine = { cpus: cpus().length, model: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version };
  writeFileSync(file, JSON.stringify({ date, machine, ...figures }, null, 2));
  console.log(`\nwritten to ${file}`);
  return file;
}
