/** UTC calendar periods of budgets. */

const DAY_MS = 86_400_000;

export interface Periods {
  /** Start of the UTC day holding `now` (epoch ms). */
  dayStart: number;
  /** The next UTC midnight. */
  dayEnd: number;
  /** Midnight UTC on the first of the month holding `now`. */
  monthStart: number;
  /** Midnight UTC on the first of the next month. */
  monthEnd: number;
}

export function utcPeriods(now: number): Periods {
  const dayStart = Math.floor(now / DAY_MS) * DAY_MS;
  const date = new Date(dayStart);
  const year = date.getUTCFullYear();
  const month = date.getUTCMonth();
  return {
    dayStart,
    dayEnd: dayStart + DAY_MS,
    monthStart: Date.UTC(year, month, 1),
    monthEnd: Date.UTC(year, month + 1, 1),
  };
}
