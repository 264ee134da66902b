#!/usr/bin/env python3
"""What hostile or heavy clients cost everyone else, on the release binary (issue 18):

  history  300 public comments of 10,000 characters on one ticket (at most one every 50 ms) while
           four other clients create tickets: how long a comment takes at first and at the end,
           and what the others' writes took meanwhile.
  siege    one address holds every live stream and connection its caps allow, and twenty more
           addresses open 1,280 sockets that never send a byte (more than MAX_CONNECTIONS):
           what one more address sees of login and a ticket read, before and during.

    python3 bench/hostile.py                        # both backends, this checkout
    python3 bench/hostile.py --compare HEAD~3       # also the server at another revision, side by side
    python3 bench/hostile.py --backend sqlite --only history

Writes bench/results/hostile.json and prints a summary. Uses bench/run.py's seeding and server.
"""

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: Backend, Server, http)

COMMENTS = 300
COMMENT_CHARS = 10_000
COMMENT_INTERVAL = 0.05


def timed(method, url, body=None, headers=None):
    """Milliseconds the request took, and its status (None: a transport error)."""
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = None
    return (time.perf_counter() - started) * 1000, status


def words(seed, chars):
    rng = random.Random(seed)
    text = []
    while sum(len(w) + 1 for w in text) < chars - 12:
        text.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 10))))
    return " ".join(text)


def median(values):
    return round(statistics.median(values), 2) if values else None


def history(server):
    admin = server.token("bench-admin")
    customer = server.token("customer1")
    json_headers = lambda token: {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    others, stop = [], threading.Event()

    def other_writes():
        body = json.dumps({"subject": "Meanwhile", "description": "another customer"}).encode()
        while not stop.is_set():
            took, status = timed("POST", server.base + "/tickets/", body, json_headers(customer))
            others.append((time.monotonic(), took, status))

    texts = [json.dumps({"body": words(n, COMMENT_CHARS)}).encode() for n in range(COMMENTS)]
    comments = []
    writers = [threading.Thread(target=other_writes) for _ in range(4)]
    for writer in writers:
        writer.start()
    time.sleep(2)  # the others' writes alone, first
    # One comment every 50 ms at most: the same load for every server, however fast it is.
    for n, body in enumerate(texts):
        started = time.monotonic()
        took, status = timed("POST", server.base + "/tickets/1/comments", body, json_headers(admin))
        comments.append((started, took, status))
        time.sleep(max(0.0, started + COMMENT_INTERVAL - time.monotonic()))
    stop.set()
    for writer in writers:
        writer.join()
    first_end = comments[19][0] + comments[19][1] / 1000
    last_start = comments[-20][0]
    during = lambda t0, t1: [took for at, took, _ in others if t0 <= at <= t1]
    p99 = lambda values: round(statistics.quantiles(values, n=100)[98], 2) if len(values) > 1 else None
    return {
        "comment_ms_first_20": median([c[1] for c in comments[:20]]),
        "comment_ms_last_20": median([c[1] for c in comments[-20:]]),
        "other_writes_ms_p50_before_comments": median(during(0, comments[0][0])),
        "other_writes_ms_p50_during_first_20": median(during(comments[0][0], first_end)),
        "other_writes_ms_p50_during_last_20": median(during(last_start, time.monotonic())),
        "other_writes_ms_p99_during_first_20": p99(during(comments[0][0], first_end)),
        "other_writes_ms_p99_during_last_20": p99(during(last_start, time.monotonic())),
        "failed_comments": sum(1 for c in comments if c[2] != 201),
        "failed_other_writes": sum(1 for o in others if o[2] != 201),
    }


def siege(server):
    port = server.port
    embed = run.http("GET", server.base + "/tickets/1", headers={"Authorization": f"Bearer {server.token('bench-admin')}"})["embed_token"]

    def victim(rounds=20):
        logins, reads, failures = [], [], 0
        login = b"username=customer2&password=" + run.PASSWORD.encode()
        for _ in range(rounds):
            took, status = timed("POST", server.base + "/auth/token", login, {"Content-Type": "application/x-www-form-urlencoded"})
            logins.append(took)
            failures += status != 200
            took, status = timed("GET", server.base + "/tickets/embed/" + embed)
            reads.append(took)
            failures += status != 200
        return {"login_ms_p50": median(logins), "login_ms_max": round(max(logins), 2),
                "read_ms_p50": median(reads), "read_ms_max": round(max(reads), 2), "failures": failures}

    def connect(source):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        return s

    def first_line(s):
        s.settimeout(5)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0].decode(errors="replace")

    sockets = []

    def hold_until_refused(request):
        """Opens connections from 127.0.0.2 sending `request` until one is not answered 200:
        how many were, and what the refusal said."""
        for held in range(2000):
            s = connect("127.0.0.2")
            s.sendall(request)
            line = first_line(s)
            sockets.append(s)
            if " 200 " not in line:
                return held, line
        return 2000, "none within 2,000"

    before = victim()
    held_streams, stream_refusal = hold_until_refused(f"GET /tickets/embed/{embed}/stream HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    held_connections, connection_refusal = hold_until_refused(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    for n in range(20):
        for _ in range(64):
            sockets.append(connect(f"127.0.1.{n + 1}"))
    time.sleep(1)  # let the server admit (or displace) them all
    during = victim()
    for s in sockets:
        s.close()
    return {"one_address_held_streams": held_streams, "its_next_stream": stream_refusal,
            "one_address_held_connections": held_connections, "its_next_connection": connection_refusal,
            "silent_sockets_from_20_addresses": 20 * 64,
            "another_address_before": before, "another_address_during": during}


def measure(kind, args, work, binary, label):
    run.BINARY = binary
    # A folder per measurement: each server starts on a fresh database.
    work = work / f"{kind}-{label.replace(' ', '-')}"
    work.mkdir()
    backend = run.Backend(kind, 1000, work, args.pg_url)
    backend.create()
    report = {}
    try:
        if "history" in args.only:
            server = run.Server(backend)
            try:
                report["history"] = history(server)
            finally:
                server.stop()
        if "siege" in args.only:
            # The per-client cap as it ships (run.py lifts it for wrk).
            server = run.Server(backend, MAX_CONNECTIONS_PER_CLIENT="64")
            try:
                report["siege"] = siege(server)
            finally:
                server.stop()
    finally:
        backend.drop()
    print(f"{kind} {label}: {json.dumps(report)}", file=sys.stderr)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--compare", help="a git revision whose server is measured too, side by side")
    parser.add_argument("--only", nargs="+", choices=["history", "siege"], default=["history", "siege"])
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--output", default=str(run.BENCH / "results" / "hostile.json"))
    args = parser.parse_args()
    run.ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ticketdesk"], cwd=run.ROOT, check=True)
    binaries = {"this checkout": run.BINARY}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if args.compare:
            tree = work / "compare"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.compare], cwd=run.ROOT, check=True,
                           capture_output=True)
            try:
                subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ticketdesk",
                                "--target-dir", str(run.ROOT / "target" / "compare")], cwd=tree, check=True)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=run.ROOT, check=True)
            binaries[args.compare] = run.ROOT / "target" / "compare" / "release" / "ticketdesk"
        kinds = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
        results = {kind: {label: measure(kind, args, work, binary, label) for label, binary in binaries.items()}
                   for kind in kinds}
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "comments": COMMENTS,
               "comment_chars": COMMENT_CHARS, "results": results}
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
