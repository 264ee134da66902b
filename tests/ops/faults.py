"""Faults under write load, on loopback: (1) PostgreSQL crashes and restarts, (2) the server is
killed with SIGKILL and restarted, (3) the server gets SIGTERM. Writers submit tickets the whole
time, each with an Idempotency-Key they keep retrying until a definite answer, as a careful client
would; one more writer gives up on each attempt after a few milliseconds, as a client whose
connection died after sending would, so that retries find writes already made. Afterwards every
ticket acknowledged with 201 must be in the database, exactly once. Exits non-zero if a write was
lost or duplicated, if any answer was unexpected, if a fault hit no write in flight, if no retry
was answered with a replay, if the server did not recover within seconds, or if SIGTERM broke a
connection that had a request in flight."""

import signal
import threading
import time
import uuid

from lib import Outcome, Postgres, Server, bearer, log, login, request

WRITERS = 8
# The impatient writer's timeout: shorter than a write takes, so its writes often commit unseen.
IMPATIENT_TIMEOUT_SECONDS = 0.003
# What a writer sees while a fault is on (beside timeouts): the answer a fault gives.
DISRUPTIONS = {Outcome.RESET, Outcome.REFUSED, 503, 408}
PHASE_SECONDS = 2.0
RECOVERY_LIMIT_SECONDS = 10.0


class WriteLoad:
    """Writers submitting tickets until stopped; each logical write is retried with its key."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.lock = threading.Lock()
        self.acked = {}  # subject -> ticket id
        self.attempts = 0
        self.outcomes = {}  # (phase, outcome or status) -> count
        self.phase = "warm-up"
        self.last_ack = 0.0
        self.replayed = 0
        self.errors = []  # unexpected answers: a writer thread cannot fail the run itself
        self.running = True
        self.threads = [threading.Thread(target=self._write, args=(10,), daemon=True) for _ in range(WRITERS)]
        self.threads.append(threading.Thread(target=self._write, args=(IMPATIENT_TIMEOUT_SECONDS,), daemon=True))
        for thread in self.threads:
            thread.start()

    def _count(self, what):
        with self.lock:
            self.attempts += 1
            key = (self.phase, what)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def _write(self, timeout):
        patient = timeout >= 1
        while self.running:
            subject, key = f"load-{uuid.uuid4()}", str(uuid.uuid4())
            body = {"subject": subject, "description": "written under faults"}
            headers = dict(bearer(self.token), **{"Idempotency-Key": key})
            while self.running:
                outcome, status, answer_headers, answer = request("POST", self.port, "/tickets/", body, headers, timeout=timeout)
                what = status if outcome == Outcome.OK else outcome
                if patient:
                    self._count(what)
                if status == 201:
                    with self.lock:
                        self.acked[subject] = answer["id"]
                        self.last_ack = time.monotonic()
                        self.replayed += answer_headers.get("idempotent-replayed") == "true"
                    break
                if outcome == Outcome.OK and status not in (503, 408):
                    with self.lock:
                        self.errors.append(f"{self.phase}: unexpected answer {status}: {answer}")
                    break
                if patient or outcome != Outcome.TIMEOUT:
                    time.sleep(0.05)  # the database or the server is away: retry the same key

    def acks_since(self, moment):
        with self.lock:
            return self.last_ack > moment

    def stop(self):
        self.running = False
        for thread in self.threads:
            thread.join()


def recovery_time(load, since):
    """Seconds from `since` until the next acknowledged write."""
    deadline = since + RECOVERY_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if load.acks_since(since):
            return load.last_ack - since
        time.sleep(0.02)
    raise SystemExit(f"ops: no write acknowledged within {RECOVERY_LIMIT_SECONDS} s of recovery")


def main():
    postgres = Postgres()
    server = None
    try:
        server = Server(postgres.url, extra_env={"SHUTDOWN_TIMEOUT_SECS": "10"})
        token = login(server.port, "alice", "alice123")
        load = WriteLoad(server.port, token)
        time.sleep(PHASE_SECONDS)
        faults = []

        def inject(phase, description, break_and_restore):
            """Runs one fault under the load, then measures how soon writes are acknowledged again."""
            load.phase = phase
            break_and_restore()
            faults.append((description, recovery_time(load, time.monotonic())))
            time.sleep(PHASE_SECONDS)

        def crash_postgres():
            postgres.stop("immediate")  # a crash: no checkpoint, WAL replay on start
            time.sleep(1.0)
            postgres.start()

        def kill_server():
            server.kill()
            time.sleep(0.5)
            server.start()

        sigterm = {}

        def stop_server():
            server.signal(signal.SIGTERM)
            started = time.monotonic()
            sigterm["exit_code"] = server.wait(timeout=15)
            sigterm["seconds"] = time.monotonic() - started
            time.sleep(0.3)
            server.start()

        inject("postgres-restart", "PostgreSQL crashed (pg_ctl stop -m immediate), down 1 s, restarted", crash_postgres)
        inject("server-kill", "server killed with SIGKILL, restarted after 0.5 s", kill_server)
        inject("server-sigterm", "server stopped with SIGTERM, restarted", stop_server)
        exit_code, stop_seconds = sigterm["exit_code"], sigterm["seconds"]
        load.stop()

        stored = postgres.psql("SELECT subject || '=' || id FROM tickets WHERE subject LIKE 'load-%'").splitlines()
        stored_ids = {}
        duplicates = 0
        for line in stored:
            subject, ticket_id = line.rsplit("=", 1)
            duplicates += subject in stored_ids
            stored_ids[subject] = int(ticket_id)
        lost = [s for s, i in load.acked.items() if stored_ids.get(s) != i]
        resets_on_sigterm = load.outcomes.get(("server-sigterm", Outcome.RESET), 0)
        unhit = [phase for phase in ("postgres-restart", "server-kill", "server-sigterm")
                 if not any(load.outcomes.get((phase, what), 0) for what in DISRUPTIONS)]

        log(f"requests tried: {load.attempts}; writes acknowledged (201): {len(load.acked)}; rows stored: {len(stored)}")
        log("answers by phase: " + ", ".join(f"{p}/{o}={n}" for (p, o), n in sorted(load.outcomes.items(), key=str)))
        for fault, seconds in faults:
            log(f"fault: {fault}: writes acknowledged again {seconds:.2f} s after it was back")
        log(f"SIGTERM: exit code {exit_code}, stopped in {stop_seconds:.2f} s, connections reset with a request in flight: {resets_on_sigterm}")
        log(f"acknowledged writes checked: {len(load.acked)}; lost: {len(lost)}; stored twice: {duplicates}; "
            f"retries answered with a replay: {load.replayed}")

        failed = []
        if lost:
            failed.append(f"{len(lost)} acknowledged writes are missing, e.g. {lost[:3]}")
        if duplicates:
            failed.append(f"{duplicates} writes were stored twice")
        if exit_code != 0:
            failed.append(f"SIGTERM exit code {exit_code}")
        if resets_on_sigterm:
            failed.append(f"{resets_on_sigterm} requests in flight saw a reset on SIGTERM")
        if load.errors:
            failed.append(f"{len(load.errors)} unexpected answers, e.g. {load.errors[:3]}")
        if unhit:
            failed.append(f"no write was in flight during {unhit}: the fault proved nothing")
        if not load.replayed:
            failed.append("no retry was answered with a replay: exactly-once went untested")
        if failed:
            raise SystemExit("ops: FAILED: " + "; ".join(failed))
        log("faults: passed")
    finally:
        if server:
            server.kill()
        postgres.destroy()


if __name__ == "__main__":
    main()
