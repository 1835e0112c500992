#!/bin/bash
# shellcheck disable=SC2016  # the $ in RESP frames is literal, not an expansion
# Docker health check for the belay gateway: it accepts a connection on its
# port and answers AUTH + PING with +OK / +PONG. Plain bash (/dev/tcp), so the
# runtime image needs no redis-cli.
set -u
export LC_ALL=C   # ${#pw} counts bytes, as RESP lengths do
port="${BELAY_GATEWAY_PORT:-6380}"
if [ -n "${BELAY_PASSWORD_FILE:-}" ]; then BELAY_PASSWORD="$(head -n1 "$BELAY_PASSWORD_FILE")"; fi
pw="${BELAY_PASSWORD:-}"
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
if [ -n "$pw" ]; then
  printf '*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n' "${#pw}" "$pw" >&3
  IFS= read -r -t 2 line <&3 || exit 1
  [ "$line" = $'+OK\r' ] || exit 1
fi
printf '*1\r\n$4\r\nPING\r\n' >&3
IFS= read -r -t 2 line <&3 || exit 1
[ "$line" = $'+PONG\r' ]
