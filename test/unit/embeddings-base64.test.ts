import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { EmbeddingsBase64Encoder, encodeEmbeddingsBase64 } from '../../src/http/embeddings.ts';

/** What the encoding must give: each JSON number as `Number` reads it, as float32 little-endian. */
function reference(values: readonly number[]): string {
  const bytes = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => {
    bytes.writeFloatLE(v, i * 4);
  });
  return bytes.toString('base64');
}

const number = fc.oneof(
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.float({ noNaN: true, noDefaultInfinity: true }).map(Number),
  fc.integer(),
  fc.integer({ min: -1_000_000, max: 1_000_000 }).map((n) => n / 1e6),
);

test('every float array becomes the base64 of its float32 values, however the body is cut', () => {
  fc.assert(
    fc.property(
      fc.array(fc.array(number, { maxLength: 40 }), { minLength: 1, maxLength: 4 }),
      fc.boolean(),
      fc.array(fc.nat(), { maxLength: 8 }),
      (embeddings, pretty, cuts) => {
        const body = {
          object: 'list',
          data: embeddings.map((embedding, index) => ({ object: 'embedding', embedding, index })),
          usage: { prompt_tokens: 3, total_tokens: 3 },
        };
        const text = pretty ? JSON.stringify(body, null, 2) : JSON.stringify(body);
        const points = [...new Set(cuts.map((c) => c % text.length))].sort((a, b) => a - b);
        const encoder = new EmbeddingsBase64Encoder();
        let out = '';
        let from = 0;
        for (const point of [...points, text.length]) {
          out += encoder.push(text.slice(from, point));
          from = point;
        }
        out += encoder.end();
        assert.equal(out, encodeEmbeddingsBase64(text), 'cut or whole, the same');
        const parsed = JSON.parse(out) as typeof body & { data: { embedding: string }[] };
        const values = (JSON.parse(text) as typeof body).data;
        parsed.data.forEach((item, i) => {
          assert.equal(item.embedding, reference(values[i]?.embedding ?? []));
        });
        assert.deepEqual(parsed.usage, body.usage);
      },
    ),
    { numRuns: 3000 },
  );
});

test('numbers of every JSON form; anything else is left as it came', () => {
  const encoded = (members: string) => encodeEmbeddingsBase64(`{"embedding":[${members}]}`);
  const forms = [
    '1e5',
    '-0',
    '0.5E-3',
    '12345678901234567890',
    '1.7976931348623157e308',
    '5e-324',
    '-1.5e+2',
    '3.4e39',
  ];
  assert.equal(encoded(forms.join(' , ')), `{"embedding":"${reference(forms.map(Number))}"}`);
  assert.equal(encoded(''), '{"embedding":""}');
  for (const odd of ['1,"a"', 'null', '1,', '-', '1e', '[1,2],[3]', 'true']) {
    const text = `{"embedding":[${odd}]}`;
    assert.equal(encodeEmbeddingsBase64(text), text, odd);
  }
  // Only a member named embedding is rewritten, not a value "embedding".
  const other = '{"object":"embedding","vector":[1,2]}';
  assert.equal(encodeEmbeddingsBase64(other), other);
});
