/**
 * Budgets under concurrency, with arbitrary request bodies (issue 12, item 8). The README's
 * promise, made precise: a request is admitted only while settled usage plus the estimates of
 * the requests in flight plus its own estimate fit the budget, and each is then charged its real
 * count. So the total can pass the budget only by what requests cost beyond their estimates — at
 * most the sum of those excesses over the requests in flight when the last one was admitted (one
 * request's, when requests do not overlap), and not at all when no request costs more than its
 * estimate. The estimate (limits/estimate.ts) covers the whole body, whatever member holds the
 * prompt.
 *
 * Run against the memory limiter with fast-check choosing the interleaving of admits and settles,
 * and against the Redis limiter with the admits really concurrent.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { estimateTokens } from '../../src/limits/estimate.ts';
import type { Limiter, Ticket } from '../../src/limits/index.ts';
import { createMemoryLimiter } from '../../src/limits/memory.ts';
import { RedisLimiter } from '../../src/limits/redis.ts';
import { subject } from '../support/limits.ts';
import { cleanup, redisOrSkip, testClient, testPrefix } from '../support/redis.ts';

const BUDGET = 20_000;
const NOW = Date.UTC(2026, 11, 7, 12);
const store = { tokensUsed: async () => 0 };

/** Words, as the upstream stub counts tokens: message contents and tool definitions. */
function words(text: string): number {
  return text.split(/\s+/).filter((w) => w.length > 0).length;
}

const text = fc.oneof(
  fc.string({ maxLength: 400 }),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.array(fc.constantFrom('a', 'word', 'x y', '日本', ' '), { maxLength: 300 }).map((w) => w.join(' ')),
);

/** A chat body: the prompt may sit in messages, in tools, or in members the gateway knows nothing of. */
const body = fc.record(
  {
    model: fc.constant('mistral-small-latest'),
    messages: fc.array(fc.record({ role: fc.constant('user'), content: text }), {
      minLength: 1,
      maxLength: 4,
    }),
    tools: fc.array(
      fc.record({
        type: fc.constant('function'),
        function: fc.record({ name: fc.constant('f'), description: text }),
      }),
      { maxLength: 3 },
    ),
    documents: fc.array(text, { maxLength: 3 }),
    max_tokens: fc.integer({ min: 1, max: 3000 }),
    n: fc.integer({ min: 1, max: 3 }),
  },
  { requiredKeys: ['model', 'messages'] },
);

interface Request {
  estimate: number;
  actual: number;
}

/** A request of this body: its estimate as the gateway makes it, and what the provider counts. */
const request = fc
  .tuple(body, fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 0, max: 3000 }))
  .map(([b, share, unbounded]): Request => {
    const estimate = estimateTokens(b, 'chat', Buffer.byteLength(JSON.stringify(b)));
    let prompt = 0;
    for (const m of b.messages) prompt += words(m.content);
    if (b.tools) prompt += words(JSON.stringify(b.tools));
    for (const d of b.documents ?? []) prompt += words(d);
    // The reply is at most max_tokens × n when the request sets it (the tests' bodies always do,
    // but a provider may still differ from the model here: `unbounded` lets it).
    const completion = share < 0.9 ? Math.floor(share * (b.max_tokens ?? 1024) * (b.n ?? 1)) : unbounded;
    return { estimate, actual: prompt + completion };
  });

/** What the budget may be passed by: the excesses of the requests in flight at the last admission. */
function allowance(inFlightAtLastAdmission: readonly Request[]): number {
  return inFlightAtLastAdmission.reduce((sum, r) => sum + Math.max(0, r.actual - r.estimate), 0);
}

async function admit(limiter: Limiter, r: Request, keyId: string): Promise<Ticket | undefined> {
  const pending = limiter.admit(subject({ keyId, keyBudget: { day: BUDGET } }), r.estimate, NOW);
  const admission = pending instanceof Promise ? await pending : pending;
  return admission.ok ? admission.ticket : undefined;
}

test('memory limiter: any interleaving of admits and settles keeps the budget within the bound', async () => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(request, { minLength: 1, maxLength: 40 }),
      fc.array(fc.nat(), { minLength: 80, maxLength: 80 }),
      async (requests, schedule) => {
        const limiter = createMemoryLimiter({ store, clock: () => NOW });
        const keyId = `key_${run++}`;
        const inFlight: { r: Request; ticket: Ticket }[] = [];
        let lastAdmissionInFlight: Request[] = [];
        let charged = 0;
        let next = 0;
        for (const pick of schedule) {
          // Each step either admits the next request or settles one in flight, as `pick` says.
          if (next < requests.length && (inFlight.length === 0 || pick % 3 !== 0)) {
            const r = requests[next++]!;
            const ticket = await admit(limiter, r, keyId);
            if (ticket) {
              inFlight.push({ r, ticket });
              lastAdmissionInFlight = inFlight.map((f) => f.r);
            }
          } else if (inFlight.length > 0) {
            const [done] = inFlight.splice(pick % inFlight.length, 1);
            limiter.settle(done!.ticket, done!.r.actual, NOW);
            charged += done!.r.actual;
          }
        }
        for (const done of inFlight.splice(0)) {
          limiter.settle(done.ticket, done.r.actual, NOW);
          charged += done.r.actual;
        }
        limiter.close();
        assert.ok(
          charged <= BUDGET + allowance(lastAdmissionInFlight),
          `charged ${charged} > ${BUDGET} + ${allowance(lastAdmissionInFlight)}`,
        );
        if (requests.every((r) => r.actual <= r.estimate)) assert.ok(charged <= BUDGET, `charged ${charged}`);
      },
    ),
    { numRuns: 300 },
  );
});

const redis = testClient();
const prefix = testPrefix();
after(async () => {
  await cleanup(redis, prefix);
  redis.disconnect();
});

test('Redis limiter: concurrent admits with arbitrary bodies keep the budget within the bound', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const limiter = new RedisLimiter({ redis, store, prefix, clock: () => NOW });
  let run = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 30 }), async (requests) => {
        const keyId = `key_redis_${run++}`;
        // Every request is admitted at once, concurrently; all are in flight at the last admission.
        const tickets = await Promise.all(requests.map((r) => admit(limiter, r, keyId)));
        const admitted = requests.filter((_, i) => tickets[i] !== undefined);
        // So the charges (their real counts) pass the budget by the admitted requests' excesses at most.
        const reserved = admitted.reduce((sum, r) => sum + r.estimate, 0);
        assert.ok(reserved <= BUDGET, `reserved ${reserved} of ${BUDGET}`);
        // A refused request did not fit: its estimate is more than what was left even at the end.
        requests.forEach((r, i) => {
          if (tickets[i] === undefined) assert.ok(r.estimate > BUDGET - reserved, `refused ${r.estimate}`);
        });
        tickets.forEach((ticket, i) => {
          if (ticket) limiter.settle(ticket, requests[i]!.actual, NOW);
        });
      }),
      { numRuns: 40 },
    );
  } finally {
    limiter.close();
  }
});
