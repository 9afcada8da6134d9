#!/usr/bin/env bash
# Build the CPU container image from docker/Dockerfile without a Docker engine (buildah), then
# check it: `info` and a short 2-rank hybrid run inside the image.
#
#   scripts/build-container.sh [--wheelhouse DIR] [--tag NAME] [--base IMAGE] [--no-check]
#
#   --wheelhouse DIR  prebuilt wheels of the compiled stack (default: $PARALLEL_MS_WHEELHOUSE);
#                     without one the image builds PETSc and Firedrake from source (~11 min).
#   --tag NAME        image name (default localhost/parallel_ms:cpu)
#   --base IMAGE      base image (default: localhost/debian:bookworm, made here with debootstrap
#                     --variant=minbase when absent, since no image registry may be reachable)
#   --no-check        build only
# Torch: a CPU wheel of the pinned torch found in pip's find-links directories (or given as
# TORCH_WHEEL=FILE) goes into the image's wheelhouse, so the image holds no CUDA libraries;
# otherwise TORCH_INDEX_URL (e.g. PyTorch's CPU index) must say where a CPU torch comes from.
# Needs root (buildah with chroot isolation and vfs storage, debootstrap); installs buildah and
# debootstrap through apt when missing. Prints the build time and the image size at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELHOUSE="${PARALLEL_MS_WHEELHOUSE:-}"
TAG=localhost/parallel_ms:cpu
BASE=localhost/debian:bookworm
CHECK=1
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --no-check) CHECK=0; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-container.sh: unknown option '$1' (allowed: --wheelhouse DIR, --tag NAME, --base IMAGE, --no-check)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "build-container.sh: needs root (buildah chroot isolation, debootstrap)" >&2; exit 2; }
if [ -n "$WHEELHOUSE" ] && [ ! -d "$WHEELHOUSE" ]; then
  echo "build-container.sh: wheelhouse '$WHEELHOUSE' is not a directory" >&2; exit 2
fi
export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs
T_START=$(date +%s)
step() { echo "[container] $* ($(( $(date +%s) - T_START )) s)"; }

missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (apt)"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# ---------------------------------------------------------------- base image
if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  step "base image $BASE present"
elif [ "$BASE" = localhost/debian:bookworm ]; then
  step "making base image $BASE with debootstrap --variant=minbase bookworm"
  ROOTFS=$(mktemp -d /var/tmp/parallel_ms-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >/dev/null
  # the security and updates suites, as in Debian's own image
  printf '%s\n' "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" > "$ROOTFS/etc/apt/sources.list"
  tar -C "$ROOTFS" -cf "$ROOTFS.tar" .
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$ROOTFS.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
  buildah commit -q "$ctr" "$BASE" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -rf "$ROOTFS" "$ROOTFS.tar"
else
  step "pulling base image $BASE"
  buildah pull -q "$BASE" >/dev/null
fi

# ---------------------------------------------------------------- build context
# the tracked and untracked-but-not-ignored files (no .venv, runs/, build/), plus a wheelhouse
CTX=$(mktemp -d /var/tmp/parallel_ms-context.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 -I{} sh -c '[ -e "{}" ] && printf "%s\0" "{}"' \
  | tar --null -T - -cf -) | tar -C "$CTX" -xf -
BUILD_ARGS=(--build-arg "BASE=$BASE")
mkdir -p "$CTX/wheelhouse"
[ -n "$WHEELHOUSE" ] && cp "$WHEELHOUSE"/*.whl "$CTX/wheelhouse/"
TORCH_VERSION=$(sed -n 's/^TORCH_SPEC="torch==\([^"]*\)".*/\1/p' "$ROOT/scripts/install.sh")
if [ -z "${TORCH_WHEEL:-}" ]; then
  for d in ${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true); do
    for f in "$d"/torch-"$TORCH_VERSION"+cpu-*.whl; do [ -f "$f" ] && TORCH_WHEEL="$f"; done
  done
fi
if [ -n "${TORCH_WHEEL:-}" ]; then
  step "CPU torch from $TORCH_WHEEL"
  cp "$TORCH_WHEEL" "$CTX/wheelhouse/"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  BUILD_ARGS+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
else
  echo "build-container.sh: no CPU torch wheel found (set TORCH_WHEEL=FILE or TORCH_INDEX_URL=URL of a CPU wheel index); PyPI's default torch would bring several GB of CUDA libraries" >&2
  exit 2
fi
if ls "$CTX/wheelhouse"/*.whl >/dev/null 2>&1; then
  BUILD_ARGS+=(--build-arg PARALLEL_MS_WHEELHOUSE=/opt/parallel_ms/wheelhouse)
fi

# a CA bundle the host's pip trusts (a TLS-intercepting proxy's) is mounted for the build only
CA_BUNDLE="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-$(pip config get global.cert 2>/dev/null || true)}}"
if [ -n "$CA_BUNDLE" ] && [ -f "$CA_BUNDLE" ]; then
  BUILD_ARGS+=(--volume "$CA_BUNDLE:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
fi

# ---------------------------------------------------------------- build
step "building $TAG from docker/Dockerfile"
T_BUILD=$(date +%s)
buildah build --layers=false --pull=false -f "$CTX/docker/Dockerfile" -t "$TAG" "${BUILD_ARGS[@]}" "$CTX"
BUILD_S=$(( $(date +%s) - T_BUILD ))
SIZE=$(buildah images --format '{{.Size}}' "$TAG" | head -1)
step "built $TAG in $BUILD_S s, image size $SIZE"

# ---------------------------------------------------------------- check
if [ "$CHECK" = 1 ]; then
  ctr=$(buildah from --pull=false "$TAG")
  trap 'buildah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$CTX"' EXIT
  in_image() { buildah run --workingdir /opt/parallel_ms "$ctr" -- "$@"; }
  step "info inside the image (2 ranks)"
  in_image scripts/run.sh info
  step "2-rank hybrid run inside the image"
  T_RUN=$(date +%s)
  in_image env NP=2 scripts/run.sh run --case paper-1d-eps1_15 --method hybrid --steps 200 \
    --points 2000 --set output.root=/tmp/runs --set output.name=container-check
  in_image .venv/bin/python -m parallel_ms report /tmp/runs/container-check
  step "hybrid run inside the image: $(( $(date +%s) - T_RUN )) s"
fi
step "done: build $BUILD_S s, image $SIZE"
