/**
 * OpenAI clients ask for `encoding_format: "base64"` by default and decode whatever comes back as
 * base64 little-endian float32; a provider that answers with float arrays would leave them with
 * empty vectors. The gateway does the encoding for them.
 */
function toBase64(values: readonly unknown[]): string {
  const buffer = Buffer.allocUnsafe(values.length * 4);
  for (let i = 0; i < values.length; i++) buffer.writeFloatLE(Number(values[i]), i * 4);
  return buffer.toString('base64');
}

/** Rewrites every float-array `embedding` of an embeddings response as base64; other bodies pass unchanged. */
export function encodeEmbeddingsBase64(text: string): string {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return text;
  }
  const data = (body as { data?: unknown }).data;
  if (!Array.isArray(data)) return text;
  for (const item of data) {
    if (item && typeof item === 'object' && Array.isArray((item as { embedding?: unknown }).embedding)) {
      const entry = item as { embedding: unknown };
      entry.embedding = toBase64(entry.embedding as unknown[]);
    }
  }
  return JSON.stringify(body);
}
