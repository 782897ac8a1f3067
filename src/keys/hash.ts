import { createHmac } from 'node:crypto';

/**
 * The only form in which a key is stored: HMAC-SHA256(pepper, key), hex. Keys are high-entropy,
 * so a keyed fast hash is the right tool (OWASP ASVS 6.5.2); the pepper never enters the store.
 */
export function hashKey(pepper: Buffer, key: string): string {
  return createHmac('sha256', pepper).update(key).digest('hex');
}
