import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContextOptions, type SecureVersion } from 'node:tls';
import { writePrivateFile } from '../config/secrets.ts';

/**
 * The gateway's TLS parameters, whatever the certificate (the generated EC P-256 one, or the
 * operator's RSA or ECDSA one). TLS 1.2 offers only forward-secret AEAD suites: ECDHE with
 * AES-GCM or ChaCha20-Poly1305. Node's default list also offers the CBC suites with HMAC-SHA1 and
 * HMAC-SHA256/384 (`HIGH` and the `-SHA`, `-SHA256` names), which have the Lucky13 family of
 * padding-oracle attacks behind them, and the DHE suites (slow, and only as strong as their
 * group). TLS 1.3 suites are all AEAD: Node's three, named here because a `ciphers` string
 * without TLS 1.3 names would switch TLS 1.3 off. Clients old enough to need CBC (before 2013:
 * Android 4.3, IE 10, Java 7) cannot connect; every current client, SDK and load balancer can.
 *
 * `honorCipherOrder`: the server's order wins (the list is in order of preference, AES-GCM first:
 * it has hardware support almost everywhere). The key-exchange groups stay Node's `auto`
 * (X25519 and the NIST curves, and the post-quantum hybrid X25519MLKEM768 of OpenSSL 3.5): a
 * fixed list would only drop some of them.
 */
export const TLS_SERVER_OPTIONS = {
  minVersion: 'TLSv1.2',
  ciphers: [
    'TLS_AES_128_GCM_SHA256',
    'TLS_AES_256_GCM_SHA384',
    'TLS_CHACHA20_POLY1305_SHA256',
    'ECDHE-ECDSA-AES128-GCM-SHA256',
    'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
    'ECDHE-RSA-CHACHA20-POLY1305',
  ].join(':'),
  honorCipherOrder: true,
} as const satisfies SecureContextOptions & { minVersion: SecureVersion };

export interface TlsMaterial {
  cert: string;
  key: string;
  /** SHA-256 fingerprint, colon-separated hex, as browsers and `openssl x509 -fingerprint` show it. */
  fingerprint: string;
  certPath: string;
  generated: boolean;
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new Error(`cannot read the TLS ${what} at ${path} (${code})`);
  }
}

function validate(cert: string, key: string, certPath: string): string {
  let fingerprint: string;
  try {
    fingerprint = new X509Certificate(cert).fingerprint256;
  } catch {
    throw new Error(`${certPath} is not a PEM certificate`);
  }
  try {
    createSecureContext({ ...TLS_SERVER_OPTIONS, cert, key });
  } catch (error) {
    throw new Error(
      `the TLS key does not load or does not match the certificate (${(error as Error).message})`,
    );
  }
  return fingerprint;
}

/** Loads a certificate the operator supplied with --tls-cert / --tls-key. */
export function loadTls(certPath: string, keyPath: string): TlsMaterial {
  const cert = readPem(certPath, 'certificate');
  const key = readPem(keyPath, 'key');
  return { cert, key, fingerprint: validate(cert, key, certPath), certPath, generated: false };
}

/**
 * Returns the data directory's self-signed certificate, generating it (EC P-256, SANs for
 * localhost, 127.0.0.1 and ::1, plus the bind host) on first start. Files are mode 0600.
 */
export async function ensureSelfSigned(dataDir: string, host: string): Promise<TlsMaterial> {
  const dir = join(dataDir, 'tls');
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  try {
    return loadTls(certPath, keyPath);
  } catch (error) {
    if (!/\(ENOENT\)/.test((error as Error).message)) throw error;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] = [
    { type: 2, value: 'localhost' },
    { type: 7, ip: '127.0.0.1' },
    { type: 7, ip: '::1' },
  ];
  const isIp = /^[\d.]+$|:/.test(host);
  if (host !== 'localhost' && host !== '127.0.0.1' && host !== '::1' && host !== '0.0.0.0' && host !== '::') {
    altNames.push(isIp ? { type: 7, ip: host } : { type: 2, value: host });
  }
  const notBeforeDate = new Date(Date.now() - 60_000);
  // Loaded only when a certificate must be generated (once per data directory).
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: 'keygate.local' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate: new Date(notBeforeDate.getTime() + 825 * 86_400_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  try {
    writePrivateFile(keyPath, pems.private);
    writePrivateFile(certPath, pems.cert);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return loadTls(certPath, keyPath); // another process generated it at the same moment
  }
  return { ...loadTls(certPath, keyPath), generated: true };
}
