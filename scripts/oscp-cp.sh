#!/usr/bin/env bash
# An independent OSCP 2.0 Capacity Provider for gridflex's OSCP integration tests: pyoscp
# (PyPI, Flask-RESTX endpoints and models of OSCP 2.0) in its own virtual environment
# outside the repository — pyoscp pins flask<3 and packaging<22, so it never goes into
# gridflex's environment — and scripts/oscp/cp_server.py, a small CP built on it.
# Only the first install needs PyPI; afterwards the script (and the tests) run offline.
#
#   scripts/oscp-cp.sh install        create the venv and install pyoscp (idempotent)
#   scripts/oscp-cp.sh status         exit 0 if installed (prints pyoscp's version), else 1
#   scripts/oscp-cp.sh python         print the venv's python (tests start the CP with it)
#   scripts/oscp-cp.sh start PORT     install if needed, start the CP on 127.0.0.1:PORT, wait
#                                     until it answers; prints its base URL
#   scripts/oscp-cp.sh stop PORT      stop it (TERM by its recorded PID); idempotent
#   scripts/oscp-cp.sh purge          delete the venv
#
# Environment:
#   GRIDFLEX_PYOSCP_VERSION   pyoscp version; default 0.1.0
#   GRIDFLEX_PYOSCP_VENV      venv; default ${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/pyoscp-venv
#   GRIDFLEX_PYOSCP_PYTHON    python that creates the venv; default python3
set -euo pipefail

VERSION="${GRIDFLEX_PYOSCP_VERSION:-0.1.0}"
VENV="${GRIDFLEX_PYOSCP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/pyoscp-venv}"
PYTHON="${GRIDFLEX_PYOSCP_PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="$VENV/run"

pyoscp_version() {
  "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('pyoscp'))"
}

installed_version() {
  [[ -x "$VENV/bin/python" && -f "$VENV/.complete" ]] && pyoscp_version
}

install() {
  if [[ "$(installed_version 2>/dev/null || true)" == "$VERSION" ]]; then
    return 0
  fi
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # werkzeug<3: Flask 2.x with Werkzeug 3 fails at import (url_quote, __version__)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "pyoscp==$VERSION" "werkzeug<3" "python-dateutil" >&2
  [[ "$(pyoscp_version)" == "$VERSION" ]] || { echo "oscp-cp.sh: install failed" >&2; exit 1; }
  touch "$VENV/.complete"
}

case "${1:-}" in
  install) install ;;
  status) installed_version ;;
  python) echo "$VENV/bin/python" ;;
  start)
    port="${2:?usage: oscp-cp.sh start PORT}"
    install
    mkdir -p "$RUN"
    "$VENV/bin/python" "$HERE/oscp/cp_server.py" --port "$port" >"$RUN/$port.log" 2>&1 &
    echo $! >"$RUN/$port.pid"
    for _ in $(seq 1 200); do
      if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$port/control/health" 2>/dev/null; then
        echo "http://127.0.0.1:$port/oscp/cp/2.0"
        exit 0
      fi
      kill -0 "$(cat "$RUN/$port.pid")" 2>/dev/null || { cat "$RUN/$port.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "oscp-cp.sh: the CP did not answer on port $port" >&2
    exit 1
    ;;
  stop)
    port="${2:?usage: oscp-cp.sh stop PORT}"
    if [[ -f "$RUN/$port.pid" ]]; then
      kill "$(cat "$RUN/$port.pid")" 2>/dev/null || true
      rm -f "$RUN/$port.pid"
    fi
    ;;
  purge) rm -rf "$VENV" ;;
  *)
    sed -n '2,20p' "$0" >&2
    exit 2
    ;;
esac
