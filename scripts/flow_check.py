#!/usr/bin/env python3
"""The documented MovieBook flow over the wire, as a client sees it: each step checks what it
got and exits non-zero (with what it got) on the first wrong answer. Standard library only, so
it runs against any installation: the local node (scripts/cluster-e2e.sh), kind through Kong
(scripts/kind-smoke.sh) or `make dev`.

  flow_check.py flow      register (201, then 409), log in, browse (GraphQL, public), the seat
                          map, createBooking, processPayment (CONFIRMED), read it back
                          (getBooking, myBookings), the notification worker's record
                          (booking.confirmed); prints a JSON summary (user, booking) on stdout
  flow_check.py login     logs in as --email/--password and checks the answer's user id
  flow_check.py bookings  --clients N --duration S: concurrent book+pay loops (one user each);
                          prints every outcome as JSON lines (for the e2e test's accounting)
  flow_check.py watch     --duration S [--catalogue URL] --email/--password: requests in a
                          loop (login, GraphQL movies, the REST catalogue) while something
                          changes (a rolling update); fails if any request failed
  flow_check.py verify    --results FILE: every acknowledged booking is still there with the
                          state it was acknowledged in, every confirmed one has its
                          booking.confirmed notification, and no seat is sold twice

URLs: --graphql (…/graphql), --users (base of /api/v1/register), --notifications (base of
/api/v1/notifications; optional: without it the notification check is skipped and says so).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

TIMEOUT = 20


class Fail(Exception):
    pass


def http(method: str, url: str, body=None, token: str | None = None, timeout=TIMEOUT):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, raw.decode(errors="replace")


class Client:
    def __init__(self, graphql: str, users: str, notifications: str | None):
        self.graphql, self.users, self.notifications = graphql, users.rstrip("/"), notifications
        self.token = None
        self.user_id = None

    def gql(self, query: str, variables=None, token=True):
        code, body = http("POST", self.graphql, {"query": query, "variables": variables or {}},
                          self.token if token else None)
        if code != 200 or not isinstance(body, dict):
            raise Fail(f"GraphQL: HTTP {code}: {body}")
        if body.get("errors"):
            e = body["errors"][0]
            raise Fail(f"GraphQL error {e.get('extensions', {}).get('code')}: {e.get('message')}")
        return body["data"]

    def register(self, email: str, password: str):
        code, body = http("POST", f"{self.users}/api/v1/register",
                          {"email": email, "password": password, "first_name": "Node", "last_name": "Check"})
        return code, body

    def login(self, email: str, password: str):
        code, body = http("POST", f"{self.users}/api/v1/login", {"email": email, "password": password})
        if code != 200 or not isinstance(body, dict) or not body.get("token"):
            raise Fail(f"login {email}: HTTP {code}: {body}")
        if body.get("user", {}).get("email") != email:
            raise Fail(f"login answered another user: {body.get('user')}")
        self.token, self.user_id = body["token"], body["user"]["id"]
        return body

    def showtimes(self):
        data = self.gql("{ movies { id title showtimes { id availableSeats basePrice cinema { name } } } }", token=False)
        movies = data["movies"]
        return movies, [s for m in movies for s in m["showtimes"]]

    def free_seats(self, showtime_id: str):
        data = self.gql("query($id: ID!) { showtime(id: $id) { seats { seatNumber status } } }", {"id": showtime_id}, token=False)
        if not data["showtime"]:
            raise Fail(f"showtime {showtime_id} not found")
        return [s["seatNumber"] for s in data["showtime"]["seats"] if s["status"] == "AVAILABLE"]

    def book(self, showtime_id: str, seats: list[str]):
        return self.gql(
            "mutation($u: ID!, $s: ID!, $seats: [String!]!) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats)"
            " { success message lockId booking { id status totalAmount } } }",
            {"u": self.user_id, "s": showtime_id, "seats": seats})["createBooking"]

    def pay(self, booking_id: str):
        return self.gql(
            "mutation($b: ID!) { processPayment(bookingId: $b, paymentMethod: \"credit_card\","
            " paymentDetails: \"{\\\"card_number\\\":\\\"4111111111111111\\\"}\") { success message booking { id status confirmedAt } } }",
            {"b": booking_id})["processPayment"]

    def booking(self, booking_id: str):
        return self.gql("query($b: ID!) { getBooking(bookingId: $b) { id status seats showtimeId userId totalAmount } }",
                        {"b": booking_id})["getBooking"]

    def notified(self, booking_id: str, event="booking.confirmed", wait=30.0) -> bool:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            code, body = http("GET", f"{self.notifications.rstrip('/')}/api/v1/notifications?booking_id={booking_id}",
                              token=self.token)
            if code == 200 and any(n.get("event_type") == event for n in body.get("notifications", [])):
                return True
            time.sleep(0.5)
        return False


def ok(msg: str):
    print(f"    ok: {msg}", file=sys.stderr)


def new_user(c: Client, prefix: str):
    email = f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"
    password = f"Pw-{uuid.uuid4().hex[:12]}!"
    code, body = c.register(email, password)
    if code != 201:
        raise Fail(f"register: HTTP {code} (want 201): {body}")
    return email, password


def cmd_flow(a) -> dict:
    c = Client(a.graphql, a.users, a.notifications)
    email, password = new_user(c, "flow")
    ok(f"POST /api/v1/register -> 201 ({email})")
    code, body = c.register(email, password)
    if code != 409:
        raise Fail(f"duplicate register: HTTP {code} (want 409): {body}")
    ok("duplicate register -> 409")
    c.login(email, password)
    ok(f"POST /api/v1/login -> token for user {c.user_id}")
    movies, showtimes = c.showtimes()
    bookable = [s for s in showtimes if s["availableSeats"] >= 2]
    if not bookable:
        raise Fail(f"the catalogue has no showtime with 2 free seats ({len(movies)} movies, {len(showtimes)} showtimes): no sample data?")
    ok(f"GraphQL movies (public): {len(movies)} movies, {len(showtimes)} showtimes")
    st = random.choice(bookable)
    free = c.free_seats(st["id"])
    if len(free) < 2:
        raise Fail(f"seat map of {st['id']} has {len(free)} free seats, availableSeats said {st['availableSeats']}")
    seats = random.sample(free, 2)
    ok(f"seat map: {len(free)} free; booking {seats} at {st['cinema']['name']}")
    created = c.book(st["id"], seats)
    b = created.get("booking") or {}
    if not created.get("success") or b.get("status") != "PENDING_PAYMENT" or not created.get("lockId"):
        raise Fail(f"createBooking: {created}")
    ok(f"createBooking -> {b['id']} PENDING_PAYMENT, {b['totalAmount']}, lock {created['lockId']}")
    paid = c.pay(b["id"])
    if not paid.get("success") or paid["booking"]["status"] != "CONFIRMED" or not paid["booking"].get("confirmedAt"):
        raise Fail(f"processPayment: {paid}")
    ok("processPayment -> CONFIRMED")
    back = c.booking(b["id"])
    if back["status"] != "CONFIRMED" or sorted(back["seats"]) != sorted(seats) or back["userId"] != c.user_id:
        raise Fail(f"getBooking: {back}")
    mine = c.gql("{ myBookings { id status } }")["myBookings"]
    if [x["id"] for x in mine] != [b["id"]]:
        raise Fail(f"myBookings: {mine}")
    ok("getBooking and myBookings read it back CONFIRMED")
    after = c.free_seats(st["id"])
    if set(seats) & set(after):
        raise Fail(f"seats {seats} still AVAILABLE after the booking was confirmed")
    ok("the seat map shows the seats taken")
    if c.notifications:
        if not c.notified(b["id"]):
            raise Fail(f"no booking.confirmed notification recorded for {b['id']} within 30 s")
        ok("the notification worker recorded booking.confirmed")
    else:
        ok("notification check SKIPPED (no --notifications URL)")
    return {"email": email, "password": password, "user_id": c.user_id, "booking_id": b["id"], "showtime_id": st["id"], "seats": seats}


def cmd_login(a) -> dict:
    c = Client(a.graphql, a.users, a.notifications)
    c.login(a.email, a.password)
    if a.user_id and c.user_id != a.user_id:
        raise Fail(f"login as {a.email} gave user {c.user_id}, want {a.user_id}")
    ok(f"login as {a.email} -> user {c.user_id}")
    if a.booking_id:
        back = c.booking(a.booking_id)
        if back["status"] != "CONFIRMED":
            raise Fail(f"booking {a.booking_id}: {back}")
        ok(f"booking {a.booking_id} still CONFIRMED")
    return {"user_id": c.user_id}


def cmd_bookings(a):
    """Each client: its own user, then book 1 seat and pay, in a loop, for `duration` seconds.
    Every outcome is one JSON line: the step, the booking id if any, the acknowledged state or
    the error. Errors (a pod killed mid-request) are recorded, not fatal."""
    c0 = Client(a.graphql, a.users, a.notifications)
    _, showtimes = c0.showtimes()
    showtimes = [s for s in showtimes if s["availableSeats"] >= 20]
    if not showtimes:
        raise Fail("no showtime with 20 free seats")
    out_lock = threading.Lock()
    stop_at = time.monotonic() + a.duration

    def emit(rec):
        with out_lock:
            print(json.dumps(rec), flush=True)

    def worker(i: int):
        c = Client(a.graphql, a.users, a.notifications)
        for attempt in range(20):
            try:
                email, password = new_user(c, f"load{i}")
                c.login(email, password)
                break
            except Exception as e:  # the user service may be the pod being killed
                time.sleep(0.5)
                if attempt == 19:
                    emit({"client": i, "step": "login", "error": str(e)})
                    return
        emit({"client": i, "step": "user", "user_id": c.user_id, "email": email, "password": password})
        rng = random.Random(i)
        while time.monotonic() < stop_at:
            st = rng.choice(showtimes)
            try:
                free = c.free_seats(st["id"])
                if not free:
                    continue
                seat = rng.choice(free)
                created = c.book(st["id"], [seat])
            except Exception as e:
                emit({"client": i, "step": "book", "showtime": st["id"], "error": str(e)})
                time.sleep(0.2)
                continue
            if not created.get("success"):
                emit({"client": i, "step": "book", "showtime": st["id"], "refused": created.get("message")})
                continue
            bid = created["booking"]["id"]
            emit({"client": i, "step": "booked", "booking_id": bid, "showtime": st["id"], "seat": seat,
                  "user_id": c.user_id, "status": created["booking"]["status"]})
            try:
                paid = c.pay(bid)
                emit({"client": i, "step": "paid" if paid.get("success") else "pay-refused", "booking_id": bid,
                      "status": paid.get("booking", {}).get("status"), "message": paid.get("message")})
            except Exception as e:
                emit({"client": i, "step": "pay", "booking_id": bid, "error": str(e)})

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.duration + 120)


def cmd_verify(a) -> dict:
    recs = [json.loads(line) for line in open(a.results) if line.strip()]
    users = {r["client"]: r for r in recs if r["step"] == "user"}
    booked = {r["booking_id"]: r for r in recs if r["step"] == "booked"}
    paid = {r["booking_id"]: r for r in recs if r["step"] == "paid"}
    errors = [r for r in recs if "error" in r]
    if not booked or not paid:
        raise Fail(f"the load made no bookings ({len(booked)}) or payments ({len(paid)}): {errors[:3]}")
    clients = {}
    for i, u in users.items():
        c = Client(a.graphql, a.users, a.notifications)
        c.login(u["email"], u["password"])
        clients[u["user_id"]] = c
    lost, wrong, unnotified = [], [], []
    sold: dict[tuple[str, str], list[str]] = {}
    for bid, r in booked.items():
        c = clients[r["user_id"]]
        try:
            b = c.booking(bid)
        except Fail as e:
            lost.append(f"{bid}: {e}")
            continue
        if bid in paid and paid[bid]["status"] == "CONFIRMED" and b["status"] != "CONFIRMED":
            wrong.append(f"{bid}: acknowledged CONFIRMED, now {b['status']}")
        if b["status"] == "CONFIRMED":
            sold.setdefault((b["showtimeId"], b["seats"][0]), []).append(bid)
    twice = {k: v for k, v in sold.items() if len(v) > 1}
    check_notes = bool(a.notifications)
    if check_notes:
        for bid in paid:
            if paid[bid]["status"] != "CONFIRMED":
                continue
            c = clients[booked[bid]["user_id"]]
            if not c.notified(bid, wait=60.0 if not unnotified else 5.0):
                unnotified.append(bid)
    summary = {"bookings": len(booked), "paid": len(paid), "request_errors": len(errors),
               "lost": lost, "state_changed": wrong, "sold_twice": twice, "unnotified": unnotified}
    if lost or wrong or twice or unnotified:
        raise Fail(f"lost or inconsistent data: {json.dumps(summary)}")
    ok(f"{len(booked)} bookings, {len(paid)} payments acknowledged: none lost, none changed, no seat sold twice"
       f"{', every confirmation notified' if check_notes else ''}; {len(errors)} requests failed during the disruption")
    return summary


def cmd_watch(a) -> dict:
    """Sequential requests for `duration` seconds; every failure is collected (a rolling update
    that drops requests shows up here). Three kinds, so every rolled service is on the path."""
    c = Client(a.graphql, a.users, a.notifications)
    stop_at = time.monotonic() + a.duration
    counts = {"login": 0, "movies": 0, "catalogue": 0}
    failures = []
    while time.monotonic() < stop_at:
        for kind in counts:
            try:
                if kind == "login":
                    c.login(a.email, a.password)
                elif kind == "movies":
                    if not c.showtimes()[0]:
                        raise Fail("no movies")
                elif a.catalogue:
                    code, body = http("GET", f"{a.catalogue.rstrip('/')}/api/v1/movies")
                    if code != 200:
                        raise Fail(f"GET /api/v1/movies: HTTP {code}: {body}")
                counts[kind] += 1
            except (Fail, urllib.error.URLError, OSError) as e:
                failures.append(f"{kind}: {e}")
        time.sleep(a.interval)
    summary = {"requests": counts, "failures": failures}
    if failures:
        raise Fail(f"{len(failures)} requests failed while it rolled: {failures[:5]}")
    ok(f"{sum(counts.values())} requests ({counts}) during the rollout, none failed")
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["flow", "login", "bookings", "verify", "watch"])
    p.add_argument("--graphql", required=True)
    p.add_argument("--users", required=True)
    p.add_argument("--notifications")
    p.add_argument("--email")
    p.add_argument("--password")
    p.add_argument("--user-id")
    p.add_argument("--booking-id")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--results")
    p.add_argument("--catalogue")
    p.add_argument("--interval", type=float, default=0.05)
    a = p.parse_args()
    try:
        if a.cmd == "flow":
            print(json.dumps(cmd_flow(a)))
        elif a.cmd == "login":
            print(json.dumps(cmd_login(a)))
        elif a.cmd == "bookings":
            cmd_bookings(a)
        elif a.cmd == "verify":
            print(json.dumps(cmd_verify(a)))
        elif a.cmd == "watch":
            print(json.dumps(cmd_watch(a)))
    except Fail as e:
        print(f"flow_check: FAIL: {e}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"flow_check: FAIL: no answer: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
