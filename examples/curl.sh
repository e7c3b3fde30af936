#!/usr/bin/env bash
# A walkthrough of the Switchyard HTTP API with curl.
#
# Start a node first (cargo run --release -p switchyard -- serve), then:
#
#   ./examples/curl.sh                          # node at http://127.0.0.1:7070
#   NODE=http://10.0.0.5:7070 ./examples/curl.sh
#
# It only adds messages under the topic prefix demo.<run id>, and deletes the
# consumer group and the plugin binding it creates, so it can be run again
# against the same node. A step that gets an error answer it did not expect
# stops it with a non-zero exit status. Needs curl 7.76 or newer.
#
# The plugin steps bind the example plugin field_router, built with
#   cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
# (docs/plugins.md); PLUGIN_FILE=<path> names another copy. Without it they
# only list the bindings. Reference: docs/api.md.
set -euo pipefail

NODE=${NODE:-http://127.0.0.1:7070}
RUN=r$(date +%s)$$            # a fresh topic prefix for this run
P=demo.$RUN
GROUP=$P.workers              # the consumer group of this run
PLUGIN=region-$RUN            # the plugin binding of this run
PLUGIN_FILE=${PLUGIN_FILE:-$(dirname "$0")/../plugins/target/wasm32-wasip2/release/field_router.wasm}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Shows a command and runs it. A curl step that gets an HTTP error answer
# shows the answer and stops the script (curl --fail-with-body exits with 22).
show() {
  printf '$ %s\n' "$*"
  if [ "$1" = curl ]; then "$@" --fail-with-body; else "$@"; fi
  echo
}
# The same for a step whose point is an error answer.
refused() { printf '$ %s\n' "$*"; "$@"; echo; }
# The value of a string member in a one-line JSON answer (no jq needed).
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
# Follows an event stream for $1 seconds (curl's timeout is the expected end;
# an error answer or a refused connection stops the script).
sse() {
  local secs=$1 rc=0; shift
  curl -s -N --fail-with-body --max-time "$secs" "$@" || rc=$?
  case $rc in
    0 | 28) ;;
    *) echo "curl $* failed with exit status $rc" >&2; return "$rc" ;;
  esac
}

# A run that stops early leaves no member connected, no group and no binding.
MEMBER_OUT=$(mktemp)
MEMBER_PID= GROUP_LEFT= PLUGIN_BOUND=
cleanup() {
  if [ -n "$MEMBER_PID" ]; then kill "$MEMBER_PID" 2>/dev/null || true; wait "$MEMBER_PID" 2>/dev/null || true; fi
  if [ -n "$GROUP_LEFT" ]; then delete_group >/dev/null 2>&1 || true; fi
  if [ -n "$PLUGIN_BOUND" ]; then curl -s -o /dev/null -X DELETE "$NODE/v1/plugins/$PLUGIN" || true; fi
  rm -f "$MEMBER_OUT"
}
trap cleanup EXIT
# Deletes this run's group once the node has seen its member leave (it
# refuses while a member is connected); shows the answer.
delete_group() {
  local answer
  for _ in $(seq 20); do
    if answer=$(curl -sS --fail-with-body -X DELETE "$NODE/v1/groups/$GROUP"); then
      echo "$answer"; return 0
    fi
    sleep 0.1
  done
  echo "$answer"; return 1
}

step "Is the node up and ready? (/readyz also counts the store's commits)"
show curl -sS "$NODE/healthz"
show curl -sS "$NODE/readyz"

step "Publish one message: the body is the payload, Content-Type is kept"
show curl -sS -X POST "$NODE/v1/topics/$P.orders.eu" \
  -H 'Content-Type: application/json' \
  --data-binary '{"order":1001,"total":42.5}'

step "With a key and user headers (Switchyard-Header-<name> becomes header <name>)"
show curl -sS -X POST "$NODE/v1/topics/$P.orders.us" \
  -H 'Switchyard-Key: customer-7' \
  -H 'Switchyard-Header-Trace-Id: 4bf92f35' \
  -H 'Content-Type: text/plain' \
  --data-binary 'second order'

step "Idempotent publish: the same Idempotency-Key twice stores one message"
KEY="order-1003-$RUN"
show curl -sS -X POST "$NODE/v1/topics/$P.orders.eu" -H "Idempotency-Key: $KEY" --data-binary 'third'
echo "The repeat answers with the first result, \"duplicate\":true and idempotent-replayed: true:"
show curl -sS -i -X POST "$NODE/v1/topics/$P.orders.eu" -H "Idempotency-Key: $KEY" --data-binary 'third'

step "Batch publish, JSON array: stored atomically, answered in order"
show curl -sS -X POST "$NODE/v1/batch" -H 'Content-Type: application/json' --data-binary "[
  {\"topic\":\"$P.orders.eu\",\"payload\":\"fourth\",\"key\":\"customer-9\"},
  {\"topic\":\"$P.audit.login\",\"payload\":\"user 7 logged in\",\"headers\":{\"Source\":\"web\"}},
  {\"topic\":\"$P.sensors.t1\",\"payload_base64\":\"AAEC/w==\"}
]"

step "Batch publish, NDJSON, with a default topic from ?topic="
show curl -sS -X POST "$NODE/v1/batch?topic=$P.sensors.t2" \
  -H 'Content-Type: application/x-ndjson' \
  --data-binary $'{"payload":"21.5"}\n{"payload":"21.7"}\n'

step "A bad batch stores nothing and names each bad entry"
refused curl -sS -X POST "$NODE/v1/batch" -H 'Content-Type: application/json' \
  --data-binary "[{\"topic\":\"$P.ok\",\"payload\":\"x\"},{\"payload\":\"no topic\"},{\"topic\":\"$P.ok\",\"colour\":\"red\"}]"

step "Errors are application/problem+json with a stable code"
refused curl -sS -X POST "$NODE/v1/topics/$P..bad" --data-binary 'x'

step "Pull everything under $P.orders from the start (> is %3E in a URL)"
ANSWER=$(curl -sS --fail-with-body "$NODE/v1/messages?topic=$P.orders.%3E&from=earliest&limit=2")
echo "$ANSWER"
CURSOR=$(printf '%s' "$ANSWER" | field cursor)
echo
echo "cursor after those two messages: $CURSOR"

step "Continue from that cursor"
show curl -sS "$NODE/v1/messages?topic=$P.orders.%3E&from=$CURSOR"

step "Several patterns at once: * is one token"
show curl -sS "$NODE/v1/messages?topic=$P.orders.eu&topic=$P.sensors.*&limit=10"

step "Long-poll: wait up to 2 s for something new (nothing comes, so an empty list)"
show curl -sS "$NODE/v1/messages?topic=$P.nothing&from=latest&wait=2"

step "Subscribe with Server-Sent Events (curl stops after 2 s)"
sse 2 "$NODE/v1/events?topic=$P.%3E&from=earliest"

step "The same in JSON format: the whole message as data"
sse 2 "$NODE/v1/events?topic=$P.orders.eu&from=earliest&format=json"

step "Resume after the first event, as a reconnecting EventSource does"
FIRST_ID=$(sse 1 "$NODE/v1/events?topic=$P.orders.%3E&from=earliest" | awk '/^id: / && !n++ {print substr($0, 5)}')
echo "Last-Event-ID: $FIRST_ID"
sse 2 -H "Last-Event-ID: $FIRST_ID" "$NODE/v1/events?topic=$P.orders.%3E"

step "Live: a subscriber from 'latest' sees a message published while it listens"
( sleep 1; curl -sS --fail-with-body -o /dev/null -X POST "$NODE/v1/topics/$P.orders.eu" --data-binary 'live order' ) &
LIVE_PID=$!
sse 3 "$NODE/v1/events?topic=$P.orders.%3E&from=latest"
wait "$LIVE_PID"

step "Consumer groups: three jobs for the members of a group to share"
for n in 1 2 3; do
  curl -sS --fail-with-body -X POST "$NODE/v1/topics/$P.jobs.resize" \
    -H 'Content-Type: application/json' --data-binary "{\"job\":$n}"
  echo
done

step "Join the group $GROUP as a member (an SSE stream; curl stops after 5 s)"
echo "The first join creates the group; from=earliest starts it with the jobs already published."
JOIN="$NODE/v1/events?topic=$P.jobs.%3E&group=$GROUP&from=earliest"
echo "$ curl -s -N --max-time 5 '$JOIN' &"
curl -s -N --fail-with-body --max-time 5 "$JOIN" >"$MEMBER_OUT" &
MEMBER_PID=$! GROUP_LEFT=1
for _ in $(seq 50); do
  [ "$(grep -c '^id: ' "$MEMBER_OUT")" -ge 3 ] && break
  sleep 0.1
done
cat "$MEMBER_OUT"
MEMBER=$(field member <"$MEMBER_OUT")
read -r -a JOBS <<<"$(sed -n 's/^id: //p' "$MEMBER_OUT" | tr '\n' ' ')"
if [ -z "$MEMBER" ] || [ "${#JOBS[@]}" -lt 3 ]; then
  echo "the member did not receive the three jobs" >&2
  exit 1
fi
echo "member $MEMBER holds ${JOBS[*]}; a member's id: is the message id"

step "ack: the first job is done, it is never delivered again"
show curl -sS -X POST "$NODE/v1/groups/$GROUP/ack" -H 'Content-Type: application/json' \
  -d "{\"ids\":[\"${JOBS[0]}\"],\"member\":\"$MEMBER\"}"

step "progress: the second job needs more time, its ack deadline starts again"
show curl -sS -X POST "$NODE/v1/groups/$GROUP/progress" -H 'Content-Type: application/json' \
  -d "{\"ids\":[\"${JOBS[1]}\"],\"member\":\"$MEMBER\"}"

step "nack: hand the second job back, to be delivered again in 60 s"
show curl -sS -X POST "$NODE/v1/groups/$GROUP/nack" -H 'Content-Type: application/json' \
  -d "{\"ids\":[\"${JOBS[1]}\"],\"member\":\"$MEMBER\",\"delay_ms\":60000}"

step "term: give up on the third job, it is dead-lettered with the reason"
show curl -sS -X POST "$NODE/v1/groups/$GROUP/term" -H 'Content-Type: application/json' \
  -d "{\"ids\":[\"${JOBS[2]}\"],\"member\":\"$MEMBER\",\"reason\":\"unknown format\"}"

step "The dead letter, on \$dlq.<topic> (\$ needs no encoding)"
show curl -sS "$NODE/v1/messages?topic=\$dlq.$P.jobs.%3E"

step "The group: settings, position, counters and its connected member"
show curl -sS "$NODE/v1/groups/$GROUP"

step "Every group of the node (GET /v1/groups)"
show curl -sS "$NODE/v1/groups"

step "A group with a member connected cannot be deleted"
refused curl -sS -X DELETE "$NODE/v1/groups/$GROUP"

step "Once the member's stream has ended, delete the group"
wait "$MEMBER_PID" || [ $? -eq 28 ]
MEMBER_PID=
echo "$ curl -sS -X DELETE $NODE/v1/groups/$GROUP"
delete_group
GROUP_LEFT=

step "Plugins: the bindings of this node with their counters (GET /v1/plugins)"
show curl -sS "$NODE/v1/plugins"

if [ -f "$PLUGIN_FILE" ]; then
  step "Bind field_router as the route plugin $PLUGIN on $P.orders"
  echo "It reroutes each message to $P.orders.<its region field>; config={\"field\":\"/region\"}, encoded."
  show curl -sS -X PUT --data-binary "@$PLUGIN_FILE" \
    "$NODE/v1/plugins/$PLUGIN?hook=route&topic=$P.orders&config=%7B%22field%22%3A%22%2Fregion%22%7D"
  PLUGIN_BOUND=1

  step "Publish to $P.orders: the answer says where the plugin routed it"
  show curl -sS -X POST "$NODE/v1/topics/$P.orders" \
    -H 'Content-Type: application/json' --data-binary '{"order":1005,"region":"eu"}'

  step "The binding with its counters (GET /v1/plugins/{name})"
  show curl -sS "$NODE/v1/plugins/$PLUGIN"

  step "Unbind it"
  show curl -sS -X DELETE "$NODE/v1/plugins/$PLUGIN"
  PLUGIN_BOUND=
else
  step "Bind a plugin: skipped, there is no component at $PLUGIN_FILE"
  echo "Build the example plugins (docs/plugins.md) and run this script again:"
  echo "  rustup target add wasm32-wasip2"
  echo "  cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml"
  echo "or set PLUGIN_FILE to a field_router.wasm. The steps would be:"
  echo "  curl -X PUT --data-binary @field_router.wasm '$NODE/v1/plugins/$PLUGIN?hook=route&topic=$P.orders&config=%7B%22field%22%3A%22%2Fregion%22%7D'"
  echo "  curl -X POST $NODE/v1/topics/$P.orders --data-binary '{\"order\":1005,\"region\":\"eu\"}'"
  echo "  curl $NODE/v1/plugins/$PLUGIN"
  echo "  curl -X DELETE $NODE/v1/plugins/$PLUGIN"
fi

step "Topics with their statistics (GET /v1/topics; only this run's topics shown)"
TOPICS=$(curl -sS --fail-with-body "$NODE/v1/topics")
printf '%s' "$TOPICS" | grep -o "{\"bytes\":[^{]*\"streams\":\[[^]]*\],\"topic\":\"$P\.[^\"]*\"}" || true

step "Cluster members as this node sees them (a single node: \"cluster\":null, itself alone)"
show curl -sS "$NODE/v1/cluster"

step "The store's commits since the node started (storage in /readyz)"
show curl -sS "$NODE/readyz"
echo "Done. Topics of this run start with $P."
