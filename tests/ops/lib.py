"""What the fault and replica scripts share: a throwaway PostgreSQL cluster, server processes, and
a small HTTP client that tells apart the ways a request can fail. Python's standard library only."""

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.path.join(ROOT, "target", "debug", "ticketdesk")
JWT_SECRET = "ops-scripts-signing-key-0123456789abcdef"


def log(message):
    print(f"ops: {message}", flush=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"ops: timed out waiting for {what}")


class Postgres:
    """A PostgreSQL cluster of our own on a free port, so faults hit nobody else's database."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ticketdesk-ops-pg.")
        self.port = free_port()
        self.as_postgres = []
        if os.geteuid() == 0:  # Postgres refuses to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "postgres"], check=True)
            shutil.chown(self.dir, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", f"{self.dir}/data", "--auth=trust", "-U", "postgres")
        self.start()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command):
        subprocess.run(self.as_postgres + list(command), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/server.log", "-o", options, "-w", "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-m", mode, "-w", "stop")

    def psql(self, sql):
        result = subprocess.run(
            ["psql", self.url, "-qtAX", "-c", sql], check=True, capture_output=True, text=True
        )
        return result.stdout.strip()

    def destroy(self):
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    """The real binary, serving on its own port."""

    def __init__(self, database_url, port=None, extra_env=None, demo=True):
        self.port = port or free_port()
        self.database_url = database_url
        self.env = dict(
            os.environ,
            DATABASE_URL=database_url,
            BIND_ADDR=f"127.0.0.1:{self.port}",
            JWT_SECRET=JWT_SECRET,
            RUST_LOG="warn",
            **(extra_env or {}),
        )
        self.demo = demo
        self.log = tempfile.NamedTemporaryFile(prefix="ticketdesk-ops-server.", suffix=".log", delete=False)
        self.process = None
        self.start()

    def start(self):
        args = [BINARY] + (["--demo"] if self.demo else [])
        self.process = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=self.log)
        wait_until(lambda: http_status("GET", self.port, "/healthz") == 200, 30, f"the server on {self.port}")

    def signal(self, signum):
        self.process.send_signal(signum)

    def wait(self, timeout):
        return self.process.wait(timeout)

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def cli(self, *args, stdin=""):
        result = subprocess.run(
            [BINARY, *args], env=self.env, input=stdin, capture_output=True, text=True, check=True
        )
        return result.stdout


class Outcome:
    """How one request ended, from the client's side."""

    OK = "ok"  # an HTTP response arrived
    REFUSED = "refused"  # no connection: nothing was sent
    RESET = "reset"  # connected and sent, then the connection broke before any answer
    TIMEOUT = "timeout"


def request(method, port, path, body=None, headers=None, form=False, source=None, timeout=10):
    """One request on a new connection. Returns (outcome, status, headers, parsed body or text)."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        try:
            connection.connect()
        except ConnectionRefusedError:
            return Outcome.REFUSED, None, {}, None
        except socket.timeout:
            return Outcome.TIMEOUT, None, {}, None
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead):
            return Outcome.RESET, None, {}, None
        except socket.timeout:
            return Outcome.TIMEOUT, None, {}, None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Outcome.OK, response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        connection.close()


def http_status(method, port, path):
    outcome, status, _, _ = request(method, port, path, timeout=2)
    return status if outcome == Outcome.OK else None


def login(port, username, password, source=None):
    outcome, status, _, body = request(
        "POST", port, "/auth/token", {"username": username, "password": password}, form=True, source=source
    )
    if status != 200:
        raise SystemExit(f"ops: login as {username} failed: {outcome} {status} {body}")
    return body["access_token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}
