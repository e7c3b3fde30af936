#!/usr/bin/env bash
# A walkthrough of the Switchyard HTTP API with curl.
#
# Start a node first (cargo run --release -p switchyard -- serve), then:
#
#   ./examples/curl.sh                          # node at http://127.0.0.1:7070
#   NODE=http://10.0.0.5:7070 ./examples/curl.sh
#
# It only adds messages under the topic prefix demo.<run id>, so it can be run
# again against the same node. Reference: docs/api.md.
set -euo pipefail

NODE=${NODE:-http://127.0.0.1:7070}
RUN=r$(date +%s)$$            # a fresh topic prefix for this run
P=demo.$RUN

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; echo; }
# The value of a string member in a one-line JSON answer (no jq needed).
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
# Follows an event stream for $1 seconds (curl's timeout is the expected end).
sse() { local secs=$1; shift; curl -s -N --max-time "$secs" "$@" || true; }

step "Is the node up and ready?"
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
show curl -sS -X POST "$NODE/v1/batch" -H 'Content-Type: application/json' \
  --data-binary "[{\"topic\":\"$P.ok\",\"payload\":\"x\"},{\"payload\":\"no topic\"},{\"topic\":\"$P.ok\",\"colour\":\"red\"}]"

step "Errors are application/problem+json with a stable code"
show curl -sS -X POST "$NODE/v1/topics/$P..bad" --data-binary 'x'

step "Pull everything under $P.orders from the start (> is %3E in a URL)"
ANSWER=$(curl -sS "$NODE/v1/messages?topic=$P.orders.%3E&from=earliest&limit=2")
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
FIRST_ID=$(sse 1 "$NODE/v1/events?topic=$P.orders.%3E&from=earliest" | awk '/^id: /{print substr($0, 5); exit}')
echo "Last-Event-ID: $FIRST_ID"
sse 2 -H "Last-Event-ID: $FIRST_ID" "$NODE/v1/events?topic=$P.orders.%3E"

step "Live: a subscriber from 'latest' sees a message published while it listens"
( sleep 1; curl -sS -o /dev/null -X POST "$NODE/v1/topics/$P.orders.eu" --data-binary 'live order' ) &
sse 3 "$NODE/v1/events?topic=$P.orders.%3E&from=latest"
wait

step "Topics with their statistics (GET /v1/topics; only this run's topics shown)"
curl -sS "$NODE/v1/topics" | grep -o "{\"bytes\":[^{]*\"streams\":\[[^]]*\],\"topic\":\"$P\.[^\"]*\"}" || true
echo
echo "Done. Topics of this run start with $P."
