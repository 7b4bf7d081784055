// Browser test: headless Chromium (Debian's, driven by playwright-core) against a real
// `portcullis serve` on a fresh SQLite database.
//
// The bootstrap administrator signs in and changes the one-time password, turns on two-step
// verification, signs in again with a TOTP code, creates a client and a user in the admin UI;
// that user, in another browser context, goes through the authorization-code flow with PKCE;
// the administrator then finds the user's events in the audit log. Full-page screenshots of
// the main pages are written to a folder printed at the end ("screenshots: PATH").
//
// Started by run.sh, which installs the dependencies and sets:
//   PORTCULLIS_BIN       the server binary (required)
//   BROWSER_CHROMIUM     the browser (default /usr/bin/chromium)
//   BROWSER_SCREENSHOTS  where screenshots go (absolute; default <repo>/target/browser-screenshots)
//   BROWSER_KEEP_TMP=1   keep the temporary folder (database, server log)
//
// Prints one line per check, then "browser: N passed, M failed" and exits non-zero when any
// check failed. A failed step that later steps depend on stops the run.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BIN = process.env.PORTCULLIS_BIN || path.join(REPO, 'target', 'debug', 'portcullis');
const CHROMIUM = process.env.BROWSER_CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.resolve(
  process.env.BROWSER_SCREENSHOTS || path.join(REPO, 'target', 'browser-screenshots'),
);
const KEEP_TMP = process.env.BROWSER_KEEP_TMP === '1';

// Every wait is bounded; the whole run is too (run.sh adds an outer `timeout`).
const RUN_LIMIT_MS = 110_000;
const ACTION_MS = 10_000;
const NAVIGATION_MS = 15_000;
const READY_MS = 30_000;

const NARROW = { width: 375, height: 800 };
const WIDE = { width: 1280, height: 900 };

// ---------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------

const results = { passed: 0, failed: 0, failures: [], notes: [] };
let currentPage = null; // the page a failure is reported from
let shotCount = 0;

const log = (msg) => console.log(`browser: ${msg}`);

class Fatal extends Error {}

/** A check: its failure is recorded and the run goes on. */
async function check(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.passed += 1;
    log(`ok    ${name} (${Date.now() - started} ms)`);
    return true;
  } catch (err) {
    results.failed += 1;
    results.failures.push(`${name}: ${err.message}`);
    log(`FAIL  ${name}: ${err.message}`);
    await describePage(name);
    return false;
  }
}

/** Something that works but differs from what the admin UI's contract says. */
function note(message) {
  results.notes.push(message);
  log(`note: ${message}`);
}

/** A step later steps need: its failure ends the run. */
async function step(name, fn) {
  if (!(await check(name, fn))) {
    throw new Fatal(`stopped after "${name}" failed`);
  }
}

async function describePage(name) {
  const page = currentPage;
  if (!page || page.isClosed()) return;
  try {
    const file = await screenshot(page, `FAILED-${name}`);
    const h1 = await page.locator('h1').first().textContent({ timeout: 1000 }).catch(() => null);
    const text = (await page.locator('body').innerText({ timeout: 1000 }).catch(() => ''))
      .replace(/\s+/g, ' ')
      .slice(0, 400);
    log(`      at ${page.url()} (h1: ${JSON.stringify(h1)})`);
    log(`      page text: ${text}`);
    log(`      screenshot: ${file}`);
  } catch {
    // Reporting must not hide the failure itself.
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function screenshot(page, name) {
  shotCount += 1;
  const safe = name.replace(/[^a-z0-9-]+/gi, '-').replace(/^-|-$/g, '').toLowerCase();
  const file = path.join(SHOTS, `${String(shotCount).padStart(2, '0')}-${safe}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: ACTION_MS });
  return file;
}

// ---------------------------------------------------------------------------------------------
// Helpers: randomness, PKCE, TOTP (RFC 6238)
// ---------------------------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const random = (bytes = 18) => b64url(crypto.randomBytes(bytes));

function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.replace(/[\s=-]/g, '').toUpperCase();
  const out = [];
  let bits = 0;
  let value = 0;
  for (const c of clean) {
    const i = alphabet.indexOf(c);
    if (i < 0) throw new Error(`${JSON.stringify(text)} is not base32`);
    value = ((value << 5) | i) & 0x1fff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

const STEP_SECONDS = 30;
const stepNow = () => Math.floor(Date.now() / 1000 / STEP_SECONDS);

/** The 6-digit HMAC-SHA1 code of `key` at time step `step`. */
function totp(key, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const n =
    (((mac[offset] & 0x7f) << 24) |
      (mac[offset + 1] << 16) |
      (mac[offset + 2] << 8) |
      mac[offset + 3]) %
    1_000_000;
  return String(n).padStart(6, '0');
}

/** A code for a step after `lastUsed` (a step is accepted once): waits for the next step
 * when the current one was used, as a person would. */
async function freshCode(key, lastUsed) {
  let step = stepNow();
  if (lastUsed !== null && step <= lastUsed) {
    const waitMs = (lastUsed + 1) * STEP_SECONDS * 1000 - Date.now() + 500;
    log(`      waiting ${Math.ceil(waitMs / 1000)} s for the next TOTP step`);
    await sleep(waitMs);
    step = stepNow();
  }
  return { step, code: totp(key, step) };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

function decodeJwt(jwt) {
  const [header, payload] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(header, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString()),
  };
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-browser-'));
const serverLog = path.join(work, 'server.log');
let server = null;
let serverExit = null;

async function startServer(port, adminPassword) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`no server binary at ${BIN} (build it, or set PORTCULLIS_BIN)`);
  }
  const keyFile = path.join(work, 'master.key');
  fs.writeFileSync(keyFile, `${crypto.randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  // Nothing of the caller's Portcullis configuration reaches the server.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS')),
  );
  Object.assign(env, {
    NO_COLOR: '1',
    PORTCULLIS__SERVER__LISTEN: `127.0.0.1:${port}`,
    PORTCULLIS__DATABASE__URL: `sqlite://${path.join(work, 'data', 'portcullis.db')}`,
    PORTCULLIS__KEYS__MASTER_KEY_FILE: keyFile,
    PORTCULLIS__BOOTSTRAP__ADMIN_USERNAME: 'admin',
    PORTCULLIS__BOOTSTRAP__ADMIN_PASSWORD: adminPassword,
    PORTCULLIS__SECURITY__BCRYPT_COST: '4',
  });
  const out = fs.openSync(serverLog, 'a');
  server = spawn(BIN, ['serve'], { cwd: work, env, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  server.on('exit', (code, signal) => {
    serverExit = signal ? `signal ${signal}` : `status ${code}`;
  });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + READY_MS;
  while (Date.now() < deadline) {
    if (serverExit) throw new Error(`the server exited (${serverExit}) before it was ready`);
    try {
      const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return base;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`GET /readyz did not answer 200 within ${READY_MS / 1000} s`);
}

async function stopServer() {
  if (!server || serverExit) return;
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const stopped = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
  if (!stopped) {
    log('the server did not stop within 10 s of SIGTERM; killing it');
    server.kill('SIGKILL');
    await Promise.race([exited, sleep(2000)]);
  }
}

function serverLogTail(lines = 50) {
  try {
    return fs.readFileSync(serverLog, 'utf8').trimEnd().split('\n').slice(-lines);
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------------------------
// The relying party's callback: http://127.0.0.1:PORT/cb
// ---------------------------------------------------------------------------------------------

function startCallback() {
  const hits = [];
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/cb') hits.push(Object.fromEntries(url.searchParams));
    res.writeHead(url.pathname === '/cb' ? 200 : 404, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>Callback</title><h1>Back at the application</h1>');
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve({ srv, hits, port: srv.address().port }));
  });
}

// ---------------------------------------------------------------------------------------------
// Page helpers
// ---------------------------------------------------------------------------------------------

const pathOf = (page) => new URL(page.url()).pathname;

/** GET a page; asserts the final status. */
async function open(page, url, status = 200) {
  const res = await page.goto(url, { timeout: NAVIGATION_MS });
  assert(res, `no response for ${url}`);
  assert(
    res.status() === status,
    `GET ${url} answered ${res.status()} at ${pathOf(page)}, expected ${status}`,
  );
  return res;
}

/** Clicks a submit button and waits for the POST's response and the page it leads to. */
async function submit(page, buttonText, postPath) {
  const [res] = await Promise.all([
    page.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === postPath,
      { timeout: NAVIGATION_MS },
    ),
    page.getByRole('button', { name: buttonText, exact: true }).click({ timeout: ACTION_MS }),
  ]);
  await page.waitForLoadState('load', { timeout: NAVIGATION_MS });
  return res;
}

/** The page's alert message, if it shows one (without waiting for one to appear). */
async function alertText(page) {
  const alert = page.locator('.alert');
  return (await alert.count()) > 0 ? (await alert.first().innerText()).trim() : '(no alert)';
}

async function h1(page) {
  return (await page.locator('h1').first().innerText({ timeout: ACTION_MS })).trim();
}

/** A Content-Security-Policy that never lets inline script run. */
function checkCsp(res, where) {
  const csp = res.headers()['content-security-policy'];
  assert(csp, `${where}: no Content-Security-Policy header`);
  const directives = Object.fromEntries(
    csp
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .filter((d) => d[0])
      .map(([name, ...values]) => [name.toLowerCase(), values]),
  );
  const scripts = directives['script-src'] || directives['default-src'];
  assert(scripts, `${where}: the CSP has neither script-src nor default-src: ${csp}`);
  assert(
    !scripts.includes("'unsafe-inline'") || scripts.some((v) => /^'(nonce|sha\d+)-/.test(v)),
    `${where}: the CSP lets inline scripts run: ${csp}`,
  );
  const elem = directives['script-src-elem'] || [];
  assert(!elem.includes("'unsafe-inline'"), `${where}: script-src-elem has 'unsafe-inline': ${csp}`);
}

async function signIn(page, username, password) {
  await page.getByLabel('Username').fill(username, { timeout: ACTION_MS });
  await page.getByLabel('Password').fill(password, { timeout: ACTION_MS });
  const res = await submit(page, 'Sign in', '/login');
  assert(res.status() === 303, `POST /login answered ${res.status()}, expected 303`);
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

async function main() {
  // RFC 6238 appendix B, truncated to six digits: the code helper is right before it is used.
  assert(totp(Buffer.from('12345678901234567890'), 1) === '287082', 'TOTP self-test failed');
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) {
    if (f.endsWith('.png')) fs.rmSync(path.join(SHOTS, f));
  }

  const bootstrapPassword = `boot-${random()}`;
  const adminPassword = `admin-${random()}`;
  const user = {
    username: `carol${crypto.randomInt(1000, 9999)}`,
    password: `carol-${random()}`,
    email: 'carol@example.com',
    displayName: 'Carol Browser',
  };
  const confidentialName = `Browser Confidential ${random(3)}`;
  const publicName = `Browser Public App ${random(3)}`;

  const port = await freePort();
  const callback = await startCallback();
  const redirectUri = `http://127.0.0.1:${callback.port}/cb`;
  let base;
  await step('server starts and /readyz answers 200', async () => {
    base = await startServer(port, bootstrapPassword);
    log(`      server at ${base} (work dir ${work})`);
  });

  let browser;
  await step(`Chromium starts (${CHROMIUM})`, async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
      timeout: 30_000,
    });
  });
  try {
    await flows(browser, {
      base,
      bootstrapPassword,
      adminPassword,
      user,
      redirectUri,
      callback,
      confidentialName,
      publicName,
    });
  } finally {
    await browser.close().catch(() => {});
    callback.srv.close();
  }
}

async function flows(browser, ctx) {
  const { base, user, redirectUri, callback } = ctx;
  const adminContext = await browser.newContext({ baseURL: base, viewport: WIDE });
  adminContext.setDefaultTimeout(ACTION_MS);
  adminContext.setDefaultNavigationTimeout(NAVIGATION_MS);
  const admin = await adminContext.newPage();
  currentPage = admin;
  // Script errors and CSP refusals show in the console.
  const consoleErrors = [];
  adminContext.on('page', watchConsole);
  watchConsole(admin);
  function watchConsole(page) {
    page.on('console', (msg) => {
      // HTTP statuses are checked where they matter; this is for scripts and CSP refusals.
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
        consoleErrors.push(`${pathOf(page)}: ${msg.text()}`);
      }
    });
    page.on('pageerror', (err) => consoleErrors.push(`${pathOf(page)}: ${err.message}`));
  }

  // --- 1. first sign-in: the one-time password must be changed --------------------------------
  await step('admin signs in with the bootstrap password and must change it', async () => {
    await open(admin, '/login?return_to=%2Faccount');
    assert((await h1(admin)) === 'Sign in', 'the sign-in page has no "Sign in" heading');
    await screenshot(admin, 'login');
    await signIn(admin, 'admin', ctx.bootstrapPassword);
    assert(pathOf(admin) === '/login/password', `after sign-in: ${admin.url()}, expected /login/password`);
    assert((await h1(admin)) === 'Choose a new password', 'no change-password heading');
    await screenshot(admin, 'change-password');
    await admin.getByLabel('New password').fill(ctx.adminPassword);
    await admin.getByLabel('Repeat it').fill(ctx.adminPassword);
    const res = await submit(admin, 'Save and continue', '/login/password');
    assert(res.status() === 303, `POST /login/password answered ${res.status()}`);
    assert(pathOf(admin) === '/account', `after the change: ${admin.url()}, expected /account`);
  });

  // --- 2. TOTP enrolment on the account page ---------------------------------------------------
  let totpKey;
  let lastStep = null;
  await step('admin turns on two-step verification from the account page', async () => {
    assert((await h1(admin)) === 'Your account', 'no account heading');
    await admin.getByRole('link', { name: 'Set up two-step verification' }).click();
    await admin.waitForURL((u) => u.pathname === '/account/totp');
    const secretText = await admin.locator('code.secret').innerText();
    totpKey = base32Decode(secretText);
    assert(totpKey.length >= 10, `the secret ${JSON.stringify(secretText)} is too short`);
    await screenshot(admin, 'totp-setup');
    const { step: s, code } = await freshCode(totpKey, null);
    await admin.getByLabel('Code from the app').fill(code);
    const res = await submit(admin, 'Turn on', '/account/totp');
    assert(res.status() === 200, `POST /account/totp answered ${res.status()}`);
    if ((await h1(admin)) !== 'Two-step verification is on') {
      throw new Error(`the code was refused: ${await alertText(admin)}`);
    }
    lastStep = s;
    const codes = await admin.locator('ul.codes code').count();
    assert(codes > 0, 'no recovery codes shown');
    await screenshot(admin, 'recovery-codes');
  });

  await step('admin signs out', async () => {
    await open(admin, '/oauth2/logout');
    await submit(admin, 'Sign out', '/oauth2/logout');
    assert((await h1(admin)) === 'You are signed out', 'no "You are signed out" heading');
  });

  // --- 3. sign-in with password and TOTP; the admin UI ----------------------------------------
  await step('/admin without a session leads to the sign-in page', async () => {
    await admin.goto('/admin');
    assert(pathOf(admin) === '/login', `GET /admin ended at ${admin.url()}, expected /login`);
  });

  await step('admin signs in with password and a TOTP code', async () => {
    await signIn(admin, 'admin', ctx.adminPassword);
    assert(pathOf(admin) === '/login/totp', `after the password: ${admin.url()}, expected /login/totp`);
    assert((await h1(admin)) === 'Two-step verification', 'no second-factor heading');
    await screenshot(admin, 'second-factor');
    const { step: s, code } = await freshCode(totpKey, lastStep);
    await admin.getByLabel('Code', { exact: true }).fill(code);
    const res = await submit(admin, 'Verify', '/login/totp');
    if (res.status() !== 303) {
      throw new Error(`POST /login/totp answered ${res.status()}: ${await alertText(admin)}`);
    }
    lastStep = s;
  });

  let clientId;
  let userId;
  let dashboard;
  let afterSignIn;
  await step('GET /admin shows the dashboard', async () => {
    afterSignIn = admin.url();
    dashboard = await open(admin, '/admin');
    const heading = await h1(admin);
    assert(heading === 'Dashboard', `the heading is ${JSON.stringify(heading)}, expected "Dashboard"`);
    await screenshot(admin, 'admin-dashboard');
  });

  await check('the sign-in that /admin asked for returns to /admin', async () => {
    assert(new URL(afterSignIn).pathname === '/admin', `it ended at ${afterSignIn}`);
  });

  await check('admin pages send a CSP without inline scripts', async () => checkCsp(dashboard, '/admin'));

  await check('the admin navigation links every section', async () => {
    const nav = admin.locator('nav');
    assert((await nav.count()) > 0, 'no <nav> on /admin');
    const expected = {
      Dashboard: '/admin',
      Clients: '/admin/clients',
      Users: '/admin/users',
      Roles: '/admin/roles',
      Keys: '/admin/keys',
      'Audit log': '/admin/audit',
    };
    for (const [text, href] of Object.entries(expected)) {
      const link = nav.getByRole('link', { name: text, exact: true });
      assert((await link.count()) > 0, `no nav link "${text}"`);
      const got = new URL(await link.first().getAttribute('href'), ctx.base).pathname;
      assert(got === href, `nav link "${text}" goes to ${got}, expected ${href}`);
    }
  });

  // --- 4. clients -----------------------------------------------------------------------------
  await step('the clients list links to the new-client form', async () => {
    checkCsp(await open(admin, '/admin/clients'), '/admin/clients');
    assert((await admin.locator('input[name="q"]').count()) > 0, 'no filter input name=q');
    await admin.getByRole('link', { name: 'New client', exact: true }).click();
    await admin.waitForURL((u) => u.pathname === '/admin/clients/new');
  });

  /** Fills the new-client form; `fields` overrides the defaults. */
  async function fillClientForm(fields) {
    const form = admin.locator('form[action="/admin/clients"]');
    assert((await form.count()) === 1, 'no form posting to /admin/clients');
    assert((await form.locator('input[name="csrf_token"]').count()) === 1, 'the form has no csrf_token');
    await form.locator('input[name="client_name"]').fill(fields.name);
    await form.locator('textarea[name="redirect_uris"]').fill(fields.redirectUris);
    await form.locator('textarea[name="post_logout_redirect_uris"]').fill('');
    for (const grant of ['authorization_code', 'refresh_token', 'client_credentials']) {
      await form
        .locator(`input[type="checkbox"][name="grant_types"][value="${grant}"]`)
        .setChecked(fields.grants.includes(grant));
    }
    await form.locator('select[name="token_endpoint_auth_method"]').selectOption(fields.auth);
    const scope = form.locator('input[name="scope"]');
    const defaultScope = await scope.inputValue();
    await scope.fill('openid profile email offline_access');
    await form.locator('input[type="checkbox"][name="first_party"]').setChecked(false);
    return defaultScope;
  }

  await check('the new-client form shows field errors with status 400', async () => {
    const defaultScope = await fillClientForm({
      name: ctx.confidentialName,
      redirectUris: 'http://app.example.com/cb',
      grants: ['authorization_code'],
      auth: 'client_secret_basic',
    });
    assert(
      defaultScope === 'openid profile email offline_access',
      `the scope field's default is ${JSON.stringify(defaultScope)}`,
    );
    const res = await submit(admin, 'Create client', '/admin/clients');
    assert(
      res.status() === 400,
      `a plain-http non-loopback redirect URI answered ${res.status()}, expected 400`,
    );
    assert((await admin.locator('.field-error').count()) > 0, 'no element with class field-error');
    await screenshot(admin, 'new-client-error');
  });

  let confidentialId;
  let confidentialSecret;
  await step('admin creates a confidential client; its secret is shown once', async () => {
    await open(admin, '/admin/clients/new');
    await screenshot(admin, 'new-client-form');
    await fillClientForm({
      name: ctx.confidentialName,
      redirectUris: 'https://app.example.com/cb',
      grants: ['authorization_code', 'refresh_token'],
      auth: 'client_secret_basic',
    });
    const res = await submit(admin, 'Create client', '/admin/clients');
    assert(res.status() === 200, `POST /admin/clients answered ${res.status()}, expected 200`);
    confidentialId = (await admin.locator('code#client-id').innerText()).trim();
    const secret = (await admin.locator('code#client-secret').innerText()).trim();
    assert(confidentialId, 'code#client-id is empty');
    assert(secret.length >= 32, `code#client-secret is ${JSON.stringify(secret)}`);
    assert(
      (await admin.locator('button[data-copy="client-secret"]').count()) === 1,
      'no button[data-copy="client-secret"]',
    );
    await screenshot(admin, 'new-client-result');
    checkCsp(res, 'POST /admin/clients');
    confidentialSecret = secret;
  });

  await check('the copy button puts the client secret on the clipboard', async () => {
    await adminContext.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ctx.base });
    await admin.locator('button[data-copy="client-secret"]').click();
    const copied = await admin.evaluate(() => navigator.clipboard.readText());
    assert(copied === confidentialSecret, `the clipboard holds ${JSON.stringify(copied.slice(0, 80))}`);
  });

  await step('admin creates a public client (PKCE, no secret)', async () => {
    await open(admin, '/admin/clients/new');
    await fillClientForm({
      name: ctx.publicName,
      redirectUris: redirectUri,
      grants: ['authorization_code', 'refresh_token'],
      auth: 'none',
    });
    const res = await submit(admin, 'Create client', '/admin/clients');
    assert(res.status() === 200, `POST /admin/clients answered ${res.status()}, expected 200`);
    clientId = (await admin.locator('code#client-id').innerText()).trim();
    assert(clientId, 'code#client-id is empty');
    assert((await admin.locator('code#client-secret').count()) === 0, 'a public client was shown a secret');
  });

  await check('the client detail page has rotate-secret and delete', async () => {
    const detail = `/admin/clients/${encodeURIComponent(confidentialId)}`;
    checkCsp(await open(admin, detail), 'client detail');
    await screenshot(admin, 'client-detail');
    const body = await admin.locator('body').innerText();
    assert(body.includes(confidentialId), 'the page does not show the client id');
    const posts = admin.locator('form[method="post" i]');
    const missing = await posts.evaluateAll(
      (forms) => forms.filter((f) => !f.querySelector('input[name="csrf_token"]')).length,
    );
    assert(missing === 0, `${missing} POST form(s) without csrf_token`);
    const rotate = posts.filter({ has: admin.getByRole('button', { name: /rotate/i }) });
    assert((await rotate.count()) === 1, 'no form with a "Rotate" button');
    const del = admin
      .getByRole('link', { name: /delete/i })
      .or(admin.getByRole('button', { name: /delete/i }));
    assert((await del.count()) > 0, 'no delete link or button');
  });

  await check('the client can be edited from its detail page', async () => {
    const detail = `/admin/clients/${encodeURIComponent(confidentialId)}`;
    let field = admin.locator('form[method="post" i] input[name="client_name"]');
    if ((await field.count()) === 0) {
      const edit = admin.getByRole('link', { name: /^edit$/i });
      assert((await edit.count()) > 0, `no edit form (input name=client_name) and no "Edit" link on ${detail}`);
      note(`${detail} has no edit form; its "Edit" link goes to ${await edit.first().getAttribute('href')}`);
      await edit.first().click();
      await admin.waitForLoadState('load');
      field = admin.locator('form[method="post" i] input[name="client_name"]');
      assert((await field.count()) === 1, `no edit form (input name=client_name) on ${pathOf(admin)}`);
    }
    assert((await field.inputValue()) === ctx.confidentialName, 'the edit form does not hold the client name');
    const form = admin.locator('form[method="post" i]:has(input[name="client_name"])');
    const action = new URL(await form.getAttribute('action'), ctx.base).pathname;
    await form.locator('textarea[name="post_logout_redirect_uris"]').fill('https://app.example.com/bye');
    await screenshot(admin, 'client-edit');
    const [res] = await Promise.all([
      admin.waitForResponse(
        (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === action,
        { timeout: NAVIGATION_MS },
      ),
      form.locator('button[type="submit"], button:not([type])').first().click(),
    ]);
    await admin.waitForLoadState('load');
    assert([200, 303].includes(res.status()), `POST ${action} answered ${res.status()}`);
    await open(admin, detail);
    const body = await admin.locator('body').innerText();
    assert(body.includes('https://app.example.com/bye'), 'the detail page does not show the saved change');
  });

  await check('the clients list shows both clients and filters by q', async () => {
    await open(admin, '/admin/clients');
    const table = admin.locator('table');
    assert((await table.count()) > 0, 'no table');
    const text = await table.first().innerText();
    for (const name of [ctx.confidentialName, ctx.publicName]) {
      assert(text.includes(name), `the table does not list "${name}"`);
    }
    await screenshot(admin, 'clients-list');
    await admin.locator('input[name="q"]').fill('Public App');
    await Promise.all([
      admin.waitForURL((u) => u.searchParams.get('q') === 'Public App'),
      admin.locator('input[name="q"]').press('Enter'),
    ]);
    const filtered = await admin.locator('table').first().innerText();
    assert(filtered.includes(ctx.publicName), 'the filtered table lost the matching client');
    assert(!filtered.includes(ctx.confidentialName), 'the filter q=Public App still lists the other client');
  });

  await check('at 375 px the clients list does not scroll sideways', async () => {
    const narrow = await adminContext.newPage();
    try {
      await narrow.setViewportSize(NARROW);
      currentPage = narrow;
      await open(narrow, '/admin/clients');
      const { scroll, client } = await narrow.evaluate(() => ({
        scroll: document.documentElement.scrollWidth,
        client: document.documentElement.clientWidth,
      }));
      await screenshot(narrow, 'clients-list-narrow');
      assert(
        scroll <= NARROW.width + 1,
        `scrollWidth is ${scroll} px at a ${NARROW.width} px viewport (clientWidth ${client})`,
      );
    } finally {
      currentPage = admin;
      await narrow.close();
    }
  });

  // --- 5. users -------------------------------------------------------------------------------
  await step('admin creates a user with a chosen password', async () => {
    checkCsp(await open(admin, '/admin/users'), '/admin/users');
    assert((await admin.locator('input[name="q"]').count()) > 0, 'no filter input name=q');
    await admin.getByRole('link', { name: 'New user', exact: true }).click();
    await admin.waitForURL((u) => u.pathname === '/admin/users/new');
    const form = admin.locator('form[action="/admin/users"]');
    assert((await form.count()) === 1, 'no form posting to /admin/users');
    assert((await form.locator('input[name="csrf_token"]').count()) === 1, 'the form has no csrf_token');
    const mustChange = form.locator('input[type="checkbox"][name="password_change_required"]');
    assert(await mustChange.isChecked(), 'password_change_required is not checked by default');
    await form.locator('input[name="username"]').fill(user.username);
    await form.locator('input[name="email"]').fill(user.email);
    await form.locator('input[name="display_name"]').fill(user.displayName);
    await form.locator('input[name="password"]').fill(user.password);
    await mustChange.setChecked(false);
    for (const role of await form.locator('input[type="checkbox"][name="roles"]').all()) {
      await role.setChecked(false);
    }
    await screenshot(admin, 'new-user-form');
    const res = await submit(admin, 'Create user', '/admin/users');
    assert([200, 303].includes(res.status()), `POST /admin/users answered ${res.status()}`);
    assert(
      (await admin.locator('code#new-password').count()) === 0,
      'a generated password was shown although one was chosen',
    );
    await screenshot(admin, 'new-user-result');
  });

  await step('the users list links to the user page, whose URL holds the id', async () => {
    await open(admin, '/admin/users');
    const table = admin.locator('table');
    assert((await table.count()) > 0, 'no table');
    await screenshot(admin, 'users-list');
    const link = table.first().getByRole('link', { name: user.username, exact: true });
    assert((await link.count()) === 1, `no link with the text "${user.username}" in the table`);
    await link.click();
    await admin.waitForURL((u) => /^\/admin\/users\/[^/]+$/.test(u.pathname));
    userId = decodeURIComponent(pathOf(admin).split('/').pop());
    assert(/^[0-9a-f-]{36}$/i.test(userId), `the user page's id ${JSON.stringify(userId)} is not a UUID`);
    const body = await admin.locator('body').innerText();
    assert(
      body.includes(user.username) && body.includes(user.email),
      'the user page lacks the username or email',
    );
    await screenshot(admin, 'user-detail');
  });

  // --- 6. the user's authorization-code flow with PKCE ----------------------------------------
  const userContext = await browser.newContext({ baseURL: base, viewport: WIDE });
  userContext.setDefaultTimeout(ACTION_MS);
  userContext.setDefaultNavigationTimeout(NAVIGATION_MS);
  const person = await userContext.newPage();
  currentPage = person;
  const verifier = random(32);
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const state = random();
  const nonce = random();
  let code;
  await step('the user signs in, allows access and lands on the callback with a code', async () => {
    const authorize = new URL('/oauth2/authorize', base);
    authorize.search = new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      redirect_uri: redirectUri,
      scope: 'openid profile',
      state,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }).toString();
    await open(person, authorize.href);
    assert(pathOf(person) === '/login', `the authorization request led to ${person.url()}, expected /login`);
    const lead = await person.locator('.lead').innerText().catch(() => '');
    assert(lead.includes(ctx.publicName), `the sign-in page does not name the client: ${JSON.stringify(lead)}`);
    await signIn(person, user.username, user.password);
    assert(
      (await person.getByRole('button', { name: 'Allow', exact: true }).count()) === 1,
      `no consent page after sign-in (at ${person.url()}, "${await h1(person)}")`,
    );
    assert((await h1(person)).includes(ctx.publicName), 'the consent page does not name the client');
    await screenshot(person, 'consent');
    await Promise.all([
      person.waitForURL((u) => u.port === String(callback.port) && u.pathname === '/cb', {
        timeout: NAVIGATION_MS,
      }),
      person.getByRole('button', { name: 'Allow', exact: true }).click(),
    ]);
    const params = new URL(person.url()).searchParams;
    assert(
      !params.get('error'),
      `the callback got error=${params.get('error')}: ${params.get('error_description')}`,
    );
    assert(params.get('state') === state, `state came back as ${params.get('state')}`);
    assert(params.get('iss') === base, `iss came back as ${params.get('iss')}, expected ${base}`);
    code = params.get('code');
    assert(code, 'no code on the callback');
    assert(callback.hits.length === 1, `the callback was hit ${callback.hits.length} times`);
  });

  let tokens;
  let idClaims;
  await step('the code and verifier are exchanged for an ID token and an access token', async () => {
    const res = await fetch(new URL('/oauth2/token', base), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri,
        client_id: clientId,
        code_verifier: verifier,
      }),
      signal: AbortSignal.timeout(ACTION_MS),
    });
    const text = await res.text();
    assert(res.status === 200, `POST /oauth2/token answered ${res.status}: ${text}`);
    tokens = JSON.parse(text);
    assert(tokens.access_token && tokens.id_token, `the token response lacks a token: ${text}`);
    assert(/^bearer$/i.test(tokens.token_type), `token_type is ${tokens.token_type}`);
    idClaims = decodeJwt(tokens.id_token).payload;
    assert(idClaims.iss === base, `id_token iss is ${idClaims.iss}`);
    assert(idClaims.aud === clientId || idClaims.aud?.includes?.(clientId), `id_token aud is ${idClaims.aud}`);
    assert(idClaims.nonce === nonce, 'id_token nonce differs');
  });

  await check("userinfo answers with the user's sub", async () => {
    const res = await fetch(new URL('/oauth2/userinfo', base), {
      headers: { authorization: `Bearer ${tokens.access_token}` },
      signal: AbortSignal.timeout(ACTION_MS),
    });
    const text = await res.text();
    assert(res.status === 200, `GET /oauth2/userinfo answered ${res.status}: ${text}`);
    const info = JSON.parse(text);
    assert(info.sub === idClaims.sub, `userinfo sub ${info.sub} differs from the ID token's ${idClaims.sub}`);
    assert(info.sub === userId, `sub is ${info.sub}; the admin UI's user id is ${userId}`);
    assert(info.preferred_username === user.username, `preferred_username is ${info.preferred_username}`);
  });

  await check('the account page lists the allowed application', async () => {
    await open(person, '/account');
    assert((await h1(person)) === 'Your account', 'no account heading');
    const body = await person.locator('body').innerText();
    assert(body.includes(ctx.publicName), 'the allowed client is not listed');
    await screenshot(person, 'account');
  });
  await userContext.close();
  currentPage = admin;

  // --- 7. the audit log -----------------------------------------------------------------------
  await check("the audit log, filtered to the user, shows the user's sign-in and consent", async () => {
    const subject = `user:${userId}`;
    checkCsp(await open(admin, `/admin/audit?subject=${encodeURIComponent(subject)}`), '/admin/audit');
    const table = admin.locator('table');
    assert((await table.count()) > 0, 'no table');
    const rows = await table.first().locator('tbody tr').allInnerTexts();
    assert(rows.length > 0, 'no rows');
    const find = (event) => rows.find((r) => r.includes(event) && r.includes(subject));
    for (const event of ['user.created', 'user.login', 'consent.granted']) {
      assert(find(event), `no ${event} row for ${subject}; rows: ${JSON.stringify(rows.slice(0, 10))}`);
    }
    assert(/success/i.test(find('user.login')), 'the user.login row does not say success');
    const foreign = rows.filter((r) => !r.includes(subject));
    assert(foreign.length === 0, `rows for other subjects: ${JSON.stringify(foreign.slice(0, 3))}`);
    await screenshot(admin, 'audit-log');
  });

  await check('the audit log filters by event type', async () => {
    const filter = new URLSearchParams({
      actor: `user:${userId}`,
      event_type: 'user.login',
      outcome: 'success',
    });
    await open(admin, `/admin/audit?${filter}`);
    const rows = await admin.locator('table').first().locator('tbody tr').allInnerTexts();
    assert(rows.length >= 1, 'no user.login row');
    assert(
      rows.every((r) => r.includes('user.login')),
      `other events listed: ${JSON.stringify(rows.slice(0, 3))}`,
    );
  });

  // --- 8. keys and roles ----------------------------------------------------------------------
  await check('the keys page lists the signing keys', async () => {
    checkCsp(await open(admin, '/admin/keys'), '/admin/keys');
    const text = await admin.locator('table').first().innerText();
    for (const alg of ['RS256', 'ES256']) assert(text.includes(alg), `no ${alg} key listed`);
    await screenshot(admin, 'keys');
  });

  await check('the roles page lists the built-in roles', async () => {
    checkCsp(await open(admin, '/admin/roles'), '/admin/roles');
    const text = await admin.locator('body').innerText();
    for (const role of ['admin', 'auditor']) assert(text.includes(role), `no role ${role}`);
    await screenshot(admin, 'roles');
  });

  await check('admin pages ran without script errors or CSP refusals', async () => {
    assert(consoleErrors.length === 0, consoleErrors.slice(0, 5).join(' | '));
  });
}

// ---------------------------------------------------------------------------------------------

let finished = false;
async function finish(code) {
  if (finished) return;
  finished = true;
  await stopServer();
  if (code !== 0) {
    const tail = serverLogTail();
    if (tail.length) {
      log('last 50 lines of the server log:');
      for (const line of tail) console.log(`  | ${line}`);
    }
  }
  if (KEEP_TMP) log(`kept ${work}`);
  else fs.rmSync(work, { recursive: true, force: true });
  for (const n of results.notes) log(`note: ${n}`);
  for (const f of results.failures) log(`failed: ${f}`);
  console.log(`screenshots: ${SHOTS}`);
  console.log(`browser: ${results.passed} passed, ${results.failed} failed`);
  process.exit(code);
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`stopped by ${signal}`);
    results.failed += 1;
    finish(1);
  });
}

const overall = setTimeout(() => {
  log(`the run took longer than ${RUN_LIMIT_MS / 1000} s`);
  results.failed += 1;
  finish(1);
}, RUN_LIMIT_MS);

try {
  await main();
  clearTimeout(overall);
  await finish(results.failed === 0 ? 0 : 1);
} catch (err) {
  clearTimeout(overall);
  if (!(err instanceof Fatal)) {
    results.failed += 1;
    log(`error: ${err.stack || err}`);
  } else {
    log(err.message);
  }
  await finish(1);
}
