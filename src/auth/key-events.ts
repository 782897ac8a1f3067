/**
 * Key-change broadcast over Redis pub/sub, so a revoke on one instance reaches the others' key
 * caches in milliseconds: the instance that changed a key calls `publish([keyId])` after the
 * change is committed, and every instance (itself included) gets `onChange(keyIds)`; wire it to
 * the verifier's `syncChanges()`, which reads the store's change feed at once.
 *
 * Pub/sub delivers at most once: a message is lost when an instance's subscriber connection is
 * down, or when `publish` fails. That is what the change-feed poll is for (`KeyVerifier`, every
 * `auth.changePollMs`, 250 ms by default): it reads every change since its cursor, broadcast or
 * not, so a missed message delays a revoke by at most one poll interval (plus the feed query), and
 * a revoked key is refused everywhere within 1 s either way. After the subscriber reconnects,
 * `onChange([])` is called (messages may have been missed meanwhile: check the feed).
 *
 * The subscriber is a duplicate of the given client, subscribed for as long as the object lives;
 * ioredis reconnects and resubscribes by itself.
 */
import type { Redis } from 'ioredis';
import { Background } from '../util/background.ts';

/** The background task of the subscriber's listeners (util/background.ts). */
export const KEY_EVENTS_TASK = 'key_events';

export interface KeyEventsOptions {
  /** A client to publish with; the subscriber connection is a duplicate of it. Not closed here. */
  redis: Redis;
  /** Prefix of the channel (`<prefix>key-events`); `keygate:` by default. */
  prefix?: string;
  /** Keys that changed (empty: unknown, check everything). */
  onChange: (keyIds: readonly string[]) => void;
  /** A publish that failed, a malformed message, a subscriber connection error. */
  onError?: (error: unknown) => void;
  /** Supervises the subscriber's listeners (one of its own, which logs nothing, by default). */
  background?: Background;
}

export class KeyEvents {
  readonly #redis: Redis;
  readonly #subscriber: Redis;
  readonly #channel: string;
  readonly #onChange: (keyIds: readonly string[]) => void;
  readonly #onError: (error: unknown) => void;
  readonly #subscribed: Promise<void>;
  #connections = 0;

  constructor(options: KeyEventsOptions) {
    this.#redis = options.redis;
    this.#channel = `${options.prefix ?? 'keygate:'}key-events`;
    this.#onChange = options.onChange;
    this.#onError = options.onError ?? (() => {});
    // The subscriber waits for its connection instead of failing, and never gives up.
    this.#subscriber = options.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
    // A listener that throws (onChange) is recorded, not thrown into ioredis's event loop.
    const background = options.background ?? new Background();
    const guard = <A extends unknown[]>(listener: (...args: A) => unknown) =>
      background.guard(KEY_EVENTS_TASK, listener);
    // The subscriber's connection errors (one per reconnection attempt while Redis is down) make
    // the task failing until it is ready again: logged once each way, not per attempt.
    this.#subscriber.on(
      'error',
      guard((error: unknown) => {
        background.failed(KEY_EVENTS_TASK, error);
        this.#onError(error);
      }),
    );
    this.#subscriber.on(
      'ready',
      guard(() => {
        background.succeeded(KEY_EVENTS_TASK);
        if (++this.#connections > 1) this.#onChange([]);
      }),
    );
    this.#subscriber.on(
      'message',
      guard((channel: string, message: string) => {
        if (channel === this.#channel) this.#onChange(parse(message, this.#onError));
      }),
    );
    this.#subscribed = this.#subscriber.subscribe(this.#channel).then(() => {});
    this.#subscribed.catch(this.#onError);
  }

  /** Resolves once subscribed (do not hold up a start on it: the poll covers the meantime). */
  ready(): Promise<void> {
    return this.#subscribed;
  }

  /** Tells every instance that these keys changed. Never rejects: returns whether Redis took it. */
  async publish(keyIds: readonly string[]): Promise<boolean> {
    try {
      await this.#redis.publish(this.#channel, JSON.stringify(keyIds));
      return true;
    } catch (error) {
      this.#onError(error);
      return false;
    }
  }

  /** Unsubscribes and closes the subscriber connection. */
  async close(): Promise<void> {
    const subscriber = this.#subscriber;
    if (subscriber.status === 'ready') await subscriber.quit().catch(() => subscriber.disconnect());
    else if (subscriber.status !== 'end') subscriber.disconnect();
  }
}

function parse(message: string, onError: (error: unknown) => void): readonly string[] {
  try {
    const value: unknown = JSON.parse(message);
    if (Array.isArray(value) && value.every((id) => typeof id === 'string')) return value;
  } catch {
    // reported below
  }
  onError(new Error('malformed key-change message'));
  return [];
}
