#!/usr/bin/env node
// A stand-in for `rusm dashboard`, for developing the page: it speaks the
// dashboard protocol (docs/dashboard-protocol.md) with made-up figures. A
// development tool only; nothing it invents reaches the built page.
//
//   node mock/server.mjs [--port 8090] [--dist DIR] [--drop-every SECONDS]
//                        [--malformed] [--quiet]
//
// --dist serves a built page at / and /assets/* as the real server does;
// --drop-every closes every feed socket that often (reconnect checks);
// --malformed sends an invalid frame now and then (the page must ignore it).
// A run with n = 13 fails, to show a tile's error.

import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const SCENARIOS = [
  ['spawn-storm', 'a process spawns N stackless children that each message it once', 'throughput', 200000, true, null],
  ['ping-pong', 'two stackless processes bounce one message N times', 'latency', 100000, true, null],
  ['fan-in', '16 stackless senders each send N/16 messages to one receiver', 'throughput', 2000000, true, null],
  ['idle-memory', 'N stackless processes parked in receive', 'memory', 1000000, false, 'process'],
  ['idle-memory-stackful', 'N stackful processes parked in receive', 'memory', 20000, false, 'process'],
  ['cascade', 'a tree of N linked processes killed at its root', 'throughput', 100000, true, null],
  ['fault-recovery', 'a one_for_one supervisor restarts a crashing child N times', 'latency', 20000, true, null],
  ['timers', 'N pending send_after timers under load', 'latency', 1000000, false, 'timer'],
].map(([name, summary, kind, default_n, has_baseline, memory_per]) => ({
  name,
  summary,
  kind,
  default_n,
  has_baseline,
  memory_per: memory_per ?? (kind === 'memory' ? 'process' : null),
}));

// Rough magnitudes so the mock looks plausible; made up, not measured.
const SCALE = {
  'spawn-storm': 1.2e6,
  'ping-pong': 4e6,
  'fan-in': 2e7,
  'idle-memory': 2.5e6,
  'idle-memory-stackful': 3e5,
  cascade: 2.5e6,
  'fault-recovery': 1.5e6,
  timers: 3e6,
};

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
  '.ico': 'image/x-icon',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

const jitter = (x, f = 0.15) => x * (1 + (Math.random() * 2 - 1) * f);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
};
const round = (x, d) => Number(x.toFixed(d));

function makeRun(sc, n) {
  const ops = sc.name === 'fan-in' ? 16 * Math.floor(n / 16) : n;
  const rate = jitter(SCALE[sc.name] ?? 1e6);
  const r = { seconds: round(ops / rate, 9), ops_per_sec: round(rate, 1) };
  if (sc.kind === 'latency') {
    r.p50_us = round(jitter(0.4), 3);
    r.p99_us = round(jitter(1.8), 3);
  }
  if (sc.memory_per) {
    r[`bytes_per_${sc.memory_per}`] = round(jitter(sc.name === 'idle-memory-stackful' ? 8600 : 420, 0.05), 1);
    r.mappings = sc.name === 'idle-memory-stackful' ? 2 * n + 300 : 310;
  }
  if (sc.has_baseline) {
    const b = jitter(rate / (sc.name === 'cascade' ? 0.1 : 20));
    r.baseline_seconds = round(ops / b, 9);
    r.baseline_ops_per_sec = round(b, 1);
    if (sc.kind === 'latency') {
      r.baseline_p50_us = round(jitter(10.5), 3);
      r.baseline_p99_us = round(jitter(17.3), 3);
    }
  }
  return r;
}

function makeResult(sc, n, runs, id) {
  const pick = (k) => median(runs.map((r) => r[k]));
  const res = { scenario: sc.name, n, ops: sc.name === 'fan-in' ? 16 * Math.floor(n / 16) : n };
  res.seconds = pick('seconds');
  res.ops_per_sec = round(res.ops / res.seconds, 1);
  if (sc.kind === 'latency') {
    res.p50_us = pick('p50_us');
    res.p99_us = pick('p99_us');
  }
  if (sc.memory_per) {
    const k = `bytes_per_${sc.memory_per}`;
    res[k] = pick(k);
    res.mappings = Math.max(...runs.map((r) => r.mappings));
    res.max_map_count = 65530;
  }
  if (sc.has_baseline) {
    res.baseline_ops_per_sec = pick('baseline_ops_per_sec');
    res.ratio = round(res.ops_per_sec / res.baseline_ops_per_sec, 4);
    if (sc.kind === 'latency') {
      res.baseline_p50_us = pick('baseline_p50_us');
      res.baseline_p99_us = pick('baseline_p99_us');
    }
  }
  res.schedulers = 2;
  res.repeat = runs.length;
  res.runs = runs;
  res.id = id;
  res.finished_at = Date.now();
  return res;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  res.end(text);
}

export async function startMock(opts = {}) {
  const port = opts.port ?? 8090;
  const dist = opts.dist ? resolve(opts.dist) : null;
  const log = opts.quiet ? () => {} : (...a) => console.log('[mock]', ...a);
  const results = Object.fromEntries(SCENARIOS.map((s) => [s.name, []]));
  const running = new Map(); // scenario -> timer
  let nextId = 1;
  const clients = new Map(); // ws -> Set(topics)

  // Runtime counters that only grow, like the real ones.
  const m = { spawned: 40, exited: 0, sent: 0, delivered: 0, dropped: 0, alloc_bytes: 1 << 20, alloc_count: 900 };
  const sched = [0, 1].map(() => ({ busy_ns: 0, total_ns: 0, runs: 0, steals: 0, sleeps: 0, utilisation: 0 }));
  const procs = Array.from({ length: 64 }, (_, i) => ({
    pid: `<0.${i + 1}.${i % 3}>`,
    name: i < 6 ? ['app_sup', 'conn_sup', 'worker_sup', 'registry', 'timer_wheel', 'logger'][i] : '',
    kind: i % 4 === 0 ? 'stackful' : 'stackless',
    label: i % 5 === 0 ? 'mock' : '',
    status: 'waiting',
    scheduler: i % 2,
    mailbox_len: 0,
    handled: 0,
    reductions: 0,
    shed: 0,
    links: i % 3,
    monitors: i % 2,
    monitored_by: i % 4 === 0 ? 1 : 0,
    trap_exit: i < 3,
    memory: 384 + (i % 7) * 64,
  }));

  function tick() {
    const spawned = Math.floor(Math.random() * 200);
    m.spawned += spawned;
    m.exited += Math.floor(spawned * 0.98);
    const sent = Math.floor(jitter(50000, 0.5));
    m.sent += sent;
    m.delivered += sent - 3;
    m.dropped += Math.random() < 0.2 ? 1 : 0;
    m.alloc_bytes = Math.floor(jitter(1 << 21, 0.1));
    for (const s of sched) {
      s.total_ns += 1e9;
      const u = Math.min(1, Math.max(0, jitter(running.size ? 0.8 : 0.15, 0.5)));
      s.busy_ns += Math.floor(u * 1e9);
      s.utilisation = round(u, 4);
      s.runs += Math.floor(u * 1e5);
    }
    for (const p of procs) {
      const work = Math.floor(Math.random() * 50);
      p.handled += work;
      p.reductions += work * 3 + Math.floor(Math.random() * 10);
      p.mailbox_len = Math.random() < 0.1 ? Math.floor(Math.random() * 20) : 0;
      p.status = p.mailbox_len ? 'runnable' : 'waiting';
    }
  }

  const metricsJson = () => ({
    ...m,
    live: m.spawned - m.exited,
    shed: 0,
    steals: sched.reduce((a, s) => a + s.steals, 0),
    exited_by: { normal: m.exited, killed: 0, shutdown: 0, noproc: 0, noconnection: 0, trap: 0, custom: 0, kill: 0 },
    schedulers: sched.length,
    sched,
  });
  const processesMsg = () => ({
    type: 'processes',
    t: Date.now(),
    total: procs.length + 3,
    processes: [...procs].sort((a, b) => b.reductions - a.reductions),
  });
  const supTreeMsg = () => ({
    type: 'sup_tree',
    t: Date.now(),
    nodes: [
      { pid: '<0.1.1>', parent: null, id: 'app', supervisor: true, strategy: 'one_for_one', restarts: 0, children: 3 },
      { pid: '<0.2.2>', parent: '<0.1.1>', id: 'conn_sup', supervisor: true, strategy: 'rest_for_one', restarts: 1, children: 2 },
      { pid: '<0.7.1>', parent: '<0.2.2>', id: 'listener', supervisor: false, strategy: null, restarts: 1, children: 0 },
      { pid: null, parent: '<0.2.2>', id: 'acceptor', supervisor: false, strategy: null, restarts: 4, children: 0 },
      { pid: '<0.3.0>', parent: '<0.1.1>', id: 'worker_sup', supervisor: true, strategy: 'one_for_all', restarts: 0, children: 2 },
      { pid: '<0.8.2>', parent: '<0.3.0>', id: 'worker-1', supervisor: false, strategy: null, restarts: 0, children: 0 },
      { pid: '<0.9.0>', parent: '<0.3.0>', id: 'worker-2', supervisor: false, strategy: null, restarts: 2, children: 0 },
      { pid: '<0.4.1>', parent: '<0.1.1>', id: 'registry', supervisor: false, strategy: null, restarts: 0, children: 0 },
    ],
  });

  function broadcast(msg, topic) {
    const text = JSON.stringify(msg);
    for (const [ws, topics] of clients) {
      if (ws.readyState !== ws.OPEN) continue;
      if (topic && !topics.has(topic)) continue;
      ws.send(text);
    }
  }

  // Returns [status, body] like POST /api/run.
  function startRun(body) {
    const sc = SCENARIOS.find((s) => s.name === body?.scenario);
    if (!sc) return [404, { error: `unknown scenario: ${body?.scenario}` }];
    if (running.has(sc.name)) return [409, { error: `${sc.name} is already running` }];
    const n = body.n === undefined ? sc.default_n : body.n;
    const repeat = body.repeat === undefined ? 5 : body.repeat;
    if (!Number.isInteger(n) || n < 1 || !Number.isInteger(repeat) || repeat < 1 || repeat > 1000)
      return [400, { error: 'n and repeat must be positive integers (repeat at most 1000)' }];
    const id = nextId++;
    const runs = [];
    log(`run ${id}: ${sc.name} n=${n} repeat=${repeat}`);
    broadcast({ type: 'bench', id, scenario: sc.name, state: 'started' });
    const step = () => {
      if (n === 13 && runs.length === 1) {
        running.delete(sc.name);
        broadcast({ type: 'bench', id, scenario: sc.name, state: 'error', error: 'mock: run 2 failed (n = 13 always fails)' });
        return;
      }
      if (runs.length === repeat) {
        running.delete(sc.name);
        const result = makeResult(sc, n, runs, id);
        results[sc.name].push(result);
        broadcast({ type: 'bench', id, scenario: sc.name, state: 'done', result });
        return;
      }
      const r = makeRun(sc, n);
      runs.push(r);
      const mem = sc.memory_per ? r[`bytes_per_${sc.memory_per}`] : undefined;
      broadcast({
        type: 'bench',
        id,
        scenario: sc.name,
        state: 'progress',
        run: {
          index: runs.length - 1,
          ops_per_sec: r.ops_per_sec,
          ...(r.baseline_ops_per_sec !== undefined && { baseline_ops_per_sec: r.baseline_ops_per_sec }),
          ...(r.p50_us !== undefined && { p50_us: r.p50_us, p99_us: r.p99_us }),
          ...(mem !== undefined && { bytes: mem }),
        },
      });
      running.set(sc.name, setTimeout(step, 600 + Math.random() * 600));
    };
    running.set(sc.name, setTimeout(step, 800));
    return [202, { accepted: true, id }];
  }

  async function serveStatic(req, res, path) {
    if (!dist) {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('rusm mock: run `npm run dev` for the page, or start the mock with --dist DIR\n');
      return;
    }
    const rel = path === '/' ? 'index.html' : normalize(path).replace(/^\/+/, '');
    if (rel !== 'index.html' && !rel.startsWith('assets/')) return json(res, 404, { error: 'not found' });
    const file = join(dist, rel);
    if (!file.startsWith(dist)) return json(res, 404, { error: 'not found' });
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        'Content-Type': MIME[extname(file)] ?? 'application/octet-stream',
        'Cache-Control': rel === 'index.html' ? 'no-cache' : 'public, max-age=31536000, immutable',
        'X-Content-Type-Options': 'nosniff',
      });
      res.end(body);
    } catch {
      json(res, 404, { error: 'not found' });
    }
  }

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path.startsWith('/api/')) log(req.method, path);
    if (req.method === 'POST' && path === '/api/run') {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c) => {
        body += c;
        if (body.length > 4096) {
          json(res, 413, { error: 'request too large' });
          req.destroy();
        }
      });
      req.on('end', () => {
        if (res.writableEnded) return;
        let parsed;
        try {
          parsed = JSON.parse(body);
        } catch {
          return json(res, 400, { error: 'body is not JSON' });
        }
        const [status, out] = startRun(parsed);
        json(res, status, out);
      });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: 'method not allowed' });
    switch (path) {
      case '/api/scenarios':
        return json(res, 200, { scenarios: SCENARIOS });
      case '/api/results':
        return json(res, 200, { results });
      case '/api/processes':
        return json(res, 200, processesMsg());
      case '/api/sup-tree':
        return json(res, 200, supTreeMsg());
      case '/metrics': {
        const mj = metricsJson();
        res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(
          `# TYPE rusm_spawned_total counter\nrusm_spawned_total ${mj.spawned}\n` +
            `# TYPE rusm_live_processes gauge\nrusm_live_processes ${mj.live}\n`,
        );
        return;
      }
      default:
        if (path.startsWith('/api/')) return json(res, 404, { error: 'not found' });
        return void serveStatic(req, res, path);
    }
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  server.on('upgrade', (req, socket, head) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/ws') {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  wss.on('connection', (ws) => {
    clients.set(ws, new Set());
    log(`feed client connected (${clients.size})`);
    ws.send(JSON.stringify({ type: 'hello', version: 1, node: 0, schedulers: sched.length, scenarios: SCENARIOS }));
    ws.on('message', (data, isBinary) => {
      let msg;
      try {
        msg = isBinary ? null : JSON.parse(data.toString());
      } catch {
        msg = null;
      }
      const err = (text) => ws.send(JSON.stringify({ type: 'error', error: text }));
      if (!msg || typeof msg !== 'object') return err('malformed message');
      if (msg.type === 'subscribe' && Array.isArray(msg.topics)) {
        const ok = msg.topics.filter((t) => t === 'processes' || t === 'sup_tree');
        if (ok.length !== msg.topics.length) return err('unknown topic');
        clients.set(ws, new Set(ok));
        log(`subscribed to [${ok.join(', ')}]`);
        if (ok.includes('processes')) ws.send(JSON.stringify(processesMsg()));
        if (ok.includes('sup_tree')) ws.send(JSON.stringify(supTreeMsg()));
        return;
      }
      if (msg.type === 'run') {
        const [status, out] = startRun(msg);
        if (status !== 202) err(out.error);
        return;
      }
      err(`unknown message type: ${JSON.stringify(msg.type)}`);
    });
    ws.on('close', () => {
      clients.delete(ws);
      log(`feed client left (${clients.size})`);
    });
  });

  const timers = [
    setInterval(() => {
      tick();
      broadcast({ type: 'metrics', t: Date.now(), metrics: metricsJson() });
      if (opts.malformed && Math.random() < 0.2) broadcast({ type: 'metrics', t: 'soon' });
    }, 1000),
    setInterval(() => {
      broadcast(processesMsg(), 'processes');
      broadcast(supTreeMsg(), 'sup_tree');
    }, 2000),
    setInterval(() => {
      for (const ws of clients.keys()) ws.ping();
    }, 15000),
  ];
  if (opts.dropEvery) {
    timers.push(
      setInterval(() => {
        log('dropping every feed socket');
        for (const ws of clients.keys()) ws.terminate();
      }, opts.dropEvery * 1000),
    );
  }

  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', ok);
  });
  const actual = server.address().port;
  log(`listening on http://127.0.0.1:${actual}${dist ? ` (page from ${dist})` : ''}`);
  return {
    port: actual,
    close: () =>
      new Promise((ok) => {
        timers.forEach(clearInterval);
        for (const t of running.values()) clearTimeout(t);
        for (const ws of clients.keys()) ws.terminate();
        wss.close();
        server.close(() => ok());
        // Keep-alive connections would otherwise go on being served.
        server.closeAllConnections();
      }),
  };
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port') opts.port = Number(val());
    else if (a === '--dist') opts.dist = val();
    else if (a === '--drop-every') opts.dropEvery = Number(val());
    else if (a === '--malformed') opts.malformed = true;
    else if (a === '--quiet') opts.quiet = true;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node mock/server.mjs [--port 8090] [--dist DIR] [--drop-every S] [--malformed] [--quiet]');
      process.exit(0);
    } else throw new Error(`unknown argument: ${a}`);
  }
  return opts;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`error: ${e.message}`);
    process.exit(2);
  }
  const mock = await startMock(opts);
  const stop = () => mock.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
