#!/usr/bin/env python3
"""The load benchmark: a release build on a fresh SQLite database, driven over loopback.

For each scenario it reports successful requests/s, p50/p99 latency, errors (any error fails
the run), the server's CPU time per request (utime + stime from /proc/PID/stat, before and
after) and its peak RSS. Started by bench/run.sh, which builds the server and installs oha.

usage: run.py BINARY [--seconds N] [--concurrency N] [--runs N] [--json FILE] [--large]
              [--only SUBSTRING]

--large first fills the database with 10 000 clients (each with a secret), 10 000 grants with
1 000 000 refresh tokens, and 100 000 revoked access-token ids, then runs the token and
introspection scenarios only: the cost of a request must not grow with the database.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import sqlite3
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; after the ")" they are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, binary, work, **extra_env):
        self.binary, self.work = binary, work
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "PORTCULLIS__SERVER__LISTEN": f"127.0.0.1:{self.port}",
            "PORTCULLIS__DATABASE__URL": f"sqlite://{work}/bench.db",
            # Bench-only: bcrypt at its lowest cost, so the sign-in flow measures the server,
            # not the hash (stated in the report).
            "PORTCULLIS__SECURITY__BCRYPT_COST": "4",
            "PORTCULLIS__LOG__LEVEL": "warn",
            "PORTCULLIS__RATE_LIMIT__PER_IP": "100000000/1m",
            "PORTCULLIS__RATE_LIMIT__PER_CLIENT": "100000000/1m",
            "PORTCULLIS__RATE_LIMIT__LOGIN_ATTEMPTS_PER_IP": "100000000/1m",
            "PORTCULLIS__RATE_LIMIT__LOGIN_FAILURES_PER_ACCOUNT": "100000000/1m",
            "PORTCULLIS__BOOTSTRAP__ADMIN_PASSWORD": "bench-admin-password",
            **extra_env,
        }
        self.proc = None

    def cli(self, *args, stdin=None):
        out = subprocess.run([self.binary, *args], env=self.env, cwd=self.work, input=stdin,
                             capture_output=True, text=True, check=True)
        return out.stdout

    def start(self):
        started = time.monotonic()
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, cwd=self.work,
                                     preexec_fn=PIN_SERVER,
                                     stdout=subprocess.DEVNULL, stderr=open(f"{self.work}/server.log", "a"))
        while True:
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}); see {self.work}/server.log")
            if time.monotonic() - started > 30:
                raise SystemExit("the server did not become ready in 30 s")
            time.sleep(0.002)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


def fill(db_path, clients=10_000, tokens=1_000_000, revoked=100_000):
    """Rows as the server writes them, straight into SQLite (the server is stopped)."""
    now = int(time.time())
    db = sqlite3.connect(db_path)
    with db:
        db.executemany(
            "INSERT INTO clients (id, name, redirect_uris, post_logout_redirect_uris, grant_types,"
            " auth_method, allowed_scopes, first_party, require_pkce, access_token_ttl,"
            " id_token_ttl, refresh_token_ttl, created_at, updated_at, rate_limit_tier, roles_claim)"
            " VALUES (?, ?, '[\"https://rp.bench.test/cb\"]', '[]',"
            " '[\"authorization_code\",\"refresh_token\"]', 'client_secret_basic',"
            " 'openid profile offline_access', 0, 1, 900, 900, 2592000, ?, ?, NULL, 0)",
            ((str(uuid.uuid4()), f"filler client {i}", now, now) for i in range(clients)))
        ids = [row[0] for row in db.execute("SELECT id FROM clients WHERE name LIKE 'filler client %'")]
        db.executemany(
            "INSERT INTO client_secrets (id, client_id, secret_hash, created_at) VALUES (?, ?, ?, ?)",
            ((str(uuid.uuid4()), cid, uuid.uuid4().hex * 2, now) for cid in ids))
        grants = [str(uuid.uuid4()) for _ in ids]
        db.executemany(
            "INSERT INTO grants (id, client_id, scope, amr, created_at, expires_at)"
            " VALUES (?, ?, 'openid offline_access', '[]', ?, ?)",
            ((gid, cid, now, now + 86400 * 30) for gid, cid in zip(grants, ids)))
        per_grant = tokens // len(grants)
        db.executemany(
            "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            ((uuid.uuid4().hex + uuid.uuid4().hex, gid, now, now + 86400 * 30)
             for gid in grants for _ in range(per_grant)))
        db.executemany(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?)",
            ((str(uuid.uuid4()), now + 3600) for _ in range(revoked)))
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("clients", "client_secrets", "grants", "refresh_tokens", "revoked_tokens")}
    db.close()
    return counts


def oha_cmd(args, seconds, concurrency):
    return ["oha", "--no-tui", "-w", "--output-format", "json", "-z", f"{seconds}s",
            "-c", str(concurrency), *args]


def oha(args, seconds, concurrency, accept=("2",)):
    out = subprocess.run(oha_cmd(args, seconds, concurrency), capture_output=True, text=True,
                         check=True).stdout
    return oha_summary(out, accept)


def oha_summary(out, accept=("2",)):
    """`accept`: the status classes that count as answered as expected."""
    data = json.loads(out)
    summary = data["summary"]
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith(accept))
    errors = sum(v for k, v in codes.items() if not k.startswith(accept)) + sum(
        data.get("errorDistribution", {}).values())
    pct = data.get("latencyPercentiles", {})
    return {
        "ok": ok, "errors": errors, "rps": ok / summary["total"] if summary.get("total") else 0,
        "p50": pct.get("p50"), "p99": pct.get("p99"),
    }


def flows(server, client, scenario, seconds, concurrency):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "flows.py"), server.base, client["client_id"],
         client["client_secret"], "bench", "bench user password", scenario, str(seconds),
         str(concurrency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "READY":
        raise SystemExit(f"{scenario}: the driver did not get ready: {line}")
    before = cpu_seconds(server.proc.pid)
    proc.stdin.write("\n")
    proc.stdin.flush()
    out = json.loads(proc.stdout.readline())
    if proc.wait() != 0:
        raise SystemExit(f"{scenario}: the driver failed")
    out["cpu"] = cpu_seconds(server.proc.pid) - before
    return out


# With --pin: the server on CPU 0, this script and every load generator on CPU 1.
PIN_SERVER = None


def main():
    global PIN_SERVER
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--only", help="run only the scenarios whose name contains this")
    ap.add_argument("--pin", action="store_true",
                    help="the server on CPU 0, the load generators on CPU 1 (needs 2 CPUs)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra setting for the server, e.g. PORTCULLIS__DATABASE__MAX_CONNECTIONS=2")
    a = ap.parse_args()
    if a.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            print("bench: --pin needs two CPUs; running unpinned", flush=True)
        else:
            os.sched_setaffinity(0, set(cpus[1:]))
            PIN_SERVER = lambda: os.sched_setaffinity(0, {cpus[0]})
    work = tempfile.mkdtemp(prefix="portcullis-bench.")
    extra = dict(e.split("=", 1) for e in a.env)
    server = Server(os.path.abspath(a.binary), work, **extra)
    results = {}
    eddsa = raw = None
    try:
        server.cli("migrate")
        service = json.loads(server.cli("client", "create", "--name", "bench service",
                                        "--grant-type", "client_credentials",
                                        "--scopes", "api:read api:write", "--json"))
        web = json.loads(server.cli("client", "create", "--name", "bench web",
                                    "--redirect-uri", "https://rp.bench.test/cb",
                                    "--scopes", "openid profile offline_access",
                                    "--first-party", "--json"))
        server.cli("user", "create", "--username", "bench", "--password-stdin",
                   stdin="bench user password\n")
        server.start()
        server.stop()
        if a.large:
            started = time.monotonic()
            counts = fill(f"{work}/bench.db")
            print(f"filled the database in {time.monotonic() - started:.0f} s: {counts}", flush=True)
        startup = server.start()  # on an existing database
        time.sleep(1)
        idle_kib = memory_kib(server.proc.pid, "VmRSS")
        def token_from(srv):
            return json.loads(subprocess.run(
                ["curl", "-s", "-u", f"{service['client_id']}:{service['client_secret']}",
                 "-d", "grant_type=client_credentials", srv.base + "/oauth2/token"],
                capture_output=True, text=True, check=True).stdout)["access_token"]
        token = token_from(server)
        # A second node on the same database that signs access tokens with EdDSA
        # (keys.access_token_alg), started only for its scenarios.
        eddsa = Server(os.path.abspath(a.binary), work,
                       **(extra | {"PORTCULLIS__KEYS__ACCESS_TOKEN_ALG": "EdDSA"}))
        # Another, with failing connections never slowed, to measure what a refusal costs.
        raw = Server(os.path.abspath(a.binary), work,
                     **(extra | {"PORTCULLIS__RATE_LIMIT__SLOW_FAILING_CONNECTIONS_AFTER": "0"}))
        basic = ["-a", f"{service['client_id']}:{service['client_secret']}"]
        form = ["-T", "application/x-www-form-urlencoded", "-m", "POST"]
        scenarios = [
            ("client_credentials (ES256)", lambda s, c: oha(
                [*basic, *form, "-d", "grant_type=client_credentials", server.base + "/oauth2/token"], s, c)),
            ("introspection", lambda s, c: oha(
                [*basic, *form, "-d", f"token={token}", server.base + "/oauth2/introspect"], s, c)),
            ("client_credentials (EdDSA)", lambda s, c: oha(
                [*basic, *form, "-d", "grant_type=client_credentials", eddsa.base + "/oauth2/token"], s, c),
             eddsa),
            ("introspection (EdDSA)", lambda s, c: oha(
                [*basic, *form, "-d", f"token={eddsa.token}", eddsa.base + "/oauth2/introspect"], s, c),
             eddsa),
            ("discovery", lambda s, c: oha([server.base + "/.well-known/openid-configuration"], s, c)),
            ("jwks", lambda s, c: oha([server.base + "/.well-known/jwks.json"], s, c)),
            ("refresh", lambda s, c: flows(server, web, "refresh", s, min(c, 16))),
            ("sso code flow", lambda s, c: flows(server, web, "sso_flow", s, min(c, 16))),
            ("code flow with sign-in", lambda s, c: flows(server, web, "login_flow", s, min(c, 16))),
        ]
        junk = [
            # An unknown client with a wrong secret (it is soon refused by its failure limit),
            # and a garbage body with no credentials: both must be refused with a 4xx.
            ["-a", f"{uuid.uuid4()}:wrong", *form, "-d", "grant_type=client_credentials",
             "/oauth2/token"],
            [*form, "-d", "%%%&&&=garbage%zz&grant_type=&grant_type=x", "/oauth2/token"],
        ]

        def at(srv, args):
            return [*args[:-1], srv.base + args[-1]]
        valid = [*basic, *form, "-d", "grant_type=client_credentials", server.base + "/oauth2/token"]

        def junk_alone(s, c):
            return oha(at(raw, junk[0]), s / 2, c, accept=("4",)) | {"note": "unknown client, wrong secret"}

        def garbage_alone(s, c):
            return oha(at(raw, junk[1]), s / 2, c, accept=("4",))

        def valid_under_junk(s, c):
            """Valid token requests on half the connections, the two junk streams on the other
            half; the valid stream's figures, the server's CPU per request over all three."""
            half = max(1, c // 2)
            procs = [subprocess.Popen(oha_cmd(at(server, j), s, max(1, half // 2)),
                                      stdout=subprocess.PIPE, text=True)
                     for j in junk]
            mine = oha(valid, s, half)
            others = [oha_summary(p.communicate()[0], accept=("4",)) for p in procs]
            mine["junk_ok"] = sum(o["ok"] for o in others)
            mine["errors"] += sum(o["errors"] for o in others)
            mine["all"] = mine["ok"] + mine["junk_ok"]
            return mine

        scenarios += [
            ("junk: unknown client, wrong secret (4xx expected)", junk_alone, raw),
            ("junk: garbage body, no credentials (4xx expected)", garbage_alone, raw),
            ("client_credentials, 32 connections, alone", lambda s, c: oha(valid, s, max(1, c // 2))),
            ("client_credentials, 32 connections, beside 32 of junk", valid_under_junk),
        ]
        if a.large:
            scenarios = scenarios[:4]
        if a.only:
            scenarios = [s for s in scenarios if a.only in s[0]]
            if not scenarios:
                raise SystemExit(f"bench: no scenario's name contains {a.only!r}")
        for other in {s[2] for s in scenarios if len(s) > 2}:
            other.start()
        if eddsa.proc:
            eddsa.token = token_from(eddsa)
        for name, run, *on in scenarios:
            srv = on[0] if on else server
            for i in range(a.runs):
                before = cpu_seconds(srv.proc.pid)
                r = run(a.seconds, a.concurrency)
                r.pop("note", None)
                cpu = r.pop("cpu", None)
                if cpu is None:
                    cpu = cpu_seconds(srv.proc.pid) - before
                served = r.get("all", r["ok"])
                r["cpu_us_per_request"] = cpu * 1e6 / served if served else None
                r["peak_rss_mib"] = memory_kib(srv.proc.pid, "VmHWM") / 1024
                results.setdefault(name, []).append(r)
                print(f"{name} run {i + 1}: {r['ok']} ok, {r['errors']} errors, "
                      f"{r['rps']:.0f}/s, p50 {fmt(r['p50'])}, p99 {fmt(r['p99'])}, "
                      f"{fmt_us(r['cpu_us_per_request'])} CPU/request, peak RSS {r['peak_rss_mib']:.1f} MiB",
                      flush=True)
                if r["errors"]:
                    raise SystemExit(f"{name}: {r['errors']} errors ({r.get('first_error')})")
        summary = {
            "startup_seconds": startup, "idle_rss_mib": idle_kib / 1024,
            "peak_rss_mib": memory_kib(server.proc.pid, "VmHWM") / 1024,
            "scenarios": {
                name: {
                    key: [min(v), statistics.median(v), max(v)]
                    for key in ("rps", "cpu_us_per_request", "p50", "p99")
                    for v in [[r[key] for r in runs if r[key] is not None]] if v
                }
                for name, runs in results.items()
            },
        }
        print(f"\nstart-up to ready on an existing database: {startup * 1000:.0f} ms; "
              f"idle RSS {summary['idle_rss_mib']:.1f} MiB; peak RSS {summary['peak_rss_mib']:.1f} MiB")
        print("scenario | req/s (min/median/max) | CPU µs per request (min/median/max) | p50 | p99")
        for name, s in summary["scenarios"].items():
            print(f"{name} | {triple(s.get('rps'), '{:.0f}')} | {triple(s.get('cpu_us_per_request'), '{:.1f}')} | "
                  f"{fmt(s.get('p50', [None, None])[1])} | {fmt(s.get('p99', [None, None])[1])}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=2)
    finally:
        server.stop()
        for other in (eddsa, raw):
            if other:
                other.stop()
        if os.environ.get("BENCH_KEEP_TMP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def fmt(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def fmt_us(us):
    return "-" if us is None else f"{us:.1f} µs"


def triple(values, pattern):
    return "-" if not values else " / ".join(pattern.format(v) for v in values)


if __name__ == "__main__":
    main()
