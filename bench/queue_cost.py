"""What queueing a webhook delivery costs a bare history-event INSERT on PostgreSQL, and which
part of the fan-out trigger (migrations 0009/0012/0020) pays it.

    python3 bench/queue_cost.py

pgbench, 32 clients, inserts `priority_changed` events for random tickets of 10,000 (the trigger
runs on each), in four configurations taking turns, three rounds of 8 s each, the deliveries
table emptied before each round:

- inactive: the one webhook inactive (the trigger finds no subscriber);
- active: as shipped, one delivery row per event;
- active_no_exists: the trigger without its "is a delivery of this ticket pending?" probe (every
  delivery dated; not a correct trigger, a measurement only);
- active_pkey_only: as shipped, with every index of webhook_deliveries but its primary key dropped.

Reports each configuration's median TPS and its median ratio to `inactive`. Writes
bench/results/queue-cost.json.
"""

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run

NO_PROBE = """CREATE OR REPLACE FUNCTION ticket_event_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, event_id, ticket_id, event_type, next_attempt_at, created_at)
    SELECT w.id, NEW.id, NEW.ticket_id, NEW.event_type, NEW.created_at, NEW.created_at
    FROM webhooks w WHERE w.active AND strpos(w.events, ',' || NEW.event_type || ',') > 0;
    RETURN NULL;
END $f$;
"""
CONFIGURATIONS = ("inactive", "active", "active_no_exists", "active_pkey_only")


def psql(url, sql):
    return subprocess.run(["psql", "-qtA", "-v", "ON_ERROR_STOP=1", url], input=sql, capture_output=True,
                          text=True, check=True).stdout.strip()


def main():
    run.ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ticketdesk"], cwd=run.ROOT, check=True)
    with tempfile.TemporaryDirectory() as work:
        backend = run.Backend("postgres", 10000, Path(work), "postgres://postgres@127.0.0.1:5432/postgres")
        backend.create()
        url = backend.url
        try:
            actor = psql(url, "SELECT min(id) FROM users;")
            psql(url, "INSERT INTO webhooks (url, events, secret, active, created_at, updated_at) VALUES "
                      "('http://127.0.0.1:9/', ',ticket.priority_changed,', 'x', false, now(), now());")
            shipped = psql(url, "SELECT pg_get_functiondef('ticket_event_to_webhooks'::regproc);") + ";\n"
            indexes = psql(url, "SELECT string_agg(indexdef, '; ') || ';' FROM pg_indexes "
                                "WHERE tablename = 'webhook_deliveries' AND indexname <> 'webhook_deliveries_pkey';")
            script = Path(work) / "event.sql"
            script.write_text("\\set t random(1, 10000)\n"
                              "INSERT INTO ticket_events (ticket_id, actor_id, kind, event_type, from_value, to_value, "
                              f"internal, created_at) VALUES (:t, {actor}, 'priority_changed', "
                              "'ticket.priority_changed', 'normal', 'high', false, now());\n")
            rounds = {name: [] for name in CONFIGURATIONS}
            for round_number in range(3):
                for name in CONFIGURATIONS:
                    psql(url, shipped)
                    active = "false" if name == "inactive" else "true"
                    psql(url, f"TRUNCATE webhook_deliveries; UPDATE webhooks SET active = {active}; CHECKPOINT;")
                    if name == "active_no_exists":
                        psql(url, NO_PROBE)
                    if name == "active_pkey_only":
                        psql(url, "DO $$ DECLARE i text; BEGIN FOR i IN SELECT indexname FROM pg_indexes WHERE "
                                  "tablename = 'webhook_deliveries' AND indexname <> 'webhook_deliveries_pkey' "
                                  "LOOP EXECUTE 'DROP INDEX ' || i; END LOOP; END $$;")
                    out = subprocess.run(["pgbench", "-n", "-c", "32", "-j", "2", "-T", "8", "-f", str(script), url],
                                         capture_output=True, text=True, check=True).stdout
                    rounds[name].append(float(re.search(r"tps = ([\d.]+)", out).group(1)))
                    if name == "active_pkey_only":
                        psql(url, indexes)
                    print(f"round {round_number + 1} {name}: {rounds[name][-1]:.0f} TPS", file=sys.stderr)
        finally:
            backend.drop()
    median = lambda values: sorted(values)[len(values) // 2]
    results = {name: {"tps": round(median(tps)),
                      "ratio_to_inactive": round(median([t / i for t, i in zip(tps, rounds["inactive"])]), 3),
                      "rounds": [round(t) for t in tps]}
               for name, tps in rounds.items()}
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "results": results}
    (run.BENCH / "results" / "queue-cost.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
