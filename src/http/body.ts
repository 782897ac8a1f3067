/**
 * Reads a request body up to a limit, for the management API and the console's session API (the
 * `/v1` path streams its bodies instead). Over the limit: 413 in the API's error shape, and the
 * connection is closed rather than the rest of the body read.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendError } from './errors.ts';

/** The body, or undefined when an answer was sent already (too large) or the client went away. */
export async function readLimitedBody(
  req: IncomingMessage,
  res: ServerResponse,
  limit: number,
  what: string,
): Promise<Buffer | undefined> {
  const tooLarge = () => {
    res.setHeader('connection', 'close');
    sendError(res, 'payload_too_large', `The request body is larger than ${what}'s limit of ${limit} bytes.`);
  };
  if (Number(req.headers['content-length']) > limit) {
    tooLarge();
    return undefined;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) {
        tooLarge();
        return undefined;
      }
      chunks.push(chunk);
    }
  } catch {
    res.destroy();
    return undefined;
  }
  return Buffer.concat(chunks, size);
}
