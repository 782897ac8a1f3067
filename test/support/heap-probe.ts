/**
 * Preloaded into a gateway by test/integration/start-memory.test.ts (NODE_OPTIONS=--import): on
 * SIGUSR2 it allocates enough short-lived objects, some of them surviving a while, for V8 to grow
 * its young generation to the largest size it is allowed, then writes what the test checks into
 * $HEAP_PROBE_DIR/<pid>.json: the process's Node flags, MALLOC_ARENA_MAX, and the size of V8's
 * new space (its two semi-spaces).
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import v8 from 'node:v8';

export interface HeapProbe {
  pid: number;
  execArgv: string[];
  mallocArenaMax: string | undefined;
  newSpaceBytes: number;
}

const dir = process.env.HEAP_PROBE_DIR;
if (dir) {
  process.on('SIGUSR2', () => {
    let keep: { i: number; s: string }[] = [];
    for (let i = 0; i < 3_000_000; i++) {
      keep.push({ i, s: `x${i}` });
      if (keep.length > 200_000) keep = [];
    }
    // Read once the collections the burst started are over: during one (a scavenge, or the old
    // generation's concurrent marking) V8 can hold a few pages beyond its two semi-spaces for a
    // moment, which the flag does not govern and which made this check flaky on a loaded machine.
    setTimeout(() => {
      const newSpace = v8.getHeapSpaceStatistics().find((space) => space.space_name === 'new_space');
      const probe: HeapProbe = {
        pid: process.pid,
        execArgv: process.execArgv,
        mallocArenaMax: process.env.MALLOC_ARENA_MAX,
        newSpaceBytes: newSpace?.space_size ?? -1,
      };
      // Whole or not at all: the test reads the file as soon as it exists.
      const file = join(dir, `${process.pid}.json`);
      writeFileSync(`${file}.tmp`, JSON.stringify(probe));
      renameSync(`${file}.tmp`, file);
    }, 200);
  });
}
