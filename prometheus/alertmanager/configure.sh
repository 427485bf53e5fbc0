#!/bin/sh
# Alertmanager's configuration, written from the environment when its container starts:
# Alertmanager does not expand environment variables in its configuration file, and the webhook
# URL and SMTP password are secrets that belong in .env, not in a file in the repository.
#
#   configure.sh OUTDIR [PROGRAM ARGS...]
#
# Writes OUTDIR/alertmanager.yml (and OUTDIR/webhook_url, OUTDIR/smtp_password, mode 0600),
# then, when a program is given, runs it with --config.file=OUTDIR/alertmanager.yml added.
# Every alert goes to ALERT_WEBHOOK_URL (the Slack-compatible webhook the services post their own
# alerts to) and, when ALERT_EMAIL_TO is set, by e-mail through ALERT_SMTP_HOST. With neither,
# alerts are only shown on Alertmanager's page (127.0.0.1:9093), and this says so.
#
# Variables (.env): ALERT_WEBHOOK_URL, ALERT_EMAIL_TO, ALERT_EMAIL_FROM, ALERT_SMTP_HOST
# (host:port), ALERT_SMTP_USERNAME, ALERT_SMTP_PASSWORD, ALERT_SMTP_REQUIRE_TLS (default true),
# ALERT_GROUP_WAIT (default 30s), ALERT_REPEAT_INTERVAL (default 4h).
set -eu
out=${1:?usage: configure.sh OUTDIR [PROGRAM ARGS...]}
shift
umask 077
mkdir -p "$out"
# Secrets of an earlier start that .env no longer sets.
rm -f "$out/webhook_url" "$out/smtp_password"

# One line of the file, printed as it is (dash's echo would read its backslashes).
line() { printf '%s\n' "$*"; }
# A YAML double-quoted scalar.
q() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

problems=""
problem() { problems="$problems
  - $1"; }
# One line each: a value with a line break would break out of its YAML scalar.
for name in ALERT_WEBHOOK_URL ALERT_EMAIL_TO ALERT_EMAIL_FROM ALERT_SMTP_HOST ALERT_SMTP_USERNAME \
  ALERT_SMTP_PASSWORD ALERT_GROUP_WAIT ALERT_REPEAT_INTERVAL; do
  eval "value=\${$name:-}"
  case "$value" in *"
"*) problem "$name holds a line break" ;; esac
done
webhook=${ALERT_WEBHOOK_URL:-}
email_to=${ALERT_EMAIL_TO:-}
case "$webhook" in "" | http://* | https://*) ;; *) problem "ALERT_WEBHOOK_URL must start with http:// or https://" ;; esac
if [ -n "$email_to" ]; then
  [ -n "${ALERT_SMTP_HOST:-}" ] || problem "ALERT_EMAIL_TO is set but ALERT_SMTP_HOST (host:port) is not"
  case "${ALERT_SMTP_HOST:-}" in "" | *:[0-9]*) ;; *) problem "ALERT_SMTP_HOST must be host:port" ;; esac
  [ -n "${ALERT_EMAIL_FROM:-}" ] || problem "ALERT_EMAIL_TO is set but ALERT_EMAIL_FROM is not"
fi
case "${ALERT_SMTP_REQUIRE_TLS:-true}" in true | false) ;; *) problem "ALERT_SMTP_REQUIRE_TLS must be true or false" ;; esac
if [ -n "$problems" ]; then
  echo "alertmanager: the alert settings in .env are wrong:$problems" >&2
  exit 2
fi

{
  line "# Written by configure.sh at start; edit .env, not this file."
  line "route:"
  line "  receiver: owner"
  line "  group_by: [alertname]"
  line "  group_wait: $(q "${ALERT_GROUP_WAIT:-30s}")"
  line "  group_interval: 5m"
  line "  repeat_interval: $(q "${ALERT_REPEAT_INTERVAL:-4h}")"
  line "receivers:"
  line "  - name: owner"
  if [ -n "$webhook" ]; then
    printf '%s' "$webhook" >"$out/webhook_url"
    line "    slack_configs:"
    line "      - api_url_file: $(q "$out/webhook_url")"
    line "        send_resolved: true"
    line "        title: '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})'"
    line "        text: '{{ range .Alerts }}{{ .Annotations.summary }}{{ if .Annotations.description }} {{ .Annotations.description }}{{ end }}{{ \"\\n\" }}{{ end }}'"
  fi
  if [ -n "$email_to" ]; then
    line "    email_configs:"
    line "      - to: $(q "$email_to")"
    line "        from: $(q "$ALERT_EMAIL_FROM")"
    line "        smarthost: $(q "$ALERT_SMTP_HOST")"
    line "        require_tls: ${ALERT_SMTP_REQUIRE_TLS:-true}"
    line "        send_resolved: true"
    if [ -n "${ALERT_SMTP_USERNAME:-}" ]; then
      line "        auth_username: $(q "$ALERT_SMTP_USERNAME")"
    fi
    if [ -n "${ALERT_SMTP_PASSWORD:-}" ]; then
      printf '%s' "$ALERT_SMTP_PASSWORD" >"$out/smtp_password"
      line "        auth_password_file: $(q "$out/smtp_password")"
    fi
  fi
} >"$out/alertmanager.yml"

if [ -z "$webhook" ] && [ -z "$email_to" ]; then
  echo "alertmanager: neither ALERT_WEBHOOK_URL nor ALERT_EMAIL_TO is set: alerts are only shown on its page (127.0.0.1:9093)" >&2
fi
if [ "$#" -gt 0 ]; then
  exec "$@" --config.file="$out/alertmanager.yml"
fi
