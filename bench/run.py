#!/usr/bin/env python3
"""Load benchmark: builds the release server, seeds a throwaway database per backend by bulk SQL,
drives each scenario with wrk from a second process on loopback, and measures PostgreSQL's own
ceiling for the same primary-key SELECT with pgbench in the same run.

    python3 bench/run.py                      # 100,000 tickets, both backends
    python3 bench/run.py --tickets 1000000    # a million
    python3 bench/run.py --backend postgres --duration 5
    python3 bench/run.py --tickets 10000 --webhooks --only   # only what webhooks cost writes
    python3 bench/run.py --tickets 30000 --streams 10000 --only   # only what live streams cost

Writes bench/results/latest.json and prints a table. Needs wrk, pgbench and sqlite3 (installed
with apt-get when missing) and a PostgreSQL server (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/postgres; a database ticketdesk_bench is created and dropped).
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
BINARY = ROOT / "target" / "release" / "ticketdesk"
FLOOR = ROOT / "target" / "release" / "examples" / "floor"
PASSWORD = "bench-password-1"
JWT_SECRET = "benchmark-signing-key-0123456789abcdef"
SUBJECTS = ["Printer", "Network", "Login", "Invoice", "Laptop", "Email", "VPN", "Phone"]
STATUSES = ["open", "in_progress", "resolved", "closed"]
TICKET_COLUMNS = "id, subject, description, status, priority, created_by, assigned_to, embed_token, created_at, updated_at, attachments, sla"


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs).stdout


def ensure_tools():
    missing = [tool for tool in ("wrk", "pgbench", "sqlite3", "psql") if shutil.which(tool) is None]
    packages = {"wrk": "wrk", "pgbench": "postgresql-contrib", "sqlite3": "sqlite3", "psql": "postgresql-client"}
    if missing:
        print(f"installing {', '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *[packages[m] for m in missing]], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


# ---------------------------------------------------------------- seeding


def seed_postgres(url, tickets):
    return f"""
\\set ON_ERROR_STOP on
SELECT password_hash AS hash FROM users WHERE username = 'bench-admin' \\gset
INSERT INTO users (username, password_hash, role, created_at)
    SELECT 'agent' || g, :'hash', 'agent', now() FROM generate_series(1, 20) g;
INSERT INTO users (username, password_hash, role, created_at)
    SELECT 'customer' || g, :'hash', 'customer', now() FROM generate_series(1, 1000) g;
SELECT min(id) AS agent0 FROM users WHERE role = 'agent' \\gset
SELECT min(id) AS customer0 FROM users WHERE role = 'customer' \\gset
INSERT INTO tickets (subject, description, status, priority, created_by, assigned_to, embed_token, created_at, updated_at)
SELECT (ARRAY{SUBJECTS})[1 + g % 8] || ' problem ' || g,
       'The ' || lower((ARRAY{SUBJECTS})[1 + (g / 8) % 8]) || ' stopped working after the update, case ' || g
           || CASE WHEN g % 10 = 1 AND g <= {tickets // 2} THEN ' archived' ELSE '' END
           || CASE WHEN g % 10 = 1 AND g <= {tickets // 100} THEN ' mainframe' ELSE '' END,
       (ARRAY['open','in_progress','resolved','closed'])[1 + g % 4],
       (ARRAY['low','normal','high','urgent'])[1 + (g / 4) % 4],
       :customer0 + g % 1000,
       CASE WHEN g % 10 = 0 THEN NULL ELSE :agent0 + g % 20 END,
       gen_random_uuid(),
       now() - make_interval(secs => {tickets} - g), now() - make_interval(secs => {tickets} - g)
FROM generate_series(1, {tickets}) g;
INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
SELECT 10 * g, :agent0, 'Replaced the toner and rebooted the router', false, now()
FROM generate_series(1, {tickets // 10}) g;
INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
VALUES ({tickets // 2 + 7}, :agent0, 'Defragmented the disk', false, now());
-- Steady state, as autovacuum leaves it: GIN pending lists merged, statistics fresh.
VACUUM ANALYZE;
"""


def seed_sqlite(tickets):
    def pick(values, expr):
        return "CASE " + expr + " " + " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values)) + " END"

    stamp = f"strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || ({tickets} - x) || ' seconds') || '+00:00'"
    return f"""
.bail on
PRAGMA journal_mode = WAL;
BEGIN;
INSERT INTO users (username, password_hash, role, created_at)
    WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 20)
    SELECT 'agent' || x, (SELECT password_hash FROM users WHERE username = 'bench-admin'), 'agent', '2026-01-01T00:00:00+00:00' FROM g;
INSERT INTO users (username, password_hash, role, created_at)
    WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 1000)
    SELECT 'customer' || x, (SELECT password_hash FROM users WHERE username = 'bench-admin'), 'customer', '2026-01-01T00:00:00+00:00' FROM g;
INSERT INTO tickets (subject, description, status, priority, created_by, assigned_to, embed_token, created_at, updated_at)
    WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {tickets})
    SELECT {pick(SUBJECTS, 'x % 8')} || ' problem ' || x,
           'The ' || lower({pick(SUBJECTS, '(x / 8) % 8')}) || ' stopped working after the update, case ' || x
               || CASE WHEN x % 10 = 1 AND x <= {tickets // 2} THEN ' archived' ELSE '' END
               || CASE WHEN x % 10 = 1 AND x <= {tickets // 100} THEN ' mainframe' ELSE '' END,
           {pick(['open', 'in_progress', 'resolved', 'closed'], 'x % 4')},
           {pick(['low', 'normal', 'high', 'urgent'], '(x / 4) % 4')},
           (SELECT min(id) FROM users WHERE role = 'customer') + x % 1000,
           CASE WHEN x % 10 = 0 THEN NULL ELSE (SELECT min(id) FROM users WHERE role = 'agent') + x % 20 END,
           randomblob(16), {stamp}, {stamp}
    FROM g;
INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
    WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {tickets // 10})
    SELECT 10 * x, (SELECT min(id) FROM users WHERE role = 'agent'), 'Replaced the toner and rebooted the router', 0,
           '2026-01-01T00:00:00+00:00' FROM g;
INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
    VALUES ({tickets // 2 + 7}, (SELECT min(id) FROM users WHERE role = 'agent'), 'Defragmented the disk', 0, '2026-01-01T00:00:00+00:00');
COMMIT;
ANALYZE;
"""


def uuid_from_hex(h):
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class Backend:
    """A freshly seeded database of one kind, and the data files the scenarios draw from."""

    def __init__(self, kind, tickets, workdir, pg_server_url):
        self.kind, self.tickets, self.workdir = kind, tickets, workdir
        if kind == "postgres":
            self.admin_url = pg_server_url
            self.url = pg_server_url.rsplit("/", 1)[0] + "/ticketdesk_bench"
        else:
            self.url = f"sqlite://{workdir}/bench.db"

    def query(self, sql):
        if self.kind == "postgres":
            return sh("psql", "-qtA", self.url, "-c", sql).split()
        # The server may hold the write lock a moment: wait for it, as the server would.
        return sh("sqlite3", "-cmd", ".timeout 5000", f"{self.workdir}/bench.db", sql).split()

    def create(self):
        if self.kind == "postgres":
            sh("psql", "-q", self.admin_url, "-c", "DROP DATABASE IF EXISTS ticketdesk_bench", "-c", "CREATE DATABASE ticketdesk_bench")
        env = {**os.environ, "DATABASE_URL": self.url, "RUST_LOG": "warn"}
        sh(str(BINARY), "migrate", env=env)
        sh(str(BINARY), "user", "create", "bench-admin", "--role", "admin", input=PASSWORD + "\n", env=env)
        started = time.monotonic()
        if self.kind == "postgres":
            sh("psql", "-q", self.url, input=seed_postgres(self.url, self.tickets))
        else:
            sh("sqlite3", f"{self.workdir}/bench.db", input=seed_sqlite(self.tickets))
        seeded = time.monotonic() - started
        agent1 = self.query("SELECT id FROM users WHERE username = 'agent1'")[0]
        ids = self.query(f"SELECT id FROM tickets ORDER BY random() LIMIT 20000")
        agent_ids = self.query(f"SELECT id FROM tickets WHERE assigned_to = {agent1} ORDER BY random() LIMIT 20000")
        # A closed ticket takes no replies.
        open_ids = self.query("SELECT id FROM tickets WHERE status <> 'closed' ORDER BY random() LIMIT 20000")
        if self.kind == "postgres":
            embeds = self.query("SELECT embed_token FROM tickets ORDER BY random() LIMIT 20000")
        else:
            embeds = [uuid_from_hex(h.lower()) for h in self.query("SELECT hex(embed_token) FROM tickets ORDER BY random() LIMIT 20000")]
        for name, rows in (("ids", ids), ("agent_ids", agent_ids), ("open_ids", open_ids), ("embeds", embeds)):
            (self.workdir / f"{self.kind}-{name}.txt").write_text("\n".join(rows) + "\n")
        return seeded

    def drop(self):
        if self.kind == "postgres":
            sh("psql", "-q", self.admin_url, "-c", "DROP DATABASE IF EXISTS ticketdesk_bench")


# ---------------------------------------------------------------- server and load


class Server:
    """The server (`floor=False`), or the reference floor (bench/floor.rs) on the same database."""

    def __init__(self, backend, floor=False, **settings):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DATABASE_URL": backend.url, "BIND_ADDR": f"127.0.0.1:{self.port}",
               "JWT_SECRET": JWT_SECRET, "RUST_LOG": "warn",
               # The --webhooks receiver listens on loopback.
               "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
               # wrk is one client address however many connections it opens.
               "MAX_CONNECTIONS_PER_CLIENT": "1000000", **settings}
        started = time.monotonic()
        self.log = backend.workdir / f"{backend.kind}-{'floor' if floor else 'server'}.log"
        command = [str(FLOOR)] if floor else [str(BINARY), "serve"]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        while True:
            try:
                if floor:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                else:
                    http("GET", self.base + "/readyz")
                break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("it exited: " + self.log.read_text())
                time.sleep(0.002)
        self.ready_ms = (time.monotonic() - started) * 1000

    def token(self, username):
        body = f"username={username}&password={PASSWORD}".encode()
        return http("POST", self.base + "/auth/token", body, {"Content-Type": "application/x-www-form-urlencoded"})["access_token"]

    def peak_rss_mib(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def wrk(server, scenario, seconds, connections, threads=2, **env):
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(BENCH / "wrk.lua"), server.base]
    return subprocess.Popen(command, env={**os.environ, "SCENARIO": scenario, **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def result_of(process):
    out, err = process.communicate()
    last = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not last:
        raise RuntimeError(f"wrk failed: {err}\n{out}")
    return json.loads(last[-1])


def pgbench(backend, seconds, connections):
    script = backend.workdir / "pk.sql"
    script.write_text(f"\\set id random(1, {backend.tickets})\nSELECT {TICKET_COLUMNS} FROM tickets WHERE id = :id;\n")
    out = sh("pgbench", "-n", "-M", "prepared", "-c", str(connections), "-j", "2", "-T", str(seconds), "-f", str(script), backend.url)
    figures = {}
    for line in out.splitlines():
        if line.startswith("tps ="):
            figures["tps"] = float(line.split()[2])
        if line.startswith("latency average"):
            figures["latency_avg_ms"] = float(line.split()[3])
    return figures


def run_backend(kind, args, workdir):
    backend = Backend(kind, args.tickets, workdir, args.pg_url)
    print(f"[{kind}] seeding {args.tickets:,} tickets ...", file=sys.stderr)
    report = {"tickets": args.tickets, "seed_seconds": round(backend.create(), 2)}
    server, floor = Server(backend), Server(backend, floor=True)
    try:
        measure(server, floor, backend, report, args, workdir)
    finally:
        server.stop()
        floor.stop()
    report["server_errors_logged"] = [line for line in server.log.read_text().splitlines() if "ERROR" in line][:5]
    if args.streams:
        report["live_streams"] = live_streams(backend, args, workdir)

    if kind == "postgres":
        print(f"[{kind}] pgbench ...", file=sys.stderr)
        report["pgbench_pk_select"] = pgbench(backend, args.duration, args.connections)
        tps = report["pgbench_pk_select"]["tps"]
        report["ratio_to_pgbench"] = {
            name: round(report["scenarios"][name]["rps"] / tps, 3)
            for name in ("get_ticket_admin", "get_ticket_agent", "embed")
            if name in report["scenarios"]
        }
    report["plans"] = query_plans(backend)
    if "get_ticket_admin" in report["scenarios"] and "get_ticket_beside_login_flood" in report:
        alone = report["scenarios"]["get_ticket_admin"]["p99_ms"]
        report["login_flood_p99_factor"] = round(report["get_ticket_beside_login_flood"]["p99_ms"] / alone, 2)
    backend.drop()
    return report


# The floor does the work of these scenarios (the writes without idempotency keys or service
# clocks, which the server keeps). Server and floor take turns, ROUNDS times each, and
# the ratio is the median of the rounds' ratios: on a shared 2-core machine one run's figure moves
# by 10%, and alternating cancels most of the drift.
FLOOR_SCENARIOS = ("get_ticket_admin", "embed", "create_ticket", "patch_priority", "comment")
ROUNDS = 3


def wrk_run(target, scenario, seconds, connections, env):
    return lambda: result_of(wrk(target, scenario, seconds, connections, **env))


def side_by_side(report, name, runs):
    """Runs the server's and the floor's `name` alternately; keeps each one's median round."""
    server_rounds, floor_rounds = [], []
    for round_number in range(ROUNDS):
        print(f"[{name}] round {round_number + 1}: server, then floor ...", file=sys.stderr)
        server_rounds.append(runs[0]())
        floor_rounds.append(runs[1]())
    ratios = sorted(s["rps"] / f["rps"] for s, f in zip(server_rounds, floor_rounds))
    by_rps = lambda rounds: sorted(rounds, key=lambda r: r["rps"])[len(rounds) // 2]
    report["scenarios"][name] = by_rps(server_rounds)
    report["scenarios"]["floor_" + name] = by_rps(floor_rounds)
    report.setdefault("ratio_to_floor", {})[name] = round(ratios[len(ratios) // 2], 3)
    report.setdefault("floor_rounds", {})[name] = [[round(s["rps"]), round(f["rps"])] for s, f in zip(server_rounds, floor_rounds)]


def measure(server, floor, backend, report, args, workdir):
    kind = backend.kind
    report["startup_to_ready_ms"] = round(server.ready_ms, 1)
    admin, agent, agent2 = server.token("bench-admin"), server.token("agent1"), server.token("agent2")
    customers = [server.token(f"customer{n}") for n in range(1, 21)]
    files = {name: str(workdir / f"{kind}-{name}.txt") for name in ("ids", "agent_ids", "open_ids", "embeds")}
    deep_cursor = _cursor(args.tickets // 2)
    c, d = args.connections, args.duration
    scenarios = [
        ("get_ticket_admin", "get_ticket", {"TOKENS": admin, "IDS_FILE": files["ids"]}),
        ("get_ticket_agent", "get_ticket", {"TOKENS": agent, "IDS_FILE": files["agent_ids"]}),
        ("embed", "embed", {"EMBEDS_FILE": files["embeds"]}),
        ("my_first_page", "path", {"TOKENS": ",".join(customers), "REQUEST_PATH": "/tickets/my?limit=10"}),
        ("filtered_page", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?status=open&priority=high&limit=50"}),
        ("deep_page", "path", {"TOKENS": admin, "REQUEST_PATH": f"/tickets/?limit=50&cursor={deep_cursor}"}),
        ("updated_page", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?sort=updated&limit=50"}),
        ("agent_queue", "path", {"TOKENS": agent, "REQUEST_PATH": "/tickets/?limit=50"}),
        ("search_selective", "path", {"TOKENS": admin, "REQUEST_PATH": f"/tickets/?q={args.tickets // 2 + 3}&limit=50"}),
        ("search_broad", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=printer&limit=50"}),
        ("search_words", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=printer%20laptop&limit=50"}),
        ("search_phrase", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=%22printer%20problem%22&limit=50"}),
        ("search_comment", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=toner&limit=50"}),
        ("search_rare_comment", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=defragmented&limit=50"}),
        ("search_filtered", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=printer&status=open&limit=50"}),
        ("search_rare_filtered", "path", {"TOKENS": admin, "REQUEST_PATH": f"/tickets/?q={args.tickets // 2 + 3}&status={STATUSES[(args.tickets // 2 + 3) % 4]}&limit=50"}),
        ("search_updated", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=printer&sort=updated&limit=50"}),
        ("search_later_page", "path", {"TOKENS": admin, "REQUEST_PATH": f"/tickets/?q=printer&limit=50&cursor={deep_cursor}"}),
        ("search_agent", "path", {"TOKENS": agent, "REQUEST_PATH": "/tickets/?q=network&limit=50"}),
        # Skewed in time: `archived` is in one ticket in ten of the older half, none of the newer;
        # `mainframe` in one in ten of the oldest 1%. agent2 holds one in two of the archived.
        ("search_skewed", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=archived&limit=50"}),
        ("search_skewed_filtered", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=archived&status=closed&limit=50"}),
        ("search_skewed_updated", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=archived&sort=updated&limit=50"}),
        ("search_skewed_agent", "path", {"TOKENS": agent2, "REQUEST_PATH": "/tickets/?q=archived&limit=50"}),
        ("search_skewed_oldest", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=mainframe&limit=50"}),
        ("search_skewed_updated_filtered", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=archived&status=closed&sort=updated&limit=50"}),
        ("search_skewed_updated_agent", "path", {"TOKENS": agent2, "REQUEST_PATH": "/tickets/?q=archived&sort=updated&limit=50"}),
        ("search_skewed_oldest_updated", "path", {"TOKENS": admin, "REQUEST_PATH": "/tickets/?q=mainframe&sort=updated&limit=50"}),
        ("create_ticket", "create", {"TOKENS": ",".join(customers)}),
        ("patch_priority", "patch_priority", {"TOKENS": admin, "IDS_FILE": files["ids"]}),
        ("comment", "comment", {"TOKENS": admin, "IDS_FILE": files["open_ids"]}),
        ("mixed_90_10", "mixed", {"TOKENS": ",".join([admin] + customers[:1]), "IDS_FILE": files["ids"], "EMBEDS_FILE": files["embeds"]}),
        ("login", "login", {}),
    ]
    for warmed in (server, floor):
        result_of(wrk(warmed, "get_ticket", 3, c, TOKENS=admin, IDS_FILE=files["ids"]))
    report["scenarios"] = {}
    if args.webhooks:
        webhook_cost(server, backend, report, args, {name: (scenario, env) for name, scenario, env in scenarios})
    for name, scenario, env in scenarios:
        if args.only is not None and name not in args.only:
            continue
        print(f"[{kind}] {name} ...", file=sys.stderr)
        if name in FLOOR_SCENARIOS:
            side_by_side(report, name, [wrk_run(server, scenario, d, c, env), wrk_run(floor, scenario, d, c, env)])
        else:
            report["scenarios"][name] = result_of(wrk(server, scenario, d, c, **env))
        if name == "mixed_90_10":
            # Every scenario so far, but no login flood yet: the memory target's condition.
            report["peak_rss_through_mixed_mib"] = round(server.peak_rss_mib(), 1)

    # GET /tickets/{id} beside a login flood: its p99 may at most double.
    if args.only is not None and "beside_login_flood" not in args.only:
        return
    flood = wrk(server, "login", d, 8, threads=1)
    beside = wrk(server, "get_ticket", d, c, TOKENS=admin, IDS_FILE=files["ids"])
    report["get_ticket_beside_login_flood"] = result_of(beside)
    report["login_flood"] = result_of(flood)
    report["server_peak_rss_mib"] = round(server.peak_rss_mib(), 1)


def live_streams(backend, args, workdir):
    """`--streams N`: what N open streams cost (bench/streams.py), on a server of its own."""
    import streams
    report = {}
    if backend.kind == "postgres":
        report["notify_cost_no_stream_open"] = notify_cost(backend, workdir, args)
    room = str(args.streams + streams.FANOUT + 100)
    server = Server(backend, EMBED_STREAMS_MAX=room, EMBED_STREAMS_PER_CLIENT=room)
    try:
        admin = server.token("bench-admin")
        if backend.kind == "postgres":
            rows = [line.split("|") for line in backend.query("SELECT id || '|' || embed_token FROM tickets ORDER BY id")]
        else:
            rows = [line.split("|") for line in backend.query("SELECT id || '|' || hex(embed_token) FROM tickets ORDER BY id")]
            rows = [(ticket, uuid_from_hex(token.lower())) for ticket, token in rows]
        ids_file = workdir / f"{backend.kind}-ids.txt"
        get = lambda: result_of(wrk(server, "get_ticket", args.duration, args.connections, TOKENS=admin, IDS_FILE=str(ids_file)))
        print(f"[{backend.kind}] {args.streams:,} live streams ...", file=sys.stderr)
        report.update(streams.measure(server, backend, admin, get, rows, args.streams))
        return report
    finally:
        server.stop()


NOTIFY_ROUNDS = 7


def machine_busy_seconds():
    """CPU time all cores spent busy since boot (every process: wrk, the server, PostgreSQL)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid):
    """User and system CPU time of one process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(server):
    """CPU seconds so far of the machine, the server, every PostgreSQL process and this one
    (the webhook receiver's threads); what is left of the machine's is wrk and the rest."""
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                postgres += process_cpu_seconds(entry.name)
        except OSError:
            pass  # exited meanwhile
    return {"machine": machine_busy_seconds(), "server": process_cpu_seconds(server.process.pid),
            "postgres": postgres, "receiver": process_cpu_seconds(os.getpid())}


def notify_cost(backend, workdir, args):
    """patch_priority with the live-stream trigger off and on, no stream open, in turns; and,
    in the rounds with it on, the trigger's own time per call (PostgreSQL's function statistics)
    against the machine's CPU time per priority change: the share of a write it costs, measured
    without the rounds' spread."""
    # On a server of its own whose sessions time plpgsql functions (its pool opens them at start).
    backend.query("ALTER DATABASE ticketdesk_bench SET track_functions = 'pl'")
    server = Server(backend)
    try:
        return notify_rounds(server, backend, workdir, args)
    finally:
        server.stop()
        backend.query("ALTER DATABASE ticketdesk_bench RESET track_functions")


def notify_rounds(server, backend, workdir, args):
    admin = server.token("bench-admin")
    ids_file = workdir / f"{backend.kind}-ids.txt"
    rounds = {"trigger_off": [], "trigger_on": []}
    shares = []
    for round_number in range(NOTIFY_ROUNDS):
        # Each round reverses the last one's order: the second of a pair runs on a table the
        # first left more bloated (every change leaves a dead row), which favoured "off" before.
        order = list(rounds) if round_number % 2 == 0 else list(reversed(rounds))
        for configuration in order:
            verb = "DISABLE" if configuration == "trigger_off" else "ENABLE"
            backend.query(f"ALTER TABLE tickets {verb} TRIGGER tickets_notify_change; SELECT pg_stat_reset()")
            print(f"[postgres] patch_priority round {round_number + 1}: {configuration} ...", file=sys.stderr)
            busy = machine_busy_seconds()
            result = result_of(wrk(server, "patch_priority", args.duration, args.connections, TOKENS=admin, IDS_FILE=str(ids_file)))
            busy = machine_busy_seconds() - busy
            rounds[configuration].append(result["rps"])
            if configuration == "trigger_on":
                time.sleep(1.5)  # backends report their function statistics within a second of going idle
                calls, self_ms = backend.query(
                    "SELECT calls || ' ' || self_time FROM pg_stat_user_functions WHERE funcname = 'notify_ticket_change'")
                shares.append({"calls": int(calls), "trigger_us_per_call": round(float(self_ms) * 1000 / int(calls), 2),
                               "machine_cpu_us_per_update": round(busy * 1e6 / result["requests"], 1)})
    ratios = sorted(on / off for on, off in zip(rounds["trigger_on"], rounds["trigger_off"]))
    share = sorted(r["trigger_us_per_call"] / r["machine_cpu_us_per_update"] for r in shares)
    return {"rps_rounds": rounds, "ratio_on_to_off": round(ratios[len(ratios) // 2], 3),
            "ratio_rounds": [round(r, 3) for r in ratios], "trigger_timing": shares,
            "trigger_share_of_update_cpu": round(share[len(share) // 2], 4)}


WRITE_SCENARIOS = ("create_ticket", "patch_priority")


class Receiver:
    """A webhook receiver on loopback that answers 204 to every delivery and counts them.

    A real receiver runs on another machine; this one shares the server's cores, so it does as
    little as an HTTP/1.1 server can: it finds each request's end by its Content-Length and
    writes a canned answer, keeping connections open. (http.server's threads took about 215 µs
    of CPU a delivery, 4% of the machine beside saturating writes: charged to the writes.)"""

    ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"

    def __init__(self):
        import asyncio
        receiver = self
        self.received = 0

        class Connection(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport, self.buffer = transport, bytearray()

            def data_received(self, data):
                self.buffer += data
                while (head_end := self.buffer.find(b"\r\n\r\n")) >= 0:
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", self.buffer[:head_end])
                    request_end = head_end + 4 + (int(length.group(1)) if length else 0)
                    if len(self.buffer) < request_end:
                        return
                    del self.buffer[:request_end]
                    receiver.received += 1
                    self.transport.write(Receiver.ANSWER)

        self.loop = asyncio.new_event_loop()
        server = self.loop.run_until_complete(
            self.loop.create_server(Connection, "127.0.0.1", 0, backlog=128))
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def wal_counters(backend):
    """PostgreSQL's WAL and commit counters (None on SQLite): what a round made the disk do."""
    if backend.kind != "postgres":
        return None
    row = backend.query("SELECT wal_bytes || ',' || wal_sync || ',' || "
                        "(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) FROM pg_stat_wal")[0]
    return [float(value) for value in row.split(",")]


def wal_per_request(before, after, requests):
    """Per write request: WAL bytes, transactions (reads count too) and how many requests one
    WAL flush served: where group commit stands."""
    wal_bytes, syncs, commits = (b - a for a, b in zip(before, after))
    return {"wal_bytes": round(wal_bytes / requests), "transactions": round(commits / requests, 2),
            "requests_per_flush": round(requests / max(syncs, 1), 2)}


def webhook_cost(server, backend, report, args, env_of):
    """What webhooks cost the write routes, side by side in rounds: without the triggers of
    migration 0009 (the store as it was before webhooks), with them but no active webhook, and
    with a webhook subscribed to every event type delivering to a receiver on this machine."""
    receiver = Receiver()
    admin = server.token("bench-admin")
    auth = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    every_type = ["ticket.created", "ticket.assigned", "ticket.unassigned", "ticket.status_changed",
                  "ticket.priority_changed", "ticket.comment_added", "ticket.internal_note_added",
                  "ticket.embed_token_rotated"]
    webhook = http("POST", server.base + "/webhooks", json.dumps({"url": receiver.url, "events": every_type}).encode(), auth)
    trigger_sql = Path(ROOT / "migrations/sqlite/0009_webhooks_and_change_notices.sql").read_text()
    trigger_sql = trigger_sql[trigger_sql.index("CREATE TRIGGER"):]

    def triggers(on):
        if backend.kind == "postgres":
            verb = "ENABLE" if on else "DISABLE"
            backend.query(f"ALTER TABLE ticket_events {verb} TRIGGER ticket_events_to_webhooks; "
                          f"ALTER TABLE tickets {verb} TRIGGER tickets_notify_change")
        else:
            backend.query(trigger_sql if on else "DROP TRIGGER ticket_events_to_webhooks")

    def active(on):
        http("PATCH", f"{server.base}/webhooks/{webhook['id']}", json.dumps({"active": on}).encode(), auth)

    configurations = {
        "no_triggers": lambda: (active(False), triggers(False)),
        "no_active_webhook": lambda: (triggers(True), active(False)),
        "delivering": lambda: active(True),
    }
    results = {}
    for name in WRITE_SCENARIOS:
        scenario, env = env_of[name]
        rounds = {configuration: [] for configuration in configurations}
        delivered_meanwhile = []
        for round_number in range(args.webhook_rounds):
            for configuration, apply in configurations.items():
                print(f"[{backend.kind}] {name} round {round_number + 1}: {configuration} ...", file=sys.stderr)
                apply()
                received_before = receiver.received
                wal_before = wal_counters(backend)
                cpu_before = cpu_split(server)
                result = result_of(wrk(server, scenario, args.duration, args.connections, **env))
                # Where the machine's CPU went, in microseconds per write request.
                result["cpu_us_per_request"] = {part: round((seconds - cpu_before[part]) * 1e6 / result["requests"])
                                                for part, seconds in cpu_split(server).items()}
                if wal_before:
                    result["wal"] = wal_per_request(wal_before, wal_counters(backend), result["requests"])
                rounds[configuration].append(result)
                if configuration == "delivering":
                    delivered_meanwhile.append((receiver.received - received_before) / args.duration)
        base = rounds["no_triggers"]
        results[name] = {
            configuration: {
                "rps": sorted(r["rps"] for r in runs)[len(runs) // 2],
                "p99_ms": sorted(r["p99_ms"] for r in runs)[len(runs) // 2],
                "ratio_to_no_triggers": round(sorted(r["rps"] / b["rps"] for r, b in zip(runs, base))[len(runs) // 2], 3),
                "non2xx": sum(r["non2xx"] + r["socket_errors"] for r in runs),
                **({"wal": [r["wal"] for r in runs]} if "wal" in runs[0] else {}),
                "cpu_us_per_request": [r["cpu_us_per_request"] for r in runs],
            }
            for configuration, runs in rounds.items()
        }
        # Whether delivery keeps up with the writes it tells of, or leaves a backlog.
        results[name]["delivering"]["deliveries_per_second"] = round(sorted(delivered_meanwhile)[len(delivered_meanwhile) // 2], 1)
    # Then the backlog alone: how fast one server delivers with nothing else to do.
    received_before = receiver.received
    active(True)
    time.sleep(args.duration)
    results["deliveries_per_second_idle"] = round((receiver.received - received_before) / args.duration, 1)
    active(False)
    results["deliveries_received"] = receiver.received
    results["deliveries_pending_at_end"] = int(backend.query("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'")[0])
    receiver.stop()
    report["webhook_write_cost"] = results


def query_plans(backend):
    """The plans of the queries the hot and list routes send, as the database chooses them now."""
    n, customer = backend.tickets, backend.query("SELECT min(id) FROM users WHERE role = 'customer'")[0]
    page = f"SELECT {TICKET_COLUMNS} FROM tickets WHERE 1 = 1"
    # As the server writes them (src/store/sql.rs `tickets`, and push_text_search in postgres.rs and
    # sqlite.rs): the walk over the newest 2,000 tickets, then the index below them.
    edge = n - 1999
    if backend.kind == "postgres":
        query = "websearch_to_tsquery('english', '{q}')"
        walk_match = (f"coalesce(search @@ {query} OR EXISTS (SELECT 1 FROM ticket_search_chunks c"
                      f" WHERE c.ticket_id = tickets.id AND c.document @@ {query}), false)")
        index_match = (f"id = ANY(ARRAY(SELECT id FROM tickets WHERE search @@ {query}"
                       f" UNION SELECT ticket_id FROM ticket_search_chunks WHERE document @@ {query}))")
    else:
        chunks = ("SELECT c.ticket_id FROM ticket_search_chunks c WHERE c.id IN (SELECT rowid FROM"
                  " ticket_search_chunks_fts WHERE ticket_search_chunks_fts MATCH '\"{q}\"')")
        walk_match = ("id IN (SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH '\"{q}\"' AND rowid BETWEEN "
                      f"{edge} AND {n} UNION {chunks} AND c.ticket_id BETWEEN {edge} AND {n})")
        index_match = "id IN (SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH '\"{q}\"' UNION " + chunks + ")"
    rare = n // 2 + 3
    embed = backend.query("SELECT embed_token FROM tickets WHERE id = 7" if backend.kind == "postgres" else "SELECT hex(embed_token) FROM tickets WHERE id = 7")[0]
    embed_literal = f"'{embed}'" if backend.kind == "postgres" else f"x'{embed}'"
    queries = {
        "get_ticket (user + ticket)": f"SELECT u.id, u.role, t.id, t.subject FROM users u LEFT JOIN tickets t ON t.id = {n // 2} WHERE u.id = 1",
        "embed": f"SELECT {TICKET_COLUMNS} FROM tickets WHERE embed_token = {embed_literal}",
        "my_first_page": f"{page} AND created_by = {customer} ORDER BY id DESC LIMIT 51",
        "filtered_page": f"{page} AND status = 'open' AND priority = 'high' ORDER BY id DESC LIMIT 51",
        "deep_page": f"{page} AND id < {n // 2} ORDER BY id DESC LIMIT 51",
        "search_broad (frequent word: the walk fills the page)": f"{page} AND {walk_match.format(q='printer')} AND id >= {edge} ORDER BY id DESC LIMIT 51",
        "search_selective (rare word: the walk finds nothing)": f"{page} AND {walk_match.format(q=rare)} AND id >= {edge} ORDER BY id DESC LIMIT 51",
        "search_selective (rare word: then the index)": f"{page} AND {index_match.format(q=rare)} AND id < {edge} ORDER BY id DESC LIMIT 51",
    }
    if backend.kind == "postgres":
        return {name: sh("psql", "-qtA", backend.url, "-c", "EXPLAIN (ANALYZE, COSTS OFF) " + sql) for name, sql in queries.items()}
    return {name: sh("sqlite3", f"{backend.workdir}/bench.db", "EXPLAIN QUERY PLAN " + sql) for name, sql in queries.items()}


def _cursor(after_id):
    import base64
    key = {"sort": {"key": "created", "descending": True}, "updated_at": None, "id": after_id}
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def table(results):
    rows = ["| scenario | backend | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx |", "|---|---|---:|---:|---:|---:|---:|"]
    for kind, report in results["backends"].items():
        for name, r in report["scenarios"].items():
            rows.append(f"| {name} | {kind} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['non2xx'] + r['socket_errors']} |")
    return "\n".join(rows)


def own_postgres():
    """A throwaway PostgreSQL cluster as initdb makes it (the ops scripts' one). The machine's
    own may be set up for tests, not production: this one's autovacuum, for one, is on."""
    sys.path.insert(0, str(ROOT / "tests" / "ops"))
    import lib
    return lib.Postgres()


def postgres_settings(url):
    """The settings that move the write and queue figures, as the bench's server has them."""
    names = ("autovacuum", "shared_buffers", "fsync", "synchronous_commit", "max_wal_size")
    out = subprocess.run(["psql", "-qtAX", url, "-c", "SELECT name || '=' || current_setting(name) FROM pg_settings "
                          f"WHERE name IN ({', '.join(repr(n) for n in names)}) ORDER BY name"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--own-postgres", action="store_true",
                        help="run PostgreSQL on a throwaway cluster of initdb's defaults (autovacuum on), not --pg-url")
    parser.add_argument("--output", default=str(BENCH / "results" / "latest.json"))
    parser.add_argument("--only", nargs="*", help="run only these scenarios (by name); none: only --webhooks")
    parser.add_argument("--webhooks", action="store_true", help="also measure what webhooks cost the write routes")
    parser.add_argument("--webhook-rounds", type=int, default=ROUNDS, metavar="N",
                        help="rounds of each --webhooks configuration (medians over them; this machine's spread between runs is wide)")
    parser.add_argument("--streams", type=int, default=0, metavar="N", help="also measure N live embed streams open on other tickets (bench/streams.py)")
    args = parser.parse_args()

    ensure_tools()
    print("building the release binary ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ticketdesk", "--example", "floor"], cwd=ROOT, check=True)
    kinds = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    results = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())},
        "settings": {"tickets": args.tickets, "duration_s": args.duration, "connections": args.connections},
        "backends": {},
    }
    cluster = own_postgres() if args.own_postgres else None
    try:
        if cluster:
            args.pg_url = cluster.url
        if "postgres" in kinds:
            results["postgres_settings"] = postgres_settings(args.pg_url)
        with tempfile.TemporaryDirectory() as work:
            for kind in kinds:
                results["backends"][kind] = run_backend(kind, args, Path(work))
    finally:
        if cluster:
            cluster.destroy()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    for kind, report in results["backends"].items():
        extras = {k: v for k, v in report.items() if k not in ("scenarios", "get_ticket_beside_login_flood", "login_flood")}
        print(f"\n{kind}: {json.dumps(extras)}")
    failures = [(k, n) for k, r in results["backends"].items() for n, s in r["scenarios"].items() if s["non2xx"] or s["socket_errors"]]
    if failures:
        sys.exit(f"non-2xx answers or socket errors in: {failures}")


if __name__ == "__main__":
    main()
