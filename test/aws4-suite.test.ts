/**
 * AWS's own Signature Version 4 test suite (../shared/conformance), all 31
 * cases, through Membrane's signer: the canonical request, string to sign
 * and Authorization header must each match AWS's files exactly.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { deriveSigningKey, sha256Hex, signAws4 } from '../src/signing/aws4.js';

// A copy of ../shared/conformance/aws-sigv4-testsuite (see its SOURCE.md), so a clean clone is self-contained.
const SUITE = fileURLToPath(new URL('../../test/fixtures/aws-sigv4-testsuite/', import.meta.url));
const CREDENTIALS = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', region: 'us-east-1', service: 'service' };

/** Every case directory: one holding NAME.req for its own NAME. */
function cases(dir: string, prefix = ''): { name: string; dir: string }[] {
  const found: { name: string; dir: string }[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry);
    if (!statSync(path).isDirectory()) continue;
    try {
      statSync(join(path, `${entry}.req`));
      found.push({ name: `${prefix}${entry}`, dir: path });
    } catch {
      found.push(...cases(path, `${prefix}${entry}/`));
    }
  }
  return found;
}

interface ParsedRequest {
  method: string;
  path: string;
  query: string;
  headers: [string, string][];
  body: string;
}

/** Parses a suite `.req` file: request line, headers (continuation lines are further values), body. */
function parseRequest(text: string): ParsedRequest {
  const lines = text.split('\n');
  const requestLine = lines.shift()!;
  const method = requestLine.slice(0, requestLine.indexOf(' '));
  const target = requestLine.slice(method.length + 1, requestLine.lastIndexOf(' HTTP/'));
  const headers: [string, string][] = [];
  while (lines.length > 0 && lines[0] !== '') {
    const line = lines.shift()!;
    if (/^\s/.test(line)) headers.push([headers.at(-1)![0], line.trim()]);
    else headers.push([line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1)]);
  }
  lines.shift();
  const mark = target.indexOf('?');
  return {
    method,
    path: mark === -1 ? target : target.slice(0, mark),
    query: mark === -1 ? '' : target.slice(mark + 1),
    headers,
    body: lines.join('\n'),
  };
}

const all = cases(SUITE);

test('the suite has its 31 cases', () => {
  assert.equal(all.length, 31);
});

for (const { name, dir } of all) {
  test(`AWS SigV4 suite: ${name}`, () => {
    const base = join(dir, name.split('/').pop()!);
    const request = parseRequest(readFileSync(`${base}.req`, 'utf8'));
    const amzDate = request.headers.find(([header]) => header.toLowerCase() === 'x-amz-date')![1];
    const result = signAws4({
      ...request,
      payloadHash: sha256Hex(request.body),
      amzDate,
      accessKeyId: CREDENTIALS.accessKeyId,
      region: CREDENTIALS.region,
      service: CREDENTIALS.service,
      signingKey: deriveSigningKey(CREDENTIALS.secretAccessKey, amzDate.slice(0, 8), CREDENTIALS.region, CREDENTIALS.service),
    });
    assert.equal(result.canonicalRequest, readFileSync(`${base}.creq`, 'utf8'), 'canonical request');
    assert.equal(result.stringToSign, readFileSync(`${base}.sts`, 'utf8'), 'string to sign');
    assert.equal(result.authorization, readFileSync(`${base}.authz`, 'utf8'), 'Authorization');
  });
}
