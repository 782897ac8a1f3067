/**
 * Serves the built console (console/dist) under /console: hashed assets cached for a year, the
 * page itself never cached, every other /console path answered with the page (the app routes in
 * the browser). Files are read once at start; each response carries the strict CSP.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CONSOLE_DIST = fileURLToPath(new URL('../../console/dist/', import.meta.url));

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers on every console response, the session API's included. */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'x-frame-options': 'DENY',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
  immutable: boolean;
}

function walk(dir: string, root: string, out: Map<string, StaticFile>): void {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      walk(path, root, out);
      continue;
    }
    const rel = relative(root, path).split(sep).join('/');
    const body = readFileSync(path);
    out.set(`/console/${rel}`, {
      body,
      type: TYPES[extname(name)] ?? 'application/octet-stream',
      etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
      immutable: rel.startsWith('assets/'),
    });
  }
}

/** A request handler for /console and everything under it (but /console/api). */
export function createConsoleStatic(
  dist = CONSOLE_DIST,
): (req: IncomingMessage, res: ServerResponse) => void {
  const files = new Map<string, StaticFile>();
  if (existsSync(join(dist, 'index.html'))) walk(dist, dist, files);
  const page = files.get('/console/index.html');

  return (req, res) => {
    for (const [name, value] of Object.entries(CONSOLE_HEADERS)) res.setHeader(name, value);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      res.end('The console is read with GET.\n');
      return;
    }
    if (!page) {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
      res.end('The console is not built. Run `npm run build:console` (npm start and npm install do it).\n');
      return;
    }
    const pathname = decodeURIComponentSafe((req.url ?? '/').split('?', 1)[0] ?? '/');
    let file = pathname === undefined ? undefined : files.get(pathname);
    if (!file) {
      // A file-like path that does not exist is a 404; anything else is a page of the app.
      if (pathname === undefined || /\.[a-z0-9]{1,8}$/i.test(pathname)) {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
        res.end('Not found.\n');
        return;
      }
      file = page;
    }
    const headers: Record<string, string | number> = {
      'content-type': file.type,
      'content-length': file.body.length,
      etag: file.etag,
      'cache-control': file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
    };
    if (req.headers['if-none-match'] === file.etag) {
      res.writeHead(304, { etag: file.etag, 'cache-control': headers['cache-control'] as string });
      res.end();
      return;
    }
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : file.body);
  };
}

function decodeURIComponentSafe(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}
