#!/bin/bash
# Docker health check for the belay gateway: its admin endpoint's /readyz
# answers 200 (a confirmed master taking writes, the command table loaded).
# Plain bash (/dev/tcp), so the runtime image needs no curl. The admin
# endpoint's password, if any, is sent as a bearer token.
set -u
port="${BELAY_ADMIN_PORT:-7380}"
auth=""
if [ -n "${BELAY_ADMIN_PASSWORD_FILE:-}" ]; then
  auth="Authorization: Bearer $(head -n1 "$BELAY_ADMIN_PASSWORD_FILE")"$'\r\n'
fi
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n' "$auth" >&3
IFS= read -r -t 2 line <&3 || exit 1
case "$line" in
  "HTTP/1.1 200"*) exit 0 ;;
  *) exit 1 ;;
esac
