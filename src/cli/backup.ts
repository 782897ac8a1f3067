/**
 * `keygate backup --out DIR`: a copy of the data directory, taken while the gateway runs, that is
 * itself a data directory: `keygate start --data-dir DIR` runs on it (docs/operations.md).
 *
 * The database is copied online (src/store/backup.ts), checked, and counted for the report; the
 * server secret, the TLS files and any usage spill file are copied beside it with their private
 * modes. Everything is written into `DIR.partial-<pid>` first, fsynced, then renamed to DIR: a
 * DIR that exists is a whole backup, whatever happened to the run that made it.
 */
import {
  chmodSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import type { Command } from 'commander';
import type { ConfigFlags } from '../config/config.ts';
import { assertPrivateFile, SECRET_FILE } from '../config/secrets.ts';
import { backupSqlite, fsyncPath } from '../store/backup.ts';
import { SQLITE_FILE } from '../store/index.ts';
import {
  addLocalOnlyOptions,
  configFrom,
  envValue,
  print,
  printJson,
  refuseRemote,
  type TargetOptions,
  UserError,
} from './common.ts';

/** Usage records a stop could not write (src/usage/spill.ts): replayed by the next start, also on a restore. */
const SPILL_FILE = /^usage-spill-.*\.jsonl$/;

/** Copies a file that must stay private (0600), refusing to overwrite, and fsyncs it. */
function copyPrivate(from: string, to: string): void {
  copyFileSync(from, to, constants.COPYFILE_EXCL);
  chmodSync(to, 0o600);
  fsyncPath(to);
}

export function registerBackupCommand(program: Command): void {
  addLocalOnlyOptions(
    program
      .command('backup')
      .description(
        'copy the data directory (database, secret, TLS files) into a new directory, while the gateway runs; ' +
          'start on that directory to restore it (docs/operations.md)',
      )
      .requiredOption('--out <dir>', 'the directory to create for the backup (new, or empty)')
      .option(
        '--no-secret',
        'leave the server secret out (keep it apart, e.g. in a secret manager; the restore needs it)',
      )
      .option('--json', 'print JSON'),
  ).action(
    async (options: ConfigFlags & TargetOptions & { out: string; secret: boolean; json?: boolean }) => {
      refuseRemote('backup', options);
      const config = configFrom(options);
      if (config.database.url !== undefined) {
        throw new UserError(
          'the store is PostgreSQL (DATABASE_URL): back it up with pg_dump, and keep KEYGATE_SECRET ' +
            'with the dump but apart from it (docs/operations.md)',
          2,
        );
      }
      const dataDir = resolve(config.dataDir);
      const out = resolve(options.out);
      if (out === dataDir || out.startsWith(`${dataDir}${sep}`))
        throw new UserError(`--out must be outside the data directory ${dataDir}`, 2);
      if (existsSync(out) && (!statSync(out).isDirectory() || readdirSync(out).length > 0))
        throw new UserError(`--out: ${out} exists and is not an empty directory: give a new one`, 2);
      const database = join(dataDir, SQLITE_FILE);
      if (!existsSync(database))
        throw new UserError(`there is no Keygate database in ${dataDir} (give its --data-dir)`);

      const staging = `${out}.partial-${process.pid}`;
      mkdirSync(dirname(out), { recursive: true, mode: 0o700 });
      mkdirSync(staging, { mode: 0o700 });
      let summary: ReturnType<typeof backupSqlite>;
      const copied: string[] = [];
      try {
        try {
          summary = backupSqlite(database, join(staging, SQLITE_FILE));
        } catch (error) {
          throw new UserError(`cannot copy the database: ${(error as Error).message}`);
        }
        const secret = join(dataDir, SECRET_FILE);
        if (options.secret && existsSync(secret)) {
          // A secret others could read is refused by the gateway; it would be by the restore too.
          try {
            assertPrivateFile(secret, 'the server secret');
          } catch (error) {
            throw new UserError((error as Error).message);
          }
          copyPrivate(secret, join(staging, SECRET_FILE));
          copied.push(SECRET_FILE);
        }
        const tls = join(dataDir, 'tls');
        if (existsSync(tls)) {
          mkdirSync(join(staging, 'tls'), { mode: 0o700 });
          for (const name of readdirSync(tls)) copyPrivate(join(tls, name), join(staging, 'tls', name));
          fsyncPath(join(staging, 'tls'));
          copied.push('tls/');
        }
        for (const name of readdirSync(dataDir).filter((n) => SPILL_FILE.test(n))) {
          copyPrivate(join(dataDir, name), join(staging, name));
          copied.push(name);
        }
        fsyncPath(staging);
        if (existsSync(out)) rmdirSync(out);
        renameSync(staging, out);
        fsyncPath(dirname(out));
      } catch (error) {
        rmSync(staging, { recursive: true, force: true });
        throw error;
      }

      const secretSource = copied.includes(SECRET_FILE)
        ? 'file'
        : !options.secret
          ? 'left_out'
          : envValue('KEYGATE_SECRET') !== undefined
            ? 'env'
            : 'missing';
      if (options.json) {
        printJson({
          out,
          data_dir: dataDir,
          database: {
            file: SQLITE_FILE,
            schema_version: summary.schemaVersion,
            keys: summary.keys,
            usage_records: summary.usageRecords,
            audit_events: summary.auditEvents,
            users: summary.users,
          },
          secret: secretSource,
          files: [SQLITE_FILE, ...copied],
        });
        return;
      }
      print(`Backed up ${dataDir} to ${out}:`);
      print(
        `  ${SQLITE_FILE}  schema version ${summary.schemaVersion}: ${summary.keys} keys, ${summary.usageRecords} usage records, ` +
          `${summary.auditEvents} audit events, ${summary.users} users (checked)`,
      );
      if (secretSource === 'file')
        print(
          `  ${SECRET_FILE}      the server secret: the keys work only with it. Keep the backup private.`,
        );
      else if (secretSource === 'left_out')
        print(
          `  (the secret was left out: the keys work only with it. To restore, put it back as ${join(out, SECRET_FILE)}, mode 0600.)`,
        );
      else if (secretSource === 'env')
        print(
          '  (no secret file: the secret is KEYGATE_SECRET. Keep it with the backup: the keys work only with it.)',
        );
      else
        print(
          '  (no secret file and no KEYGATE_SECRET: the backup cannot authenticate any key without the secret.)',
        );
      if (copied.includes('tls/')) print("  tls/        the gateway's certificate and private key");
      print(
        `Restore: stop the gateway, put ${out} in place of its data directory (or start it with --data-dir ${out}).`,
      );
    },
  );
}
