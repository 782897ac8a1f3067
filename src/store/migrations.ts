import { LATENCY_COLUMNS, latencyBucketSql } from '../usage/histogram.ts';

/** The latency histogram columns of `usage_hourly` (src/usage/histogram.ts: fixed, never changed). */
const LATENCY_COLUMN_DEFS = LATENCY_COLUMNS.map((c) => `${c} INTEGER NOT NULL DEFAULT 0`).join(',\n        ');
const LATENCY_BACKFILL = LATENCY_COLUMNS.map(
  (_c, i) => `SUM(CASE WHEN bucket = ${i} THEN 1 ELSE 0 END)`,
).join(',\n          ');

/**
 * Versioned schema migrations. Each version has one statement list per dialect; the PostgreSQL
 * list must be kept in lockstep with the SQLite one (same tables, columns and meaning).
 */
export interface Migration {
  version: number;
  name: string;
  sqlite: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'keys, key hashes, key change feed, usage records',
    sqlite: `
      CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
      );
      INSERT INTO workspaces (id, name, created_at) VALUES ('ws_default', 'Default', CAST(unixepoch('subsec') * 1000 AS INTEGER));

      CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        name TEXT NOT NULL,
        start TEXT NOT NULL,
        last4 TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT,
        expires_at INTEGER,
        revoked_at INTEGER,
        last_used_at INTEGER,
        last_used_ip TEXT
      );
      CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);

      -- One row per secret that opens a key (several during a rotation's grace period).
      CREATE TABLE api_key_hashes (
        hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys(id),
        created_at INTEGER NOT NULL,
        valid_until INTEGER
      );
      CREATE INDEX api_key_hashes_key ON api_key_hashes (key_id);

      -- Change feed read by every running gateway to invalidate its key cache.
      CREATE TABLE key_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at INTEGER NOT NULL
      );

      CREATE TABLE usage_records (
        id TEXT PRIMARY KEY,
        time INTEGER NOT NULL,
        key_id TEXT,
        workspace_id TEXT,
        model TEXT,
        endpoint TEXT NOT NULL,
        status INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        client_ip TEXT NOT NULL
      );
      CREATE INDEX usage_records_key_time ON usage_records (key_id, time);
      CREATE INDEX usage_records_time ON usage_records (time);
    `,
  },
  {
    version: 2,
    name: 'key policies (scopes, models, IPs, limits, budgets), workspace policy, rotation, audit log, users',
    sqlite: `
      ALTER TABLE workspaces ADD COLUMN max_key_lifetime_ms INTEGER;
      ALTER TABLE workspaces ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE workspaces ADD COLUMN budget_day INTEGER;
      ALTER TABLE workspaces ADD COLUMN budget_month INTEGER;

      ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '["chat","fim","embeddings","models"]';
      ALTER TABLE api_keys ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
      ALTER TABLE api_keys ADD COLUMN tpm INTEGER;
      ALTER TABLE api_keys ADD COLUMN concurrency INTEGER;
      ALTER TABLE api_keys ADD COLUMN budget_day INTEGER;
      ALTER TABLE api_keys ADD COLUMN budget_month INTEGER;
      ALTER TABLE api_keys ADD COLUMN updated_at INTEGER;
      ALTER TABLE api_keys ADD COLUMN rotated_at INTEGER;
      -- Set once, when the expiry is recorded in the audit log.
      ALTER TABLE api_keys ADD COLUMN expiry_recorded_at INTEGER;
      CREATE INDEX api_keys_expiry ON api_keys (expires_at) WHERE expiry_recorded_at IS NULL AND expires_at IS NOT NULL;
      -- One row per reminder sent before a key's expiry (e.g. 14 and 3 days before), so each goes out once.
      CREATE TABLE key_expiry_reminders (
        key_id TEXT NOT NULL REFERENCES api_keys(id),
        expires_at INTEGER NOT NULL,
        threshold_ms INTEGER NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (key_id, expires_at, threshold_ms)
      );

      -- Append-only: the store never updates or deletes a row of it.
      CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        at INTEGER NOT NULL,
        workspace_id TEXT,
        actor_type TEXT NOT NULL,
        actor_id TEXT,
        actor_ip TEXT,
        action TEXT NOT NULL,
        target_type TEXT NOT NULL,
        target_id TEXT,
        changes TEXT NOT NULL DEFAULT '{}'
      );
      CREATE INDEX audit_events_workspace ON audit_events (workspace_id, seq);
      CREATE INDEX audit_events_target ON audit_events (target_id, seq);
      CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
      CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

      CREATE INDEX usage_records_workspace_time ON usage_records (workspace_id, time);

      CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        disabled_at INTEGER
      );
      CREATE TABLE memberships (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        user_id TEXT NOT NULL REFERENCES users(id),
        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
        created_at INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, user_id)
      );
      CREATE INDEX memberships_user ON memberships (user_id);
    `,
  },
  {
    version: 3,
    name: 'alerts: channels, alerts, deliveries, rule settings, networks seen per key',
    sqlite: `
      CREATE TABLE alert_channels (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        type TEXT NOT NULL CHECK (type IN ('webhook', 'slack', 'email')),
        name TEXT NOT NULL,
        -- The channel's settings (URL, signing secret, SMTP credentials), sealed with the data key.
        config_sealed TEXT NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX alert_channels_workspace ON alert_channels (workspace_id);

      CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        -- What makes two alerts "the same" (kind + key + detail): repeats within the cooldown are folded in.
        fingerprint TEXT NOT NULL,
        key_id TEXT,
        severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
        title TEXT NOT NULL,
        message TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}',
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        occurrences INTEGER NOT NULL DEFAULT 1,
        acknowledged_at INTEGER,
        acknowledged_by TEXT
      );
      CREATE INDEX alerts_workspace_time ON alerts (workspace_id, last_at);
      CREATE INDEX alerts_fingerprint ON alerts (fingerprint, last_at);

      CREATE TABLE alert_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL REFERENCES alerts(id),
        channel_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('sent', 'failed')),
        status INTEGER,
        error TEXT,
        at INTEGER NOT NULL
      );
      CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);

      CREATE TABLE alert_rule_settings (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        kind TEXT NOT NULL,
        settings TEXT NOT NULL,
        PRIMARY KEY (workspace_id, kind)
      );

      -- 1 when the provider reported no usage (a stream cut off by the client) and the counts are
      -- estimated: prompt text / 4 and one completion token per streamed text event delivered.
      ALTER TABLE usage_records ADD COLUMN tokens_estimated INTEGER NOT NULL DEFAULT 0;

      -- Networks (IPv4 /24, IPv6 /48) each key has been used from, for the "new network" rule.
      CREATE TABLE key_networks (
        key_id TEXT NOT NULL,
        network TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        PRIMARY KEY (key_id, network)
      );
    `,
  },
  {
    version: 4,
    name: 'hourly and daily usage rollups (with latency histograms), raw usage retention',
    sqlite: `
      -- One row per (UTC hour, workspace, key, model, endpoint), kept up to date in the transaction
      -- that inserts the raw records: only a raw record actually inserted (not a duplicate id) counts.
      -- '' stands for "none" (a record without a key or a model), so that the primary key matches.
      -- lat_00 … lat_31 count requests per latency bucket (src/usage/histogram.ts).
      CREATE TABLE usage_hourly (
        hour INTEGER NOT NULL,
        workspace_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        estimated_requests INTEGER NOT NULL,
        latency_sum_ms REAL NOT NULL,
        latency_max_ms REAL NOT NULL,
        ${LATENCY_COLUMN_DEFS},
        PRIMARY KEY (hour, workspace_id, key_id, model, endpoint)
      ) WITHOUT ROWID;
      CREATE INDEX usage_hourly_key ON usage_hourly (key_id, hour);
      CREATE INDEX usage_hourly_workspace ON usage_hourly (workspace_id, hour);

      -- The same sums per UTC day (the sum of the day's hours, kept in the same transaction): long
      -- ranges read 24 times fewer rows.
      CREATE TABLE usage_daily (
        day INTEGER NOT NULL,
        workspace_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        estimated_requests INTEGER NOT NULL,
        latency_sum_ms REAL NOT NULL,
        latency_max_ms REAL NOT NULL,
        ${LATENCY_COLUMN_DEFS},
        PRIMARY KEY (day, workspace_id, key_id, model, endpoint)
      ) WITHOUT ROWID;
      CREATE INDEX usage_daily_key ON usage_daily (key_id, day);
      CREATE INDEX usage_daily_workspace ON usage_daily (workspace_id, day);

      -- Raw records before raw_since (an hour boundary) have been deleted by the retention sweep:
      -- reports use whole-hour rollups there, and a late record from then is not stored (its id
      -- can no longer be checked for a duplicate).
      CREATE TABLE usage_retention (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        raw_since INTEGER NOT NULL
      );
      INSERT INTO usage_retention (id, raw_since) VALUES (1, 0);

      INSERT INTO usage_hourly (hour, workspace_id, key_id, model, endpoint, requests, errors, prompt_tokens,
          completion_tokens, total_tokens, estimated_requests, latency_sum_ms, latency_max_ms,
          ${LATENCY_COLUMNS.join(', ')})
        SELECT (time / 3600000) * 3600000, COALESCE(workspace_id, ''), COALESCE(key_id, ''), COALESCE(model, ''),
          endpoint, COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens),
          SUM(completion_tokens), SUM(total_tokens), SUM(tokens_estimated), SUM(latency_ms), MAX(latency_ms),
          ${LATENCY_BACKFILL}
        FROM (SELECT *, ${latencyBucketSql()} AS bucket FROM usage_records)
        GROUP BY 1, 2, 3, 4, 5;
      INSERT INTO usage_daily (day, workspace_id, key_id, model, endpoint, requests, errors, prompt_tokens,
          completion_tokens, total_tokens, estimated_requests, latency_sum_ms, latency_max_ms,
          ${LATENCY_COLUMNS.join(', ')})
        SELECT (hour / 86400000) * 86400000, workspace_id, key_id, model, endpoint, SUM(requests), SUM(errors),
          SUM(prompt_tokens), SUM(completion_tokens), SUM(total_tokens), SUM(estimated_requests),
          SUM(latency_sum_ms), MAX(latency_max_ms), ${LATENCY_COLUMNS.map((c) => `SUM(${c})`).join(', ')}
        FROM usage_hourly
        GROUP BY 1, 2, 3, 4, 5;
    `,
  },
  {
    version: 5,
    name: 'console: sessions, invitations, two-factor sign-in, settings',
    sqlite: `
      ALTER TABLE users ADD COLUMN totp_secret TEXT;
      ALTER TABLE users ADD COLUMN totp_enabled_at INTEGER;
      ALTER TABLE users ADD COLUMN recovery_codes TEXT NOT NULL DEFAULT '[]';

      CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        revoked_at INTEGER,
        ip TEXT,
        user_agent TEXT
      );
      CREATE INDEX sessions_user ON sessions (user_id);
      CREATE INDEX sessions_expires ON sessions (expires_at);

      CREATE TABLE invites (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        email TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
        created_by TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        accepted_at INTEGER,
        revoked_at INTEGER
      );
      CREATE INDEX invites_workspace ON invites (workspace_id, created_at);

      CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
      );
    `,
  },
  {
    version: 6,
    name: 'key hashes keyed by the hash (a key lookup reads one B-tree)',
    // A rowid table found its row by the hash's index and then the table: two B-tree descents,
    // each a page read more once a million keys no longer fit in the page cache. WITHOUT ROWID
    // stores the rows in the primary key's B-tree itself. Same columns, rows and secondary index.
    sqlite: `
      CREATE TABLE api_key_hashes_v6 (
        hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys(id),
        created_at INTEGER NOT NULL,
        valid_until INTEGER
      ) WITHOUT ROWID;
      INSERT INTO api_key_hashes_v6 (hash, key_id, created_at, valid_until)
        SELECT hash, key_id, created_at, valid_until FROM api_key_hashes;
      DROP TABLE api_key_hashes;
      ALTER TABLE api_key_hashes_v6 RENAME TO api_key_hashes;
      CREATE INDEX api_key_hashes_key ON api_key_hashes (key_id);
    `,
  },
  {
    version: 7,
    name: 'console: the last TOTP step used per user, kept in the store',
    // Each TOTP code signs in once on every instance and worker: a sign-in claims its step with a
    // conditional UPDATE (it wins only when the stored step is older), so two processes cannot
    // both accept one code.
    sqlite: `
      ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
    `,
  },
];
