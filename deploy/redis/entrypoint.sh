#!/bin/bash
# belay-redis: start one node of the belay topology.
#
#   belay-redis master   [redis-server args...]
#   belay-redis replica  [redis-server args...]   (needs BELAY_MASTER_HOST)
#   belay-redis sentinel [redis-sentinel args...]
#   belay-redis node     [redis-server args...]   (configured by its arguments alone)
#   belay-redis <any other command>               (run as is, e.g. bash, redis-cli)
#
# The config lives in /data (a named volume owned by the redis user), because
# Sentinel rewrites its own config and, on failover, has each Redis node rewrite
# its config (REPLICAOF + CONFIG REWRITE). It is written from the settings below
# on the first start only, so a node that restarts keeps the role and the epochs
# that Sentinel gave it (a demoted master comes back as a replica, not as a
# second master). On every start the password lines are refreshed from the
# environment, so rotating BELAY_PASSWORD needs no volume surgery.
#
# `node` is the seed note's way instead: a redis-server configured entirely by
# its command line (e.g. `node --slaveof master 6379 --replica-announce-ip
# slave`), no config file written or kept. The entrypoint adds only
# requirepass and masterauth from the password, on redis-server's stdin
# (`redis-server ... -`), so the password shows in neither `ps` nor `docker
# inspect`. Without a config file Sentinel's CONFIG REWRITE fails, so a
# restarted node forgets a role Sentinel gave it (as in the note).
#
# Environment (defaults in brackets):
#   BELAY_PASSWORD | BELAY_PASSWORD_FILE  password for every node and Sentinel (required)
#   BELAY_ANNOUNCE_HOST      name other nodes and clients reach this one by [$(hostname)];
#                            compose sets it to the service name
#   BELAY_REDIS_PORT         [6379]      BELAY_SENTINEL_PORT [26379]
#   BELAY_MASTER_HOST        replica: its first master; sentinel: the master to monitor [master]
#   BELAY_MASTER_PORT        [6379]
#   BELAY_MIN_REPLICAS_TO_WRITE [1]  BELAY_MIN_REPLICAS_MAX_LAG [10]  (bound what a
#                            partitioned master can accept; 0 turns it off)
#   BELAY_APPENDONLY         [yes]
#   BELAY_REPLICA_PRIORITY   [100]
#   BELAY_MASTER_NAME        [mymaster]  BELAY_QUORUM [2]
#   BELAY_DOWN_AFTER_MS      [5000]      BELAY_FAILOVER_TIMEOUT_MS [60000]
#   BELAY_PARALLEL_SYNCS     [1]
#   BELAY_RESOLVE_WAIT_S     seconds to wait for BELAY_MASTER_HOST to resolve [60]
#   BELAY_SENTINEL_AUTH      [yes] no: the Sentinel gets no requirepass (clients reach it
#                            without a password, as in the seed note); it still
#                            authenticates to the nodes (auth-pass)
set -euo pipefail

log() { echo "belay-redis: $*" >&2; }
die() { log "$*"; exit 1; }

role="${1:-master}"
case "$role" in
  master|replica|sentinel|node) shift || true ;;
  *) exec "$@" ;;
esac

umask 077
cd /data

if [ -n "${BELAY_PASSWORD_FILE:-}" ]; then
  [ -f "$BELAY_PASSWORD_FILE" ] && [ -r "$BELAY_PASSWORD_FILE" ] ||
    die "BELAY_PASSWORD_FILE=$BELAY_PASSWORD_FILE is not a file this user ($(id -un)) can read; with compose, run scripts/docker-gen-env (it writes deploy/secrets/belay_password, mode 0644)"
  BELAY_PASSWORD="$(head -n1 "$BELAY_PASSWORD_FILE")"
fi
[ -n "${BELAY_PASSWORD:-}" ] || die "no password: set BELAY_PASSWORD_FILE (compose mounts deploy/secrets/belay_password; run scripts/docker-gen-env) or BELAY_PASSWORD"
# Config-file string: quote it, escape backslash and double quote.
pw="\"$(printf '%s' "$BELAY_PASSWORD" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')\""

announce="${BELAY_ANNOUNCE_HOST:-$(hostname)}"
redis_port="${BELAY_REDIS_PORT:-6379}"
sentinel_port="${BELAY_SENTINEL_PORT:-26379}"
master_host="${BELAY_MASTER_HOST:-master}"
master_port="${BELAY_MASTER_PORT:-6379}"
master_name="${BELAY_MASTER_NAME:-mymaster}"

# Wait until a service name resolves: Sentinel refuses to start with a
# hostname it cannot resolve, and compose may start us before that service.
wait_resolves() {
  local host="$1" deadline=$(( $(date +%s) + ${BELAY_RESOLVE_WAIT_S:-60} ))
  until getent hosts "$host" >/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$host does not resolve"
    sleep 0.5
  done
}

# Drop every line whose first word(s) match $2 (an ERE), then append $3.
refresh_lines() {
  local file="$1" pattern="$2" lines="$3" tmp
  tmp="$(mktemp /data/.conf.XXXXXX)"
  grep -Ev "^[[:space:]]*($pattern)([[:space:]]|\$)" "$file" > "$tmp" || true
  printf '%s\n' "$lines" >> "$tmp"
  cat "$tmp" > "$file"   # keep the inode and mode
  rm -f "$tmp"
}

if [ "$role" = sentinel ]; then
  conf=/data/sentinel.conf
  if [ ! -s "$conf" ]; then
    log "first start: writing $conf (monitor $master_name at $master_host:$master_port, quorum ${BELAY_QUORUM:-2})"
    wait_resolves "$master_host"
    cat > "$conf" <<CONF
# Written by belay-redis on first start; Sentinel rewrites it from then on.
port $sentinel_port
dir /data
logfile ""
protected-mode no
# Service names, not container IPs: they survive container re-creation.
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $announce
sentinel announce-port $sentinel_port
sentinel monitor $master_name $master_host $master_port ${BELAY_QUORUM:-2}
sentinel down-after-milliseconds $master_name ${BELAY_DOWN_AFTER_MS:-5000}
sentinel failover-timeout $master_name ${BELAY_FAILOVER_TIMEOUT_MS:-60000}
sentinel parallel-syncs $master_name ${BELAY_PARALLEL_SYNCS:-1}
CONF
  else
    log "restart: keeping Sentinel state in $conf"
    refresh_lines "$conf" "sentinel down-after-milliseconds|sentinel failover-timeout" \
      "sentinel down-after-milliseconds $master_name ${BELAY_DOWN_AFTER_MS:-5000}
sentinel failover-timeout $master_name ${BELAY_FAILOVER_TIMEOUT_MS:-60000}"
  fi
  # requirepass: clients (the gateway) must authenticate; Sentinels use the
  # same password with each other. auth-pass: for the monitored nodes.
  # BELAY_SENTINEL_AUTH=no: auth-pass only (the seed note's Sentinel).
  case "${BELAY_SENTINEL_AUTH:-yes}" in
    yes) sentinel_auth="requirepass $pw
sentinel auth-pass $master_name $pw" ;;
    no) sentinel_auth="sentinel auth-pass $master_name $pw" ;;
    *) die "BELAY_SENTINEL_AUTH must be yes or no" ;;
  esac
  refresh_lines "$conf" "requirepass|sentinel auth-pass|sentinel sentinel-pass" "$sentinel_auth"
  exec redis-sentinel "$conf" "$@"
fi

if [ "$role" = node ]; then
  log "node configured by its arguments: redis-server $* (no config file)"
  exec redis-server "$@" - <<CONF
requirepass $pw
masterauth $pw
CONF
fi

conf=/data/redis.conf
if [ ! -s "$conf" ]; then
  log "first start as $role: writing $conf"
  {
    echo "# Written by belay-redis on first start; Sentinel and CONFIG REWRITE change it from then on."
    echo "port $redis_port"
    echo "bind * -::*"
    echo "protected-mode no"
    echo "dir /data"
    echo "logfile \"\""
    echo "appendonly ${BELAY_APPENDONLY:-yes}"
    echo "appendfsync everysec"
    echo "# What this node tells its master (and so Sentinel) to reach it by."
    echo "replica-announce-ip $announce"
    echo "replica-announce-port $redis_port"
    echo "replica-priority ${BELAY_REPLICA_PRIORITY:-100}"
    echo "min-replicas-to-write ${BELAY_MIN_REPLICAS_TO_WRITE:-1}"
    echo "min-replicas-max-lag ${BELAY_MIN_REPLICAS_MAX_LAG:-10}"
    if [ "$role" = replica ]; then
      [ -n "${BELAY_MASTER_HOST:-}" ] || die "a replica needs BELAY_MASTER_HOST"
      echo "replicaof $master_host $master_port"
    fi
  } > "$conf"
else
  log "restart: keeping role from $conf ($(grep -E '^replicaof ' "$conf" || echo 'no replicaof: master'))"
fi
refresh_lines "$conf" "requirepass|masterauth" "requirepass $pw
masterauth $pw"
exec redis-server "$conf" "$@"
