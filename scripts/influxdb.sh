#!/usr/bin/env bash
# A real InfluxDB server on 127.0.0.1 for development and CI: the history sink's database.
# InfluxDB 1.8 serves the v2 write and Flux query API (/api/v2/write, /api/v2/query) that
# influxdb-client speaks; Debian's influxdb (1.6.7) does not. It is built from the Go module
# proxy with the machine's Go into a cache directory outside the repository (first run
# only; the build time is recorded beside the binary), like scripts/kafka.sh caches jars.
#
#   scripts/influxdb.sh build               build influxd if the cache has none (prints the path)
#   scripts/influxdb.sh start [PORT]        build if needed, fresh data dir, start, wait, create
#                                           the database; PORT 0 or none: a free port is
#                                           picked; prints the URL on stdout
#   scripts/influxdb.sh stop [PORT] [--purge]  stop the server this script started on PORT
#                                           (by its PID); --purge deletes run/<port>
#   scripts/influxdb.sh stop-all            stop every server started from this cache
#   scripts/influxdb.sh status [PORT]       exit 0 if it runs and answers /ping, else 1
#   scripts/influxdb.sh logs [PORT] [N]     last N (default 100) lines of the server log
#   scripts/influxdb.sh build-time          the recorded build time (version, seconds, go)
#
# Environment:
#   GRIDFLEX_INFLUXDB_PORT           HTTP port when none is given; default 18086
#   GRIDFLEX_INFLUXDB_VERSION        github.com/influxdata/influxdb module version; default 1.8.3
#   GRIDFLEX_INFLUXDB_HOME           cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/influxdb
#   GRIDFLEX_INFLUXDB_DB             database created at start; default gridflex
#   GRIDFLEX_INFLUXDB_START_TIMEOUT  seconds to wait for /ping; default 60
#   GO                               the go command; default `go` on PATH (1.26 seen to work)
#
# Layout under GRIDFLEX_INFLUXDB_HOME:
#   <version>/bin/influxd        the server (complete when <version>/build.txt exists)
#   <version>/build.txt          version, build seconds, go version, date of the build
#   <version>/build.log          the go build's output (kept on failure, for the error)
#   gopath/                      module cache of the build
#   run/<port>/                  influxdb.conf, influxd.pid, influxd.log, meta/ data/ wal/
#
# Why 1.8.3: the newest 1.x releases (1.9+) and every 2.x need the Rust-built libflux
# (a cgo library through pkg-config) to build; 1.8's Flux (v0.65) is pure Go, so
# `go install` alone builds it. 1.8.0 is the fallback tried when 1.8.3 fails.
set -euo pipefail

VERSION="${GRIDFLEX_INFLUXDB_VERSION:-1.8.3}"
IHOME="${GRIDFLEX_INFLUXDB_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/influxdb}"
DB="${GRIDFLEX_INFLUXDB_DB:-gridflex}"
START_TIMEOUT="${GRIDFLEX_INFLUXDB_START_TIMEOUT:-60}"
GO="${GO:-go}"
readonly HOST=127.0.0.1
readonly FALLBACK_VERSIONS="1.8.3 1.8.0"

log() { printf 'influxdb.sh: %s\n' "$*" >&2; }
die() { printf 'influxdb.sh: error: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

bin_of() { echo "$IHOME/$1/bin/influxd"; }

build_one() {  # build_one VERSION -> 0 when $IHOME/VERSION/bin/influxd is complete
  local v="$1" dir="$IHOME/$1" t0
  [[ -f "$dir/build.txt" && -x "$dir/bin/influxd" ]] && return 0
  mkdir -p "$IHOME"
  exec 9>"$IHOME/.build.lock"  # two test sessions on one machine build once
  flock 9
  [[ -f "$dir/build.txt" && -x "$dir/bin/influxd" ]] && return 0
  command -v "$GO" >/dev/null || die "Go is needed to build InfluxDB ($GO not on PATH)"
  mkdir -p "$dir/bin" "$IHOME/gopath"
  log "building influxd $v from the Go module proxy (first run only; minutes) ..."
  t0="$(now)"
  # -p 1 and nice: the machine is shared; -checklinkname=0: old dependencies of 1.8 pull
  # runtime internals by go:linkname, which Go >= 1.23 refuses to link by default.
  if GOPATH="$IHOME/gopath" GOBIN="$dir/bin" GOFLAGS="-buildvcs=false -p=1" \
    GOMAXPROCS="${GOMAXPROCS:-2}" GOTOOLCHAIN=local CGO_ENABLED=0 \
    nice -n 10 "$GO" install -ldflags=-checklinkname=0 \
    "github.com/influxdata/influxdb/cmd/influxd@v$v" >"$dir/build.log" 2>&1; then
    printf 'version=%s\nbuild_s=%s\ngo=%s\nbuilt_at=%s\n' "$v" "$(elapsed "$t0")" \
      "$("$GO" env GOVERSION)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/build.txt"
    log "built influxd $v in $(elapsed "$t0") s"
    return 0
  fi
  log "influxd $v did not build (after $(elapsed "$t0") s); the last lines of $dir/build.log:"
  tail -n 30 "$dir/build.log" >&2
  return 1
}

cmd_build() {
  if [[ -n "${GRIDFLEX_INFLUXDB_VERSION:-}" ]]; then
    build_one "$VERSION" || die "could not build InfluxDB $VERSION"
  else
    local v
    for v in $FALLBACK_VERSIONS; do
      if build_one "$v"; then VERSION="$v"; break; fi
      VERSION=""
    done
    [[ -n "$VERSION" ]] || die "could not build any of: $FALLBACK_VERSIONS"
  fi
  echo "$(bin_of "$VERSION")"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_arg() {  # port_arg [PORT] -> the port to act on
  local p="${1:-${GRIDFLEX_INFLUXDB_PORT:-18086}}"
  [[ "$p" =~ ^[0-9]+$ && "$p" -le 65535 ]] || die "port must be a number, got '$p'"
  echo "$p"
}

ping() { curl -fs -o /dev/null --max-time 2 "http://$HOST:$1/ping"; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {  # write_conf PORT RPC_PORT RUN_DIR
  cat >"$3/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "$HOST:$2"
[meta]
  dir = "$3/meta"
[data]
  dir = "$3/data"
  wal-dir = "$3/wal"
  query-log-enabled = false
  index-version = "inmem"
[coordinator]
[retention]
  enabled = true
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "$HOST:$1"
  auth-enabled = false
  flux-enabled = true
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
EOF
}

cmd_start() {
  local port rpc run t0 bin
  port="$(port_arg "${1:-}")"
  [[ "$port" != 0 ]] || port="$(free_port)"
  rpc="$(free_port)"
  bin="$(cmd_build)"
  run="$IHOME/run/$port"
  if pid_alive "$run/influxd.pid" && ping "$port"; then
    log "already running on $port (pid $(cat "$run/influxd.pid"))"
    echo "http://$HOST:$port"
    return 0
  fi
  rm -rf "$run" && mkdir -p "$run"
  write_conf "$port" "$rpc" "$run"
  t0="$(now)"
  nohup "$bin" run -config "$run/influxdb.conf" >"$run/influxd.log" 2>&1 &
  echo $! >"$run/influxd.pid"
  until ping "$port"; do
    if ! pid_alive "$run/influxd.pid"; then
      tail -n 40 "$run/influxd.log" >&2
      die "influxd exited during start (log above)"
    fi
    if awk -v e="$(elapsed "$t0")" -v t="$START_TIMEOUT" 'BEGIN { exit !(e > t) }'; then
      tail -n 40 "$run/influxd.log" >&2
      kill "$(cat "$run/influxd.pid")" 2>/dev/null || true
      die "influxd did not answer /ping on $port within $START_TIMEOUT s"
    fi
    sleep 0.2
  done
  curl -fsS --max-time 10 -XPOST "http://$HOST:$port/query" \
    --data-urlencode "q=CREATE DATABASE \"$DB\"" >/dev/null \
    || die "could not create database $DB"
  log "influxd $(basename "$(dirname "$(dirname "$bin")")") on $HOST:$port (pid $(cat "$run/influxd.pid"), database $DB) in $(elapsed "$t0") s"
  echo "http://$HOST:$port"
}

stop_dir() {  # stop_dir RUN_DIR PURGE
  local run="$1" pid i
  if pid_alive "$run/influxd.pid"; then
    pid="$(cat "$run/influxd.pid")"
    kill "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped pid $pid ($(basename "$run"))"
  fi
  rm -f "$run/influxd.pid"
  [[ "$2" != 1 ]] || rm -rf "$run"
}

cmd_stop() {
  local port="" purge=0 a
  for a in "$@"; do
    case "$a" in
      --purge) purge=1 ;;
      *) port="$a" ;;
    esac
  done
  port="$(port_arg "$port")"
  stop_dir "$IHOME/run/$port" "$purge"
}

cmd_stop_all() {
  local run
  [[ -d "$IHOME/run" ]] || return 0
  for run in "$IHOME"/run/*/; do stop_dir "${run%/}" 1; done
}

cmd_status() {
  local port
  port="$(port_arg "${1:-}")"
  pid_alive "$IHOME/run/$port/influxd.pid" && ping "$port"
}

case "${1:-}" in
  build) cmd_build ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  stop-all) cmd_stop_all ;;
  status) shift; cmd_status "$@" ;;
  logs) tail -n "${3:-100}" "$IHOME/run/$(port_arg "${2:-}")/influxd.log" ;;
  build-time) cat "$IHOME"/*/build.txt ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
