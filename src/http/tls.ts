import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { writePrivateFile } from '../config/secrets.ts';

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
    createSecureContext({ cert, key });
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
