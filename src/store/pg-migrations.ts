/**
 * The PostgreSQL schema: the same migrations as migrations.ts (same versions, names, tables,
 * columns and indexes), in PostgreSQL's types. Keep the two in lockstep: a new SQLite migration
 * gets its PostgreSQL twin here with the same version (test/unit/store-contract.test.ts compares
 * the two schemas table by table, column by column).
 *
 * Types: SQLite's INTEGER (64 bits) is BIGINT, REAL is DOUBLE PRECISION, and TEXT is TEXT with
 * the "C" collation, so that ids and names sort and compare byte by byte as in SQLite whatever
 * the database's locale. JSON arrays (scopes, models, allowed IPs) are JSONB; JSON objects whose
 * key order is shown to people (audit changes, alert details, rule settings) are JSON, kept as
 * written.
 */
import { LATENCY_COLUMNS, latencyBucketSql } from '../usage/histogram.ts';
import { MIGRATIONS } from './migrations.ts';

export interface PgMigration {
  version: number;
  name: string;
  postgres: string;
}

/** TEXT compared and sorted byte by byte, as SQLite's default (BINARY) collation does. */
const TEXT = 'TEXT COLLATE "C"';

const LATENCY_COLUMN_DEFS = LATENCY_COLUMNS.map((c) => `${c} BIGINT NOT NULL DEFAULT 0`).join(',\n        ');
const LATENCY_BACKFILL = LATENCY_COLUMNS.map((_c, i) => `COUNT(*) FILTER (WHERE bucket = ${i})`).join(
  ',\n          ',
);

/** The SQLite migration's name, so that the two lists cannot drift apart in name. */
function nameOf(version: number): string {
  const migration = MIGRATIONS.find((m) => m.version === version);
  if (!migration) throw new Error(`pg-migrations: no SQLite migration ${version} in migrations.ts`);
  return migration.name;
}

/** Creates the table of applied versions (as SQLite's store does). */
export const SCHEMA_MIGRATIONS_DDL =
  'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)';

export const PG_MIGRATIONS: readonly PgMigration[] = [
  {
    version: 1,
    name: nameOf(1),
    postgres: `
      CREATE TABLE workspaces (
        id ${TEXT} PRIMARY KEY,
        name ${TEXT} NOT NULL,
        created_at BIGINT NOT NULL
      );
      INSERT INTO workspaces (id, name, created_at)
        VALUES ('ws_default', 'Default', (extract(epoch FROM clock_timestamp()) * 1000)::bigint);

      CREATE TABLE api_keys (
        id ${TEXT} PRIMARY KEY,
        workspace_id ${TEXT} NOT NULL REFERENCES workspaces(id),
        name ${TEXT} NOT NULL,
        start ${TEXT} NOT NULL,
        last4 ${TEXT} NOT NULL,
        created_at BIGINT NOT NULL,
        created_by ${TEXT},
        expires_at BIGINT,
        revoked_at BIGINT,
        last_used_at BIGINT,
        last_used_ip ${TEXT}
      );
      CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);

      -- One row per secret that opens a key (several during a rotation's grace period).
      CREATE TABLE api_key_hashes (
        hash ${TEXT} PRIMARY KEY,
        key_id ${TEXT} NOT NULL REFERENCES api_keys(id),
        created_at BIGINT NOT NULL,
        valid_until BIGINT
      );
      CREATE INDEX api_key_hashes_key ON api_key_hashes (key_id);

      -- Change feed read by every running gateway to invalidate its key cache. The store appends
      -- under a transaction-level advisory lock, so that seq order is commit order (a reader that
      -- has seen seq n has seen everything before it).
      CREATE TABLE key_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key_id ${TEXT} NOT NULL,
        kind ${TEXT} NOT NULL,
        at BIGINT NOT NULL
      );

      CREATE TABLE usage_records (
        id ${TEXT} PRIMARY KEY,
        time BIGINT NOT NULL,
        key_id ${TEXT},
        workspace_id ${TEXT},
        model ${TEXT},
        endpoint ${TEXT} NOT NULL,
        status INTEGER NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        client_ip ${TEXT} NOT NULL
      );
      CREATE INDEX usage_records_key_time ON usage_records (key_id, time);
      CREATE INDEX usage_records_time ON usage_records (time);
    `,
  },
  {
    version: 2,
    name: nameOf(2),
    postgres: `
      ALTER TABLE workspaces ADD COLUMN max_key_lifetime_ms BIGINT;
      ALTER TABLE workspaces ADD COLUMN allowed_ips JSONB NOT NULL DEFAULT '[]';
      ALTER TABLE workspaces ADD COLUMN budget_day BIGINT;
      ALTER TABLE workspaces ADD COLUMN budget_month BIGINT;

      ALTER TABLE api_keys ADD COLUMN scopes JSONB NOT NULL DEFAULT '["chat","fim","embeddings","models"]';
      ALTER TABLE api_keys ADD COLUMN models JSONB NOT NULL DEFAULT '[]';
      ALTER TABLE api_keys ADD COLUMN allowed_ips JSONB NOT NULL DEFAULT '[]';
      ALTER TABLE api_keys ADD COLUMN rpm BIGINT;
      ALTER TABLE api_keys ADD COLUMN tpm BIGINT;
      ALTER TABLE api_keys ADD COLUMN concurrency BIGINT;
      ALTER TABLE api_keys ADD COLUMN budget_day BIGINT;
      ALTER TABLE api_keys ADD COLUMN budget_month BIGINT;
      ALTER TABLE api_keys ADD COLUMN updated_at BIGINT;
      ALTER TABLE api_keys ADD COLUMN rotated_at BIGINT;
      -- Set once, when the expiry is recorded in the audit log.
      ALTER TABLE api_keys ADD COLUMN expiry_recorded_at BIGINT;
      CREATE INDEX api_keys_expiry ON api_keys (expires_at) WHERE expiry_recorded_at IS NULL AND expires_at IS NOT NULL;
      -- One row per reminder sent before a key's expiry (e.g. 14 and 3 days before), so each goes out once.
      CREATE TABLE key_expiry_reminders (
        key_id ${TEXT} NOT NULL REFERENCES api_keys(id),
        expires_at BIGINT NOT NULL,
        threshold_ms BIGINT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (key_id, expires_at, threshold_ms)
      );

      -- Append-only: the store never updates or deletes a row of it, and the triggers refuse to.
      CREATE TABLE audit_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id ${TEXT} NOT NULL UNIQUE,
        at BIGINT NOT NULL,
        workspace_id ${TEXT},
        actor_type ${TEXT} NOT NULL,
        actor_id ${TEXT},
        actor_ip ${TEXT},
        action ${TEXT} NOT NULL,
        target_type ${TEXT} NOT NULL,
        target_id ${TEXT},
        changes JSON NOT NULL DEFAULT '{}'
      );
      CREATE INDEX audit_events_workspace ON audit_events (workspace_id, seq);
      CREATE INDEX audit_events_target ON audit_events (target_id, seq);
      CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'the audit log is append-only';
        END;
      $$;
      -- Per statement: refused even when no row would be touched; TRUNCATE too.
      CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
      CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
      CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

      CREATE INDEX usage_records_workspace_time ON usage_records (workspace_id, time);

      CREATE TABLE users (
        id ${TEXT} PRIMARY KEY,
        email ${TEXT} NOT NULL UNIQUE,
        password_hash ${TEXT} NOT NULL,
        created_at BIGINT NOT NULL,
        disabled_at BIGINT
      );
      CREATE TABLE memberships (
        workspace_id ${TEXT} NOT NULL REFERENCES workspaces(id),
        user_id ${TEXT} NOT NULL REFERENCES users(id),
        role ${TEXT} NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
        created_at BIGINT NOT NULL,
        PRIMARY KEY (workspace_id, user_id)
      );
      CREATE INDEX memberships_user ON memberships (user_id);
    `,
  },
  {
    version: 3,
    name: nameOf(3),
    postgres: `
      CREATE TABLE alert_channels (
        id ${TEXT} PRIMARY KEY,
        workspace_id ${TEXT} NOT NULL REFERENCES workspaces(id),
        type ${TEXT} NOT NULL CHECK (type IN ('webhook', 'slack', 'email')),
        name ${TEXT} NOT NULL,
        -- The channel's settings (URL, signing secret, SMTP credentials), sealed with the data key.
        config_sealed ${TEXT} NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX alert_channels_workspace ON alert_channels (workspace_id);

      CREATE TABLE alerts (
        id ${TEXT} PRIMARY KEY,
        workspace_id ${TEXT} NOT NULL,
        kind ${TEXT} NOT NULL,
        -- What makes two alerts "the same" (kind + key + detail): repeats within the cooldown are folded in.
        fingerprint ${TEXT} NOT NULL,
        key_id ${TEXT},
        severity ${TEXT} NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
        title ${TEXT} NOT NULL,
        message ${TEXT} NOT NULL,
        details JSON NOT NULL DEFAULT '{}',
        first_at BIGINT NOT NULL,
        last_at BIGINT NOT NULL,
        occurrences BIGINT NOT NULL DEFAULT 1,
        acknowledged_at BIGINT,
        acknowledged_by ${TEXT}
      );
      CREATE INDEX alerts_workspace_time ON alerts (workspace_id, last_at);
      CREATE INDEX alerts_fingerprint ON alerts (fingerprint, last_at);

      CREATE TABLE alert_deliveries (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alert_id ${TEXT} NOT NULL REFERENCES alerts(id),
        channel_id ${TEXT} NOT NULL,
        attempt INTEGER NOT NULL,
        outcome ${TEXT} NOT NULL CHECK (outcome IN ('sent', 'failed')),
        status INTEGER,
        error ${TEXT},
        at BIGINT NOT NULL
      );
      CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);

      CREATE TABLE alert_rule_settings (
        workspace_id ${TEXT} NOT NULL REFERENCES workspaces(id),
        kind ${TEXT} NOT NULL,
        settings JSON NOT NULL,
        PRIMARY KEY (workspace_id, kind)
      );

      -- 1 when the provider reported no usage (a stream cut off by the client) and the counts are
      -- estimated: prompt text / 4 and one completion token per streamed text event delivered.
      ALTER TABLE usage_records ADD COLUMN tokens_estimated INTEGER NOT NULL DEFAULT 0;

      -- Networks (IPv4 /24, IPv6 /48) each key has been used from, for the "new network" rule.
      CREATE TABLE key_networks (
        key_id ${TEXT} NOT NULL,
        network ${TEXT} NOT NULL,
        first_seen BIGINT NOT NULL,
        PRIMARY KEY (key_id, network)
      );
    `,
  },
  {
    version: 4,
    name: nameOf(4),
    postgres: `
      -- One row per (UTC hour, workspace, key, model, endpoint), kept up to date in the statement
      -- that inserts the raw records: only a raw record actually inserted (not a duplicate id) counts.
      -- '' stands for "none" (a record without a key or a model), so that the primary key matches.
      -- lat_00 … lat_31 count requests per latency bucket (src/usage/histogram.ts).
      CREATE TABLE usage_hourly (
        hour BIGINT NOT NULL,
        workspace_id ${TEXT} NOT NULL,
        key_id ${TEXT} NOT NULL,
        model ${TEXT} NOT NULL,
        endpoint ${TEXT} NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL,
        estimated_requests BIGINT NOT NULL,
        latency_sum_ms DOUBLE PRECISION NOT NULL,
        latency_max_ms DOUBLE PRECISION NOT NULL,
        ${LATENCY_COLUMN_DEFS},
        PRIMARY KEY (hour, workspace_id, key_id, model, endpoint)
      );
      CREATE INDEX usage_hourly_key ON usage_hourly (key_id, hour);
      CREATE INDEX usage_hourly_workspace ON usage_hourly (workspace_id, hour);

      -- The same sums per UTC day (the sum of the day's hours, kept in the same statement): long
      -- ranges read 24 times fewer rows.
      CREATE TABLE usage_daily (
        day BIGINT NOT NULL,
        workspace_id ${TEXT} NOT NULL,
        key_id ${TEXT} NOT NULL,
        model ${TEXT} NOT NULL,
        endpoint ${TEXT} NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL,
        estimated_requests BIGINT NOT NULL,
        latency_sum_ms DOUBLE PRECISION NOT NULL,
        latency_max_ms DOUBLE PRECISION NOT NULL,
        ${LATENCY_COLUMN_DEFS},
        PRIMARY KEY (day, workspace_id, key_id, model, endpoint)
      );
      CREATE INDEX usage_daily_key ON usage_daily (key_id, day);
      CREATE INDEX usage_daily_workspace ON usage_daily (workspace_id, day);

      -- Raw records before raw_since (an hour boundary) have been deleted by the retention sweep:
      -- reports use whole-hour rollups there, and a late record from then is not stored (its id
      -- can no longer be checked for a duplicate).
      CREATE TABLE usage_retention (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        raw_since BIGINT NOT NULL
      );
      INSERT INTO usage_retention (id, raw_since) VALUES (1, 0);

      INSERT INTO usage_hourly (hour, workspace_id, key_id, model, endpoint, requests, errors, prompt_tokens,
          completion_tokens, total_tokens, estimated_requests, latency_sum_ms, latency_max_ms,
          ${LATENCY_COLUMNS.join(', ')})
        SELECT (time / 3600000) * 3600000, COALESCE(workspace_id, ''), COALESCE(key_id, ''), COALESCE(model, ''),
          endpoint, COUNT(*), COUNT(*) FILTER (WHERE status >= 400), SUM(prompt_tokens),
          SUM(completion_tokens), SUM(total_tokens), SUM(tokens_estimated), SUM(latency_ms), MAX(latency_ms),
          ${LATENCY_BACKFILL}
        FROM (SELECT *, ${latencyBucketSql()} AS bucket FROM usage_records) AS r
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
    name: nameOf(5),
    postgres: `
      ALTER TABLE users ADD COLUMN totp_secret ${TEXT};
      ALTER TABLE users ADD COLUMN totp_enabled_at BIGINT;
      ALTER TABLE users ADD COLUMN recovery_codes JSONB NOT NULL DEFAULT '[]';

      CREATE TABLE sessions (
        id ${TEXT} PRIMARY KEY,
        user_id ${TEXT} NOT NULL REFERENCES users(id),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        revoked_at BIGINT,
        ip ${TEXT},
        user_agent ${TEXT}
      );
      CREATE INDEX sessions_user ON sessions (user_id);
      CREATE INDEX sessions_expires ON sessions (expires_at);

      CREATE TABLE invites (
        id ${TEXT} PRIMARY KEY,
        token_hash ${TEXT} NOT NULL UNIQUE,
        workspace_id ${TEXT} NOT NULL REFERENCES workspaces(id),
        email ${TEXT} NOT NULL,
        role ${TEXT} NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
        created_by ${TEXT},
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        accepted_at BIGINT,
        revoked_at BIGINT
      );
      CREATE INDEX invites_workspace ON invites (workspace_id, created_at);

      CREATE TABLE settings (
        name ${TEXT} PRIMARY KEY,
        value ${TEXT} NOT NULL
      );
    `,
  },
  {
    version: 6,
    name: nameOf(6),
    // PostgreSQL's tables have no rowid: the lookup is already one index search and a heap fetch
    // (or an index-only scan). Only the table's description changes.
    postgres: `
      COMMENT ON TABLE api_key_hashes IS 'One row per secret that opens a key (several during a rotation''s grace period)';
    `,
  },
  {
    version: 7,
    name: nameOf(7),
    postgres: `
      ALTER TABLE users ADD COLUMN totp_last_step BIGINT;
    `,
  },
];
