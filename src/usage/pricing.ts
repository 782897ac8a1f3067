/**
 * Cost of usage from the operator's price table (config `pricing`): prices per million prompt and
 * completion tokens, per model id or pattern (`mistral-small-*`, as in key model allowlists), in
 * one currency. The first entry that matches a model wins; a model no entry matches has no price,
 * and usage of it has no cost (null): Keygate never guesses a price.
 */
import { compileModelPattern } from '../auth/policy.ts';

/** Per million tokens. */
export interface Price {
  prompt: number;
  completion: number;
}

export interface Pricing {
  /** ISO 4217 code, e.g. EUR. */
  currency: string;
  /** Model id or pattern → price, in the order they were given. */
  models: Record<string, Price>;
}

export const DEFAULT_CURRENCY = 'EUR';

export const NO_PRICING: Readonly<Pricing> = Object.freeze({ currency: DEFAULT_CURRENCY, models: {} });

/** Throws (naming the entry) when a model id or pattern of the table is not one. */
export function assertValidPricing(pricing: Pricing): void {
  for (const pattern of Object.keys(pricing.models)) compileModelPattern(pattern);
}

/** The price of a model: the first entry whose id or pattern matches it; undefined: no price. */
export function priceOf(pricing: Pricing, model: string | null): Price | undefined {
  if (model === null || model === '') return undefined;
  for (const [pattern, price] of Object.entries(pricing.models)) {
    if (pattern === model || compileModelPattern(pattern).test(model)) return price;
  }
  return undefined;
}

/** The cost of tokens at a price (per million). */
export function costOf(price: Price, promptTokens: number, completionTokens: number): number {
  return (promptTokens * price.prompt + completionTokens * price.completion) / 1_000_000;
}

/** A cost without the noise of floating-point sums (12 significant digits). */
export function roundCost(cost: number): number {
  return Number(cost.toPrecision(12));
}
