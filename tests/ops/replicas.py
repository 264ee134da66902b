"""Two replicas behind nginx (loopback only) on one PostgreSQL: the whole ticket flow through the
balancer, login throttling counted across both, a deactivated user refused by both at once,
concurrent writes from both replicas with no update lost, and a live embed stream held on one replica
seeing a change made on the other. Exits non-zero on the first failure."""

import http.client
import json
import os
import subprocess
import tempfile
import threading
import time

from lib import Postgres, Server, bearer, free_port, log, login, request, wait_until

ATTACKER = "127.0.0.5"  # client addresses on loopback, as nginx sees them
REAL_USER = "127.0.0.6"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream ticketdesk {{
        server 127.0.0.1:{a};
        server 127.0.0.1:{b};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://ticketdesk;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class Balancer:
    def __init__(self, a, b):
        self.dir = tempfile.mkdtemp(prefix="ticketdesk-ops-nginx.")
        os.chmod(self.dir, 0o777)  # nginx's workers run as an unprivileged user
        self.port = free_port()
        with open(f"{self.dir}/nginx.conf", "w") as conf:
            conf.write(NGINX_CONF.format(dir=self.dir, a=a, b=b, port=self.port))
        self.process = subprocess.Popen(
            ["nginx", "-c", f"{self.dir}/nginx.conf", "-p", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: request("GET", self.port, "/healthz", timeout=1)[1] == 200, 10, "nginx")
        self.upstreams = {}

    def call(self, method, path, body=None, token=None, form=False, source=None, headers=None):
        headers = dict(headers or {}, **(bearer(token) if token else {}))
        outcome, status, response_headers, answer = request(
            method, self.port, path, body, headers, form=form, source=source
        )
        upstream = response_headers.get("x-upstream", "none")
        self.upstreams[upstream] = self.upstreams.get(upstream, 0) + 1
        return status, response_headers, answer

    def stop(self):
        self.process.terminate()
        self.process.wait()


def expect(condition, what):
    if not condition:
        raise SystemExit(f"ops: FAILED: {what}")
    log(f"ok: {what}")


def whole_flow(lb):
    alice = login(lb.port, "alice", "alice123")
    bob = login(lb.port, "bob", "bob123")
    carol = login(lb.port, "carol", "carol123")
    status, headers, ticket = lb.call("POST", "/tickets/", {"subject": "Through the balancer", "description": "x"}, alice)
    expect(status == 201, "a customer submits a ticket through the balancer")
    path = f"/tickets/{ticket['id']}"
    _, _, agents = lb.call("GET", "/users?role=agent", token=carol)
    bob_id = next(u["id"] for u in agents if u["username"] == "bob")
    steps = [
        lb.call("PATCH", f"{path}/assign", {"agent_id": bob_id}, carol)[0] == 200,
        lb.call("PATCH", path, {"status": "in_progress"}, bob)[0] == 200,
        lb.call("POST", f"{path}/comments", {"body": "Looking into it"}, bob)[0] == 201,
        lb.call("POST", f"{path}/comments", {"body": "Thanks"}, alice)[0] == 201,
        lb.call("PATCH", path, {"status": "resolved"}, bob)[0] == 200,
    ]
    expect(all(steps), "admin assigns, agent works and resolves, both sides comment")
    status, _, embed = lb.call("GET", f"/tickets/embed/{ticket['embed_token']}")
    expect(status == 200 and embed["status"] == "Resolved", "the public embed shows the new status")
    _, _, events = lb.call("GET", f"{path}/events", token=alice)
    expect(len(events) == 6, f"the history has all 6 events ({len(events)})")


def throttling_across_replicas(lb, a, b):
    served_by = set()
    for _ in range(5):
        status, headers, _ = lb.call("POST", "/auth/token", {"username": "carol", "password": "guess"}, form=True, source=ATTACKER)
        if status != 401:
            raise SystemExit(f"ops: FAILED: a wrong password got {status}")
        served_by.add(headers.get("x-upstream"))
    expect(len(served_by) == 2, "the 5 wrong passwords reached both replicas")
    status, headers, _ = lb.call("POST", "/auth/token", {"username": "carol", "password": "carol123"}, form=True, source=ATTACKER)
    expect(status == 429 and "retry-after" in headers, "after 5 failures (spread over both replicas) the 6th is 429")
    direct = [
        request("POST", port, "/auth/token", {"username": "carol", "password": "carol123"}, form=True, source=ATTACKER)[1]
        for port in (a.port, b.port)
    ]
    expect(direct == [429, 429], "both replicas refuse that account from that address")
    status, _, _ = lb.call("POST", "/auth/token", {"username": "carol", "password": "carol123"}, form=True, source=REAL_USER)
    expect(status == 200, "the real user, from another address, still logs in")


def deactivation_everywhere(lb, a, b):
    carol = login(lb.port, "carol", "carol123", source=REAL_USER)
    status, _, session = lb.call("POST", "/auth/token", {"username": "bob", "password": "bob123"}, form=True)
    _, _, me = lb.call("GET", "/users/me", token=session["access_token"])
    lb.call("PATCH", f"/users/{me['id']}", {"active": False}, carol)
    refused = [
        request("GET", port, "/users/me", headers=bearer(session["access_token"]))[1] for port in (a.port, b.port)
    ]
    expect(refused == [401, 401], "a deactivated user's token is refused by both replicas at once")
    status, _, _ = lb.call("POST", "/auth/refresh", {"refresh_token": session["refresh_token"]})
    expect(status == 401, "and so is their refresh token")
    lb.call("PATCH", f"/users/{me['id']}", {"active": True}, carol)


def concurrent_writes(lb, a, b, tickets=30):
    carol = login(lb.port, "carol", "carol123", source=REAL_USER)
    alice = login(lb.port, "alice", "alice123", source=REAL_USER)
    _, _, agents = lb.call("GET", "/users?role=agent", token=carol)
    if len(agents) < 2:
        lb.call("POST", "/users", {"username": "dora", "password": "dora-second-agent-42", "role": "agent"}, carol)
        _, _, agents = lb.call("GET", "/users?role=agent", token=carol)
    agent_ids = [u["id"] for u in agents][:2]
    expect(len(agent_ids) == 2, "two agents to race reassignments between")
    ids = [lb.call("POST", "/tickets/", {"subject": f"Race {i}", "description": ""}, alice)[2]["id"] for i in range(tickets)]

    def both(first, second):
        results = [None, None]

        def run(index, port, method, path, body, headers):
            results[index] = request(method, port, path, body, dict(bearer(carol), **headers))

        threads = [
            threading.Thread(target=run, args=(0, a.port, *first)),
            threading.Thread(target=run, args=(1, b.port, *second)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    lost = 0
    for ticket_id in ids:
        path = f"/tickets/{ticket_id}"
        assign, prioritise = both(
            ("PATCH", f"{path}/assign", {"agent_id": agent_ids[0]}, {}),
            ("PATCH", path, {"priority": "urgent"}, {}),
        )
        _, _, final = lb.call("GET", path, token=carol)
        ok = assign[1] == 200 and prioritise[1] == 200
        lost += not (ok and final["assigned_to"] == agent_ids[0] and final["priority"] == "urgent")
    expect(lost == 0, f"an assignment on one replica and a priority change on the other, {tickets} times at once: none lost")

    split = 0
    for ticket_id in ids:
        path = f"/tickets/{ticket_id}"
        _, headers, _ = lb.call("GET", path, token=carol)
        etag = {"If-Match": headers["etag"]}
        low, high = both(("PATCH", path, {"priority": "low"}, etag), ("PATCH", path, {"priority": "high"}, etag))
        statuses = sorted([low[1], high[1]])
        _, _, final = lb.call("GET", path, token=carol)
        winner = "low" if low[1] == 200 else "high"
        split += statuses == [200, 412] and final["priority"] == winner
    expect(split == tickets, f"two edits of one version with If-Match, {tickets} times: one wins, the other gets 412")

    complete = 0
    for ticket_id in ids:
        path = f"/tickets/{ticket_id}"
        first, second = both(
            ("PATCH", f"{path}/assign", {"agent_id": agent_ids[1]}, {}),
            ("PATCH", f"{path}/assign", {"agent_id": None}, {}),
        )
        _, _, events = lb.call("GET", f"{path}/events", token=carol)
        kinds = [e["kind"] for e in events]
        complete += first[1] == second[1] == 200 and "unassigned" in kinds and kinds.count("assigned") == 2
    expect(complete == tickets, f"two reassignments at once from both replicas, {tickets} times: both are in the history")


def embed_stream_across_replicas(a, b):
    alice = login(a.port, "alice", "alice123")
    carol = login(b.port, "carol", "carol123")
    _, status, _, ticket = request(
        "POST", a.port, "/tickets/", {"subject": "Streamed across replicas", "description": "x"}, bearer(alice)
    )
    expect(status == 201, "a ticket to stream")
    connection = http.client.HTTPConnection("127.0.0.1", a.port, timeout=5)
    connection.request("GET", f"/tickets/embed/{ticket['embed_token']}/stream")
    response = connection.getresponse()
    expect(
        response.status == 200 and response.getheader("content-type") == "text/event-stream",
        "replica A serves the live embed stream",
    )

    def next_event():
        name, data = None, None
        while True:
            line = response.fp.readline().decode()
            if not line:
                return "closed", None
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line.strip() == "" and (name or data):
                return name, data

    _, first = next_event()
    expect(json.loads(first)["status"] == "Open", "the stream starts with the ticket as it is")
    started = time.monotonic()
    _, status, _, _ = request("PATCH", b.port, f"/tickets/{ticket['id']}", {"status": "closed"}, bearer(carol))
    expect(status == 200, "replica B closes the ticket")
    _, seen = next_event()
    elapsed = time.monotonic() - started
    expect(
        json.loads(seen)["status"] == "Closed" and elapsed < 1.0,
        f"the stream on replica A shows replica B's change within a second ({elapsed * 1000:.0f} ms)",
    )
    request("POST", b.port, f"/tickets/{ticket['id']}/embed-token", headers=bearer(alice))
    name, _ = next_event()
    expect(name == "gone", "rotating the token on replica B ends the stream on replica A with `gone`")
    connection.close()


def main():
    postgres = Postgres()
    replicas, balancer = [], None
    try:
        env = {"TRUSTED_PROXIES": "127.0.0.1"}
        replicas = [Server(postgres.url, extra_env=env) for _ in range(2)]
        a, b = replicas
        a.cli("user", "create", "dave", "--role", "agent", stdin="dave's long passphrase\n")
        balancer = Balancer(a.port, b.port)
        started = time.monotonic()
        whole_flow(balancer)
        throttling_across_replicas(balancer, a, b)
        deactivation_everywhere(balancer, a, b)
        concurrent_writes(balancer, a, b)
        embed_stream_across_replicas(a, b)
        served = {k: v for k, v in balancer.upstreams.items() if k != "none"}
        log(f"requests through the balancer by replica: {served}; {time.monotonic() - started:.1f} s")
        expect(len(served) == 2, "both replicas served requests through the balancer")
        log("replicas: passed")
    finally:
        if balancer:
            balancer.stop()
        for replica in replicas:
            replica.kill()
        postgres.destroy()


if __name__ == "__main__":
    main()
