// End-to-end test of `rusm dashboard` in a real headless browser (Debian's
// Chromium driven by playwright-core; run by tests/integration/
// e2e_dashboard.sh, which installs both). It starts the real binary,
// runs ping-pong from its tile and waits for the tile to show the rate of
// the result the server recorded (/api/results), opens the observer and
// finds the registered process "kv" in the table and the supervision tree,
// then stops the server and starts it again on the same port: the page
// reconnects by itself. Screenshots go to $TEST_OUTPUT_DIR.
//
// Environment: RUSM_BIN (the binary), PLAYWRIGHT_CORE_DIR (the package),
// TEST_OUTPUT_DIR, CHROMIUM_BIN (default /usr/bin/chromium).
// Exits 0 when every check holds.

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE_DIR);

const RUSM = process.env.RUSM_BIN;
const OUT = process.env.TEST_OUTPUT_DIR || 'build/e2e';
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const GUARD_MS = 60_000; // failure guard for every wait
// Flags known to work with Debian's Chromium on these machines; Playwright
// adds headless mode and a fresh profile directory of its own.
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function log(...args) {
  console.log('e2e:', ...args);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// The page's own rate format (dashboard/src/format.ts, formatRate): the
// tile shows the result's ops_per_sec this way.
function formatRate(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  if (a >= 10 || a === 0) return v.toFixed(0);
  return v.toFixed(1);
}

// Starts `rusm dashboard --listen listen`; resolves with the process and
// the URL it prints once it listens.
function startServer(listen) {
  const proc = spawn(RUSM, ['dashboard', '--listen', listen], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no URL from rusm dashboard')), GUARD_MS);
    proc.on('exit', (code) => reject(new Error(`rusm dashboard exited (${code}) before listening`)));
    const lines = readline.createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      const m = /^dashboard: (http:\/\/\S+\/)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, url: m[1] });
      }
    });
  });
}

function stopServer(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null) return resolve(proc.exitCode);
    proc.once('exit', (code) => resolve(code));
    proc.kill('SIGTERM');
  });
}

async function getJson(url) {
  const res = await fetch(url);
  check(res.ok, `GET ${url}: ${res.status}`);
  return res.json();
}

const byState = (id, state) => `[data-testid="${id}"][data-state="${state}"]`;

async function main() {
  mkdirSync(OUT, { recursive: true });
  let srv = await startServer('127.0.0.1:0');
  log('serving at', srv.url);
  const home = await (await fetch(srv.url)).text();
  check(
    !home.includes('was not built'),
    'the page is built into the binary (run scripts/build, which builds it before the C code)',
  );

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(GUARD_MS);
    page.on('pageerror', (e) => errors.push(String(e)));

    // ---- benchmarks: run ping-pong from its tile -----------------------
    await page.goto(srv.url);
    await page.locator(byState('conn-state', 'live')).waitFor();
    await page.getByTestId('tile-ping-pong').waitFor();
    const before = ((await getJson(`${srv.url}api/results`)).results['ping-pong'] ?? []).length;
    await page.getByTestId('tile-ping-pong-n').fill('20000');
    await page.getByTestId('tile-ping-pong-run').click();
    log('ping-pong started from its tile');
    await page.locator(byState('tile-ping-pong', 'done')).waitFor();
    const results = (await getJson(`${srv.url}api/results`)).results['ping-pong'];
    check(results && results.length === before + 1, 'one new ping-pong result');
    const result = results[results.length - 1];
    check(result.n === 20000, `the run used the tile's N (n = ${result.n})`);
    const want = `${formatRate(result.ops_per_sec)} ops/s`;
    await page.waitForFunction(
      (w) => {
        const el = document.querySelector('[data-testid="tile-ping-pong-rate"]');
        return el !== null && el.textContent.replace(/\s+/g, ' ').trim() === w;
      },
      want,
      { timeout: GUARD_MS },
    );
    log(`the tile shows ${want} (ops_per_sec ${result.ops_per_sec} of run ${result.id})`);
    await page.screenshot({ path: path.join(OUT, 'dashboard.png'), fullPage: true });

    // ---- the observer: the registered process "kv" ------------------------
    await page.getByTestId('tab-observer').click();
    await page.getByTestId('observer-table').waitFor();
    const procs = await getJson(`${srv.url}api/processes`);
    const kv = procs.processes.find((p) => p.name === 'kv');
    check(kv, 'kv is in /api/processes');
    const row = page.getByTestId(`observer-row-${kv.pid}`);
    await row.waitFor();
    check((await row.textContent()).includes('kv'), `the row of ${kv.pid} names kv`);
    await page.getByTestId('observer-filter').fill('kv');
    await row.waitFor();
    await page.getByTestId('sup-tree').getByText('pool', { exact: true }).first().waitFor();
    log(`the observer lists kv (${kv.pid}) and the supervision tree`);
    await page.getByTestId('observer-filter').fill('');
    await page.screenshot({ path: path.join(OUT, 'observer.png'), fullPage: true });

    // ---- the server restarts: the page reconnects by itself -----------------
    const port = new URL(srv.url).port;
    check((await stopServer(srv.proc)) === 0, 'the server stops cleanly on SIGTERM');
    await page.locator(byState('conn-state', 'reconnecting')).waitFor();
    log('the page noticed the server went away');
    srv = await startServer(`127.0.0.1:${port}`);
    await page.locator(byState('conn-state', 'live')).waitFor();
    const kv2 = (await getJson(`${srv.url}api/processes`)).processes.find((p) => p.name === 'kv');
    await page.getByTestId(`observer-row-${kv2.pid}`).waitFor();
    log('the page reconnected to the restarted server');
    check(errors.length === 0, `no uncaught errors in the page: ${errors.join('; ')}`);
  } finally {
    await browser.close();
    await stopServer(srv.proc);
  }
  log(`passed; screenshots in ${OUT}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error('e2e: FAILED:', e.message || e);
    process.exit(1);
  },
);
