"""Webhook drain: how fast one server sends a backlog to one webhook with nothing else running.

    python3 bench/webhook_drain.py                      # this checkout, both backends
    python3 bench/webhook_drain.py --compare 877e962    # and the server at another revision, side by side

For each round, a fresh database of 1,000 tickets gets one webhook (every default setting: 16
attempts at once, 4 to one webhook) and --deliveries queued deliveries (five events per ticket,
written by SQL with no server delivering); then one server starts and the receiver (run.py's, on
loopback) counts until every delivery has arrived. The servers take turns, --rounds each; the
median rate of each is reported. Writes bench/results/webhook-drain.json.

With --fresh the server starts first, sends eight deliveries and polls for twelve seconds, so its
statements are planned (and their plans kept) while the table holds next to nothing; the backlog
is then queued under it, and the time and CPU count from the start of the queueing.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run


def queue(backend, times, tickets="tickets"):
    """`times` priority changes of each of `tickets`, written by SQL: a delivery each."""
    for _ in range(times):
        backend.query("INSERT INTO ticket_events (ticket_id, actor_id, kind, event_type, from_value, to_value, "
                      "internal, created_at) SELECT id, created_by, 'priority_changed', 'ticket.priority_changed', "
                      f"'normal', 'high', false, CURRENT_TIMESTAMP FROM {tickets}")


def drain(kind, binary, deliveries, work, pg_url, fresh=False):
    """Seconds one server takes to send `deliveries` queued ones, and the CPU each delivery cost
    (µs: the machine's, the server's, PostgreSQL's processes', the receiver's). `fresh`: the
    server runs first with next to no deliveries (its statements' plans made then, on a nearly
    empty table), and the backlog is queued under it."""
    run.BINARY = binary  # the binary Backend and Server run
    backend = run.Backend(kind, 1000, work, pg_url)
    backend.create()
    receiver = run.Receiver()
    try:
        server = run.Server(backend, **({} if fresh else {"WEBHOOK_MAX_CONCURRENT": "0"}))
        admin = server.token("bench-admin")
        auth = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
        body = json.dumps({"url": receiver.url, "events": ["ticket.priority_changed"]}).encode()
        run.http("POST", server.base + "/webhooks", body, auth)
        if fresh:
            queue(backend, 1, "(SELECT * FROM tickets ORDER BY id LIMIT 8) AS t")
            time.sleep(12)  # a dozen polls: each statement's plan is kept by the sixth use
            already = receiver.received
            started, cpu_before = time.monotonic(), run.cpu_split(server)  # the queueing counts
            queue(backend, deliveries // 1000)
        else:
            server.stop()
            already = 0
            queue(backend, deliveries // 1000)
            started = time.monotonic()
            server = run.Server(backend)
            cpu_before = run.cpu_split(server)
        while receiver.received < already + deliveries:
            if time.monotonic() - started > 300:
                raise RuntimeError(f"only {receiver.received - already} of {deliveries} arrived in 300 s")
            time.sleep(0.005)
        seconds = time.monotonic() - started
        cpu = {part: round((used - cpu_before[part]) * 1e6 / deliveries) for part, used in run.cpu_split(server).items()}
        server.stop()
        return seconds, cpu
    finally:
        receiver.stop()
        backend.drop()
        for leftover in work.glob("bench.db*"):
            leftover.unlink()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--compare", help="a git revision whose server is measured too, side by side")
    parser.add_argument("--deliveries", type=int, default=5000, help="a multiple of 1,000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--fresh", action="store_true",
                        help="start the server before the backlog, on a table with next to no deliveries")
    parser.add_argument("--output", default=str(run.BENCH / "results" / "webhook-drain.json"))
    args = parser.parse_args()
    run.ensure_tools()
    build = ["cargo", "build", "--release", "--quiet", "--bin", "ticketdesk"]
    binaries = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        subprocess.run(build, cwd=run.ROOT, check=True)
        binaries["this checkout"] = run.BINARY
        if args.compare:
            # A target directory of its own (as bench/hostile.py's), kept between runs.
            tree = work / "compare"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.compare], cwd=run.ROOT,
                           check=True, capture_output=True)
            try:
                subprocess.run(build + ["--target-dir", str(run.ROOT / "target" / "compare")], cwd=tree, check=True)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=run.ROOT, check=True)
            binaries[args.compare] = run.ROOT / "target" / "compare" / "release" / "ticketdesk"
        kinds = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
        results = {}
        for kind in kinds:
            rates = {label: [] for label in binaries}
            cpu = {label: [] for label in binaries}
            for round_number in range(args.rounds):
                for label, binary in binaries.items():
                    seconds, used = drain(kind, binary, args.deliveries, work, args.pg_url, args.fresh)
                    rates[label].append(round(args.deliveries / seconds))
                    cpu[label].append(used)
                    print(f"[{kind}] round {round_number + 1}, {label}: {rates[label][-1]} a second, "
                          f"CPU µs a delivery {used}", file=sys.stderr)
            results[kind] = {label: {"per_second": statistics.median(r), "rounds": r,
                                     "cpu_us_per_delivery": {part: statistics.median(c[part] for c in cpu[label])
                                                             for part in cpu[label][0]}}
                             for label, r in rates.items()}
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "deliveries": args.deliveries,
              "results": results}
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
