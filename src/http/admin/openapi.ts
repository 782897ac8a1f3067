/**
 * The OpenAPI 3.1 document of the management API, generated from the route table and the zod
 * schemas (JSON Schema draft 2020-12, the dialect OpenAPI 3.1 uses).
 */
import { z } from 'zod';
import type { AnyRoute } from './router.ts';
import { components } from './schemas.ts';

type JsonSchema = Record<string, unknown>;

export interface OpenApiDoc {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string };
  paths: Record<string, Record<string, unknown>>;
  [field: string]: unknown;
}

const REF_BASE = '#/components/schemas/';

const DESCRIPTION = `The management API of Keygate: keys, workspaces, the audit log and usage.

Authenticate with a Keygate key: \`Authorization: Bearer <key>\`. Each operation needs a management
scope (named in its description and in \`x-required-scope\`); \`admin\` implies every one of them.
A key without the scope gets 403 with \`WWW-Authenticate: Bearer error="insufficient_scope"\`.

A key acts only within its own workspace: keys, workspaces, audit events and usage of other
workspaces answer 404, as if they did not exist. The exception is an \`admin\` key of the default
workspace (\`ws_default\`), the operator's key, which acts on every workspace.

A key cannot grant more than it has: giving a key a management scope the calling key lacks, or
changing, rotating or revoking a key that holds one, answers 403.

Secrets are returned only once, in the responses of createKey and rotateKey (and a webhook
channel's generated signing secret, in the response of createAlertChannel).`;

/** A component schema without the keywords that only make sense in a standalone document. */
function clean(schema: JsonSchema): JsonSchema {
  const { $schema: _schema, $id: _id, ...rest } = schema;
  return rest;
}

/** Date-time strings get `format: date-time` only: zod's long validation pattern is noise here. */
function dropDateTimePattern(ctx: { jsonSchema: { format?: string; pattern?: string } }): void {
  if (ctx.jsonSchema.format === 'date-time') delete ctx.jsonSchema.pattern;
}

function schemaOf(schema: z.ZodType): JsonSchema {
  const id = components.get(schema)?.id;
  if (id !== undefined) return { $ref: REF_BASE + id };
  return clean(
    z.toJSONSchema(schema, {
      io: 'input',
      override: dropDateTimePattern,
      unrepresentable: 'any',
    }) as JsonSchema,
  );
}

function componentSchemas(): Record<string, JsonSchema> {
  const generated = z.toJSONSchema(components, {
    io: 'input',
    uri: (id) => REF_BASE + id,
    override: dropDateTimePattern,
  }) as { schemas: Record<string, JsonSchema> };
  const out: Record<string, JsonSchema> = {};
  for (const [id, schema] of Object.entries(generated.schemas)) out[id] = clean(schema);
  return out;
}

function errorResponse(description: string, validation = false) {
  return {
    description,
    content: {
      'application/json': { schema: { $ref: REF_BASE + (validation ? 'ValidationError' : 'Error') } },
    },
  };
}

function parameters(route: AnyRoute): JsonSchema[] {
  const out: JsonSchema[] = [];
  for (const match of route.path.matchAll(/\{(\w+)\}/g)) {
    out.push({ name: match[1], in: 'path', required: true, schema: { type: 'string', maxLength: 128 } });
  }
  for (const [name, field] of Object.entries(route.query.shape as Record<string, z.ZodType>)) {
    const { description, ...schema } = schemaOf(field);
    out.push({
      name,
      in: 'query',
      required: !field.safeParse(undefined).success,
      ...(typeof description === 'string' ? { description } : {}),
      schema,
    });
  }
  return out;
}

function operation(route: AnyRoute): Record<string, unknown> {
  const scopeText = route.scope === null ? '' : `Requires the scope \`${route.scope}\` (or \`admin\`).`;
  const op: Record<string, unknown> = {
    operationId: route.operationId,
    summary: route.summary,
    description: [route.description, scopeText].filter(Boolean).join('\n\n'),
    tags: [route.tag],
  };
  if (route.scope === null) op.security = [];
  else op['x-required-scope'] = route.scope;
  const params = parameters(route);
  if (params.length > 0) op.parameters = params;
  if (route.body) {
    op.requestBody = {
      required: !route.body.safeParse({}).success,
      content: { 'application/json': { schema: schemaOf(route.body) } },
    };
  }
  const responses: Record<string, unknown> = {
    [String(route.status)]: {
      description: route.status === 201 ? 'Created' : 'OK',
      content: { 'application/json': { schema: schemaOf(route.response) } },
    },
  };
  if (route.scope !== null) {
    responses['400'] = errorResponse('Malformed Authorization header, or a body that is not JSON.');
    responses['401'] = errorResponse('Missing, unknown, revoked or expired key.');
    responses['403'] = errorResponse(
      'The key lacks the scope, may not be used from this address, or would grant more than it has.',
    );
    responses['404'] = errorResponse('No such resource in the key’s workspaces.');
    if (route.conflict !== undefined) responses['409'] = errorResponse(route.conflict);
    if (route.body) responses['413'] = errorResponse('The body is larger than 1 MiB.');
    responses['422'] = errorResponse('The request failed validation.', true);
    responses['429'] = errorResponse('Too many failed authentication attempts from this address.');
  }
  return { ...op, responses };
}

export function buildOpenApi(routes: readonly AnyRoute[]): OpenApiDoc {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const item = paths[route.path] ?? {};
    item[route.method.toLowerCase()] = operation(route);
    paths[route.path] = item;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Keygate management API', version: '1.0.0', description: DESCRIPTION },
    tags: [
      { name: 'keys', description: 'API keys: create, list, show, update, rotate, revoke.' },
      { name: 'workspaces', description: 'Workspaces and their key policy.' },
      { name: 'audit', description: 'The append-only audit log.' },
      {
        name: 'usage',
        description:
          'Usage reports: per key, model, endpoint, workspace, hour or day, with latency and cost.',
      },
      {
        name: 'alerts',
        description: 'Alerts, their channels (webhook, Slack, email), test sends and the rules’ settings.',
      },
      { name: 'meta', description: 'This document.' },
    ],
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          description: 'A Keygate key with the management scope the operation names.',
        },
      },
      schemas: componentSchemas(),
    },
  };
}
