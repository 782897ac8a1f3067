/**
 * Preloaded into Portkey's gateway (`node --import bench/portkey-stream-fix.ts start-server.js`)
 * by the benchmark. Without it, on this install every streamed completion through Portkey fails
 * with `500 {"status":"failure","message":"Something went wrong"}` and logs
 * `TypeError: immutable` from `updateHeaders`: @portkey-ai/gateway 1.15.2 does not pin
 * @hono/node-server, npm installs 1.19.x, whose lightweight Response keeps the upstream fetch
 * response's Headers object (guard "immutable") when Portkey wraps a stream in
 * `new Response(stream, upstreamResponse)`, and Portkey then appends its x-portkey-* headers to it
 * (Portkey-AI/gateway issues #1389 and #1550).
 *
 * The fix is the smallest that works: upstream responses that are event streams are re-wrapped
 * once in a native Response whose headers can be changed; the body stream itself is passed on
 * untouched. Every other response (JSON chat, embeddings) is left exactly as fetch returned it.
 */
const NativeResponse = globalThis.Response;
const nativeFetch = globalThis.fetch;

globalThis.fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
  const response = await nativeFetch(input, init);
  if (!(response.headers.get('content-type') ?? '').startsWith('text/event-stream')) return response;
  return new NativeResponse(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: new Headers(response.headers),
  });
};
