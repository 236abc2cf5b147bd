# gems images. Build:
#   docker build -t gems:cpu --target cpu .
#   docker build -t gems:gpu --target gpu .          # CUDA runtime + @tensorflow/tfjs-node-gpu
# Run (state in a volume; gRPC 50061 memory service, 50062 recommender, 9464 metrics):
#   docker run --rm -v gems-data:/data -p 50061:50061 -p 50062:50062 -p 9464:9464 gems:cpu
#   docker run --rm -v gems-data:/data gems:cpu gems ingest movielens --path /app/data/ml-latest-small
#   docker run --rm --gpus all -v gems-data:/data -p 50062:50062 gems:gpu
# The commands are the README's: `gems <subcommand>`; the default is `gems serve` (both services, colocated).

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile TypeScript and the native BLAS kernels ----------------------------------------------------
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ pkg-config libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev

# --- cpu: the default image (wasm backend + native OpenBLAS kernels) ------------------------------------------
FROM ${NODE_IMAGE} AS cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread tini fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown node:node /data
WORKDIR /app
COPY --from=build --chown=node:node /app /app
ENV NODE_ENV=production GEMS_DATA_DIR=/data GEMS_SERVING__HOST=0.0.0.0 GEMS_LOG_FORMAT=json PATH=/app/bin:$PATH
USER node
VOLUME ["/data"]
EXPOSE 50061 50062 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:9464/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gems", "serve"]

# --- gpu: CUDA runtime + tfjs-node-gpu (libtensorflow is downloaded at build time, so this needs the internet) --
# tfjs-node-gpu 4.x links TensorFlow 2.9 built for CUDA 11.2 / cuDNN 8.
FROM nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04 AS gpu
COPY --from=build /usr/local/bin/node /usr/local/bin/node
COPY --from=build /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ libopenblas0-pthread tini ca-certificates fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 gems && mkdir -p /data && chown gems:gems /data
WORKDIR /app
COPY --from=build --chown=gems:gems /app /app
RUN npm install --no-save --no-audit --no-fund @tensorflow/tfjs-node-gpu@4.22.0 \
 && npm rebuild @tensorflow/tfjs-node-gpu
ENV NODE_ENV=production GEMS_DATA_DIR=/data GEMS_SERVING__HOST=0.0.0.0 GEMS_LOG_FORMAT=json GEMS_BACKEND=gpu PATH=/app/bin:$PATH
USER gems
VOLUME ["/data"]
EXPOSE 50061 50062 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:9464/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gems", "serve"]
