#!/usr/bin/env bash
# An independent OCPP implementation for gridflex edge's integration tests: the npm package
# ocpp-rpc (JSON-schema strict mode for OCPP 2.0.1 and 2.1), installed with npm into a cache
# outside the repository. Only the first install needs the npm registry; afterwards the
# script (and the tests) run offline.
#
#   scripts/ocpp-rpc.sh install    install ocpp-rpc@$VERSION into the cache if not there yet
#   scripts/ocpp-rpc.sh status     exit 0 if installed (prints its version), else 1
#   scripts/ocpp-rpc.sh path       print the node_modules directory (for NODE_PATH)
#   scripts/ocpp-rpc.sh purge      delete the cache
#
# The stations themselves are node scripts under tests/integration/ started by the tests
# (clients of the edge; nothing here listens on a port, so there is nothing to stop).
#
# Environment:
#   GRIDFLEX_OCPP_RPC_VERSION   ocpp-rpc version; default 2.2.1
#   GRIDFLEX_OCPP_RPC_HOME      cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/ocpp-rpc
set -euo pipefail

VERSION="${GRIDFLEX_OCPP_RPC_VERSION:-2.2.1}"
HOME_DIR="${GRIDFLEX_OCPP_RPC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/ocpp-rpc}"
PKG="$HOME_DIR/node_modules/ocpp-rpc/package.json"

installed_version() {
  [[ -f "$PKG" ]] && node -e "console.log(require(process.argv[1]).version)" "$PKG"
}

case "${1:-}" in
  install)
    command -v node >/dev/null || { echo "ocpp-rpc.sh: node is not installed" >&2; exit 2; }
    if [[ "$(installed_version 2>/dev/null || true)" == "$VERSION" && -f "$HOME_DIR/.complete" ]]; then
      exit 0
    fi
    mkdir -p "$HOME_DIR"
    rm -f "$HOME_DIR/.complete"
    npm install --prefix "$HOME_DIR" --no-audit --no-fund --no-save --loglevel=error \
      "ocpp-rpc@$VERSION" >&2
    [[ "$(installed_version)" == "$VERSION" ]] || { echo "ocpp-rpc.sh: install failed" >&2; exit 1; }
    touch "$HOME_DIR/.complete"
    ;;
  status)
    v="$(installed_version 2>/dev/null || true)"
    if [[ -n "$v" && -f "$HOME_DIR/.complete" ]]; then echo "ocpp-rpc $v in $HOME_DIR"; else exit 1; fi
    ;;
  path)
    echo "$HOME_DIR/node_modules"
    ;;
  purge)
    rm -rf "$HOME_DIR"
    ;;
  *)
    sed -n '2,19p' "$0" >&2
    exit 2
    ;;
esac
