/**
 * Reads a request body up to a limit, for the management API and the console's session API (the
 * `/v1` path streams its bodies instead). Over the limit: 413 in the API's error shape, and the
 * connection is closed rather than the rest of the body read.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendError } from './errors.ts';

const EXPECT_CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i;

/**
 * Tells a client that sent `Expect: 100-continue` to send its body. The server answers 100 only
 * here, when a body is about to be read — that is, after the caller has been authenticated and
 * the request routed (server.ts listens to 'checkContinue', so Node does not answer it itself). A
 * request refused before that gets its final answer without a 100, and Node closes the connection
 * instead of reading a body nobody asked for.
 */
export function continueIfExpected(req: IncomingMessage, res: ServerResponse): void {
  const expect = req.headers.expect;
  if (expect !== undefined && !res.headersSent && EXPECT_CONTINUE.test(expect)) res.writeContinue();
}

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
  continueIfExpected(req, res);
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
