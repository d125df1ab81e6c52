#!/usr/bin/env bash
# scripts/kind-smoke.sh (`make kind-smoke`): the documented flow through Kong on the kind
# cluster (http://localhost:8080, node port 30080 mapped by kind-config.yaml):
#   register and log in on /api/v1 (public), a protected route refuses a request without a
#   token and accepts the token, GraphQL browses the catalogue without a token and with one,
#   then the rate limit answers 429 past 200 requests a minute from one client.
# Needs the cluster of `make kind-up` (so Docker).
set -euo pipefail
BASE=${MOVIEBOOK_URL:-http://localhost:8080}
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

echo "==> Kong at $BASE"
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
