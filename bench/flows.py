#!/usr/bin/env python3
"""Drives the scenarios that need state per request (refresh tokens are single-use, a code
flow goes through the sign-in form), with threads and keep-alive connections, standard library
only. The server's CPU time is read from /proc by the caller, so the driver's own speed does
not change the CPU-per-request figures, only the request rate.

usage: flows.py BASE CLIENT_ID CLIENT_SECRET USERNAME PASSWORD SCENARIO SECONDS CONCURRENCY
SCENARIO: refresh | login_flow | sso_flow. Prints one JSON object.
"""
import base64
import hashlib
import http.client
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse

BASE, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD, SCENARIO = sys.argv[1:7]
SECONDS, CONCURRENCY = float(sys.argv[7]), int(sys.argv[8])
HOST = urllib.parse.urlparse(BASE).netloc
REDIRECT = "https://rp.bench.test/cb"
BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


class Browser:
    """One keep-alive connection with a cookie jar."""

    def __init__(self):
        self.conn = http.client.HTTPConnection(HOST, timeout=30)
        self.cookies = {}

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                res = self.conn.getresponse()
                data = res.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, timeout=30)
                if attempt:
                    raise
        for value in res.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return res.status, res.headers, data


def form(fields):
    return urllib.parse.urlencode(fields)


def authorize_path(verifier):
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return "/oauth2/authorize?" + form({
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT,
        "scope": "openid profile offline_access", "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
        "code_challenge_method": "S256",
    })


def code_from(location):
    query = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    return query.get("code", [None])[0]


def sign_in_and_get_code(b, verifier):
    """The whole browser side: authorize, the sign-in form, back to authorize, the code."""
    status, headers, _ = b.request("GET", authorize_path(verifier))
    location = headers.get("Location", "")
    if status != 303:
        raise RuntimeError(f"authorize: {status}")
    if "code=" in location:
        return code_from(location)
    status, _, page = b.request("GET", location)
    page = page.decode()
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return_to = page.split('name="return_to" value="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return_to = return_to.replace("&#61;", "=").replace("&#38;", "&")
    status, headers, _ = b.request("POST", "/login", form({
        "csrf_token": csrf, "return_to": return_to, "username": USERNAME, "password": PASSWORD,
    }), {"Content-Type": "application/x-www-form-urlencoded"})
    if status != 303:
        raise RuntimeError(f"login: {status}")
    status, headers, _ = b.request("GET", headers["Location"])
    code = code_from(headers.get("Location", ""))
    if status != 303 or not code:
        raise RuntimeError(f"authorize after login: {status} {headers.get('Location')}")
    return code


def exchange(b, code, verifier):
    status, _, data = b.request("POST", "/oauth2/token", form({
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }), {"Content-Type": "application/x-www-form-urlencoded", "Authorization": BASIC})
    if status != 200:
        raise RuntimeError(f"token: {status} {data[:200]}")
    tokens = json.loads(data)
    if "id_token" not in tokens:
        raise RuntimeError("no ID token")
    return tokens


def worker(results, holder):
    ok, errors, latencies = 0, 0, []
    b = Browser()
    refresh = None
    if SCENARIO in ("refresh", "sso_flow"):
        try:
            verifier = secrets.token_urlsafe(48)
            refresh = exchange(b, sign_in_and_get_code(b, verifier), verifier)["refresh_token"]
        except Exception as e:  # noqa: BLE001 - a set-up failure fails the run
            results.setdefault("first_error", f"set-up: {e}")
            results.setdefault("parts", []).append((0, 1, []))
            return
    ready.wait()
    while time.monotonic() < holder[0]:
        started = time.monotonic()
        try:
            if SCENARIO == "refresh":
                status, _, data = b.request("POST", "/oauth2/token", form({
                    "grant_type": "refresh_token", "refresh_token": refresh,
                }), {"Content-Type": "application/x-www-form-urlencoded", "Authorization": BASIC})
                if status != 200:
                    raise RuntimeError(f"refresh: {status}")
                refresh = json.loads(data)["refresh_token"]
            else:
                if SCENARIO == "login_flow":
                    b.cookies.clear()
                verifier = secrets.token_urlsafe(48)
                exchange(b, sign_in_and_get_code(b, verifier), verifier)
            ok += 1
            latencies.append(time.monotonic() - started)
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            errors += 1
            results.setdefault("first_error", str(e))
    results.setdefault("parts", []).append((ok, errors, latencies))


ready = threading.Event()
results = {}
deadline_holder = []
threads = []
for _ in range(CONCURRENCY):
    t = threading.Thread(target=worker, args=(results, deadline_holder))
    threads.append(t)
# Set-up (the sign-ins that make refresh tokens) is not measured: the caller reads the CPU
# counters when this line is printed.
deadline_holder.append(time.monotonic() + 3600)
for t in threads:
    t.start()
time.sleep(0.5 + CONCURRENCY * 0.05)
print("READY", flush=True)
sys.stdin.readline()
deadline_holder[0] = time.monotonic() + SECONDS
started = time.monotonic()
ready.set()
for t in threads:
    t.join()
elapsed = time.monotonic() - started
ok = sum(p[0] for p in results.get("parts", []))
errors = sum(p[1] for p in results.get("parts", []))
lat = sorted(l for p in results.get("parts", []) for l in p[2])
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None
print(json.dumps({
    "ok": ok, "errors": errors, "seconds": elapsed, "rps": ok / elapsed if elapsed else 0,
    "p50": pick(0.5), "p99": pick(0.99), "first_error": results.get("first_error"),
}))
