import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';

/** A pepper ready for hashing: turning raw bytes into a KeyObject once saves that work per call. */
export type Pepper = Buffer | KeyObject;

export function pepperKey(pepper: Buffer): KeyObject {
  return createSecretKey(pepper);
}

/**
 * The only form in which a key is stored: HMAC-SHA256(pepper, key), hex. Keys are high-entropy,
 * so a keyed fast hash is the right tool (OWASP ASVS 6.5.2); the pepper never enters the store.
 */
export function hashKey(pepper: Pepper, key: string): string {
  return createHmac('sha256', pepper).update(key).digest('hex');
}
