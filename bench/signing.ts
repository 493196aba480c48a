/**
 * Signatures per second: Membrane's AWS4-HMAC-SHA256 and CAP1-HMAC-SHA512
 * signers, and AWS's @smithy/signature-v4 on the same request (a Lambda
 * invoke with a 1 KiB JSON body). Rounds are interleaved (A B C A B C …) so
 * that drift in the machine hits all alike; each figure is the median of
 * the rounds. Prints a table and writes bench/results/signing-*.json.
 * Run: npm run bench:signing
 * Options: --rounds N (5), --round-ms MS (1000).
 */
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { performance } from 'node:perf_hooks';
import { aws4 } from '../src/signing/aws4.js';
import { cap1 } from '../src/signing/cap1.js';
import type { OutgoingRequest } from '../src/signing/signer.js';
import { median } from './load.js';
import { commandLine, positiveOption } from './options.js';
import { writeResults } from './results.js';

const { values } = commandLine({
  options: {
    rounds: { type: 'string', default: '5' },
    'round-ms': { type: 'string', default: '1000' },
  },
});
const ROUNDS = positiveOption('rounds', values.rounds);
const ROUND_MS = positiveOption('round-ms', values['round-ms']);

const body = Buffer.from(JSON.stringify({ data: 'x'.repeat(1000) }));
const request: OutgoingRequest = {
  method: 'POST',
  host: 'lambda.us-east-1.amazonaws.com',
  path: '/2015-03-31/functions/partner-report/invocations',
  query: '',
  headers: ['content-type', 'application/json', 'x-amz-invocation-type', 'RequestResponse', 'user-agent', 'bench'],
  body,
};
const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const aws4Signer = aws4.createSigner({ awsAccessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey, region: 'us-east-1', service: 'lambda' });
const cap1Signer = cap1.createSigner({ key: 'bXlTZWNyZXQ', keyId: 'someId' });
const smithy = new SignatureV4({ credentials, region: 'us-east-1', service: 'lambda', sha256: Hash.bind(null, 'sha256'), applyChecksum: false });
const smithyRequest = (): HttpRequest =>
  new HttpRequest({
    method: request.method,
    protocol: 'https:',
    hostname: request.host,
    path: request.path,
    headers: { host: request.host, 'content-type': 'application/json', 'x-amz-invocation-type': 'RequestResponse' },
    body,
  });

type Subject = { name: string; run: () => unknown };
const subjects: Subject[] = [
  { name: 'membrane aws4-hmac-sha256', run: () => aws4Signer.sign(request, new Date()) },
  { name: 'membrane cap1-hmac-sha512', run: () => cap1Signer.sign(request, new Date()) },
  { name: '@smithy/signature-v4', run: () => smithy.sign(smithyRequest(), { signingDate: new Date() }) },
];

async function round(subject: Subject): Promise<number> {
  let count = 0;
  const start = performance.now();
  const end = start + ROUND_MS;
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) await subject.run();
    count += 100;
  }
  return count / ((performance.now() - start) / 1000);
}

async function main(): Promise<void> {
  for (const subject of subjects) await round({ ...subject, run: subject.run }); // warm-up
  const results = new Map<string, number[]>(subjects.map((subject) => [subject.name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const subject of subjects) results.get(subject.name)!.push(await round(subject));
  }
  const baseline = median(results.get('@smithy/signature-v4')!);
  const rows = [...results].map(([signer, rates]) => ({ signer, signaturesPerSecond: Math.round(median(rates)), vsSmithy: median(rates) / baseline, rounds: rates.map(Math.round) }));
  console.log(`signatures per second, median of ${ROUNDS} interleaved rounds of ${ROUND_MS} ms (node ${process.version})`);
  console.log(`${'signer'.padEnd(28)} ${'sig/s'.padStart(10)}  vs @smithy/signature-v4`);
  for (const row of rows) console.log(`${row.signer.padEnd(28)} ${row.signaturesPerSecond.toString().padStart(10)}  ${row.vsSmithy.toFixed(2)}×`);
  writeResults('signing', { rounds: ROUNDS, roundMs: ROUND_MS, rows });
}

await main();
