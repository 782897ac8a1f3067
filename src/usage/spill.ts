/**
 * The usage records a graceful stop could not write to the store (a full disk, a database that is
 * down) are kept in a spill file in the data directory, and written to the store at the next
 * start:
 *
 * - Written as `usage-spill-<time>-<pid>-<random>.jsonl`: first to a `.tmp` name, fsynced, then
 *   renamed and the directory fsynced, so a spill file that exists is whole.
 * - A full disk would refuse the spill file too, so a reserve (`usage-spill.reserve`, sized for
 *   the usage queue's bound, at most 4 MiB: some 10,000 records) is set aside at the start, and
 *   deleted to make room when writing the spill fails for want of space. Past it, what does not
 *   fit is reported lost.
 * - Replayed at the start before the gateway serves (every `usage-spill-*.jsonl`, and any
 *   `.replaying` one a crash left): claimed by renaming it to `.replaying`, written to the store,
 *   then deleted. The store writes a record once whatever the number of attempts (records are
 *   keyed by their request id, and rollups count only the records inserted), so a replay cut off
 *   and done again, or a file replayed by two processes of `--workers`, still counts each record
 *   exactly once.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { fsyncPath } from '../store/backup.ts';
import type { Store, UsageRecord } from '../store/types.ts';

const PREFIX = 'usage-spill-';
const RESERVE = 'usage-spill.reserve';
/** Bytes reserved per queued record (a record is ~300 bytes of JSON). */
const RESERVE_PER_RECORD = 400;
const MAX_RESERVE = 4 * 1024 * 1024;
/** Records written to the store per call when replaying. */
const REPLAY_BATCH = 500;

function writeWhole(path: string, data: Buffer): void {
  const fd = openSync(path, 'w', 0o600);
  try {
    let at = 0;
    while (at < data.length) at += writeSync(fd, data, at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Sets the reserve aside (written, so that the filesystem allocates it): room for the spill file
 * of a queue of `maxQueued` records. A failure (the disk full already) is returned, not thrown.
 */
export function reserveSpillSpace(dataDir: string, maxQueued: number): Error | undefined {
  const path = join(dataDir, RESERVE);
  const size = Math.min(MAX_RESERVE, Math.max(64 * 1024, maxQueued * RESERVE_PER_RECORD));
  try {
    if (statSync(path, { throwIfNoEntry: false })?.size === size) return undefined;
    writeWhole(path, Buffer.alloc(size));
    return undefined;
  } catch (error) {
    rmSync(path, { force: true });
    return error as Error;
  }
}

/** Writes `records` to a new spill file; returns its path. Throws when it cannot (even after freeing the reserve). */
export function spillUsage(dataDir: string, records: readonly UsageRecord[]): string {
  const name = `${PREFIX}${Date.now()}-${process.pid}-${randomBytes(4).toString('hex')}.jsonl`;
  const path = join(dataDir, name);
  const tmp = `${path}.tmp`;
  const data = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''));
  try {
    writeWhole(tmp, data);
  } catch (error) {
    rmSync(tmp, { force: true });
    if (
      (error as NodeJS.ErrnoException).code !== 'ENOSPC' &&
      (error as NodeJS.ErrnoException).code !== 'EDQUOT'
    )
      throw error;
    // The disk is full: the reserve makes the room.
    rmSync(join(dataDir, RESERVE), { force: true });
    try {
      writeWhole(tmp, data);
    } catch (again) {
      rmSync(tmp, { force: true });
      throw again;
    }
  }
  renameSync(tmp, path);
  fsyncPath(dataDir);
  return path;
}

export interface ReplayResult {
  /** Spill files written to the store and deleted. */
  files: number;
  /** Records read from them. */
  records: number;
  /** Files that could not be written (kept for the next start), with the reason. */
  failed: { file: string; error: unknown }[];
}

/** Writes every spill file of the data directory to the store, deleting each once written. */
export async function replaySpilledUsage(dataDir: string, store: Store): Promise<ReplayResult> {
  const result: ReplayResult = { files: 0, records: 0, failed: [] };
  let names: string[];
  try {
    names = readdirSync(dataDir);
  } catch {
    return result;
  }
  for (const name of names.sort()) {
    if (!name.startsWith(PREFIX) || !(name.endsWith('.jsonl') || name.endsWith('.jsonl.replaying'))) continue;
    let claimed = join(dataDir, name);
    if (name.endsWith('.jsonl')) {
      try {
        renameSync(claimed, `${claimed}.replaying`);
      } catch {
        continue; // another process of the same data directory claimed it
      }
      claimed = `${claimed}.replaying`;
    }
    try {
      const records = readFileSync(claimed, 'utf8')
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as UsageRecord);
      for (let at = 0; at < records.length; at += REPLAY_BATCH)
        await store.recordUsage(records.slice(at, at + REPLAY_BATCH));
      unlinkSync(claimed);
      result.files++;
      result.records += records.length;
    } catch (error) {
      result.failed.push({ file: claimed, error });
    }
  }
  return result;
}
