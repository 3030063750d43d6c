#!/usr/bin/env bash
# Builds the image with podman on a machine without Docker or registry access, starts it,
# waits for readiness (/api/health/ready/), runs one search and stops it (the recipe in
# CONTAINERS.md); the image's HEALTHCHECK asks liveness (/api/health/live/).
# `--format docker`: the OCI format has no HEALTHCHECK.
#   docker/podman-smoke.sh        # from the repository root; needs root, podman, runc,
#                                 # debootstrap (apt-get install podman debootstrap runc)
# Weights cannot be downloaded here, so the image is built with EMBEDDING_WEIGHTS=random.
set -euo pipefail

IMAGE=${IMAGE:-localhost/visualsearch:smoke}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
CONTAINER=visualsearch-smoke-$$
WAIT_SECONDS=${WAIT_SECONDS:-300}
cd "$(dirname "$0")/.."
work=$(mktemp -d)

say() { printf '\n== %s\n' "$*"; }
cleanup() {
  podman --runtime runc rm -f "$CONTAINER" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# podman's default ulimits cannot be applied in this sandbox (CONTAINERS.md)
if ! grep -qs 'default_ulimits' /etc/containers/containers.conf; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n' >>/etc/containers/containers.conf
fi

if ! podman image exists "$BASE_IMAGE"; then
  say "making $BASE_IMAGE with debootstrap"
  # The first mirror apt really uses (not a commented-out one).
  # (awk, not a grep pipeline: under pipefail a missing sources file or an early `head`
  # would fail the script.)
  sources=$(ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  # shellcheck disable=SC2086
  mirror=$(awk '/^(URIs:|deb )/ { for (i = 1; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; exit } }' $sources)
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/rootfs" -c . | podman import - "$BASE_IMAGE"
  rm -rf "$work/rootfs"
fi

# The build installs from the same places this machine's pip does: its index settings,
# constraints, local wheel folders and CA bundle, mounted read-only into the build.
mounts=()
mkdir -p "$work/pip"
pip_conf="$work/pip/pip.conf"
echo "[global]" >"$pip_conf"
pip_setting() { pip config list 2>/dev/null | sed -n "s/^global\.$1='\(.*\)'$/\1/p" | head -1; }
for key in extra-index-url find-links; do
  value=$(pip_setting "$key")
  [[ -n "$value" ]] || continue
  echo "$key = $value" >>"$pip_conf"
  for path in $(grep -oE '(file://)?/[^ ]+' <<<"$value" | sed 's|^file://||'); do
    [[ "$path" == */simple ]] && path=$(dirname "$path") # its files/ sit beside it
    [[ -d "$path" ]] && mounts+=(-v "$path:$path:ro")
  done
done
constraint=$(pip_setting constraint)
if [[ -f "$constraint" ]]; then
  cp "$constraint" "$work/pip/constraints.txt"
  echo "constraint = /etc/xdg/pip/constraints.txt" >>"$pip_conf"
fi
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then # the egress proxy's CA is in it
  cp /etc/ssl/certs/ca-certificates.crt "$work/pip/ca.crt"
  echo "cert = /etc/xdg/pip/ca.crt" >>"$pip_conf"
fi
mounts+=(-v "$work/pip:/etc/xdg/pip:ro")

say "building $IMAGE (base $BASE_IMAGE)"
start=$(date +%s)
podman build --runtime runc --network host --format docker "${mounts[@]}" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg EMBEDDING_WEIGHTS=random \
  --build-arg TORCH_INDEX_URL= \
  -t "$IMAGE" -f docker/Dockerfile .
echo "build took $(($(date +%s) - start)) s"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "starting $CONTAINER on port $port (ROLE=all, LOAD_DEMO=true)"
podman --runtime runc run -d --name "$CONTAINER" --network host \
  -e PORT="$port" -e ROLE=all -e LOAD_DEMO=true -e ALLOWED_HOSTS=localhost,127.0.0.1 \
  "$IMAGE" >/dev/null
url="http://127.0.0.1:$port"

deadline=$(($(date +%s) + WAIT_SECONDS))
until curl -fs -o "$work/health.json" "$url/api/health/ready/"; do
  if (($(date +%s) > deadline)) || [[ "$(podman inspect -f '{{.State.Running}}' "$CONTAINER")" != true ]]; then
    podman logs --tail 60 "$CONTAINER"
    echo "FAILED: /api/health/ready/ did not answer 200 in $WAIT_SECONDS s" >&2
    exit 1
  fi
  sleep 3
done
say "/api/health/ready/ answered 200"
cat "$work/health.json"
echo

say "the image's HEALTHCHECK (docker/healthcheck.py: liveness, /api/health/live/)"
# (podman logs that it cannot reach systemd to schedule the periodic check; run it once here)
podman --runtime runc healthcheck run "$CONTAINER" && echo healthy

# A JPEG that ships in the image (scikit-image's sample photos).
podman --runtime runc exec "$CONTAINER" python -c \
  "import pathlib, skimage.data, sys; sys.stdout.buffer.write((pathlib.Path(skimage.data.__file__).parent / 'rocket.jpg').read_bytes())" \
  >"$work/query.jpg"

say "POST /api/search/ with rocket.jpg ($(stat -c %s "$work/query.jpg") bytes), until the demo catalog is indexed"
count=0
until ((count > 0)); do
  status=$(curl -sS -o "$work/search.json" -w '%{http_code}' -F image=@"$work/query.jpg" -F top_k=3 "$url/api/search/")
  count=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1])).get("results", [])))' "$work/search.json" 2>/dev/null || echo 0)
  if [[ "$status" != 200 ]] || (($(date +%s) > deadline)); then
    ((count > 0)) && break
    [[ "$status" == 200 ]] || { echo "FAILED: search answered $status" >&2; cat "$work/search.json" >&2; }
    podman logs --tail 40 "$CONTAINER"
    exit 1
  fi
  ((count > 0)) || sleep 3
done
echo "status $status, $count results:"
python3 -c 'import json, sys
answer = json.load(open(sys.argv[1]))
for r in answer["results"]:
    print("  %5.1f%%  %s" % (r["similarity"], r["title"]))
print("model", answer["model"], "took_ms", answer["took_ms"])' "$work/search.json"

say "torch in the runtime image?"
podman --runtime runc exec "$CONTAINER" python -c \
  "import importlib.util; print('torch importable:', importlib.util.find_spec('torch') is not None)"
podman --runtime runc exec "$CONTAINER" sh -c 'echo "user: $(id -un)"; ls -l "$EMBEDDING_CACHE_DIR"'

say "image size"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "$IMAGE: $size bytes ($((size / 1024 / 1024)) MiB)"

podman --runtime runc stop -t 20 "$CONTAINER" >/dev/null
say "stopped; smoke test passed"
