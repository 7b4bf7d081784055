"""Interoperability check: Authlib (requests integration) as the relying party, driving a real
Portcullis server through its real login (and consent) form.

Inputs (environment, set by run.sh):
  INTEROP_ISSUER         e.g. http://127.0.0.1:38211
  INTEROP_CLIENT_ID      a confidential client (client_secret_basic)
  INTEROP_CLIENT_SECRET
  INTEROP_REDIRECT_URI   registered for the client; never served: we read the Location header
  INTEROP_USERNAME, INTEROP_PASSWORD, INTEROP_EMAIL   the test user

Prints one line per completed step; at the first failure prints a FAIL line and exits 1.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import warnings
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

# authlib.jose is deprecated in favour of joserfc (to be removed in Authlib 2.0) and warns on
# import; requirements.txt pins an Authlib that still has it. Keep the output to our own lines.
from authlib.deprecate import AuthlibDeprecationWarning

warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)

from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session, OAuthError  # noqa: E402
from authlib.jose import JsonWebKey, JsonWebToken  # noqa: E402
from authlib.oidc.core import CodeIDToken  # noqa: E402
from authlib.oidc.discovery import OpenIDProviderMetadata, get_well_known_url  # noqa: E402

NAME = "authlib"
SCOPE = "openid profile email offline_access"
TIMEOUT = 15


class StepFailed(Exception):
    pass


def ok(message: str) -> None:
    print(f"[{NAME}] ok: {message}", flush=True)


def fail(step: str, message: str) -> None:
    print(f"[{NAME}] FAIL at {step}: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition: object, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        fail("setup", f"environment variable {name} is not set")
    return value


def describe(err: BaseException) -> str:
    if isinstance(err, StepFailed):
        return str(err)
    if isinstance(err, OAuthError):
        return f"OAuthError error={err.error} description={err.description}"
    return f"{type(err).__name__}: {err}"


class Step:
    """`with Step("name"):` turns any exception into a FAIL line naming the step."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is not None and not isinstance(err, SystemExit):
            fail(self.name, describe(err))
        return False


# ---------------------------------------------------------------------------------------------
# A minimal browser: a requests.Session (cookie jar), no automatic redirects, html.parser forms.
# ---------------------------------------------------------------------------------------------


class FormParser(HTMLParser):
    """Collects every <form> with its method, action and named <input>/<button> controls."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k.lower(): (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._current = {
                "method": a.get("method", "get").lower(),
                "action": a.get("action", ""),
                "controls": [],
            }
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None:
            self._current["controls"].append({"tag": tag, **a})

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[dict]:
    parser = FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def form_fields(form: dict) -> dict:
    """What a browser submits: every named input; hidden ones keep their values."""
    fields = {}
    for c in form["controls"]:
        if c["tag"] != "input" or not c.get("name"):
            continue
        kind = c.get("type", "text").lower()
        if kind in ("submit", "button", "image", "reset"):
            continue
        if kind in ("checkbox", "radio") and "checked" not in c:
            continue
        fields[c["name"]] = c.get("value", "")
    return fields


def find_form(forms: list[dict], path: str) -> dict | None:
    for f in forms:
        if f["method"] == "post" and urlsplit(urljoin("http://x/", f["action"])).path == path:
            return f
    return None


def snippet(response: requests.Response) -> str:
    return " ".join(response.text.split())[:300]


def authorize(browser: requests.Session, origin: str, url: str, redirect_uri: str, user: dict) -> str:
    """Follows the authorization request through login and consent until the server redirects to
    the redirect URI; returns that URL (never fetched)."""
    callback = urlsplit(redirect_uri)

    def is_callback(target: str) -> bool:
        p = urlsplit(target)
        return (p.scheme, p.netloc, p.path) == (callback.scheme, callback.netloc, callback.path)

    logged_in = consented = False
    headers = {"Accept": "text/html,application/xhtml+xml"}
    post_headers = {**headers, "Origin": origin}
    for _ in range(20):
        response = browser.get(url, allow_redirects=False, headers=headers, timeout=TIMEOUT)
        if response.is_redirect:
            location = response.headers.get("Location")
            check(location, f"{response.status_code} from {urlsplit(url).path} without a Location header")
            nxt = urljoin(url, location)
            parts = urlsplit(nxt)
            if is_callback(nxt):
                if not consented:
                    ok("consent page not shown (already granted or first-party client)")
                return nxt
            check(f"{parts.scheme}://{parts.netloc}" == origin, f"redirected off the issuer to {nxt}")
            url = nxt
            continue
        if response.status_code != 200:
            raise StepFailed(f"GET {urlsplit(url).path} answered {response.status_code}: {snippet(response)}")
        forms = parse_forms(response.text)
        login = find_form(forms, "/login")
        consent = find_form(forms, "/consent")
        if login is not None and not logged_in:
            fields = form_fields(login)
            check(fields.get("csrf_token"), "the login form has no csrf_token value")
            check("return_to" in fields, "the login form has no return_to field")
            fields["username"] = user["username"]
            fields["password"] = user["password"]
            before = browser.cookies.get("portcullis_session")
            check(before, "the login page set no portcullis_session cookie")
            posted = browser.post(
                urljoin(url, login["action"]),
                data=fields,
                allow_redirects=False,
                headers=post_headers,
                timeout=TIMEOUT,
            )
            if posted.status_code != 303:
                raise StepFailed(f"POST /login answered {posted.status_code} (expected 303): {snippet(posted)}")
            nxt = urljoin(url, posted.headers.get("Location", ""))
            parts = urlsplit(nxt)
            check(
                f"{parts.scheme}://{parts.netloc}" == origin and parts.path.startswith("/oauth2/authorize"),
                f"login redirected to {nxt}, not back to the authorization endpoint",
            )
            after = browser.cookies.get("portcullis_session")
            renewed = "renewed" if after and after != before else "NOT renewed"
            ok(f"login form submitted (session cookie {renewed})")
            logged_in = True
            url = nxt
            continue
        if consent is not None and not consented:
            fields = form_fields(consent)
            check(fields.get("csrf_token"), "the consent form has no csrf_token value")
            check("return_to" in fields, "the consent form has no return_to field")
            check(
                any(c.get("name") == "decision" and c.get("value") == "allow" for c in consent["controls"]),
                "the consent form has no decision=allow button",
            )
            fields["decision"] = "allow"
            posted = browser.post(
                urljoin(url, consent["action"]),
                data=fields,
                allow_redirects=False,
                headers=post_headers,
                timeout=TIMEOUT,
            )
            if posted.status_code != 303:
                raise StepFailed(f"POST /consent answered {posted.status_code} (expected 303): {snippet(posted)}")
            nxt = urljoin(url, posted.headers.get("Location", ""))
            ok("consent form submitted (decision=allow)")
            consented = True
            if is_callback(nxt):
                return nxt
            parts = urlsplit(nxt)
            check(f"{parts.scheme}://{parts.netloc}" == origin, f"consent redirected off the issuer to {nxt}")
            url = nxt
            continue
        raise StepFailed(
            f"unexpected page at {urlsplit(url).path}: forms={[f['action'] for f in forms]} body={snippet(response)}"
        )
    raise StepFailed("too many redirects")


def b64url_json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def validate_id_token(id_token: str, jwks: dict, issuer: str, client_id: str, nonce: str, access_token: str):
    """Authlib's own JWT and OIDC checks: RS256 signature against the JWKS, then iss, aud, exp,
    iat, nonce, azp and at_hash (CodeIDToken)."""
    jwt = JsonWebToken(["RS256"])
    claims = jwt.decode(
        id_token,
        JsonWebKey.import_key_set(jwks),
        claims_cls=CodeIDToken,
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        },
        claims_params={"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    claims.validate(leeway=30)
    return claims


# ---------------------------------------------------------------------------------------------


def main() -> None:
    issuer = env("INTEROP_ISSUER")
    client_id = env("INTEROP_CLIENT_ID")
    client_secret = env("INTEROP_CLIENT_SECRET")
    redirect_uri = env("INTEROP_REDIRECT_URI")
    user = {
        "username": env("INTEROP_USERNAME"),
        "password": env("INTEROP_PASSWORD"),
        "email": env("INTEROP_EMAIL"),
    }

    # 1. Discovery, validated by Authlib's OpenID Provider Metadata model. The issuer is plain
    # http on loopback (dev mode): AUTHLIB_INSECURE_TRANSPORT lets the https checks pass.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    with Step("discovery"):
        response = requests.get(get_well_known_url(issuer, external=True), timeout=TIMEOUT)
        check(response.status_code == 200, f"discovery answered {response.status_code}: {snippet(response)}")
        meta = OpenIDProviderMetadata(response.json())
        meta.validate()
        check(meta["issuer"] == issuer, f"issuer is {meta['issuer']!r}, expected {issuer!r}")
        for field in (
            "userinfo_endpoint",
            "introspection_endpoint",
            "revocation_endpoint",
            "end_session_endpoint",
        ):
            check(isinstance(meta.get(field), str), f"metadata has no {field}")
        check("S256" in (meta.get("code_challenge_methods_supported") or []), "S256 PKCE not advertised")
    ok(f"discovery (issuer {meta['issuer']})")

    with Step("discovery"):
        response = requests.get(meta["jwks_uri"], timeout=TIMEOUT)
        check(response.status_code == 200, f"jwks_uri answered {response.status_code}")
        jwks = response.json()
        check(jwks.get("keys"), "the JWKS has no keys")
    ok(f"JWKS fetched ({len(jwks['keys'])} key(s))")

    client = OAuth2Session(
        client_id=client_id,
        client_secret=client_secret,
        token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic",
        scope=SCOPE,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint=meta["token_endpoint"],
        default_timeout=TIMEOUT,
        # No silent refresh before a request (the default leeway is 60 s): every refresh here is
        # one the test makes on purpose.
        leeway=0,
    )

    # 2. Authorization request with PKCE (S256), state and nonce, through the login form.
    code_verifier = generate_token(64)
    nonce = generate_token(32)
    with Step("authorization"):
        authorization_url, state = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=code_verifier, nonce=nonce
        )
        query = parse_qs(urlsplit(authorization_url).query)
        check(query.get("code_challenge_method") == ["S256"], "Authlib did not add code_challenge_method=S256")
        check(query.get("code_challenge"), "Authlib did not add a code_challenge")
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(issuer))
        browser = requests.Session()
        callback_url = authorize(browser, origin, authorization_url, redirect_uri, user)
        params = parse_qs(urlsplit(callback_url).query)
        check("error" not in params, f"authorization error: {params.get('error')} {params.get('error_description')}")
        check(params.get("code"), "the redirect carries no code")
        check(params.get("state") == [state], "the redirect carries the wrong state")
        # RFC 9207: Authlib does not check iss in the authorization response itself.
        check(params.get("iss") == [issuer], f"the redirect's iss is {params.get('iss')}, expected {issuer}")
    ok("authorization code received at the redirect URI")

    # 3. Code exchange (Authlib checks state and sends the code_verifier).
    with Step("code exchange"):
        token = client.fetch_token(
            meta["token_endpoint"],
            authorization_response=callback_url,
            state=state,
            code_verifier=code_verifier,
        )
        check(token.get("access_token"), "no access_token")
        check(token.get("refresh_token"), "no refresh_token although offline_access was requested")
        check(str(token.get("token_type", "")).lower() == "bearer", f"token_type is {token.get('token_type')!r}")
        check(isinstance(token.get("expires_in"), int) and token["expires_in"] > 0, "no positive expires_in")
        check("openid" in str(token.get("scope", "")).split(), f"scope {token.get('scope')!r} lacks openid")
        check(token.get("id_token"), "no id_token")
    ok("code exchange")

    with Step("ID token validation"):
        claims = validate_id_token(
            token["id_token"], jwks, issuer, client_id, nonce, token["access_token"]
        )
        check(claims.header.get("alg") == "RS256", f"ID token alg is {claims.header.get('alg')}")
        sub = claims["sub"]
    ok(f"ID token validated by Authlib (RS256 via JWKS, iss, aud, exp, nonce; sub {sub})")

    with Step("access token format"):
        parts = token["access_token"].split(".")
        check(len(parts) == 3, "the access token is not a JWS compact serialisation")
        typ = str(b64url_json(parts[0]).get("typ", "")).lower().removeprefix("application/")
        check(typ == "at+jwt", f"access token typ is {typ!r}, expected at+jwt")
    ok("access token is a JWT with typ at+jwt")

    # 4. UserInfo with the session's bearer token.
    with Step("userinfo"):
        response = client.get(meta["userinfo_endpoint"], timeout=TIMEOUT)
        check(response.status_code == 200, f"userinfo answered {response.status_code}: {snippet(response)}")
        info = response.json()
        check(info.get("sub") == sub, f"userinfo sub is {info.get('sub')!r}, expected {sub!r}")
        check(info.get("email") == user["email"], f"email is {info.get('email')!r}")
        check(
            info.get("preferred_username") == user["username"],
            f"preferred_username is {info.get('preferred_username')!r}",
        )
    ok(f"userinfo (email {info['email']}, preferred_username {info['preferred_username']})")

    # 5. Refresh, with rotation.
    old_refresh = token["refresh_token"]
    with Step("refresh"):
        refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=old_refresh)
        check(refreshed.get("access_token"), "no access_token")
        check(refreshed.get("refresh_token"), "no refresh_token in the refresh response")
        check(refreshed["refresh_token"] != old_refresh, "the refresh token was not rotated")
        if refreshed.get("id_token"):
            jwt = JsonWebToken(["RS256"])
            again = jwt.decode(refreshed["id_token"], JsonWebKey.import_key_set(jwks))
            check(again["sub"] == sub, "the refreshed ID token names another subject")
    ok("refresh (rotated: new refresh token differs)")
    new_access = refreshed["access_token"]

    # 6. Introspection of the new access token.
    with Step("introspection"):
        response = client.introspect_token(
            meta["introspection_endpoint"], token=new_access, token_type_hint="access_token"
        )
        check(response.status_code == 200, f"introspection answered {response.status_code}: {snippet(response)}")
        live = response.json()
        check(live.get("active") is True, f"active is {live.get('active')!r}, expected true")
        check(live.get("sub") in (None, sub), f"sub is {live.get('sub')!r}")
        check(live.get("client_id") in (None, client_id), f"client_id is {live.get('client_id')!r}")
    ok("introspection (active=true)")

    # 7. Revocation of that access token; introspection then says inactive.
    with Step("revocation"):
        response = client.revoke_token(
            meta["revocation_endpoint"], token=new_access, token_type_hint="access_token"
        )
        check(response.status_code == 200, f"revocation answered {response.status_code}: {snippet(response)}")
        response = client.introspect_token(
            meta["introspection_endpoint"], token=new_access, token_type_hint="access_token"
        )
        check(response.status_code == 200, f"introspection answered {response.status_code}")
        check(response.json().get("active") is False, f"after revocation: {response.text[:200]}")
    ok("revocation (introspection now active=false)")

    # 8. The rotated-out refresh token is refused. Done last: presenting it again is a replay,
    # and the server revokes the whole grant (RFC 9700 §4.14.2), which would spoil the steps above.
    with Step("refresh token reuse"):
        try:
            client.refresh_token(meta["token_endpoint"], refresh_token=old_refresh)
        except OAuthError as err:
            check(err.error == "invalid_grant", f"refused with {err.error!r}, expected invalid_grant")
        else:
            raise StepFailed("the old refresh token was accepted after rotation")
    ok("old refresh token refused with invalid_grant")

    print(f"[{NAME}] PASS", flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001
        fail("unexpected", describe(err))
