/**
 * Request validation for the public API: only what the gateway itself needs (the model, the
 * fields without which the provider call cannot mean anything, and `stream`). Unknown fields pass
 * through untouched so that new provider features work without a Keygate release.
 */
import { scrubKeys } from '../keys/scrub.ts';
import { modelIdProblem } from '../providers/models.ts';
import type { ValidationIssue } from './errors.ts';

export type Endpoint = 'chat' | 'fim' | 'embeddings';

export type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function requireField(body: JsonObject, field: string, issues: ValidationIssue[]): unknown {
  const value = body[field];
  if (value === undefined) issues.push({ loc: ['body', field], msg: 'Field required', type: 'missing' });
  return value;
}

/**
 * The input of an issue as the answer may echo it: a short scalar, with anything key-shaped taken
 * out; nothing for long strings, objects and lists (a 10 MiB value is not sent back).
 */
function shownInput(value: unknown): { input?: unknown } {
  if (value === null || typeof value === 'boolean' || typeof value === 'number') return { input: value };
  if (typeof value === 'string' && value.length <= 64) return { input: scrubKeys(value) };
  return {};
}

function checkModel(body: JsonObject, issues: ValidationIssue[]): void {
  const value = requireField(body, 'model', issues);
  if (value === undefined) return;
  if (typeof value !== 'string' || value.length === 0) {
    issues.push({
      loc: ['body', 'model'],
      msg: 'Input should be a non-empty string',
      type: 'string_type',
      ...shownInput(value),
    });
    return;
  }
  const problem = modelIdProblem(value);
  if (problem !== undefined) issues.push({ loc: ['body', 'model'], msg: problem, type: 'model_id' });
}

/**
 * The validation error of a body whose top-level object names a member twice (see
 * json-members.ts): the gateway would authorise one value and the provider might read the other.
 */
export function duplicateMemberIssue(name: string): ValidationIssue {
  return {
    loc: ['body', scrubKeys(name.length > 64 ? `${name.slice(0, 64)}…` : name)],
    msg: 'Duplicate member: a request may name each top-level member once',
    type: 'duplicate_member',
  };
}

export function validateBody(endpoint: Endpoint, body: unknown): ValidationIssue[] {
  if (!isObject(body)) {
    return [{ loc: ['body'], msg: 'Input should be a valid dictionary', type: 'dict_type' }];
  }
  const issues: ValidationIssue[] = [];
  checkModel(body, issues);
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    issues.push({
      loc: ['body', 'stream'],
      msg: 'Input should be a valid boolean',
      type: 'bool_type',
      ...shownInput(body.stream),
    });
  }
  switch (endpoint) {
    case 'chat': {
      const messages = requireField(body, 'messages', issues);
      if (messages !== undefined) {
        if (!Array.isArray(messages)) {
          issues.push({ loc: ['body', 'messages'], msg: 'Input should be a valid list', type: 'list_type' });
        } else if (messages.length === 0) {
          issues.push({
            loc: ['body', 'messages'],
            msg: 'List should have at least 1 item',
            type: 'too_short',
          });
        } else {
          messages.forEach((message, index) => {
            if (!isObject(message) || typeof message.role !== 'string') {
              issues.push({
                loc: ['body', 'messages', index],
                msg: 'Each message must be an object with a string "role"',
                type: 'model_type',
              });
            }
          });
        }
      }
      break;
    }
    case 'fim': {
      const prompt = requireField(body, 'prompt', issues);
      if (prompt !== undefined && typeof prompt !== 'string') {
        issues.push({ loc: ['body', 'prompt'], msg: 'Input should be a valid string', type: 'string_type' });
      }
      break;
    }
    case 'embeddings': {
      const input = requireField(body, 'input', issues);
      const ok =
        typeof input === 'string' ||
        (Array.isArray(input) && input.length > 0 && input.every((i) => typeof i === 'string'));
      if (input !== undefined && !ok) {
        issues.push({
          loc: ['body', 'input'],
          msg: 'Input should be a string or a non-empty list of strings',
          type: 'string_type',
        });
      }
      break;
    }
  }
  return issues;
}
