#!/usr/bin/env python3
"""`make bench-store-ops`: the server CPU of single store operations, the unit costs that the
per-request tables of docs/performance.md add up.

Run by scripts/bench-store-ops.sh, which starts the servers (test slot 8) and passes their
addresses and PIDs. One client, one operation at a time, so each number is the server's own
CPU per operation (read from /proc/<pid>/stat before and after N operations), with no
queueing; under load the same operations cost more (contention, bigger collections, indexes).

MongoDB-compatible server (pymongo, from the SecantusDB install): the shapes the services send
(an upsert of a notification record, a point read by a unique field, an insert, a `$set`
update, the same upserts in batches of 8 and 32). Redis: the notification worker's old claim
(`SET NX PX`) and its claim script (services/notification/src/lua, by `EVALSHA`), through
redis-benchmark. Prints one line: `bench-store-ops: name=<us> ...`.
"""

import os
import subprocess
import sys
import time
import uuid

from pymongo import MongoClient, UpdateOne

N = int(os.environ.get("STORE_OPS_N", "3000"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def per_op(pid, count, fn):
    """Server CPU µs per operation of `count` operations done by `fn`."""
    before = cpu_seconds(pid)
    fn()
    return round(1e6 * (cpu_seconds(pid) - before) / count)


def record(i):
    return {"event_type": "booking.confirmed", "user_id": f"u{i % 50}", "recipient": "a@b.c",
            "channel": "log", "subject": "Booking confirmed: Dune", "body": "x" * 300,
            "booking_id": str(uuid.uuid4()), "status": "sent"}


def mongo(url, pid):
    coll = MongoClient(url).moviebook_store_ops.notifications
    coll.drop()
    coll.create_index("event_id", unique=True)
    ids = [str(uuid.uuid4()) for _ in range(N)]

    def upsert(e, i):
        return ({"event_id": e}, {"$set": record(i), "$setOnInsert": {"event_id": e}})

    out = {
        "mongo_upsert": per_op(pid, N, lambda: [coll.update_one(*upsert(e, i), upsert=True)
                                                for i, e in enumerate(ids)]),
        "mongo_find": per_op(pid, N, lambda: [coll.find_one({"event_id": e}, {"status": 1})
                                              for e in ids]),
        "mongo_insert": per_op(pid, N, lambda: [coll.insert_one({"event_id": str(uuid.uuid4()),
                                                                 **record(i)}) for i in range(N)]),
        "mongo_update": per_op(pid, N, lambda: [coll.update_one({"event_id": e},
                                                                {"$set": {"status": "sent"}})
                                                for e in ids]),
    }
    for batch in (8, 32):
        fresh = [str(uuid.uuid4()) for _ in range(N)]

        def run(batch=batch, fresh=fresh):
            for start in range(0, N, batch):
                coll.bulk_write([UpdateOne(*upsert(e, i), upsert=True)
                                 for i, e in enumerate(fresh[start:start + batch])],
                                ordered=False)
        out[f"mongo_upsert_batch{batch}"] = per_op(pid, N, run)
    coll.database.client.drop_database("moviebook_store_ops")
    return out


def redis(port, pid, lua_dir):
    cli = ["redis-cli", "-p", str(port)]
    script = open(f"{lua_dir}/epoch.lua").read() + open(f"{lua_dir}/claim.lua").read()
    sha = subprocess.run(cli + ["SCRIPT", "LOAD", script], check=True, capture_output=True,
                         text=True).stdout.strip()
    count = N * 5
    bench = ["redis-benchmark", "-p", str(port), "-q", "-c", "1", "-n", str(count), "-r",
             "1000000000"]
    now = str(int(time.time() * 1000))

    def run(*command):
        return lambda: subprocess.run(bench + list(command), check=True, capture_output=True)
    out = {
        "redis_set_nx": per_op(pid, count, run("SET", "store-ops:event:__rand_int__",
                                               "processing:x", "NX", "PX", "60000")),
        "redis_claim": per_op(pid, count, run("EVALSHA", sha, "2", "store-ops:event:__rand_int__",
                                              "store-ops:epoch", "processing:x", now, "60000",
                                              "600000")),
    }
    return out


def main():
    env = os.environ
    results = mongo(env["MONGODB_URL"], int(env["MONGO_PID"]))
    results.update(redis(int(env["REDIS_PORT"]), int(env["REDIS_PID"]), env["LUA_DIR"]))
    print(f"store-ops: {N} operations each ({N * 5} for Redis), one at a time, server CPU µs per "
          f"operation; MongoDB server: {env.get('MONGO_KIND', '?')}", file=sys.stderr)
    print("bench-store-ops: " + " ".join(f"{k}={v}us" for k, v in results.items()))


if __name__ == "__main__":
    main()
