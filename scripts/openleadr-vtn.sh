#!/usr/bin/env bash
# A real OpenADR 3.1 VTN (openleadr-vtn from crates.io) with its own throwaway PostgreSQL
# cluster, both on 127.0.0.1, for development and CI. The VTN is built from source with
# cargo (with its `internal-oauth` feature: the VTN is also the OAuth 2.0 token endpoint)
# into a cache directory outside the repository; PostgreSQL is Debian's package.
#
#   scripts/openleadr-vtn.sh build           only build (cargo install) into the cache
#   scripts/openleadr-vtn.sh start           build if needed, start PostgreSQL and the VTN,
#                                            create the admin client; prints the env file
#   scripts/openleadr-vtn.sh status          exit 0 if the VTN answers /health, else 1
#   scripts/openleadr-vtn.sh stop [--purge]  stop both (by their PIDs) and delete the
#                                            throwaway database; --purge also deletes the
#                                            run dir (logs, env file with the secrets)
#   scripts/openleadr-vtn.sh logs [N]        last N (default 60) lines of the VTN log
#
# Environment:
#   GRIDFLEX_OADR3_PORT        the VTN's HTTP port; default 18080
#   GRIDFLEX_OADR3_PG_PORT     PostgreSQL's port (TCP on 127.0.0.1 only); default port+1
#   GRIDFLEX_OADR3_HOME        cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/openleadr-vtn
#   GRIDFLEX_OADR3_VERSION     openleadr-vtn version on crates.io; default 0.2.8
#   GRIDFLEX_OADR3_JOBS        cargo -j; default 1 (the build runs under nice -n 10)
#   GRIDFLEX_OADR3_PYTHON      python with argon2-cffi (hashes the admin secret); default python3
#
# Layout under GRIDFLEX_OADR3_HOME:
#   bin/openleadr-vtn              the binary (cargo install --root); build.seconds: build time
#   target/                        cargo's build directory (kept: a rebuild is incremental)
#   run/<port>/                    vtn.log, vtn.pid, env (what `start` prints), pgdir (the path
#                                  of the cluster's temp dir: ${TMPDIR:-/tmp}/gridflex-oadr3-pg.*,
#                                  holding data/ and pg.log; readable by the postgres user)
#
# After `start`, run/<port>/env holds (KEY=value lines):
#   OADR3_VTN_URL                  http://127.0.0.1:<port>
#   OADR3_TOKEN_URL                http://127.0.0.1:<port>/auth/token
#   OADR3_ADMIN_CLIENT_ID/SECRET   a business-logic client with every scope incl. write_users
#                                  (creates VEN users/credentials, VENs, programs, events)
#   OADR3_DATABASE_URL             postgres://openadr@127.0.0.1:<pg port>/openadr
#
# Notes: PostgreSQL refuses to run as root, so as root the cluster runs as Debian's
# `postgres` system user in a temp directory owned by it.
# Migrations: the script runs the VTN's migrations (copied from the crate into
# $GRIDFLEX_OADR3_HOME/migrations at build) before the VTN starts, each in one transaction,
# and records them in _sqlx_migrations exactly as sqlx does (version, description, SHA-384
# of the file), so the VTN's own embedded migrator finds them applied. Why not let the VTN
# run them: two of them use a subquery in FROM without an alias, which needs PostgreSQL 16,
# and Debian 12 ships 15; on a server older than 16 the script adds the alias (`AS
# unnested`) while applying — the statements are otherwise unchanged. A migration that fails
# stops the start with psql's error.
# openleadr-vtn 0.2.8 binds 0.0.0.0:<port> (hard-coded); clients here use 127.0.0.1 only.
set -euo pipefail

PORT="${GRIDFLEX_OADR3_PORT:-18080}"
PG_PORT="${GRIDFLEX_OADR3_PG_PORT:-}"
OHOME="${GRIDFLEX_OADR3_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/openleadr-vtn}"
VERSION="${GRIDFLEX_OADR3_VERSION:-0.2.8}"
JOBS="${GRIDFLEX_OADR3_JOBS:-1}"
PYTHON="${GRIDFLEX_OADR3_PYTHON:-python3}"
readonly HOST=127.0.0.1
readonly ADMIN_ID=gridflex-admin
readonly ADMIN_SCOPES='{read_all,write_programs,write_events,write_reports_bl,write_subscriptions_bl,write_vens_bl,write_users}'

BIN="$OHOME/bin/openleadr-vtn"
RUN_DIR="$OHOME/run/$PORT"
PGDIR_FILE="$RUN_DIR/pgdir"  # names the cluster's temp dir (under $TMPDIR, not $HOME)
ENV_FILE="$RUN_DIR/env"
VTN_PID="$RUN_DIR/vtn.pid"
VTN_LOG="$RUN_DIR/vtn.log"

log() { printf 'openleadr-vtn.sh: %s\n' "$*" >&2; }
die() { printf 'openleadr-vtn.sh: error: %s\n' "$*" >&2; exit 1; }

validate() {
  [[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1 && "$PORT" -le 65535 ]] \
    || die "GRIDFLEX_OADR3_PORT must be a port number, got '$PORT'"
  [[ -n "$PG_PORT" ]] || PG_PORT=$((PORT + 1))
  [[ "$PG_PORT" =~ ^[0-9]+$ && "$PG_PORT" -ge 1 && "$PG_PORT" -le 65535 ]] \
    || die "GRIDFLEX_OADR3_PG_PORT must be a port number, got '$PG_PORT'"
  [[ "$PORT" != "$PG_PORT" ]] || die "VTN and PostgreSQL ports must differ (both $PORT)"
  [[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "bad GRIDFLEX_OADR3_VERSION '$VERSION'"
}

# ------------------------------------------------------------------------------- build

crate_dir() {  # the crate's source as cargo unpacked it (migrations are counted from it)
  ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"openleadr-vtn-$VERSION" 2>/dev/null | head -n 1
}

installed_version() {
  [[ -x "$BIN" && -f "$OHOME/version" ]] && cat "$OHOME/version" || true
}

copy_migrations() {
  local src
  src="$(crate_dir)/migrations"
  [[ -d "$src" ]] || die "no migrations in the crate source ($src): run cargo install again"
  rm -rf "$OHOME/migrations"
  cp -r "$src" "$OHOME/migrations"
}

cmd_build() {
  if [[ "$(installed_version)" == "$VERSION" ]]; then
    [[ -d "$OHOME/migrations" ]] || copy_migrations
    log "openleadr-vtn $VERSION already built: $BIN"
    return 0
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) to build openleadr-vtn"
  mkdir -p "$OHOME"
  log "building openleadr-vtn $VERSION with cargo (-j $JOBS, nice 10; takes a while) ..."
  local t0 t1
  t0=$(date +%s)
  # SQLX_OFFLINE: the crate ships its prepared queries (.sqlx), so no database is needed
  # to compile. Without --locked: the published lock file names versions that a registry
  # mirror may not carry; cargo resolves semver-compatible ones.
  if ! SQLX_OFFLINE=true CARGO_TARGET_DIR="$OHOME/target" nice -n 10 \
      cargo install openleadr-vtn --version "$VERSION" --features internal-oauth \
      -j "$JOBS" --root "$OHOME" >"$OHOME/build.log" 2>&1; then
    tail -n 40 "$OHOME/build.log" >&2
    die "cargo install openleadr-vtn $VERSION failed (log: $OHOME/build.log)"
  fi
  t1=$(date +%s)
  copy_migrations
  echo "$VERSION" >"$OHOME/version"
  echo "$((t1 - t0))" >"$OHOME/build.seconds"
  log "built in $((t1 - t0)) s: $BIN"
}

# -------------------------------------------------------------------------- postgresql

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}

ensure_postgres() {
  if [[ -z "$(pg_bindir)" ]]; then
    [[ $EUID -eq 0 ]] || die "PostgreSQL is not installed; run: sudo apt-get install postgresql"
    log "installing Debian's postgresql ..."
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    # the package may start a cluster on 5432; this script never uses it
  fi
  [[ -n "$(pg_bindir)" ]] || die "no initdb under /usr/lib/postgresql/*/bin"
}

as_pg() {  # run a PostgreSQL tool as a non-root user (postgres refuses root)
  if [[ $EUID -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pgdata() { [[ -f "$PGDIR_FILE" ]] && echo "$(cat "$PGDIR_FILE")/data" || true; }

pg_start() {
  local bin dir PGDATA PG_LOG
  bin=$(pg_bindir)
  mkdir -p "$RUN_DIR"
  dir=$(mktemp -d "${TMPDIR:-/tmp}/gridflex-oadr3-pg.XXXXXX")
  echo "$dir" >"$PGDIR_FILE"
  PGDATA="$dir/data"
  PG_LOG="$dir/pg.log"
  mkdir -p "$PGDATA"
  touch "$PG_LOG"
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user"
    chown -R postgres: "$dir"
  fi
  chmod 700 "$PGDATA"
  as_pg "$bin/initdb" -D "$PGDATA" -U openadr --auth=trust -E UTF8 --no-instructions \
    >"$RUN_DIR/initdb.log" 2>&1 || { cat "$RUN_DIR/initdb.log" >&2; die "initdb failed"; }
  as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 \
    -o "-c listen_addresses=$HOST -p $PG_PORT -k $dir -c fsync=off" start >/dev/null \
    || { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not start on $HOST:$PG_PORT"; }
  as_pg "$bin/createdb" -h "$HOST" -p "$PG_PORT" -U openadr openadr \
    || die "createdb openadr failed"
}

pg_stop() {  # stop the cluster and delete its temp dir
  local bin data
  bin=$(pg_bindir) || return 0
  data=$(pgdata)
  [[ -n "$data" ]] || return 0
  if [[ -f "$data/postmaster.pid" ]]; then
    as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$(dirname "$data")"
  rm -f "$PGDIR_FILE"
}

psql_q() {  # one SQL statement, unaligned tuples only
  as_pg "$(pg_bindir)/psql" -h "$HOST" -p "$PG_PORT" -U openadr -d openadr -v ON_ERROR_STOP=1 \
    -qtAc "$1"
}

migrate() {  # the VTN's migrations, recorded as sqlx records them
  local pg16 f name version description sum t0 ns
  pg16=$(( $(psql_q "SHOW server_version_num") >= 160000 ))
  psql_q "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY, description TEXT NOT NULL,
            installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
            checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)" >/dev/null
  for f in "$OHOME"/migrations/*.sql; do
    name=$(basename "$f" .sql)
    version=${name%%_*}
    description=${name#*_}
    description=${description//_/ }
    sum=$(sha384sum "$f" | cut -d' ' -f1)
    t0=$(date +%s%N)
    if ((pg16)); then cat "$f"; else
      sed -E 's/FROM \((SELECT unnest\([a-z_]+\) AS [a-z_]+)\)[[:space:]]*$/FROM (\1) AS unnested/' "$f"
    fi | as_pg "$(pg_bindir)/psql" -h "$HOST" -p "$PG_PORT" -U openadr -d openadr -q \
        -v ON_ERROR_STOP=1 --single-transaction >"$RUN_DIR/migrate.log" 2>&1 \
      || { cat "$RUN_DIR/migrate.log" >&2; die "VTN migration $name failed"; }
    ns=$(( $(date +%s%N) - t0 ))
    psql_q "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
            VALUES ($version, '$description', true, decode('$sum', 'hex'), $ns)" >/dev/null
  done
}

# --------------------------------------------------------------------------------- vtn

read_pid() { [[ -f "$VTN_PID" ]] && tr -dc '0-9' <"$VTN_PID" || true; }

health() { curl -fsS -m 2 "http://$HOST:$PORT/health" >/dev/null 2>&1; }

random_b64() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }

cmd_start() {
  validate
  local pid
  pid=$(read_pid)
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    health || die "a VTN (pid $pid) runs for port $PORT but does not answer /health"
    log "already running (pid $pid)"
    cat "$ENV_FILE"
    return 0
  fi
  command -v curl >/dev/null || die "curl is needed for the readiness probe"
  "$PYTHON" -c 'import argon2' 2>/dev/null \
    || die "$PYTHON lacks argon2-cffi (pip install argon2-cffi): it hashes the admin secret"
  cmd_build
  ensure_postgres
  pg_stop
  pg_start
  migrate
  local secret admin_secret db_url
  secret=$(random_b64 48)
  admin_secret=$(random_b64 24 | tr '/+' '_-')
  db_url="postgres://openadr@$HOST:$PG_PORT/openadr"
  : >"$VTN_LOG"
  (
    cd "$RUN_DIR"  # the VTN reads a .env in its working directory (dotenvy): none here
    export PORT DATABASE_URL="$db_url" OAUTH_TYPE=INTERNAL OAUTH_KEY_TYPE=HMAC \
      OAUTH_BASE64_SECRET="$secret" OAUTH_TOKEN_URL="http://$HOST:$PORT/auth/token" \
      RUST_LOG="${RUST_LOG:-openleadr_vtn=info,warn}"
    exec setsid "$BIN" >>"$VTN_LOG" 2>&1 </dev/null
  ) &
  echo $! >"$VTN_PID"
  pid=$(read_pid)
  local deadline=$((SECONDS + 60))
  until health; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$VTN_LOG" >&2; die "the VTN exited at start"; }
    ((SECONDS < deadline)) || { tail -n 30 "$VTN_LOG" >&2; die "the VTN did not answer in 60 s"; }
    sleep 0.2
  done
  # the VTN's own migrator must have found every migration applied and unchanged
  # (it only warns when it does not)
  if grep -q "Database migration failed" "$VTN_LOG"; then
    tail -n 30 "$VTN_LOG" >&2
    die "the VTN does not accept the migrations as applied"
  fi
  # the admin (business logic) client, its secret hashed the way the VTN checks it (argon2)
  local hash
  hash=$(ADMIN_SECRET="$admin_secret" "$PYTHON" -c \
    'import argon2, os; print(argon2.PasswordHasher().hash(os.environ["ADMIN_SECRET"]))')
  psql_q "INSERT INTO \"user\" (id, reference, description, scopes, created, modified)
          VALUES ('$ADMIN_ID', 'gridflex', 'test business logic', '$ADMIN_SCOPES', now(), now());
          INSERT INTO user_credentials (user_id, client_id, client_secret)
          VALUES ('$ADMIN_ID', '$ADMIN_ID', '$hash');" >/dev/null
  umask 077
  cat >"$ENV_FILE" <<EOF
OADR3_VTN_URL=http://$HOST:$PORT
OADR3_TOKEN_URL=http://$HOST:$PORT/auth/token
OADR3_ADMIN_CLIENT_ID=$ADMIN_ID
OADR3_ADMIN_CLIENT_SECRET=$admin_secret
OADR3_DATABASE_URL=$db_url
EOF
  log "VTN $VERSION up on http://$HOST:$PORT (pid $pid), PostgreSQL on $HOST:$PG_PORT"
  cat "$ENV_FILE"
}

cmd_status() {
  validate
  local pid
  pid=$(read_pid)
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && health
}

cmd_stop() {
  validate
  local purge=0
  [[ "${1:-}" == "--purge" ]] && purge=1
  local pid
  pid=$(read_pid)
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$VTN_PID"
  pg_stop
  if ((purge)); then rm -rf "$RUN_DIR"; fi
  log "stopped (port $PORT)"
}

cmd_logs() { tail -n "${1:-60}" "$VTN_LOG"; }

case "${1:-}" in
  build) validate; cmd_build ;;
  start) cmd_start ;;
  status) cmd_status ;;
  stop) shift; cmd_stop "$@" ;;
  logs) shift; validate; cmd_logs "$@" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
