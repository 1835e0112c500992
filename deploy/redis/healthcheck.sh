#!/bin/bash
# Docker health check for belay-redis.
#   belay-redis-health node      the Redis node answers PING (with the password)
#   belay-redis-health sentinel  the Sentinel answers PING and knows a master
#                                (without a password if BELAY_SENTINEL_AUTH=no)
set -eu
if [ -n "${BELAY_PASSWORD_FILE:-}" ]; then BELAY_PASSWORD="$(head -n1 "$BELAY_PASSWORD_FILE")"; fi
export REDISCLI_AUTH="${BELAY_PASSWORD:-}"   # keeps the password off the command line
case "${1:-node}" in
  sentinel)
    if [ "${BELAY_SENTINEL_AUTH:-yes}" = no ]; then unset REDISCLI_AUTH; fi
    port="${BELAY_SENTINEL_PORT:-26379}"
    [ "$(redis-cli -p "$port" PING)" = PONG ]
    addr="$(redis-cli -p "$port" SENTINEL get-master-addr-by-name "${BELAY_MASTER_NAME:-mymaster}")"
    [ -n "$addr" ]
    ;;
  *)
    [ "$(redis-cli -p "${BELAY_REDIS_PORT:-6379}" PING)" = PONG ]
    ;;
esac
