#!/usr/bin/env bash
# Builds both images and smoke-tests them, where a Docker engine can (CI, a workstation). The
# development machine has none, so this has not been run there; DockerfilesTest lints offline.
#   deploy/docker/check-build.sh            # CPU image, and the CUDA image
#   GPU=1 deploy/docker/check-build.sh      # also run the CUDA image on a GPU (--gpus 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v docker >/dev/null || { echo "check-build: no docker on PATH" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "check-build: docker cannot reach an engine" >&2; exit 2; }

smoke() { # image, extra docker run args...
  local image=$1; shift
  local name="gpumeter-check-$$"
  docker run -d --name "$name" -p 127.0.0.1::8080 "$@" "$image" >/dev/null
  trap 'docker rm -f "$name" >/dev/null 2>&1 || true' RETURN
  local port; port=$(docker port "$name" 8080/tcp | head -1 | sed 's/.*://')
  # Start-up (embedded PostgreSQL, model load, warm-up) within the StatefulSet's startupProbe window.
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    sleep 1
  done
  curl -fsS "http://127.0.0.1:$port/readyz"; echo
  [ "$(docker exec "$name" id -u)" != 0 ] || { echo "check-build: $image runs as root" >&2; return 1; }
  local key; key=$(docker exec "$name" java -jar /app/gpumeter-server.jar create-key --account check)
  curl -fsS "http://127.0.0.1:$port/v1/completions" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' \
    -d '{"model":"demo-byte-lm","prompt":"The ","max_tokens":4,"temperature":0}'; echo
  docker kill -s TERM "$name" >/dev/null
  docker wait "$name"
}

docker build -t gpumeter:cpu -f Dockerfile .
smoke gpumeter:cpu
docker build -t gpumeter:cuda -f deploy/docker/Dockerfile.cuda .
docker run --rm --entrypoint sh gpumeter:cuda -c 'ls /opt/libtorch/lib/libtorch.so && id -u'
if [ "${GPU:-0}" = 1 ]; then
  smoke gpumeter:cuda --gpus 1
fi
echo "check-build: ok"
