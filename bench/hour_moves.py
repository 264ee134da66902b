#!/usr/bin/env python3
"""What a ticket write costs when it takes the ticket into a new hour (migration 0021 moves its
search postings) against one that stays in its hour: the same single-row UPDATE of `updated_at`,
2,000 tickets a round, the two kinds taking turns, on a database `run.py` seeded.

    python3 bench/hour_moves.py --tickets 10000      # both backends; prints the median ratio

The UPDATE runs bare, each in one transaction per round, so the ratio is the trigger's share of
the statement's own work, not of a whole request (which adds the event, the outbox and a commit).
"""
import argparse, json, pathlib, sqlite3, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import run  # noqa: E402


def pg_round(url, ids, shift):
    body = ";\n".join(f"UPDATE tickets SET updated_at = updated_at + interval '{shift}' WHERE id = {i}" for i in ids)
    started = time.monotonic()
    subprocess.run(["psql", "-q", url], input="BEGIN;\n" + body + ";\nCOMMIT;\n", text=True, check=True, capture_output=True)
    return time.monotonic() - started


def sqlite_round(path, ids, shift):
    db = sqlite3.connect(path)
    started = time.monotonic()
    with db:
        for i in ids:
            db.execute(
                "UPDATE tickets SET updated_at = strftime('%Y-%m-%dT%H:%M:%S', updated_at, ?) || '+00:00' WHERE id = ?",
                (shift, i),
            )
    elapsed = time.monotonic() - started
    db.close()
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for kind in ("postgres", "sqlite"):
            backend = run.Backend(kind, args.tickets, pathlib.Path(work), args.pg_url)
            backend.create()
            ratios = []
            for r in range(args.rounds):
                ids = list(range(1 + r * 2000, 1 + (r + 1) * 2000))
                # Each round moves a fresh set a whole hour (new hour) and back by a second
                # (same hour, for all but the few a second takes across an hour's edge).
                if kind == "postgres":
                    timed = lambda shift: pg_round(backend.url, ids, shift)
                    order = [("moved", "1 hour"), ("stayed", "-1 second")]
                else:
                    timed = lambda shift: sqlite_round(f"{work}/bench.db", ids, shift)
                    order = [("moved", "+1 hour"), ("stayed", "-1 seconds")]
                if r % 2:
                    order.reverse()
                times = {name: timed(shift) for name, shift in order}
                ratios.append(times["moved"] / times["stayed"])
            backend.drop()
            results[kind] = {"rounds": [round(x, 2) for x in ratios], "moved_over_stayed": round(statistics.median(ratios), 2)}
            print(kind, results[kind], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
