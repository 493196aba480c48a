/**
 * An independent AWS Signature Version 4 check for test targets: recomputes
 * the signature of a received request with AWS's @smithy/signature-v4 and
 * the secret of the access key it names.
 */
import type { IncomingMessage } from 'node:http';
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { startTarget, type ReceivedRequest, type TestTarget } from './target.js';

/** Undefined when the signature is right; otherwise what is wrong. */
export async function checkAws4(req: IncomingMessage, received: ReceivedRequest, secrets: Readonly<Record<string, string>>): Promise<string | undefined> {
  const authorization = String(req.headers.authorization);
  const match = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=[0-9a-f]{64}$/.exec(authorization);
  if (match === null) return `malformed Authorization: ${authorization}`;
  const [, accessKeyId, , region, service, signedHeaders] = match as unknown as string[];
  const secretAccessKey = secrets[accessKeyId!];
  if (secretAccessKey === undefined) return `unknown access key ${accessKeyId}`;
  const headers: Record<string, string> = {};
  for (const name of signedHeaders!.split(';')) {
    const value = req.headers[name];
    if (typeof value !== 'string') return `signed header ${name} missing or repeated`;
    headers[name] = value;
  }
  const url = new URL(req.url!, 'http://target.invalid');
  const query: Record<string, string | string[]> = {};
  for (const piece of url.search.slice(1).split('&')) {
    if (piece === '') continue;
    const equals = piece.indexOf('=');
    const name = decodeURIComponent(equals === -1 ? piece : piece.slice(0, equals));
    const value = decodeURIComponent(equals === -1 ? '' : piece.slice(equals + 1));
    const existing = query[name];
    query[name] = existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value];
  }
  if (service === 's3' && headers['x-amz-content-sha256'] !== received.bodySha256) return 'x-amz-content-sha256 does not match the body';
  const signer = new SignatureV4({
    credentials: { accessKeyId: accessKeyId!, secretAccessKey, sessionToken: headers['x-amz-security-token'] },
    region: region!,
    service: service!,
    sha256: Hash.bind(null, 'sha256'),
    uriEscapePath: service !== 's3',
    applyChecksum: service === 's3',
  });
  const amzDate = headers['x-amz-date']!;
  const signingDate = new Date(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`);
  const signed = await signer.sign(
    new HttpRequest({ method: req.method!, protocol: 'http:', hostname: 'target.invalid', path: url.pathname, query, headers, body: received.body.length === 0 ? undefined : received.body }),
    { signingDate },
  );
  const expected = signed.headers.authorization;
  return expected === authorization ? undefined : `signature mismatch:\n expected ${expected}\n received ${authorization}`;
}


/**
 * A target standing in for an AWS API: 200 with a JSON echo when the
 * signature checks out, 403 with the reason when it does not.
 */
export function startAwsOracleTarget(secrets: Readonly<Record<string, string>>): Promise<TestTarget> {
  return startTarget({
    respond: (req, res, received) => {
      void checkAws4(req, received, secrets).then((problem) => {
        res.writeHead(problem === undefined ? 200 : 403, { 'content-type': 'application/json' });
        res.end(JSON.stringify(problem === undefined ? { ok: true, url: req.url, body: received.body.toString('utf8') } : { ok: false, problem }));
      });
    },
  });
}
