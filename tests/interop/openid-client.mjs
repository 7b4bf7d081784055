// Interoperability check: panva's openid-client (v6) as the relying party, driving a real
// Portcullis server through its real login (and consent) form.
//
// Inputs (environment, set by run.sh):
//   INTEROP_ISSUER         e.g. http://127.0.0.1:38211
//   INTEROP_CLIENT_ID      a confidential client (client_secret_basic)
//   INTEROP_CLIENT_SECRET
//   INTEROP_REDIRECT_URI   registered for the client; never served: we read the Location header
//   INTEROP_USERNAME, INTEROP_PASSWORD, INTEROP_EMAIL   the test user
//
// Prints one line per completed step; at the first failure prints a FAIL line and exits 1.

import * as client from 'openid-client';

const NAME = 'openid-client';
const SCOPE = 'openid profile email offline_access';

function env(name) {
  const value = process.env[name];
  if (!value) {
    fail('setup', `environment variable ${name} is not set`);
  }
  return value;
}

function ok(message) {
  console.log(`[${NAME}] ok: ${message}`);
}

function fail(step, message) {
  console.error(`[${NAME}] FAIL at ${step}: ${message}`);
  process.exit(1);
}

// Runs one step; any exception becomes a FAIL line naming the step.
async function step(name, fn) {
  try {
    return await fn();
  } catch (err) {
    fail(name, describe(err));
  }
}

function describe(err) {
  if (!(err instanceof Error)) return String(err);
  const parts = [`${err.name}: ${err.message}`];
  if (err.code) parts.push(`code=${err.code}`);
  if (err.error) parts.push(`error=${err.error}`);
  if (err.error_description) parts.push(`error_description=${err.error_description}`);
  if (err.status) parts.push(`status=${err.status}`);
  if (err.cause instanceof Response) {
    parts.push(`response=HTTP ${err.cause.status} from ${err.cause.url}`);
  } else if (err.cause && !(err.cause instanceof Error)) {
    try {
      parts.push(`cause=${JSON.stringify(err.cause).slice(0, 600)}`);
    } catch {
      /* not serialisable */
    }
  } else if (err.cause instanceof Error) {
    parts.push(`cause=${err.cause.name}: ${err.cause.message}`);
  }
  return parts.join(' ');
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// ---------------------------------------------------------------------------------------------
// A minimal browser: a cookie jar for the issuer's origin, manual redirects, HTML form parsing.
// ---------------------------------------------------------------------------------------------

class Browser {
  constructor(origin) {
    this.origin = origin;
    this.cookies = new Map();
  }

  cookieHeader() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  store(response) {
    const lines = typeof response.headers.getSetCookie === 'function'
      ? response.headers.getSetCookie()
      : (response.headers.get('set-cookie') ? [response.headers.get('set-cookie')] : []);
    for (const line of lines) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k.trim().toLowerCase();
        if (key === 'max-age' && Number(v.trim()) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v.trim()) <= Date.now()) expired = true;
      }
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  async request(url, init = {}) {
    const target = new URL(url);
    const headers = new Headers(init.headers ?? {});
    headers.set('accept', 'text/html,application/xhtml+xml');
    if (target.origin === this.origin && this.cookies.size > 0) {
      headers.set('cookie', this.cookieHeader());
    }
    const response = await fetch(target, {
      ...init,
      headers,
      redirect: 'manual',
      signal: AbortSignal.timeout(15000),
    });
    if (target.origin === this.origin) this.store(response);
    return response;
  }

  get(url) {
    return this.request(url, { method: 'GET' });
  }

  post(url, fields) {
    return this.request(url, {
      method: 'POST',
      // A browser sends Origin on a form POST.
      headers: { origin: this.origin },
      body: new URLSearchParams(fields),
    });
  }
}

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, ent) => {
    if (ent[0] === '#') {
      const code = ent[1] === 'x' || ent[1] === 'X' ? parseInt(ent.slice(2), 16) : parseInt(ent.slice(1), 10);
      return Number.isFinite(code) ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[ent.toLowerCase()] ?? whole;
  });
}

function parseAttributes(tag) {
  const attrs = {};
  // Skip the tag name, then name="value" | name='value' | name=value | name
  const body = tag.replace(/^<\s*[a-z0-9]+/i, '').replace(/\/?>$/, '');
  const re = /([^\s"'=<>\/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  let m;
  while ((m = re.exec(body)) !== null) {
    const value = m[2] ?? m[3] ?? m[4] ?? '';
    attrs[m[1].toLowerCase()] = decodeEntities(value);
  }
  return attrs;
}

// Every <form> in the page: its method, action, and its named <input>/<button> elements.
function parseForms(html) {
  const forms = [];
  // Tags are matched quote-aware, so a '>' inside an attribute value does not end them.
  const formRe = /<form\b(?:[^>"']|"[^"]*"|'[^']*')*>([\s\S]*?)<\/form\s*>/gi;
  let m;
  while ((m = formRe.exec(html)) !== null) {
    const openTag = m[0].match(/^<form\b(?:[^>"']|"[^"]*"|'[^']*')*>/i)[0];
    const attrs = parseAttributes(openTag);
    const controls = [];
    const controlRe = /<(input|button)\b(?:[^>"']|"[^"]*"|'[^']*')*>/gi;
    let c;
    while ((c = controlRe.exec(m[1])) !== null) {
      const a = parseAttributes(c[0]);
      controls.push({ tag: c[1].toLowerCase(), ...a });
    }
    forms.push({ method: (attrs.method ?? 'get').toLowerCase(), action: attrs.action ?? '', controls });
  }
  return forms;
}

// The fields a browser would submit: every named input (hidden ones keep their values).
function formFields(form) {
  const fields = {};
  for (const c of form.controls) {
    if (c.tag !== 'input' || !c.name) continue;
    const type = (c.type ?? 'text').toLowerCase();
    if (type === 'submit' || type === 'button' || type === 'image' || type === 'reset') continue;
    if ((type === 'checkbox' || type === 'radio') && !('checked' in c)) continue;
    fields[c.name] = c.value ?? '';
  }
  return fields;
}

function findForm(forms, actionPath) {
  return forms.find((f) => f.method === 'post' && new URL(f.action, 'http://x').pathname === actionPath);
}

function isRedirect(status) {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

async function snippet(response) {
  try {
    return (await response.text()).replace(/\s+/g, ' ').slice(0, 300);
  } catch {
    return '';
  }
}

// Follows the authorization request through login and consent until the server redirects to
// the client's redirect URI; returns that URL (never fetched).
async function authorize(browser, authorizationUrl, redirectUri, user) {
  const callback = new URL(redirectUri);
  const isCallback = (u) => u.origin === callback.origin && u.pathname === callback.pathname;
  let url = new URL(authorizationUrl);
  let loggedIn = false;
  let consented = false;
  for (let hop = 0; hop < 20; hop++) {
    const response = await browser.get(url);
    if (isRedirect(response.status)) {
      const location = response.headers.get('location');
      check(location, `${response.status} from ${url.pathname} without a Location header`);
      const next = new URL(location, url);
      if (isCallback(next)) {
        if (!consented) ok('consent page not shown (already granted or first-party client)');
        return next;
      }
      check(next.origin === browser.origin, `redirected off the issuer to ${next.href}`);
      if (!loggedIn) {
        check(next.pathname === '/login' || next.pathname === url.pathname || next.pathname.startsWith('/oauth2/'),
          `unexpected redirect to ${next.href}`);
      }
      url = next;
      continue;
    }
    if (response.status !== 200) {
      throw new Error(`GET ${url.pathname}${url.search.slice(0, 80)} answered ${response.status}: ${await snippet(response)}`);
    }
    const page = await response.text();
    const forms = parseForms(page);
    const login = findForm(forms, '/login');
    const consent = findForm(forms, '/consent');
    if (login && !loggedIn) {
      const fields = formFields(login);
      check(fields.csrf_token, 'the login form has no csrf_token value');
      check('return_to' in fields, 'the login form has no return_to field');
      fields.username = user.username;
      fields.password = user.password;
      const before = browser.cookies.get('portcullis_session');
      check(before, 'the login page set no portcullis_session cookie');
      const posted = await browser.post(new URL(login.action, url), fields);
      if (posted.status !== 303) {
        throw new Error(`POST /login answered ${posted.status} (expected 303): ${await snippet(posted)}`);
      }
      const next = new URL(posted.headers.get('location') ?? '', url);
      check(next.origin === browser.origin && next.pathname.startsWith('/oauth2/authorize'),
        `login redirected to ${next.href}, not back to the authorization endpoint`);
      const after = browser.cookies.get('portcullis_session');
      ok(`login form submitted (session cookie ${after && after !== before ? 'renewed' : 'NOT renewed'})`);
      loggedIn = true;
      url = next;
      continue;
    }
    if (consent && !consented) {
      const fields = formFields(consent);
      check(fields.csrf_token, 'the consent form has no csrf_token value');
      check('return_to' in fields, 'the consent form has no return_to field');
      const allow = consent.controls.find((c) => c.name === 'decision' && c.value === 'allow');
      check(allow, 'the consent form has no decision=allow button');
      fields.decision = 'allow';
      const posted = await browser.post(new URL(consent.action, url), fields);
      if (posted.status !== 303) {
        throw new Error(`POST /consent answered ${posted.status} (expected 303): ${await snippet(posted)}`);
      }
      const next = new URL(posted.headers.get('location') ?? '', url);
      ok('consent form submitted (decision=allow)');
      consented = true;
      if (isCallback(next)) return next;
      check(next.origin === browser.origin, `consent redirected off the issuer to ${next.href}`);
      url = next;
      continue;
    }
    throw new Error(`unexpected page at ${url.pathname}: forms=${JSON.stringify(forms.map((f) => f.action))} ` +
      `body=${page.replace(/\s+/g, ' ').slice(0, 300)}`);
  }
  throw new Error('too many redirects');
}

function base64urlJson(segment) {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
}

function isInvalidGrant(err) {
  return err instanceof client.ResponseBodyError && err.error === 'invalid_grant';
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const issuer = env('INTEROP_ISSUER');
  const clientId = env('INTEROP_CLIENT_ID');
  const clientSecret = env('INTEROP_CLIENT_SECRET');
  const redirectUri = env('INTEROP_REDIRECT_URI');
  const user = {
    username: env('INTEROP_USERNAME'),
    password: env('INTEROP_PASSWORD'),
    email: env('INTEROP_EMAIL'),
  };

  // 1. Discovery. allowInsecureRequests: the issuer is plain http on loopback (dev mode).
  // enableNonRepudiationChecks: verify ID token signatures against jwks_uri too (by default
  // openid-client trusts the TLS channel to the token endpoint instead).
  const config = await step('discovery', () =>
    client.discovery(new URL(issuer), clientId, clientSecret, client.ClientSecretBasic(), {
      execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    }));
  const meta = config.serverMetadata();
  await step('discovery', () => {
    for (const field of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri',
      'introspection_endpoint', 'revocation_endpoint', 'end_session_endpoint']) {
      check(typeof meta[field] === 'string', `metadata has no ${field}`);
    }
    check(meta.id_token_signing_alg_values_supported?.includes('RS256'),
      'id_token_signing_alg_values_supported lacks RS256');
    check(meta.code_challenge_methods_supported?.includes('S256'), 'code_challenge_methods_supported lacks S256');
    check(meta.supportsPKCE(), 'openid-client does not see S256 PKCE support');
  });
  ok(`discovery (issuer ${meta.issuer})`);

  // 2. Authorization request with PKCE (S256), state and nonce, through the login form.
  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const browser = new Browser(new URL(meta.issuer).origin);
  const callbackUrl = await step('authorization', () => authorize(browser, authorizationUrl, redirectUri, user));
  await step('authorization', () => {
    const params = callbackUrl.searchParams;
    check(!params.has('error'), `authorization error: ${params.get('error')} ${params.get('error_description') ?? ''}`);
    check(params.get('code'), 'the redirect carries no code');
    check(params.get('state') === state, 'the redirect carries the wrong state');
    check(params.get('iss') === meta.issuer, `the redirect's iss is ${params.get('iss')}, not ${meta.issuer}`);
  });
  ok('authorization code received at the redirect URI');

  // 3. Code exchange; openid-client validates the authorization response (state, iss), the
  // token response, and the ID token (iss, aud, exp, iat, nonce; signature via the JWKS).
  const tokens = await step('code exchange', () =>
    client.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: codeVerifier,
      expectedNonce: nonce,
      expectedState: state,
      idTokenExpected: true,
    }));
  const idClaims = await step('code exchange', () => {
    check(typeof tokens.access_token === 'string', 'no access_token');
    check(typeof tokens.refresh_token === 'string', 'no refresh_token although offline_access was requested');
    check(typeof tokens.expires_in === 'number' && tokens.expires_in > 0, 'no positive expires_in');
    check(typeof tokens.scope === 'string' && tokens.scope.split(' ').includes('openid'),
      `scope ${JSON.stringify(tokens.scope)} lacks openid`);
    const claims = tokens.claims();
    check(claims, 'no validated ID token claims');
    check(claims.nonce === nonce, 'ID token nonce mismatch');
    check(typeof claims.sub === 'string' && claims.sub.length > 0, 'ID token has no sub');
    return claims;
  });
  ok(`code exchange; ID token validated by openid-client (RS256 via JWKS, nonce, sub ${idClaims.sub})`);

  await step('access token format', () => {
    const parts = tokens.access_token.split('.');
    check(parts.length === 3, 'the access token is not a JWS compact serialisation');
    const header = base64urlJson(parts[0]);
    const typ = String(header.typ ?? '').toLowerCase().replace(/^application\//, '');
    check(typ === 'at+jwt', `access token typ is ${JSON.stringify(header.typ)}, expected at+jwt`);
  });
  ok('access token is a JWT with typ at+jwt');

  // 4. UserInfo (the library checks that sub matches the ID token's).
  const userinfo = await step('userinfo', () => client.fetchUserInfo(config, tokens.access_token, idClaims.sub));
  await step('userinfo', () => {
    check(userinfo.email === user.email, `email is ${JSON.stringify(userinfo.email)}, expected ${user.email}`);
    check(userinfo.preferred_username === user.username,
      `preferred_username is ${JSON.stringify(userinfo.preferred_username)}, expected ${user.username}`);
  });
  ok(`userinfo (email ${userinfo.email}, preferred_username ${userinfo.preferred_username})`);

  // 5. Refresh, with rotation: a new refresh token is issued.
  const refreshed = await step('refresh', () => client.refreshTokenGrant(config, tokens.refresh_token));
  await step('refresh', () => {
    check(typeof refreshed.access_token === 'string', 'no access_token');
    check(typeof refreshed.refresh_token === 'string', 'no new refresh_token (rotation expected)');
    check(refreshed.refresh_token !== tokens.refresh_token, 'the refresh token was not rotated');
    if (refreshed.id_token) {
      check(refreshed.claims()?.sub === idClaims.sub, 'the refreshed ID token names another subject');
    }
  });
  ok('refresh (rotated: new refresh token differs)');

  // 6. Introspection of the new access token.
  const live = await step('introspection', () => client.tokenIntrospection(config, refreshed.access_token));
  await step('introspection', () => {
    check(live.active === true, `active is ${live.active}, expected true`);
    check(live.sub === undefined || live.sub === idClaims.sub, `sub is ${live.sub}, expected ${idClaims.sub}`);
    check(live.client_id === undefined || live.client_id === clientId, `client_id is ${live.client_id}`);
  });
  ok('introspection (active=true)');

  // 7. Revocation of that access token; introspection then says inactive.
  await step('revocation', () => client.tokenRevocation(config, refreshed.access_token, { token_type_hint: 'access_token' }));
  const dead = await step('revocation', () => client.tokenIntrospection(config, refreshed.access_token));
  await step('revocation', () => check(dead.active === false, `after revocation active is ${dead.active}`));
  ok('revocation (introspection now active=false)');

  // 8. The rotated-out refresh token is refused. Done last: presenting it again is a replay, and
  // the server revokes the whole grant (RFC 9700 §4.14.2), which would spoil the steps above.
  await step('refresh token reuse', async () => {
    let accepted = false;
    try {
      await client.refreshTokenGrant(config, tokens.refresh_token);
      accepted = true;
    } catch (err) {
      if (!isInvalidGrant(err)) throw err;
    }
    check(!accepted, 'the old refresh token was accepted after rotation');
  });
  ok('old refresh token refused with invalid_grant');

  // 9. Dynamic client registration (RFC 7591) with the initial access token; the registered
  // client gets a token with its new credentials.
  const registered = await step('dynamic registration', () =>
    client.dynamicClientRegistration(new URL(issuer), {
      client_name: `openid-client registered ${Date.now()}`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      scope: 'openid',
      token_endpoint_auth_method: 'client_secret_basic',
    }, client.ClientSecretBasic(), {
      initialAccessToken: env('INTEROP_INITIAL_ACCESS_TOKEN'),
      execute: [client.allowInsecureRequests],
    }));
  const dcr = registered.clientMetadata();
  await step('dynamic registration', () => {
    check(typeof dcr.client_id === 'string' && dcr.client_id !== clientId, 'no new client_id');
    check(typeof dcr.client_secret === 'string', 'no client_secret');
    check(typeof dcr.registration_access_token === 'string', 'no registration_access_token');
  });
  const serviceTokens = await step('dynamic registration', () => client.clientCredentialsGrant(registered));
  await step('dynamic registration', () =>
    check(typeof serviceTokens.access_token === 'string', 'the registered client got no access token'));
  ok(`dynamic registration (client ${dcr.client_id}, then client_credentials)`);

  console.log(`[${NAME}] PASS`);
}

main().catch((err) => fail('unexpected', describe(err)));
