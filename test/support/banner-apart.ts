/**
 * Preloaded (`--import`, through NODE_OPTIONS) into `keygate start` by
 * test/regression/workers-banner-wait.test.ts: the lines of the start banner after the one that
 * says where the gateway listens reach stderr `BANNER_APART_MS` apart (default 300), as they may on
 * a busy machine. A test that waits for the first line and then reads a later one fails at once
 * under it instead of now and then. Lines after the banner's last are written in order, undelayed.
 */
const apartMs = Number(process.env.BANNER_APART_MS ?? 300);

if (process.argv.includes('start')) {
  const write = process.stderr.write.bind(process.stderr) as (chunk: string | Uint8Array) => boolean;
  /** 'before': the listening line is not written yet; 'banner': delaying; 'after': the banner is out. */
  let phase: 'before' | 'banner' | 'after' = 'before';
  let queue = Promise.resolve();
  /** Lines queued and not yet written: a later line waits for them, to keep the order. */
  let pending = 0;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (phase === 'before') {
      if (text.includes(' is listening on ')) phase = 'banner';
      return write(chunk);
    }
    // Once the banner is out, at once (a line written just before process.exit() is not lost).
    if (phase === 'after' && pending === 0) return write(chunk);
    const wait = phase === 'banner' ? apartMs : 0;
    if (text.includes('Stop with Ctrl-C')) phase = 'after';
    pending++;
    queue = queue.then(async () => {
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      pending--;
      write(chunk);
    });
    return true;
  }) as typeof process.stderr.write;
}
