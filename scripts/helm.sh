#!/usr/bin/env bash
# A pinned `helm` built from the Go module proxy, and `kubecheck`, the offline validator of
# rendered manifests (scripts/helm/kubecheck: strict decoding into the Kubernetes API types
# plus cross-object checks), both cached outside the repository. Nothing needs a cluster
# or network access once built; only Go (1.26+) and the module proxy for the first build.
#
#   scripts/helm.sh build              build both if missing (prints the two paths)
#   scripts/helm.sh status             exit 0 if both are built, else 1
#   scripts/helm.sh helm ARGS...       run the pinned helm (built first if needed)
#   scripts/helm.sh validate FILE...   run kubecheck on rendered manifests ("-" = stdin)
#   scripts/helm.sh check [CHART]      lint (strict), render with the default values and every
#                                      values profile under CHART/profiles/ (each with its
#                                      <profile>-example-*.yaml files), validate each
#                                      (default CHART: helm/gridflex)
#   scripts/helm.sh path | kubecheck-path   print a binary's path (exit 1 if not built)
#
# Environment:
#   GRIDFLEX_HELM_VERSION   helm release (Go module helm.sh/helm/v3); default v3.22.0
#   GRIDFLEX_HELM_HOME      cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/helm
#   GRIDFLEX_KUBE_VERSION   Kubernetes version `check` renders for; default 1.37.0, the
#                           release of the k8s.io/api types kubecheck decodes into (v0.37)
#
# Layout under GRIDFLEX_HELM_HOME:
#   <version>/bin/helm, <version>/build-seconds     the helm binary and how long it took
#   kubecheck-<hash>/kubecheck, .../build-seconds   keyed by the source's hash (rebuilt on edit)
#   home/{cache,config,data}                        helm's own state (kept out of $HOME)
set -euo pipefail

readonly SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly KUBECHECK_SRC="$SCRIPT_DIR/helm/kubecheck"
VERSION="${GRIDFLEX_HELM_VERSION:-v3.22.0}"
HHOME="${GRIDFLEX_HELM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/helm}"
KUBE_VERSION="${GRIDFLEX_KUBE_VERSION:-1.37.0}"

log() { printf 'helm.sh: %s\n' "$*" >&2; }
die() { printf 'helm.sh: error: %s\n' "$*" >&2; exit 1; }

[[ "$VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "GRIDFLEX_HELM_VERSION must look like v3.22.0, got '$VERSION'"

HELM_BIN="$HHOME/$VERSION/bin/helm"
src_hash() {
  (cd "$KUBECHECK_SRC" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
}
KUBECHECK_BIN="$HHOME/kubecheck-$(src_hash)/kubecheck"

export HELM_CACHE_HOME="$HHOME/home/cache" HELM_CONFIG_HOME="$HHOME/home/config" \
  HELM_DATA_HOME="$HHOME/home/data"

go_env() {
  command -v go >/dev/null || die "Go is needed for the first build (https://go.dev/dl/)"
  # a busy shared machine: two threads, one package at a time, low priority
  export GOMAXPROCS="${GOMAXPROCS:-2}" CGO_ENABLED=0
  export GOFLAGS="-buildvcs=false -p=1 -trimpath"
}

now() { date +%s; }

build_helm() {
  [[ -x "$HELM_BIN" ]] && return 0
  go_env
  local t0 tmp
  t0=$(now)
  tmp="$HHOME/$VERSION/bin.tmp.$$"
  mkdir -p "$tmp"
  log "building helm $VERSION from the Go module proxy (several minutes on a busy machine)"
  GOBIN="$tmp" nice -n 10 go install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION" \
    "helm.sh/helm/v3/cmd/helm@$VERSION" || { rm -rf "$tmp"; die "helm build failed"; }
  mkdir -p "$HHOME/$VERSION/bin"
  mv "$tmp/helm" "$HELM_BIN" && rm -rf "$tmp"
  echo $(( $(now) - t0 )) >"$HHOME/$VERSION/build-seconds"
  log "helm $VERSION built in $(cat "$HHOME/$VERSION/build-seconds") s: $HELM_BIN"
}

build_kubecheck() {
  [[ -x "$KUBECHECK_BIN" ]] && return 0
  go_env
  local t0 dir
  t0=$(now)
  dir="$(dirname "$KUBECHECK_BIN")"
  mkdir -p "$dir"
  log "building kubecheck (k8s.io/api types, strict decoding)"
  (cd "$KUBECHECK_SRC" && nice -n 10 go build -ldflags "-s -w" -o "$KUBECHECK_BIN.tmp.$$" .) \
    || { rm -f "$KUBECHECK_BIN.tmp.$$"; die "kubecheck build failed"; }
  mv "$KUBECHECK_BIN.tmp.$$" "$KUBECHECK_BIN"
  echo $(( $(now) - t0 )) >"$dir/build-seconds"
}

# One build at a time (a test session and a shell may ask at once).
with_lock() {
  mkdir -p "$HHOME"
  exec 9>"$HHOME/.lock"
  flock 9
  "$@"
  flock -u 9
}

build() { with_lock build_helm; with_lock build_kubecheck; }

check_chart() {
  local chart="${1:-$REPO/helm/gridflex}" out profile rc=0
  build
  "$HELM_BIN" lint --strict "$chart" || rc=1
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' RETURN
  "$HELM_BIN" template gridflex "$chart" --kube-version "$KUBE_VERSION" >"$out/default.yaml" || rc=1
  "$KUBECHECK_BIN" "$out/default.yaml" || rc=1
  for profile in "$chart"/profiles/*.yaml; do
    [[ -e "$profile" && "$profile" != *-example-* ]] || continue
    # a profile with its examples (profiles/edge.yaml + profiles/edge-example-*.yaml)
    local files=(-f "$profile") example
    for example in "${profile%.yaml}"-example-*.yaml; do
      [[ -e "$example" ]] && files+=(-f "$example")
    done
    "$HELM_BIN" lint --strict "$chart" "${files[@]}" || rc=1
    "$HELM_BIN" template gridflex "$chart" --kube-version "$KUBE_VERSION" "${files[@]}" \
      >"$out/$(basename "$profile")" || rc=1
    "$KUBECHECK_BIN" "$out/$(basename "$profile")" || rc=1
  done
  return $rc
}

cmd="${1:-}"
shift || true
case "$cmd" in
  build) build; echo "$HELM_BIN"; echo "$KUBECHECK_BIN" ;;
  status) [[ -x "$HELM_BIN" && -x "$KUBECHECK_BIN" ]] ;;
  path) [[ -x "$HELM_BIN" ]] && echo "$HELM_BIN" ;;
  kubecheck-path) [[ -x "$KUBECHECK_BIN" ]] && echo "$KUBECHECK_BIN" ;;
  helm) with_lock build_helm; exec "$HELM_BIN" "$@" ;;
  validate) with_lock build_kubecheck; exec "$KUBECHECK_BIN" "$@" ;;
  check) check_chart "$@" ;;
  *) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; [[ -z "$cmd" ]] || exit 2 ;;
esac
