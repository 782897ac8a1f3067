# Keygate image (docs/deploy.md). Node.js 24 LTS; the gateway and the console are built at image
# build time. test/regression/docker-build-order.test.ts replays this file's steps in CI (no
# Docker engine runs there): keep to the syntax test/support/dockerfile.ts understands.
FROM node:24-bookworm-slim AS build
WORKDIR /opt/keygate
# The dependencies first, in a layer that a change of the source does not rebuild, and without
# install scripts: the project's own `prepare` is the build, which needs the source copied below
# (run before it, tsc stopped at TS5058), and the only dependency with one is the dev dependency
# `node`, which would download a second Node 24 into an image that has one.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:24-bookworm-slim
# KEYGATE_DATA_DIR: `docker compose exec keygate-1 node bin/keygate.js <command>` then works on the
# gateway's data directory (the CLI's default, ./.keygate, is not writable by the keygate user).
ENV NODE_ENV=production KEYGATE_DATA_DIR=/var/lib/keygate
WORKDIR /opt/keygate
# Only what runs: the launcher, the compiled gateway, the built console, the production
# dependencies (bin/keygate.js runs dist/ when there is no newer src/ beside it).
COPY --from=build /opt/keygate/package.json ./package.json
COPY --from=build /opt/keygate/bin ./bin
COPY --from=build /opt/keygate/dist ./dist
COPY --from=build /opt/keygate/console/dist ./console/dist
COPY --from=build /opt/keygate/node_modules ./node_modules
RUN useradd --system --home /var/lib/keygate --create-home keygate
USER keygate
EXPOSE 8080
# Plain HTTP inside the container network: TLS is terminated by the proxy in front.
# Through bin/keygate.js, which re-executes `start` with the memory settings of the gateway (V8's
# young generation and heap growth, MALLOC_ARENA_MAX; see the comment there): keep it the entry point.
ENTRYPOINT ["node", "/opt/keygate/bin/keygate.js", "start", "--http", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/var/lib/keygate"]
