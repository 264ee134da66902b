#!/usr/bin/env python3
"""What the SLA evaluator costs (issue 21), on the release binary:

  idle      every open ticket of a large table has a running clock due in weeks; the server's
            evaluator ticks each second and finds nothing due: its CPU per tick, and the due
            query's own time (EXPLAIN ANALYZE), at --tickets and at 1/100 of it, side by side.
  burst     --due of those clocks come due together: how long until the evaluator has recorded
            every breach (history event and summary), and the server's CPU for it.

    python3 bench/sla.py                                  # PostgreSQL, 1,000,000 tickets, 10,000 due
    python3 bench/sla.py --backend sqlite --tickets 100000 --due 1000

Writes bench/results/sla-<backend>.json and prints a summary. Uses bench/run.py's seeding and server.
"""

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: Backend, Server)

IDLE_SECONDS = 10

# One running resolution clock per open or in-progress ticket, due in 30 days; `{due}` of them,
# picked by id, come due `{soon}` seconds from now instead.
CLOCKS = {
    "postgres": """
INSERT INTO sla_clocks (ticket_id, metric, cycle, policy_name, target_minutes, pause_statuses, used_seconds,
                        running_since, due_at, warned, achieved, next_check_at)
SELECT id, 'resolution', 1, 'Bench', 43200, '["pending"]', 0, now(),
       now() + CASE WHEN id % {step} = 0 AND id <= {step} * {due} THEN interval '{soon} seconds' ELSE interval '30 days' END,
       TRUE, FALSE,
       now() + CASE WHEN id % {step} = 0 AND id <= {step} * {due} THEN interval '{soon} seconds' ELSE interval '30 days' END
FROM tickets WHERE status IN ('open', 'in_progress');
VACUUM ANALYZE sla_clocks;
""",
    "sqlite": """
INSERT INTO sla_clocks (ticket_id, metric, cycle, policy_name, target_minutes, pause_statuses, used_seconds,
                        running_since, due_at, warned, achieved, next_check_at)
SELECT id, 'resolution', 1, 'Bench', 43200, '["pending"]', 0, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'),
       strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', CASE WHEN id % {step} = 0 AND id <= {step} * {due} THEN '+{soon} seconds' ELSE '+30 days' END),
       1, 0,
       strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', CASE WHEN id % {step} = 0 AND id <= {step} * {due} THEN '+{soon} seconds' ELSE '+30 days' END)
FROM tickets WHERE status IN ('open', 'in_progress');
ANALYZE;
""",
}

DUE_QUERY = "SELECT ticket_id FROM sla_clocks WHERE next_check_at <= {now} ORDER BY next_check_at LIMIT 200"


def due_query_ms(backend):
    if backend.kind == "postgres":
        plan = run.sh("psql", "-qtA", backend.url, "-c", "EXPLAIN (ANALYZE, COSTS OFF) " + DUE_QUERY.format(now="now()"))
        return float(plan.rsplit("Execution Time:", 1)[1].split()[0]), plan
    now = "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
    database = f"{backend.workdir}/bench.db"
    plan = run.sh("sqlite3", database, "EXPLAIN QUERY PLAN " + DUE_QUERY.format(now=now))
    # The median of 200 runs, read-only, from Python's own SQLite.
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    times = []
    for _ in range(200):
        started = time.perf_counter()
        connection.execute(DUE_QUERY.format(now=now)).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    connection.close()
    return round(sorted(times)[len(times) // 2], 4), plan


def measure(kind, tickets, due, args, workdir):
    workdir = workdir / str(tickets)
    workdir.mkdir()
    backend = run.Backend(kind, tickets, workdir, args.pg_url)
    backend.create()
    open_tickets = int(backend.query("SELECT count(*) FROM tickets WHERE status IN ('open', 'in_progress')")[0])
    # Every other ticket is open or in progress: space the due ones evenly over the ids.
    step = max(2, 2 * (open_tickets // max(due, 1)))
    sql = CLOCKS[kind].format(step=step, due=due, soon=args.lead)
    inserted = time.monotonic()
    if kind == "postgres":
        run.sh("psql", "-q", backend.url, input=sql)
    else:
        run.sh("sqlite3", f"{workdir}/bench.db", input=sql)
    due_at = inserted + args.lead
    clocks = int(backend.query("SELECT count(*) FROM sla_clocks")[0])
    soon = "now() + interval '1 day'" if kind == "postgres" else "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '+1 day')"
    expected = int(backend.query(f"SELECT count(*) FROM sla_clocks WHERE due_at < {soon}")[0])
    server = run.Server(backend, WEBHOOK_MAX_CONCURRENT="0")
    try:
        started_cpu, started = run.process_cpu_seconds(server.process.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_cpu = run.process_cpu_seconds(server.process.pid) - started_cpu
        ticks = time.monotonic() - started
        assert time.monotonic() < due_at, "the idle window ran into the due time: raise --lead"
        query_ms, plan = due_query_ms(backend)
        time.sleep(max(0.0, due_at - time.monotonic() - 1))
        burst_cpu_start = run.process_cpu_seconds(server.process.pid)
        deadline = time.monotonic() + 600
        recorded = 0
        while time.monotonic() < deadline:
            recorded = int(backend.query("SELECT count(*) FROM ticket_events WHERE kind = 'sla_breached'")[0])
            if recorded >= expected:
                break
            time.sleep(0.1)
        done = time.monotonic()
        burst_cpu = run.process_cpu_seconds(server.process.pid) - burst_cpu_start
    finally:
        server.stop()
        backend.drop()
    return {
        "tickets": tickets,
        "running_clocks": clocks,
        "due_together": expected,
        "idle_seconds": round(ticks, 1),
        "idle_server_cpu_ms_per_tick": round(idle_cpu * 1000 / ticks, 3),
        "due_query_ms": query_ms,
        "due_query_plan": plan.splitlines(),
        "burst_recorded": recorded,
        "burst_seconds_after_due": round(done - due_at, 2),
        "burst_server_cpu_s": round(burst_cpu, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--lead", type=int, default=60, help="seconds from seeding the clocks to their due time")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    run.ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ticketdesk"], cwd=run.ROOT, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="ticketdesk-bench-sla-"))
    small = measure(args.backend, max(1000, args.tickets // 100), max(10, args.due // 100), args, workdir)
    large = measure(args.backend, args.tickets, args.due, args, workdir)
    report = {
        "backend": args.backend,
        "small": small,
        "large": large,
        "idle_tick_cpu_ratio_large_to_small": round(large["idle_server_cpu_ms_per_tick"] / max(small["idle_server_cpu_ms_per_tick"], 1e-9), 2),
    }
    output = Path(args.output or run.BENCH / "results" / f"sla-{args.backend}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
