/**
 * Regression: `POST /console/api/__proto__` answered 500 (the console's route table is an object,
 * and `__proto__` found its prototype; the request-path property test hit it with seed 615771574),
 * and `?__proto__=…` on the management API replaced the prototype of the parsed query. Names of
 * Object.prototype's members are paths and parameters like any other: 404 for an unknown console
 * route, a validation error for an unknown parameter, in the API's error shape.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(() => t.close());

const NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];

test('console routes named like Object.prototype members are unknown routes (404), not a 500', async () => {
  for (const name of NAMES) {
    const res = await t.call(`/console/api/${name}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'sec-fetch-site': 'same-origin' },
      body: '{}',
    });
    assert.equal(res.status, 404, `${name}: ${res.text}`);
    assert.equal((res.json() as { code: string }).code, 'not_found');
  }
});

test('query parameters named like Object.prototype members are refused as unknown, not a 500', async () => {
  const { key } = await t.createKey('admin', undefined, { scopes: ['admin'] });
  for (const name of NAMES) {
    const res = await t.call(`/admin/v1/keys?${name}=1`, { headers: { authorization: `Bearer ${key}` } });
    assert.ok(res.status >= 400 && res.status < 500, `${name}: ${res.status} ${res.text}`);
    assert.ok(typeof (res.json() as { message?: unknown }).message === 'string', res.text);
  }
});
