#!/usr/bin/env bash
# scripts/kind-smoke.sh (`make kind-smoke`): the documented flow through Kong on the kind
# cluster (http://localhost:8080, node port 30080 mapped by kind-config.yaml):
#   the whole flow for real (scripts/flow_check.py flow, the same checks the node e2e test
#   runs): register (201, duplicate 409), log in, browse the sample catalogue (it must have a
#   bookable showtime), the seat map, createBooking, processPayment -> CONFIRMED, read back,
#   and the notification worker's booking.confirmed record (read through a kubectl
#   port-forward: Kong does not route the notification API); then Kong's own rules: a protected
#   route refuses a request without a token and accepts the token, GraphQL answers with and
#   without one, and the rate limit answers 429 past 200 requests a minute from one client.
# Needs the cluster of `make kind-up` (so Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kind-tools.sh
BASE=${MOVIEBOOK_URL:-http://localhost:8080}
NS=${MOVIEBOOK_NAMESPACE:-moviebook}
LIMIT=${RATE_LIMIT:-200}
fail() { echo "kind-smoke: FAIL: $*" >&2; exit 1; }
ok() { echo "    ok: $*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1"; }
# request METHOD PATH [BODY] [TOKEN] -> prints the body, sets CODE
request() {
  local out; out=$(mktemp)
  local args=(-sS -o "$out" -w '%{http_code}' -X "$1" "$BASE$2" -H 'Content-Type: application/json')
  [[ -n ${3:-} ]] && args+=(--data "$3")
  [[ -n ${4:-} ]] && args+=(-H "Authorization: Bearer $4")
  CODE=$(curl "${args[@]}") || fail "$1 $2: no answer from $BASE (is 'make kind-up' done?)"
  BODY=$(cat "$out"); rm -f "$out"
}

echo "==> the documented flow through Kong at $BASE (register, login, browse, book, pay, notified)"
PF_PID=
trap '[[ -n $PF_PID ]] && kill "$PF_PID" 2>/dev/null' EXIT
notify_args=()
if ensure_kubectl >/dev/null 2>&1 && [[ -f ${KUBECONFIG:-$HOME/.cache/moviebook/kind/kubeconfig} ]]; then
  export KUBECONFIG=${KUBECONFIG:-$HOME/.cache/moviebook/kind/kubeconfig}
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$KUBECTL" -n "$NS" port-forward svc/moviebook-notification "$port:8004" >/dev/null 2>&1 &
  PF_PID=$!
  for _ in $(seq 1 40); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.25; done
  notify_args=(--notifications "http://127.0.0.1:$port")
fi
((${#notify_args[@]})) || fail "cannot reach the notification service (kubectl port-forward svc/moviebook-notification): the flow needs its record"
python3 scripts/flow_check.py flow --graphql "$BASE/graphql" --users "$BASE" "${notify_args[@]}" >/dev/null \
  || fail "the documented flow through Kong"
ok "registered, logged in, browsed, booked, paid (CONFIRMED), read back, notified"

echo "==> Kong's rules at $BASE"
email="smoke-$(date +%s)-$RANDOM@example.com" password='Sm0ke-test-password!'
request POST /api/v1/register "{\"email\":\"$email\",\"password\":\"$password\",\"first_name\":\"Smoke\",\"last_name\":\"Test\"}"
[[ $CODE == 201 ]] || fail "register: HTTP $CODE: $BODY"
ok "POST /api/v1/register -> 201"
request POST /api/v1/register "{\"email\":\"$email\",\"password\":\"$password\",\"first_name\":\"Smoke\",\"last_name\":\"Test\"}"
[[ $CODE == 409 ]] || fail "duplicate register: HTTP $CODE (want 409)"
ok "duplicate register -> 409"
request POST /api/v1/login "{\"email\":\"$email\",\"password\":\"$password\"}"
[[ $CODE == 200 ]] || fail "login: HTTP $CODE: $BODY"
token=$(json 'd["token"]' <<<"$BODY"); user_id=$(json 'd["user"]["id"]' <<<"$BODY")
[[ -n $token && -n $user_id ]] || fail "login returned no token/user"
ok "POST /api/v1/login -> token for user $user_id"

request GET /api/v1/profile
[[ $CODE == 401 ]] || fail "GET /api/v1/profile without a token: HTTP $CODE (want 401 from Kong's jwt plugin)"
ok "GET /api/v1/profile without a token -> 401"
request GET /api/v1/profile "" "$token"
[[ $CODE == 200 ]] || fail "GET /api/v1/profile with the token: HTTP $CODE: $BODY"
ok "GET /api/v1/profile with the token -> 200"

q='{"query":"{ movies { id title genre duration showtimes { id startTime availableSeats basePrice cinema { name location } } } }"}'
request POST /graphql "$q"
[[ $CODE == 200 ]] || fail "GraphQL without a token: HTTP $CODE: $BODY"
n=$(json 'len(d["data"]["movies"]) if not d.get("errors") else "errors: %s" % d["errors"]' <<<"$BODY")
[[ $n =~ ^[0-9]+$ ]] || fail "GraphQL movies: $n"
(( n > 0 )) || fail "GraphQL movies: the catalogue is empty (no sample data?)"
ok "GraphQL movies (public) -> $n movies"
request POST /graphql "$q" "$token"
[[ $CODE == 200 ]] || fail "GraphQL with the token: HTTP $CODE: $BODY"
ok "GraphQL movies with the token -> 200"

echo "==> rate limit: $LIMIT requests a minute per client IP"
headers=$(curl -sS -D - -o /dev/null "$BASE/api/v1/movies")
grep -qi "^x-ratelimit-limit-minute: *$LIMIT" <<<"$headers" || fail "no X-RateLimit-Limit-Minute: $LIMIT header: $headers"
ok "X-RateLimit-Limit-Minute: $LIMIT"
# The window is the clock minute and this run already used some of it: past at most LIMIT more
# requests one must be refused (twice LIMIT in case the minute turned over mid-way).
first429=
for i in $(seq 1 $((2 * LIMIT))); do
  c=$(curl -sS -o /dev/null -w '%{http_code}' "$BASE/api/v1/movies")
  if [[ $c == 429 ]]; then first429=$i; break; fi
  [[ $c == 200 ]] || fail "GET /api/v1/movies #$i: HTTP $c"
done
[[ -n $first429 ]] || fail "no 429 after $((2 * LIMIT)) requests"
ok "429 Too Many Requests at request $first429 of this burst"
echo "kind-smoke: all checks passed"
