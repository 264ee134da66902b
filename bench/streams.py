"""Live embed streams at scale, for `bench/run.py --streams N`: what N streams open on other
tickets cost a write (the server's CPU for 500 priority changes nobody watches, with none open
and with N), what each open stream holds (the server's RSS over N), how soon a change reaches
1,000 streams of one ticket (each opened after a request on its connection, and what each of
those holds), and GET /tickets/{id}'s p99 beside N idle streams against without.

Streams are opened by one asyncio client from this process, at most OPENING at a time; both this
process and the server need a file descriptor per stream (the soft limit is raised to the hard
one; with a hard limit of 20,000 that allows about 19,000 streams)."""

import asyncio
import http.client
import json
import resource
import sys
import time
import urllib.request
from pathlib import Path

import run  # bench/run.py: process_cpu_seconds

OPENING = 200
FANOUT = 1000
WRITES = 500


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    room = hard - 500
    if wanted + FANOUT > room:
        print(f"streams: the file-descriptor limit ({hard}) allows {room - FANOUT} streams, not {wanted}", file=sys.stderr)
        return max(room - FANOUT, 0)
    return wanted


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


PRIORITIES = ["low", "normal", "high", "urgent"]


def patch_priorities(server, token, ids, first=0):
    """WRITES priority changes, one after another on one kept-alive connection: the server's CPU."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    before = run.process_cpu_seconds(server.process.pid)
    for n, ticket in enumerate(ids[:WRITES]):
        body = json.dumps({"priority": PRIORITIES[(first + n) % 4]})
        connection.request("PATCH", f"/tickets/{ticket}", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"PATCH /tickets/{ticket} answered {response.status}")
    connection.close()
    return run.process_cpu_seconds(server.process.pid) - before


class Stream:
    """One open `/tickets/embed/{token}/stream`, reading events as they come."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.events = 0
        self.changed = asyncio.Event()
        self.changed_at = None

    @classmethod
    async def open(cls, port, token, after_a_request=False):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if after_a_request:
            # As a browser sends it on a kept-alive connection that served a request before.
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            await reader.readexactly(int(head.split("content-length:")[1].split("\r\n")[0]))
        writer.write(f"GET /tickets/embed/{token}/stream HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200"):  # a stream answers in HTTP/1.0, framed by the close
            raise RuntimeError(f"stream refused: {head.splitlines()[0]!r}")
        stream = cls(reader, writer)
        await stream.next_event()
        return stream

    async def next_event(self):
        while True:
            line = await self.reader.readline()
            if not line:
                raise RuntimeError("a stream ended")
            if b"data:" in line:
                self.events += 1
                return

    async def follow(self):
        """Waits for the next event after the first, and notes when it came."""
        try:
            await self.next_event()
            self.changed_at = time.monotonic()
            self.changed.set()
        except (RuntimeError, ConnectionError):
            pass

    def close(self):
        self.writer.close()


async def open_all(port, tokens, after_a_request=False):
    gate = asyncio.Semaphore(OPENING)

    async def one(token):
        async with gate:
            return await Stream.open(port, token, after_a_request)

    return await asyncio.gather(*(one(token) for token in tokens))


def measure(server, backend, admin, wrk_get, ticket_rows, wanted):
    """ticket_rows: (id, embed token) of seeded tickets; the streams follow some, the writes
    change others. Returns the figures for the report."""
    n = raise_fd_limit(wanted)
    watched, unwatched = ticket_rows[: n + 1], ticket_rows[n + 1:]
    if len(unwatched) < WRITES:
        raise RuntimeError(f"--streams {n} needs at least {n + 1 + WRITES} tickets")
    write_ids = [ticket for ticket, _ in unwatched]
    loop = asyncio.new_event_loop()
    report = {"streams": n}
    try:
        get_without = wrk_get()
        rss_before = rss_kib(server.process.pid)
        cpu_without = patch_priorities(server, admin, write_ids)
        started = time.monotonic()
        streams = loop.run_until_complete(open_all(server.port, [token for _, token in watched[1:]]))
        report["open_seconds"] = round(time.monotonic() - started, 2)
        time.sleep(1)  # let the allocator settle before reading RSS
        rss_with = rss_kib(server.process.pid)
        report["rss_kib_before"], report["rss_kib_with_streams"] = rss_before, rss_with
        report["kib_per_stream"] = round((rss_with - rss_before) / n, 2)
        cpu_with = patch_priorities(server, admin, write_ids)
        report["write_cpu_s_without_streams"] = round(cpu_without, 3)
        report["write_cpu_s_with_streams"] = round(cpu_with, 3)
        report["write_cpu_ratio"] = round(cpu_with / cpu_without, 2)
        get_with = wrk_get()
        report["get_p99_ms_without_streams"] = get_without["p99_ms"]
        report["get_p99_ms_with_streams"] = get_with["p99_ms"]
        report["get_p99_ratio"] = round(get_with["p99_ms"] / get_without["p99_ms"], 2)
        report["get_rps_without_streams"], report["get_rps_with_streams"] = get_without["rps"], get_with["rps"]

        # A change to the one ticket FANOUT more streams follow, beside the N.
        popular_id, popular_token = watched[0]
        # These on connections that answered a request first: what a stream holds there.
        rss_before_fans = rss_kib(server.process.pid)
        fans = loop.run_until_complete(open_all(server.port, [popular_token] * FANOUT, after_a_request=True))
        time.sleep(1)
        report["kib_per_stream_after_a_request"] = round((rss_kib(server.process.pid) - rss_before_fans) / FANOUT, 2)
        waiting = [loop.create_task(fan.follow()) for fan in fans]
        loop.run_until_complete(asyncio.sleep(0.2))
        changed = time.monotonic()
        # The change is sent from a thread while this loop reads the streams.
        current = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{server.base}/tickets/{popular_id}", headers={"Authorization": f"Bearer {admin}"})).read())["priority"]
        other = PRIORITIES.index(current) + 1
        write = loop.run_in_executor(None, patch_priorities, server, admin, [popular_id], other)
        loop.run_until_complete(asyncio.wait_for(asyncio.gather(write, *waiting), 30))
        arrivals = sorted(fan.changed_at - changed for fan in fans if fan.changed_at)
        report["fanout_streams"] = FANOUT
        report["fanout_received"] = len(arrivals)
        report["fanout_last_ms"] = round(arrivals[-1] * 1000, 1) if arrivals else None
        report["fanout_p50_ms"] = round(arrivals[len(arrivals) // 2] * 1000, 1) if arrivals else None
        for stream in streams + fans:
            stream.close()
    finally:
        loop.close()
    return report
