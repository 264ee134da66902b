#!/usr/bin/env python3
"""What attachments cost, on the release binary (issue 20), local storage:

  upload    POST /uploads of a file with curl, against writing the same bytes straight into the
            same storage folder (1 MiB writes, no fsync, as the server): throughput ratio.
  download  GET /attachments/{id}/content with curl to /dev/null, against reading the stored file
            straight from the folder: throughput ratio.
  memory    the server's peak RSS (VmHWM) before and after a 100 MB file is uploaded and
            downloaded: it streams, so the peak must not grow with the file.

  ceiling   the same curl commands against the thinnest HTTP peer on the same loopback: a socket
            that answers GET with sendfile(2) of the stored file and reads a POST's body into
            nothing. What curl and loopback TCP alone allow; the server's ratio to it is the
            cost of the server itself.

Rounds alternate server, ceiling and straight I/O (3 each); ratios are the median round's.

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
import socket
import tempfile
import threading
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


def ceiling_peer(path):
    """A bare HTTP/1.1 peer on a free port: GET sends `path` with sendfile, POST swallows the body."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve(conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            head, body = head.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            if lines[0].startswith(b"GET"):
                size = os.path.getsize(path)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
                with open(path, "rb") as source:
                    conn.sendfile(source)
                return
            length = next(int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length"))
            if any(l.lower().startswith(b"expect: 100-continue") for l in lines):
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            received, buffer = len(body), bytearray(CHUNK)
            while received < length:
                n = conn.recv_into(buffer)
                if n == 0:
                    break
                received += n
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/"


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
            if stored_id is None:
                stored_id, key = backend.query("SELECT id, storage_key FROM attachments ORDER BY id DESC LIMIT 1")[0].split("|")
                ceiling = ceiling_peer(storage / key)
            ceiling_up, code = curl("-H", auth, "-F", f"file=@{source}", ceiling)
            assert code == "201", code
            straight_up = straight_write(data, storage)
            down_seconds, code = curl("-H", auth, f"{server.base}/attachments/{stored_id}/content")
            assert code == "200", code
            ceiling_down, code = curl(ceiling)
            assert code == "200", code
            straight_down = straight_read(storage / key)
            rounds.append({"upload_s": up_seconds, "ceiling_upload_s": ceiling_up, "straight_write_s": straight_up,
                           "download_s": down_seconds, "ceiling_download_s": ceiling_down,
                           "straight_read_s": straight_down})
        rss_after = server.peak_rss_mib()
    finally:
        server.stop()
        backend.drop()

    mb = len(data) / 1e6
    def median_ratio(baseline, measured):
        ratios = sorted(r[baseline] / r[measured] for r in rounds)
        return round(ratios[len(ratios) // 2], 3)

    def mb_s(field):
        return round(mb / statistics.median(r[field] for r in rounds), 1)

    report = {
        "backend": args.backend,
        "file_mb": mb,
        "rounds": [{k: round(v, 4) for k, v in r.items()} for r in rounds],
        "upload_mb_s": mb_s("upload_s"),
        "ceiling_upload_mb_s": mb_s("ceiling_upload_s"),
        "straight_write_mb_s": mb_s("straight_write_s"),
        "download_mb_s": mb_s("download_s"),
        "ceiling_download_mb_s": mb_s("ceiling_download_s"),
        "straight_read_mb_s": mb_s("straight_read_s"),
        "upload_ratio": median_ratio("straight_write_s", "upload_s"),
        "download_ratio": median_ratio("straight_read_s", "download_s"),
        "upload_ratio_to_ceiling": median_ratio("ceiling_upload_s", "upload_s"),
        "download_ratio_to_ceiling": median_ratio("ceiling_download_s", "download_s"),
        "peak_rss_mib_before": round(rss_before, 1),
        "peak_rss_mib_after": round(rss_after, 1),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
