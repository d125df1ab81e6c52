#!/usr/bin/env python3
"""moviebook-mongo-users DBPATH USERS_JSON: MovieBook's MongoDB users, applied to a SecantusDB data
directory (the init container of the managed MongoDB in the stand-in image).

SecantusDB has no localhost exception, so users cannot be added to a server that already runs
with --auth and has none. This starts a private SecantusDB on 127.0.0.1:27018 with
authentication off on the same data, creates each user of the file the operator renders (or
sets the password and roles of one that exists: applying the file twice changes nothing), and
stops the server again before the real one starts with --auth. Exit status 0 only when every
user was applied; the server is stopped in every case.
"""
import json
import subprocess
import sys

import pymongo

PORT = 27018


def apply(client, users):
    for u in users:
        db = client[u["db"]]
        exists = db.command("usersInfo", u["user"]).get("users")
        command = "updateUser" if exists else "createUser"
        db.command(command, u["user"], pwd=u["pwd"], roles=u["roles"])
        roles = ", ".join(f'{r["role"]}@{r["db"]}' for r in u["roles"])
        print(f'moviebook-mongo-users: {"updated" if exists else "created"} {u["user"]}@{u["db"]}: {roles}', flush=True)


def main(argv):
    if len(argv) != 3:
        print("usage: moviebook-mongo-users DBPATH USERS_JSON", file=sys.stderr)
        return 64
    dbpath, users_file = argv[1], argv[2]
    with open(users_file, encoding="utf-8") as f:
        users = json.load(f)["users"]
    server = subprocess.Popen([
        sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(PORT),
        "--storage-path", dbpath, "--cache-size", "64M", "--log-level", "WARNING",
    ])
    try:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{PORT}/?directConnection=true",
                                     serverSelectionTimeoutMS=120000)
        client.admin.command("ping")
        apply(client, users)
        client.close()
    finally:
        server.terminate()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
