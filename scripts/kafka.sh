#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, no ZooKeeper) on 127.0.0.1 for development
# and CI. The broker's jars come from Maven Central (through Maven) into a cache directory
# outside the repository; nothing needs installing by hand besides Java 17+.
#
#   scripts/kafka.sh start [--keep]   fetch if needed, format a fresh data dir, start, wait
#   scripts/kafka.sh stop [--purge]   stop the broker this script started (by its PID);
#                                     --purge also deletes run/<port> (data, log)
#   scripts/kafka.sh stop-all         stop every broker started from this cache (any port) and
#                                     delete their run dirs, e.g. after a killed test session
#   scripts/kafka.sh status           exit 0 if it runs and answers Kafka requests, else 1
#   scripts/kafka.sh logs [-f] [N]    last N (default 100) lines of the broker log
#   scripts/kafka.sh fetch            only fetch the jars (e.g. to warm a CI cache)
#   scripts/kafka.sh cluster-id       print a fresh KRaft cluster id (Kafka's own random-uuid)
#
# Environment:
#   GRIDFLEX_KAFKA_PORT             client (PLAINTEXT) port; default 19092
#   GRIDFLEX_KAFKA_CONTROLLER_PORT  KRaft controller port; default port+1
#   GRIDFLEX_KAFKA_VERSION          Apache Kafka release on Maven Central; default 4.3.1
#   GRIDFLEX_KAFKA_HOME             cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/kafka
#   GRIDFLEX_KAFKA_HEAP             JVM heap options; default "-Xms256m -Xmx1g"
#   GRIDFLEX_KAFKA_START_TIMEOUT    seconds to wait for the broker to answer, per attempt; default 90
#   GRIDFLEX_KAFKA_START_ATTEMPTS   start attempts (fresh data dir each) before giving up; default 3
#   GRIDFLEX_KAFKA_PYTHON           python used for the readiness probe; default python3
#   GRIDFLEX_KAFKA_MVN              Maven executable; default `mvn` on PATH, else Apache
#                                   Maven is itself fetched from Maven Central into the cache
#
# Layout under GRIDFLEX_KAFKA_HOME:
#   <version>/libs/*.jar        the broker's class path (complete when libs/.complete exists)
#   m2/                         the Maven repository used for fetching
#   run/<port>/                 server.properties, log4j config, kafka.pid, kafka.log, data/
set -euo pipefail

readonly SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly POM_SRC="$SCRIPT_DIR/kafka/pom.xml"

PORT="${GRIDFLEX_KAFKA_PORT:-19092}"
CPORT="${GRIDFLEX_KAFKA_CONTROLLER_PORT:-}"  # default port+1, set in validate
VERSION="${GRIDFLEX_KAFKA_VERSION:-4.3.1}"
KHOME="${GRIDFLEX_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gridflex/kafka}"
HEAP="${GRIDFLEX_KAFKA_HEAP:--Xms256m -Xmx1g}"
START_TIMEOUT="${GRIDFLEX_KAFKA_START_TIMEOUT:-90}"
PYTHON="${GRIDFLEX_KAFKA_PYTHON:-python3}"
START_ATTEMPTS="${GRIDFLEX_KAFKA_START_ATTEMPTS:-3}"
readonly HOST=127.0.0.1
readonly MAVEN_FALLBACK_VERSION=3.9.9
readonly MAVEN_FALLBACK_SHA512=a555254d6b53d267965a3404ecb14e53c3827c09c3b94b5678835887ab404556bfaf78dcfe03ba76fa2508649dca8531c74bca4d5846513522404d48e8c4ac8b
readonly CENTRAL="${GRIDFLEX_MAVEN_CENTRAL:-https://repo.maven.apache.org/maven2}"

LIBS="$KHOME/$VERSION/libs"
RUN_DIR="$KHOME/run/$PORT"
DATA_DIR="$RUN_DIR/data"
PID_FILE="$RUN_DIR/kafka.pid"
LOG_FILE="$RUN_DIR/kafka.log"
PROPS="$RUN_DIR/server.properties"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

validate() {
  [[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1 && "$PORT" -le 65535 ]] \
    || die "GRIDFLEX_KAFKA_PORT must be a port number, got '$PORT'"
  [[ -n "$CPORT" ]] || CPORT=$((PORT + 1))
  [[ "$CPORT" =~ ^[0-9]+$ && "$CPORT" -ge 1 && "$CPORT" -le 65535 ]] \
    || die "GRIDFLEX_KAFKA_CONTROLLER_PORT must be a port number, got '$CPORT'"
  [[ "$PORT" != "$CPORT" ]] || die "client and controller ports must differ (both $PORT)"
  [[ "$START_ATTEMPTS" =~ ^[1-9][0-9]*$ ]] \
    || die "GRIDFLEX_KAFKA_START_ATTEMPTS must be a positive integer, got '$START_ATTEMPTS'"
  [[ "$START_TIMEOUT" =~ ^[1-9][0-9]*$ ]] \
    || die "GRIDFLEX_KAFKA_START_TIMEOUT must be a positive number of seconds, got '$START_TIMEOUT'"
  [[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
    || die "GRIDFLEX_KAFKA_VERSION must look like 4.3.1, got '$VERSION'"
}

major_version() { echo "${VERSION%%.*}"; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------- java

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    echo "$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    die "java not found: Kafka needs Java 17 or newer (set JAVA_HOME or put java on PATH)"
  fi
}

check_java() {
  local java version major
  java="$(java_bin)"
  version="$("$java" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')"
  major="${version%%.*}"
  [[ "$major" == 1 ]] && major="$(echo "$version" | cut -d. -f2)"
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot read the Java version from '$java -version'"
  if [[ "$(major_version)" -ge 4 && "$major" -lt 17 ]]; then
    die "Kafka $VERSION needs Java 17 or newer; $java is Java $version"
  fi
}

# --------------------------------------------------------------------------------- fetch

download() {  # url dest
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --tries=3 -O "$2" "$1"
  else
    die "neither curl nor wget found to download $1"
  fi
}

mvn_bin() {
  if [[ -n "${GRIDFLEX_KAFKA_MVN:-}" ]]; then
    echo "$GRIDFLEX_KAFKA_MVN"
    return
  fi
  if command -v mvn >/dev/null 2>&1; then
    command -v mvn
    return
  fi
  # No Maven on this machine: fetch Apache Maven itself from Maven Central (checksum-pinned).
  local dir="$KHOME/maven/apache-maven-$MAVEN_FALLBACK_VERSION"
  if [[ ! -x "$dir/bin/mvn" ]]; then
    local url="$CENTRAL/org/apache/maven/apache-maven/$MAVEN_FALLBACK_VERSION/apache-maven-$MAVEN_FALLBACK_VERSION-bin.tar.gz"
    local tgz="$KHOME/maven/apache-maven-$MAVEN_FALLBACK_VERSION-bin.tar.gz"
    log "mvn not on PATH: fetching Apache Maven $MAVEN_FALLBACK_VERSION from $url"
    mkdir -p "$KHOME/maven"
    download "$url" "$tgz.part" || die "could not download $url"
    echo "$MAVEN_FALLBACK_SHA512  $tgz.part" | sha512sum -c --quiet - \
      || die "checksum mismatch for $url"
    tar -xzf "$tgz.part" -C "$KHOME/maven"
    rm -f "$tgz.part"
  fi
  echo "$dir/bin/mvn"
}

libs_complete() {
  [[ -f "$LIBS/.complete" ]] || return 1
  local jar
  while IFS= read -r jar; do
    [[ -n "$jar" && -s "$LIBS/$jar" ]] || return 1
  done <"$LIBS/.complete"
}

fetch() {
  validate
  if libs_complete; then
    return 0
  fi
  mkdir -p "$KHOME/$VERSION"
  # Serialise concurrent fetches of the same version (parallel test sessions, CI jobs).
  exec 8>"$KHOME/$VERSION/.fetch.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 8
  fi
  if libs_complete; then  # another process finished while we waited
    exec 8>&-
    return 0
  fi
  check_java
  local mvn logging t0 staging mvn_log
  mvn="$(mvn_bin)"
  if [[ "$(major_version)" -ge 4 ]]; then logging=log4j2; else logging=reload4j; fi
  t0="$(now)"
  log "fetching Apache Kafka $VERSION (kafka_2.13 + runtime dependencies) from Maven Central into $LIBS"
  cp "$POM_SRC" "$KHOME/$VERSION/pom.xml"
  staging="$KHOME/$VERSION/libs.staging"
  mvn_log="$KHOME/$VERSION/maven.log"
  rm -rf "$staging"
  if ! (cd "$KHOME/$VERSION" && "$mvn" -B -q -U -f pom.xml \
      -Dmaven.repo.local="$KHOME/m2" \
      -Dkafka.version="$VERSION" -Dkafka.logging="$logging" \
      dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$staging") >"$mvn_log" 2>&1; then
    log "Maven could not fetch Apache Kafka $VERSION. Maven said:"
    sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" | grep -E '^\[(ERROR|FATAL)\] +[^ ]' \
      | grep -vE '\] (To see the full|Re-run Maven|For more information|\[Help [0-9])' >&2 \
      || cat "$mvn_log" >&2
    die "fetch failed (full Maven output: $mvn_log). Is Maven Central reachable and is $VERSION a published release?"
  fi
  ls "$staging" | grep -q "^kafka_2.13-$VERSION.jar$" \
    || die "Maven finished but kafka_2.13-$VERSION.jar is not in $staging (see $mvn_log)"
  (cd "$staging" && ls -1 -- *.jar) >"$staging/.complete"
  rm -rf "$LIBS"
  mv "$staging" "$LIBS"
  exec 8>&-
  log "fetched Apache Kafka $VERSION: $(wc -l <"$LIBS/.complete") jars, $(du -sh "$LIBS" | cut -f1) in $(elapsed "$t0") s"
}

# ------------------------------------------------------------------------------- process

read_pid() { [[ -f "$PID_FILE" ]] && tr -dc '0-9' <"$PID_FILE" || true; }

# True if $1 is alive and is the broker started for this port (guards against PID reuse).
is_our_broker() {
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $PROPS" || return 1
  fi
  return 0
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A real Kafka request (Metadata) through kafka-python when it is installed; else the port
# accepts connections and the log says the server started.
probe() {
  if "$PYTHON" -c 'import kafka' >/dev/null 2>&1; then
    "$PYTHON" - "$HOST:$PORT" >/dev/null 2>&1 <<'PY'
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], client_id="gridflex-kafka-sh",
                         request_timeout_ms=5000)
try:
    admin.list_topics()
finally:
    admin.close()
PY
  else
    port_open "$PORT" && grep -qE 'Kafka Server started|started \(kafka\.server' "$LOG_FILE" 2>/dev/null
  fi
}

log_tail() {
  if [[ -f "$LOG_FILE" ]]; then
    echo "----- last ${1:-60} lines of $LOG_FILE -----" >&2
    tail -n "${1:-60}" "$LOG_FILE" >&2
    echo "-----" >&2
  else
    echo "(no log file at $LOG_FILE)" >&2
  fi
}

write_config() {
  local voters="1@$HOST:$CPORT"
  cat >"$PROPS" <<EOF
# Written by scripts/kafka.sh for Kafka $VERSION - single-node KRaft broker on $HOST.
process.roles=broker,controller
node.id=1
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA_DIR/logs
metadata.log.dir=$DATA_DIR/metadata
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=1
log.retention.bytes=104857600
log.segment.bytes=16777216
log.retention.check.interval.ms=60000
EOF
  if [[ "$(major_version)" -ge 4 ]]; then
    cat >"$RUN_DIR/log4j2.properties" <<EOF
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
EOF
  else
    cat >"$RUN_DIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
  fi
}

log_opts() {
  if [[ "$(major_version)" -ge 4 ]]; then
    echo "-Dlog4j2.configurationFile=file:$RUN_DIR/log4j2.properties"
  else
    echo "-Dlog4j.configuration=file:$RUN_DIR/log4j.properties"
  fi
}

# A KRaft cluster id from Kafka's own storage tool (`random-uuid`): Kafka's Uuid.randomUuid
# never returns an id that starts with '-' (which the tool's option parser would read as an
# option), and we check the shape anyway: 22 URL-safe base64 characters, not starting
# with '-'. Retried a few times; a clear error if the tool cannot produce one.
readonly CLUSTER_ID_RE='^[A-Za-z0-9_][A-Za-z0-9_-]{21}$'
new_cluster_id() {
  local java id attempt out errlog="$RUN_DIR/format.log"
  [[ -d "$RUN_DIR" ]] || errlog=/dev/null
  java="$(java_bin)"
  for attempt in 1 2 3 4 5; do
    # shellcheck disable=SC2046
    out="$("$java" -Xmx128m -XX:TieredStopAtLevel=1 $(log_opts) -cp "$LIBS/*" \
      kafka.tools.StorageTool random-uuid 2>>"$errlog")" || out=""
    id="$(printf '%s\n' "$out" | tr -d '\r' | grep -E "$CLUSTER_ID_RE" | tail -n 1 || true)"
    if [[ -n "$id" ]]; then
      echo "$id"
      return 0
    fi
    log "StorageTool random-uuid gave no valid cluster id (attempt $attempt): '${out:0:80}'"
  done
  die "could not get a cluster id from 'kafka.tools.StorageTool random-uuid' (stderr: $errlog)"
}

format_storage() {  # a fresh KRaft metadata dir; retried, with the tool's output on failure
  local java id attempt
  java="$(java_bin)"
  for attempt in 1 2 3; do
    id="$(new_cluster_id)"
    [[ "$id" =~ $CLUSTER_ID_RE ]] || die "invalid cluster id '$id'"
    # --cluster-id=<id> (one token): even an id with a leading '-' could not be read as an option
    # shellcheck disable=SC2046
    if "$java" -Xmx256m -XX:TieredStopAtLevel=1 $(log_opts) -cp "$LIBS/*" kafka.tools.StorageTool \
        format "--cluster-id=$id" -c "$PROPS" --ignore-formatted >>"$RUN_DIR/format.log" 2>&1; then
      [[ -f "$DATA_DIR/metadata/meta.properties" ]] && return 0
    fi
    log "formatting the KRaft storage failed (attempt $attempt, cluster id $id); retrying on a clean data dir"
    rm -rf "$DATA_DIR"
    mkdir -p "$DATA_DIR"
  done
  tail -n 40 "$RUN_DIR/format.log" >&2 || true
  die "formatting the KRaft storage failed 3 times (full output: $RUN_DIR/format.log)"
}

wait_ready() {  # pid t0
  local pid="$1" t0="$2" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "the broker (pid $pid) exited during start-up"
      log_tail 80
      rm -f "$PID_FILE"
      return 1
    fi
    if port_open "$PORT" && probe; then
      log "Kafka $VERSION answers on $HOST:$PORT (pid $pid) after $(elapsed "$t0") s"
      return 0
    fi
    sleep 0.5
  done
  log "the broker (pid $pid) did not answer on $HOST:$PORT within ${START_TIMEOUT} s"
  log_tail 80
  return 1
}

cmd_start() {
  local keep=0 arg
  for arg in "$@"; do
    case "$arg" in
      --keep) keep=1 ;;
      *) die "unknown option for start: $arg (usage: start [--keep])" ;;
    esac
  done
  validate
  local pid t0
  pid="$(read_pid)"
  if is_our_broker "$pid"; then
    log "already running (pid $pid) on $HOST:$PORT"
    wait_ready "$pid" "$(now)" || die "the running broker does not answer; try: $0 stop"
    echo "$HOST:$PORT"
    return 0
  fi
  rm -f "$PID_FILE"
  port_open "$PORT" && die "port $PORT on $HOST is already in use by another process (set GRIDFLEX_KAFKA_PORT)"
  port_open "$CPORT" && die "controller port $CPORT on $HOST is already in use (set GRIDFLEX_KAFKA_CONTROLLER_PORT)"

  fetch
  check_java
  local attempt
  for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
    if launch_once "$keep" "$attempt"; then
      echo "$HOST:$PORT"
      return 0
    fi
    stop_broker >/dev/null 2>&1 || true
    if ((attempt < START_ATTEMPTS)); then
      port_open "$PORT" && die "port $PORT on $HOST was taken by another process during start-up (set GRIDFLEX_KAFKA_PORT)"
      port_open "$CPORT" && die "controller port $CPORT on $HOST was taken during start-up (set GRIDFLEX_KAFKA_CONTROLLER_PORT)"
      log "start attempt $attempt of $START_ATTEMPTS failed; retrying on a fresh data dir"
      keep=0
    fi
  done
  die "start failed after $START_ATTEMPTS attempts (broker log: $LOG_FILE)"
}

launch_once() {  # keep attempt: format (unless kept), start, wait for readiness; 0 when ready
  local keep="$1" attempt="$2" pid t0 java i
  t0="$(now)"
  mkdir -p "$RUN_DIR"
  if [[ "$keep" == 0 ]]; then
    rm -rf "$DATA_DIR"
  fi
  mkdir -p "$DATA_DIR"
  write_config
  java="$(java_bin)"
  : >"$RUN_DIR/format.log"
  if [[ ! -f "$DATA_DIR/metadata/meta.properties" ]]; then
    format_storage
  fi
  : >"$LOG_FILE"
  rm -f "$PID_FILE"
  # setsid: own session, so a Ctrl-C in the caller's terminal does not reach the broker;
  # the inner shell writes its own PID and exec's java, so the PID file holds java's PID.
  # shellcheck disable=SC2016,SC2086
  nohup setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-start "$PID_FILE" \
    "$java" $HEAP -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    $(log_opts) -cp "$LIBS/*" kafka.Kafka "$PROPS" >>"$LOG_FILE" 2>&1 </dev/null &
  for i in $(seq 1 100); do  # 10 s for the PID file
    [[ -s "$PID_FILE" ]] && break
    sleep 0.1
  done
  pid="$(read_pid)"
  if [[ -z "$pid" ]]; then
    log_tail 40
    log "the broker did not start (no PID written within 10 s, attempt $attempt)"
    return 1
  fi
  log "started Kafka $VERSION (pid $pid) on $HOST:$PORT, controller $HOST:$CPORT, log $LOG_FILE (attempt $attempt)"
  wait_ready "$pid" "$t0"
}

cmd_stop() {
  local purge=0 arg
  for arg in "$@"; do
    case "$arg" in
      --purge) purge=1 ;;
      *) die "unknown option for stop: $arg (usage: stop [--purge])" ;;
    esac
  done
  validate
  stop_broker
  if [[ "$purge" == 1 ]]; then
    rm -rf "$RUN_DIR"
  fi
}

stop_broker() {
  local pid i
  pid="$(read_pid)"
  if [[ -z "$pid" ]]; then
    log "not running on port $PORT (no PID file)"
    return 0
  fi
  if ! is_our_broker "$pid"; then
    log "not running on port $PORT (stale PID file, pid $pid)"
    rm -f "$PID_FILE"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 200); do  # 20 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after 20 s: sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid) on port $PORT"
}

cmd_stop_all() {
  local dir port
  shopt -s nullglob
  for dir in "$KHOME"/run/*/; do
    port="$(basename "$dir")"
    [[ "$port" =~ ^[0-9]+$ ]] || continue
    GRIDFLEX_KAFKA_PORT="$port" GRIDFLEX_KAFKA_CONTROLLER_PORT= bash "${BASH_SOURCE[0]}" stop --purge
  done
}

cmd_status() {
  validate
  local pid
  pid="$(read_pid)"
  if is_our_broker "$pid" && port_open "$PORT" && probe; then
    echo "running: Kafka $VERSION, pid $pid, $HOST:$PORT"
    return 0
  fi
  if is_our_broker "$pid"; then
    echo "not answering: pid $pid is alive but $HOST:$PORT does not answer"
  else
    echo "not running on $HOST:$PORT"
  fi
  return 1
}

cmd_logs() {
  local follow=0 lines=100 arg
  for arg in "$@"; do
    case "$arg" in
      -f | --follow) follow=1 ;;
      *[!0-9]* | '') die "usage: logs [-f] [LINES]" ;;
      *) lines="$arg" ;;
    esac
  done
  [[ -f "$LOG_FILE" ]] || die "no log file at $LOG_FILE"
  if [[ "$follow" == 1 ]]; then
    exec tail -n "$lines" -f "$LOG_FILE"
  fi
  tail -n "$lines" "$LOG_FILE"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    stop-all) cmd_stop_all ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    fetch) fetch; echo "$LIBS" ;;
    cluster-id) validate; fetch >/dev/null; new_cluster_id ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
