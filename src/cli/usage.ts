/** `keygate usage`: usage reports, from the data directory or through a gateway's API. */
import type { Command } from 'commander';
import { compileModelPattern } from '../auth/policy.ts';
import { isUsageGroup, USAGE_GROUPS, type UsageGroup } from '../store/types.ts';
import type { UsageRowView } from '../views.ts';
import { withBackend } from './backend.ts';
import { addTargetOptions, print, printJson, type TargetOptions, UserError } from './common.ts';
import { table } from './format.ts';
import { duration } from './parse.ts';

interface UsageOptions extends TargetOptions {
  key?: string;
  workspace?: string;
  model?: string;
  endpoint?: string;
  since?: string;
  from?: string;
  to?: string;
  by?: string;
  json?: boolean;
}

/** A date (its UTC midnight) or a time with its offset, as epoch ms; the same forms as the API. */
export function instant(option: string, value: string): number {
  const text = value.trim();
  const form = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/i;
  const ms = form.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(ms)) {
    throw new UserError(
      `${option} takes a date (2026-01-31, UTC) or a time with its offset (2026-01-31T09:00:00Z), not "${value}"`,
      2,
    );
  }
  return ms;
}

/** The table's first columns: the group (and the name of a key or workspace). */
const GROUP_COLUMNS: Record<UsageGroup, { headers: string[]; cells: (r: UsageRowView) => string[] }> = {
  key: { headers: ['KEY', 'NAME'], cells: (r) => [r.key_id ?? '-', r.name ?? ''] },
  model: { headers: ['MODEL'], cells: (r) => [r.model ?? '-'] },
  endpoint: { headers: ['ENDPOINT'], cells: (r) => [r.endpoint ?? '-'] },
  workspace: { headers: ['WORKSPACE', 'NAME'], cells: (r) => [r.workspace_id ?? '-', r.name ?? ''] },
  hour: { headers: ['HOUR'], cells: (r) => [r.hour ?? ''] },
  day: { headers: ['DAY'], cells: (r) => [r.day ?? ''] },
};

function ms(value: number | null): string {
  return value === null ? '-' : String(Math.round(value));
}

export function registerUsageCommand(program: Command): void {
  addTargetOptions(
    program
      .command('usage')
      .description(
        'usage report: requests, errors, tokens, latency (p50, p95) and cost, per key (default), model, endpoint, workspace, hour or day',
      )
      .option('--key <id>', 'only this key')
      .option('--workspace <id>', 'only this workspace')
      .option('--model <model>', 'only this model, or the models matching a pattern such as mistral-small-*')
      .option('--endpoint <path>', 'only this endpoint, e.g. /v1/chat/completions')
      .option('--since <duration>', 'only the last period, e.g. 7d, 24h')
      .option(
        '--from <time>',
        'only from this date or time (ISO 8601, e.g. 2026-01-01 or 2026-01-01T09:00:00Z)',
      )
      .option('--to <time>', 'only before this date or time')
      .option('--by <group>', `one row per ${USAGE_GROUPS.join(', ')} (hours and days are UTC)`, 'key')
      .option('--json', 'print JSON'),
  ).action(async (options: UsageOptions) => {
    const by = options.by ?? 'key';
    if (!isUsageGroup(by)) {
      throw new UserError(`--by takes one of ${USAGE_GROUPS.join(', ')}, not "${by}"`, 2);
    }
    if (options.since !== undefined && options.from !== undefined) {
      throw new UserError('--since and --from both set where the report starts: give one of them', 2);
    }
    const from =
      options.since !== undefined
        ? Date.now() - duration('--since', options.since)
        : options.from === undefined
          ? undefined
          : instant('--from', options.from);
    const to = options.to === undefined ? undefined : instant('--to', options.to);
    if (from !== undefined && to !== undefined && from >= to) {
      throw new UserError('--to must be later than where the report starts (--from or --since)', 2);
    }
    if (options.model !== undefined) {
      try {
        compileModelPattern(options.model);
      } catch (error) {
        throw new UserError(`--model: ${(error as Error).message}`, 2);
      }
    }
    await withBackend(options, async (backend) => {
      // An id that names nothing would give an empty report, as if the key had not been used.
      if (options.key !== undefined) await backend.getKey(options.key);
      if (options.workspace !== undefined) await backend.getWorkspace(options.workspace);
      const report = await backend.usage({
        by,
        keyId: options.key,
        workspaceId: options.workspace,
        model: options.model,
        endpoint: options.endpoint,
        from,
        to,
      });
      const rows = report.data;
      if (options.json) {
        printJson(rows);
        return;
      }
      if (rows.length === 0) {
        print('No usage recorded for this report.');
        return;
      }
      // Cost only when there is one: a price table that covers some of the tokens.
      const priced = rows.some((r) => r.cost !== null && r.total_tokens > 0);
      const group = GROUP_COLUMNS[by];
      const headers = [
        ...group.headers,
        'REQUESTS',
        'ERRORS',
        'PROMPT',
        'COMPLETION',
        'TOTAL',
        'P50 MS',
        'P95 MS',
        ...(priced ? [`COST ${report.currency}`] : []),
      ];
      print(
        table(
          headers,
          rows.map((r) => [
            ...group.cells(r),
            String(r.requests),
            String(r.errors),
            String(r.prompt_tokens),
            String(r.completion_tokens),
            String(r.total_tokens),
            ms(r.latency_p50_ms),
            ms(r.latency_p95_ms),
            ...(priced ? [r.cost === null ? '-' : r.cost.toFixed(6)] : []),
          ]),
        ),
      );
    });
  });
}
