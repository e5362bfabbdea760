#!/bin/sh
# pull-task.sh TASK COMMAND [ARG...]
#
# Turns a command-line program into a task service over HTTP pull: it polls the control
# plane for open sh.keptn.event.TASK.triggered events, answers .started, runs COMMAND with
# the whole event on stdin and answers .finished with what COMMAND printed (a JSON object).
# Needs curl and jq. See README.md next to it for the environment variables.

set -eu

log() { printf 'pull-task: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

[ $# -ge 2 ] || die "usage: pull-task.sh TASK COMMAND [ARG...]"
TASK=$1
shift
case $TASK in
  '' | *[!A-Za-z0-9_-]*) die "TASK must consist of letters, digits, '-' and '_': $TASK" ;;
esac
command -v curl >/dev/null 2>&1 || die "curl is required"
command -v jq >/dev/null 2>&1 || die "jq is required"

API=${CONTROLPLANE_API_URL:-}
[ -n "$API" ] || die "CONTROLPLANE_API_URL is required (e.g. http://127.0.0.1:8080)"
API=${API%/}
POLL_INTERVAL=${POLL_INTERVAL:-1}
SERVICE_NAME=${SERVICE_NAME:-shell-$TASK}
ONCE=${ONCE:-0}
REGISTER=${REGISTER:-1}
PROJECT=${PROJECT:-}
STAGE=${STAGE:-}
SERVICE=${SERVICE:-}
TRIGGERED="sh.keptn.event.$TASK.triggered"
PING_EVERY=10 # seconds
MAX_REMEMBERED=10000 # handled ids kept in the state file

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pull-task.XXXXXX")
if [ -z "${STATE_DIR:-}" ]; then
  STATE_DIR=$WORK/state
fi
mkdir -p "$STATE_DIR"
HANDLED=$STATE_DIR/handled # one triggered id per line
touch "$HANDLED"

# The token goes to curl in a file (in the private $WORK), not on its command line where
# `ps` would show it.
: >"$WORK/headers"
if [ -n "${CONTROLPLANE_API_TOKEN:-}" ]; then
  printf 'x-token: %s\n' "$CONTROLPLANE_API_TOKEN" >"$WORK/headers"
fi

STOP=0
SLEEPER=
cleanup() {
  if [ -n "$SLEEPER" ]; then kill "$SLEEPER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# Finish the event in hand, then leave (a .started without a .finished would keep the
# sequence waiting).
trap 'STOP=1' TERM INT

# ---------------------------------------------------------------------------- helpers

# api METHOD PATH [JSON_FILE]: the answer's body goes to $WORK/body, its HTTP status to
# $STATUS ("000" when the control plane could not be reached).
api() {
  if [ $# -ge 3 ]; then
    STATUS=$(curl -sS -o "$WORK/body" -w '%{http_code}' -X "$1" -H @"$WORK/headers" \
      -H 'content-type: application/json' --data-binary @"$3" \
      --connect-timeout 5 --max-time 30 -- "$API$2") || true
  else
    STATUS=$(curl -sS -o "$WORK/body" -w '%{http_code}' -X "$1" -H @"$WORK/headers" \
      --connect-timeout 5 --max-time 30 -- "$API$2") || true
  fi
  [ -n "$STATUS" ] || STATUS=000
  [ -f "$WORK/body" ] || : >"$WORK/body"
}

# What went wrong with the last api call: "HTTP 409: <the answer's message>" or
# "no answer".
failure() {
  if [ "$STATUS" = 000 ]; then
    echo "no answer"
    return 0
  fi
  message=$(jq -r '.message? // empty' "$WORK/body" 2>/dev/null) || message=$(head -c 200 "$WORK/body")
  echo "HTTP $STATUS${message:+: $message}"
}

new_id() {
  if [ -r /proc/sys/kernel/random/uuid ]; then
    cat /proc/sys/kernel/random/uuid
  elif command -v uuidgen >/dev/null 2>&1; then
    uuidgen | tr 'A-F' 'a-f'
  else # 16 random bytes shaped as a version 4 UUID
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' |
      sed 's/^\(.\{8\}\)\(.\{4\}\).\(.\{3\}\).\(.\{3\}\)\(.\{12\}\)$/\1-\2-4\3-a\4-\5/'
  fi
}

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# answer EVENT_FILE PHASE DATA_JSON: the answer CloudEvent to EVENT_FILE's event, with
# data = {project, stage, service} + DATA_JSON.
answer() {
  jq -c --arg id "$(new_id)" --arg source "$SERVICE_NAME" --arg time "$(now)" \
    --arg type "sh.keptn.event.$TASK.$2" --argjson extra "$3" '
    {specversion: "1.0", id: $id, source: $source, type: $type, time: $time,
     datacontenttype: "application/json", shkeptnspecversion: "0.2.4",
     triggeredid: .id}
    + (if .shkeptncontext then {shkeptncontext} else {} end)
    + {data: ({project: .data.project, stage: .data.stage, service: .data.service} + $extra)}' "$1"
}

# post_event FILE: POST an answer, retrying while the control plane is unreachable or
# answers 5xx. Returns 0 when it took the answer, 1 when it refused it (4xx), 2 when it
# could not be reached.
post_event() {
  delay=1
  attempt=1
  while :; do
    api POST /api/v1/event "$1"
    case $STATUS in
      2??) return 0 ;;
      4??) return 1 ;;
    esac
    [ "$attempt" -lt 5 ] || return 2
    log "POST /api/v1/event: $(failure); retrying in ${delay}s"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2))
  done
}

# ------------------------------------------------------------------ registration, ping

INTEGRATION_ID=
LAST_PING=0

register() {
  jq -n --arg name "$SERVICE_NAME" --arg host "$(uname -n)" --arg ns "${NAMESPACE:-default}" \
    --arg event "$TRIGGERED" --arg project "$PROJECT" --arg stage "$STAGE" --arg service "$SERVICE" '
    def list($v): if $v == "" then [] else [$v] end;
    {name: $name,
     metadata: {hostname: $host, integrationversion: "1.0.0", distributorversion: "",
                location: "remote-execution-plane",
                kubernetesmetadata: {namespace: $ns, podname: "", deploymentname: ""}},
     subscriptions: [{event: $event,
                      filter: {projects: list($project), stages: list($stage),
                               # a services filter needs stages (Keptn rule)
                               services: (if $stage == "" then [] else list($service) end)}}]}' \
    >"$WORK/registration"
  api POST /api/controlPlane/v1/uniform/registration "$WORK/registration"
  case $STATUS in
    200 | 201)
      INTEGRATION_ID=$(jq -r '.id // empty' "$WORK/body" 2>/dev/null) || INTEGRATION_ID=
      if [ -n "$INTEGRATION_ID" ]; then log "registered as integration $INTEGRATION_ID"; fi
      ;;
    *) log "registration: $(failure)" ;;
  esac
}

# Register until it works, then ping; both at most every $PING_EVERY seconds.
keep_registered() {
  [ "$REGISTER" = 1 ] || return 0
  t=$(date +%s)
  [ $((t - LAST_PING)) -ge "$PING_EVERY" ] || return 0
  LAST_PING=$t
  if [ -z "$INTEGRATION_ID" ]; then
    register
    return 0
  fi
  api PUT "/api/controlPlane/v1/uniform/registration/$INTEGRATION_ID/ping"
  case $STATUS in
    2??) ;;
    404)
      log "registration $INTEGRATION_ID is gone: registering again"
      register
      ;;
    *) log "ping: $(failure)" ;;
  esac
}

# ---------------------------------------------------------------------- the task itself

# The query string of the poll: pageSize plus the optional filters, URL-encoded by jq.
QUERY=$(jq -rn --arg p "$PROJECT" --arg s "$STAGE" --arg v "$SERVICE" '
  [["project", $p], ["stage", $s], ["service", $v]]
  | map(select(.[1] != "") | "&\(.[0])=\(.[1] | @uri)") | "pageSize=50" + join("")')

# list_open: the open events, one JSON object per line, into $WORK/open (all pages).
list_open() {
  : >"$WORK/open"
  page=0
  while :; do
    api GET "/api/controlPlane/v1/event/triggered/$TRIGGERED?$QUERY&nextPageKey=$page"
    if [ "$STATUS" != 200 ]; then
      log "listing open $TRIGGERED events: $(failure)"
      return 1
    fi
    if ! jq -c '.events[]? | select(type == "object")' "$WORK/body" >>"$WORK/open" 2>/dev/null; then
      log "listing open $TRIGGERED events: the answer is not the expected JSON"
      return 1
    fi
    next=$(jq -r '.nextPageKey // "0" | tostring' "$WORK/body")
    case $next in
      '' | 0 | "$page") return 0 ;;
      *[!0-9]*) return 0 ;;
    esac
    page=$next
  done
}

# send_finished EVENT_FILE FINISHED_FILE: POST the .finished; it stays in the state
# directory (and is sent again on the next poll) while the control plane is unreachable.
send_finished() {
  post_event "$2" && sent=0 || sent=$?
  case $sent in
    0)
      rm -f "$2"
      return 0
      ;;
    2)
      log "$(jq -r .id "$1"): .finished not delivered; will send it again"
      return 0
      ;;
  esac
  case $STATUS in
    400 | 413) # the output itself was refused: answer anyway, or the task never completes
      reason="the control plane refused the answer: $(failure)"
      log "$(jq -r .id "$1"): $reason"
      answer "$1" finished "$(jq -cn --arg m "$reason" \
        '{status: "errored", result: "fail", message: $m}')" >"$2"
      post_event "$2" || log "$(jq -r .id "$1"): the errored .finished was refused too: $(failure)"
      ;;
    *) log "$(jq -r .id "$1"): .finished refused: $(failure)" ;;
  esac
  rm -f "$2"
}

# handle EVENT_FILE COMMAND [ARG...]
handle() {
  event=$1
  shift
  id=$(jq -r '.id // empty | tostring' "$event")
  case $id in
    '' | *'
'*) return 0 ;; # no id (or a multi-line one): nothing to answer to
  esac
  key=$(printf '%s' "$id" | tr -c 'A-Za-z0-9._-' '_')
  started=$STATE_DIR/$key.started
  finished=$STATE_DIR/$key.finished

  if [ -f "$finished" ]; then # a .finished that could not be delivered earlier
    send_finished "$event" "$finished"
    return 0
  fi
  if grep -Fqx -- "$id" "$HANDLED"; then return 0; fi

  # The .started is kept until delivered, so a retry sends the same id (and the control
  # plane drops it as a repeat if the first attempt did arrive after all).
  [ -s "$started" ] || answer "$event" started '{}' >"$started"
  post_event "$started" && sent=0 || sent=$?
  if [ "$sent" = 2 ]; then
    log "$id: control plane unreachable; will try again"
    return 0
  fi
  printf '%s\n' "$id" >>"$HANDLED"
  rm -f "$started"
  if [ "$sent" = 1 ]; then # refused: the task has ended, or is not one
    log "$id: .started refused: $(failure)"
    return 0
  fi

  log "$id: running $1"
  if "$@" <"$event" >"$WORK/stdout" 2>"$WORK/stderr" 3<&-; then
    if jq -se 'length == 1 and (.[0] | type == "object")' "$WORK/stdout" >/dev/null 2>&1; then
      # The output becomes data.TASK; its string status/result/message keys, if any, set
      # the outcome instead.
      extra=$(jq -c --arg task "$TASK" '
        def outcome: (.key == "status" or .key == "result" or .key == "message")
                     and (.value | type == "string");
        {status: "succeeded", result: "pass"}
        + with_entries(select(outcome))
        + {($task): with_entries(select(outcome | not))}' "$WORK/stdout")
    else
      extra=$(head -c 200 "$WORK/stdout" | jq -Rsc --arg cmd "$1" '
        sub("\\s+$"; "")
        | {status: "errored", result: "fail",
           message: ("\($cmd) exited 0 but did not print a JSON object: "
                     + (if . == "" then "(no output)" else . end))}')
    fi
  else
    code=$?
    extra=$(tail -n 5 "$WORK/stderr" | jq -Rsc --arg cmd "$1" --arg code "$code" '
      sub("^\\s+"; "") | sub("\\s+$"; "")
      | if . == "" then "\($cmd) exited with status \($code)" else . end
      | if length > 500 then .[length - 500:] else . end
      | {status: "succeeded", result: "fail", message: .}')
  fi
  if [ -s "$WORK/stderr" ]; then sed "s/^/pull-task: [$TASK] /" "$WORK/stderr" >&2; fi

  answer "$event" finished "$extra" >"$finished"
  send_finished "$event" "$finished"
  log "$id: $(printf '%s' "$extra" | jq -r '"\(.status)/\(.result)" + (if .message then ": \(.message)" else "" end)' | head -n 1)"
}

# poll COMMAND [ARG...]: handle every open event once. Fails when the list is unavailable.
poll() {
  list_open || return 1
  while [ "$STOP" = 0 ] && IFS= read -r line <&3; do
    printf '%s\n' "$line" >"$WORK/event"
    handle "$WORK/event" "$@"
  done 3<"$WORK/open"
  # Forget the oldest ids (long completed) so the state file stays small.
  remembered=$(wc -l <"$HANDLED")
  if [ $((remembered)) -gt $((MAX_REMEMBERED * 2)) ]; then
    tail -n "$MAX_REMEMBERED" "$HANDLED" >"$WORK/handled" && cat "$WORK/handled" >"$HANDLED"
  fi
}

# ----------------------------------------------------------------------------- main loop

echo "pull-task: serving $TASK from $API"
while [ "$STOP" = 0 ]; do
  keep_registered
  if poll "$@"; then ok=1; else ok=0; fi
  if [ "$ONCE" = 1 ]; then
    [ "$ok" = 1 ] || exit 1
    break
  fi
  [ "$STOP" = 0 ] || break
  # Sleep in the background so a signal ends the wait at once.
  sleep "$POLL_INTERVAL" &
  SLEEPER=$!
  wait "$SLEEPER" || true
  kill "$SLEEPER" 2>/dev/null || true # still sleeping if a signal ended the wait
  SLEEPER=
done
log "stopped"
