/**
 * The route table's types and path matching. One table (routes.ts) drives dispatch, the Allow
 * header of a 405, and the OpenAPI document.
 */
import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import type { Actor, KeyRecord, ManagementScope, Role } from '../../store/types.ts';
import type { AdminDeps } from './index.ts';

/** Query parameters are always an object schema (strict: unknown parameters are refused). */
export type QuerySchema = z.ZodObject<z.core.$ZodShape, z.core.$ZodObjectConfig>;

export type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

export interface Context<Query, Body> {
  deps: AdminDeps;
  req: IncomingMessage;
  requestId: string;
  /** The verified key making the request (undefined only on public routes). */
  caller: KeyRecord;
  /** Who the audit log records: the calling key and the client address. */
  actor: Actor;
  /**
   * For a key that belongs to a user (created for or by them): that user and their role in the
   * key's workspace. The key's management scopes are already narrowed to what the role allows.
   */
  owner: { userId: string; role: Role } | undefined;
  /**
   * A console session of the owner of ws_default (the operator): it acts in the workspace the
   * console picked, but may also change workspace policies and create workspaces.
   */
  operator: boolean;
  /** Path parameters, by the name in the template (`{id}` → `params.id`), decoded. */
  params: Readonly<Record<string, string>>;
  query: Query;
  body: Body;
}

/** What a handler answers besides its body: response headers (e.g. Location). */
export interface Reply<T> {
  body: T;
  headers?: Record<string, string>;
}

export interface RouteDef<Q extends QuerySchema, B extends z.ZodType, R extends z.ZodType> {
  method: Method;
  /** OpenAPI-style template: `/admin/v1/keys/{id}`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: 'keys' | 'workspaces' | 'audit' | 'usage' | 'alerts' | 'meta';
  /** The management scope the calling key needs (`admin` implies all); null: no authentication. */
  scope: ManagementScope | null;
  query: Q;
  /** The request body; absent for routes that take none. An empty body reads as `{}`. */
  body?: B;
  status: 200 | 201;
  response: R;
  /** When the operation can answer 409, what that means (for the OpenAPI document). */
  conflict?: string;
  handle(ctx: Context<z.output<Q>, z.output<B>>): Promise<Reply<z.input<R>>>;
}

export type AnyRoute = RouteDef<QuerySchema, z.ZodType, z.ZodType>;

/** Erases a route's types so routes of different shapes fit in one table. */
export function defineRoute<
  Q extends QuerySchema,
  B extends z.ZodType = z.ZodNever,
  R extends z.ZodType = z.ZodType,
>(def: RouteDef<Q, B, R>): AnyRoute {
  return def as unknown as AnyRoute;
}

export type Match =
  | { kind: 'route'; route: AnyRoute; params: Record<string, string> }
  | { kind: 'method_not_allowed'; allow: string[] }
  | { kind: 'not_found' };

const PARAM = /^\{(\w+)\}$/;
/** Ids (and email addresses) are short and plain; anything else cannot name a resource. */
const SEGMENT_VALUE = /^[\w.:@+-]{1,254}$/;

function matchPath(template: string, segments: readonly string[]): Record<string, string> | undefined {
  const parts = template.split('/');
  if (parts.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? '';
    const segment = segments[i] ?? '';
    const param = PARAM.exec(part);
    if (param) {
      if (!SEGMENT_VALUE.test(segment)) return undefined;
      params[param[1] ?? ''] = segment;
    } else if (part !== segment) {
      return undefined;
    }
  }
  return params;
}

export function matchRoute(routes: readonly AnyRoute[], method: string, pathname: string): Match {
  let segments: string[];
  try {
    segments = pathname.split('/').map(decodeURIComponent);
  } catch {
    return { kind: 'not_found' };
  }
  // A literal segment beats a parameter: `/alerts/channels` is not the alert with id "channels".
  let best: { route: AnyRoute; params: Record<string, string> } | undefined;
  let bestParams = Number.POSITIVE_INFINITY;
  let allow: string[] = [];
  let allowParams = Number.POSITIVE_INFINITY;
  for (const route of routes) {
    const params = matchPath(route.path, segments);
    if (!params) continue;
    const count = Object.keys(params).length;
    if (count < allowParams) {
      allow = [];
      allowParams = count;
    }
    if (count === allowParams && !allow.includes(route.method)) allow.push(route.method);
    if (route.method === method && count < bestParams) {
      best = { route, params };
      bestParams = count;
    }
  }
  if (best && bestParams <= allowParams) return { kind: 'route', ...best };
  return allow.length > 0 ? { kind: 'method_not_allowed', allow } : { kind: 'not_found' };
}
