# Keygate image (docs/deploy.md). Node.js 24 LTS; the console is built at image build time.
FROM node:24-bookworm-slim AS build
WORKDIR /opt/keygate
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY console ./console
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build:console && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /opt/keygate
COPY --from=build /opt/keygate /opt/keygate
RUN useradd --system --home /var/lib/keygate --create-home keygate
USER keygate
EXPOSE 8080
# Plain HTTP inside the container network: TLS is terminated by the proxy in front.
# Through bin/keygate.js, which re-executes `start` with the memory settings of the gateway (V8's
# young generation and heap growth, MALLOC_ARENA_MAX; see the comment there): keep it the entry point.
ENTRYPOINT ["node", "/opt/keygate/bin/keygate.js", "start", "--http", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/var/lib/keygate"]
