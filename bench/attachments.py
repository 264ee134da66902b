#!/usr/bin/env python3
"""What attachments cost, on the release binary (issue 20), local storage:

  upload    POST /uploads of a file with curl, against writing the same bytes straight into the
            same storage folder (1 MiB writes, no fsync, as the server): throughput ratio.
  download  GET /attachments/{id}/content with curl to /dev/null, against reading the stored file
            straight from the folder: throughput ratio.
  memory    the server's peak RSS (VmHWM) before and after a 100 MB file is uploaded and
            downloaded: it streams, so the peak must not grow with the file.

Rounds alternate server and straight I/O (3 each); ratios are the median round's.

    python3 bench/attachments.py                 # SQLite, 100 MB file
    python3 bench/attachments.py --mb 20 --backend postgres

Writes bench/results/attachments.json and prints a summary. Uses bench/run.py's seeding and server.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: Backend, Server, http)

ROUNDS = 3
CHUNK = 1 << 20


def straight_write(data, folder):
    target = folder / f"straight-{time.monotonic_ns()}"
    started = time.perf_counter()
    with open(target, "wb") as out:
        for offset in range(0, len(data), CHUNK):
            out.write(data[offset:offset + CHUNK])
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def straight_read(path):
    started = time.perf_counter()
    with open(path, "rb") as source:
        while source.read(CHUNK):
            pass
    return time.perf_counter() - started


def curl(*args):
    started = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args],
                         check=True, text=True, capture_output=True).stdout
    return time.perf_counter() - started, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="file size in MB")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--output", default=str(run.BENCH / "results" / "attachments.json"))
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ticketdesk"], cwd=run.ROOT, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="ticketdesk-bench-files-"))
    storage = workdir / "files"
    data = os.urandom(args.mb * 1_000_000)
    source = workdir / "upload.bin"
    source.write_bytes(data)

    backend = run.Backend(args.backend, 100, workdir, args.pg_url)
    backend.create()
    server = run.Server(backend, ATTACHMENT_STORAGE=str(storage), ATTACHMENT_MAX_BYTES=str(len(data) + 1),
                        REQUEST_TIMEOUT_SECS="600", UPLOADS_PENDING_PER_USER="1000")
    try:
        auth = f"Authorization: Bearer {server.token('customer1')}"
        # A first small upload, so what the process holds at rest is in the baseline.
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", auth, "-F", f"file=@{__file__}", server.base + "/uploads"], check=True)
        rss_before = server.peak_rss_mib()
        rounds = []
        stored_id = None
        for _ in range(ROUNDS):
            up_seconds, code = curl("-H", auth, "-F", f"file=@{source}", server.base + "/uploads")
            assert code == "201", code
            straight_up = straight_write(data, storage)
            if stored_id is None:
                stored_id, key = backend.query("SELECT id, storage_key FROM attachments ORDER BY id DESC LIMIT 1")[0].split("|")
            down_seconds, code = curl("-H", auth, f"{server.base}/attachments/{stored_id}/content")
            assert code == "200", code
            straight_down = straight_read(storage / key)
            rounds.append({"upload_s": up_seconds, "straight_write_s": straight_up,
                           "download_s": down_seconds, "straight_read_s": straight_down})
        rss_after = server.peak_rss_mib()
    finally:
        server.stop()
        backend.drop()

    mb = len(data) / 1e6
    upload_ratios = sorted(r["straight_write_s"] / r["upload_s"] for r in rounds)
    download_ratios = sorted(r["straight_read_s"] / r["download_s"] for r in rounds)
    report = {
        "backend": args.backend,
        "file_mb": mb,
        "rounds": [{k: round(v, 4) for k, v in r.items()} for r in rounds],
        "upload_mb_s": round(mb / statistics.median(r["upload_s"] for r in rounds), 1),
        "straight_write_mb_s": round(mb / statistics.median(r["straight_write_s"] for r in rounds), 1),
        "download_mb_s": round(mb / statistics.median(r["download_s"] for r in rounds), 1),
        "straight_read_mb_s": round(mb / statistics.median(r["straight_read_s"] for r in rounds), 1),
        "upload_ratio": round(upload_ratios[len(upload_ratios) // 2], 3),
        "download_ratio": round(download_ratios[len(download_ratios) // 2], 3),
        "peak_rss_mib_before": round(rss_before, 1),
        "peak_rss_mib_after": round(rss_after, 1),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
