/**
 * A small filesystem that a test can fill: a tmpfs mounted on a temporary directory (which needs
 * root). `fullDiskUnavailable()` says why it cannot be had here (the test then skips with that
 * reason); `unmount()` always runs in the test's `after`.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SmallDisk {
  /** Where it is mounted. */
  readonly dir: string;
  /** Writes a filler file until the disk refuses (ENOSPC); returns the bytes written. */
  fill(): number;
  /** Deletes the filler file (the room it took is free again). */
  unfill(): void;
  unmount(): void;
}

/** Undefined when a tmpfs can be mounted here; otherwise why not. */
export function fullDiskUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `a tmpfs needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'mounting a small tmpfs (a disk to fill) needs root';
  return undefined;
}

/** A tmpfs of `sizeKib` KiB (e.g. 2048) on a new temporary directory. */
export function mountSmallDisk(sizeKib: number): SmallDisk {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-small-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKib}k,mode=0700`, 'tmpfs', dir], {
      stdio: 'pipe',
    });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot mount a tmpfs on ${dir}: ${(error as Error).message}`);
  }
  const filler = join(dir, 'filler');
  let mounted = true;
  return {
    dir,
    fill() {
      const fd = openSync(filler, 'a');
      const chunk = Buffer.alloc(4096, 1);
      let written = 0;
      try {
        for (;;) written += writeSync(fd, chunk);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
      } finally {
        closeSync(fd);
      }
      return written;
    },
    unfill() {
      rmSync(filler, { force: true });
    },
    unmount() {
      if (!mounted) return;
      mounted = false;
      try {
        execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
