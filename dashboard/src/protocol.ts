// The dashboard protocol, version 1 (docs/dashboard-protocol.md): types and
// validating parsers. Everything the server sends passes through here; what
// does not match is rejected with a reason (and then ignored by the caller),
// so rendering code can trust the shapes it gets.

export const PROTOCOL_VERSION = 1;

export type ScenarioKind = 'throughput' | 'latency' | 'memory';

export interface Scenario {
  name: string;
  summary: string;
  kind: ScenarioKind;
  default_n: number | null;
  has_baseline: boolean;
  /** "process", "timer", "connection"... or null: the unit of bytes_per_<x>. */
  memory_per: string | null;
}

/** One measured run, as in a Result's "runs" or a progress message's "run". */
export interface RunFigures {
  index?: number;
  seconds?: number;
  ops_per_sec: number;
  baseline_ops_per_sec?: number;
  p50_us?: number;
  p99_us?: number;
  bytes?: number;
}

export interface Result {
  scenario: string;
  n?: number;
  ops?: number;
  seconds?: number;
  ops_per_sec: number;
  runs: RunFigures[];
  p50_us?: number;
  p99_us?: number;
  baseline_ops_per_sec?: number;
  ratio?: number;
  schedulers?: number;
  repeat?: number;
  /** Every "bytes_per_<unit>" field, by unit. */
  bytes_per: Record<string, number>;
  id?: number;
  finished_at?: number;
}

export interface SchedMetrics {
  utilisation?: number;
  runs?: number;
  steals?: number;
}

export interface Metrics {
  spawned?: number;
  exited?: number;
  live?: number;
  sent?: number;
  delivered?: number;
  dropped?: number;
  shed?: number;
  steals?: number;
  alloc_bytes?: number;
  alloc_count?: number;
  schedulers?: number;
  sched: SchedMetrics[];
}

export interface Process {
  pid: string;
  name?: string;
  kind?: string;
  label?: string;
  status?: string;
  scheduler?: number;
  mailbox_len?: number;
  handled?: number;
  reductions?: number;
  shed?: number;
  links?: number;
  monitors?: number;
  monitored_by?: number;
  trap_exit?: boolean;
  memory?: number;
}

export interface SupNode {
  pid: string | null;
  parent: string | null;
  id: string;
  supervisor: boolean;
  strategy: string | null;
  restarts?: number;
  children?: number;
}

export interface HelloMsg {
  type: 'hello';
  version: number;
  node: number | string;
  schedulers: number;
  scenarios: Scenario[];
}
export interface MetricsMsg {
  type: 'metrics';
  t: number;
  metrics: Metrics;
}
export type BenchMsg =
  | { type: 'bench'; id: number; scenario: string; state: 'started' }
  | { type: 'bench'; id: number; scenario: string; state: 'progress'; run: RunFigures }
  | { type: 'bench'; id: number; scenario: string; state: 'done'; result: Result }
  | { type: 'bench'; id: number; scenario: string; state: 'error'; error: string };
export interface ProcessesMsg {
  type: 'processes';
  t: number;
  total: number;
  processes: Process[];
}
export interface SupTreeMsg {
  type: 'sup_tree';
  t: number;
  nodes: SupNode[];
}
export interface ErrorMsg {
  type: 'error';
  error: string;
}
export type ServerMessage =
  | HelloMsg
  | MetricsMsg
  | BenchMsg
  | ProcessesMsg
  | SupTreeMsg
  | ErrorMsg;

export type Topic = 'processes' | 'sup_tree';

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** Items of a list that failed validation are dropped; this says how many. */
export interface ListWarnings {
  dropped: number;
}

// ---------------------------------------------------------------- helpers

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}
function isStr(v: unknown): v is string {
  return typeof v === 'string';
}
/** A finite number, or undefined when absent / null / not a number. */
function optNum(v: unknown): number | undefined {
  return isNum(v) ? v : undefined;
}
function optStr(v: unknown): string | undefined {
  return isStr(v) ? v : undefined;
}

class Invalid extends Error {}
function fail(msg: string): never {
  throw new Invalid(msg);
}

/** Maps a list through an item parser, dropping items that fail. */
function parseList<T>(v: unknown, what: string, item: (x: unknown) => T, warn?: ListWarnings): T[] {
  if (!Array.isArray(v)) fail(`${what} is not an array`);
  const out: T[] = [];
  for (const x of v) {
    try {
      out.push(item(x));
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      if (warn) warn.dropped++;
    }
  }
  return out;
}

function guard<T>(f: () => T): Parsed<T> {
  try {
    return { ok: true, value: f() };
  } catch (e) {
    if (e instanceof Invalid) return { ok: false, error: e.message };
    return { ok: false, error: String(e) };
  }
}

// ---------------------------------------------------------------- objects

const KINDS: readonly ScenarioKind[] = ['throughput', 'latency', 'memory'];

function scenario(v: unknown): Scenario {
  if (!isObj(v)) fail('scenario is not an object');
  if (!isStr(v.name) || v.name === '') fail('scenario has no name');
  const kind = KINDS.includes(v.kind as ScenarioKind) ? (v.kind as ScenarioKind) : fail(`scenario ${v.name}: bad kind`);
  const memoryPer = v.memory_per;
  if (memoryPer !== undefined && memoryPer !== null && !isStr(memoryPer)) fail(`scenario ${v.name}: bad memory_per`);
  return {
    name: v.name,
    summary: optStr(v.summary) ?? '',
    kind,
    default_n: optNum(v.default_n) ?? null,
    has_baseline: v.has_baseline === true,
    memory_per: isStr(memoryPer) && memoryPer !== '' ? memoryPer : null,
  };
}

function runFigures(v: unknown): RunFigures {
  if (!isObj(v)) fail('run is not an object');
  if (!isNum(v.ops_per_sec)) fail('run has no ops_per_sec');
  const r: RunFigures = { ops_per_sec: v.ops_per_sec };
  const index = optNum(v.index);
  if (index !== undefined) r.index = index;
  for (const k of ['seconds', 'baseline_ops_per_sec', 'p50_us', 'p99_us', 'bytes'] as const) {
    const x = optNum(v[k]);
    if (x !== undefined) r[k] = x;
  }
  return r;
}

const BYTES_PER = /^bytes_per_([a-z0-9_]+)$/;

function result(v: unknown): Result {
  if (!isObj(v)) fail('result is not an object');
  if (!isStr(v.scenario) || v.scenario === '') fail('result has no scenario');
  if (!isNum(v.ops_per_sec)) fail(`result of ${v.scenario} has no ops_per_sec`);
  const r: Result = {
    scenario: v.scenario,
    ops_per_sec: v.ops_per_sec,
    runs: v.runs === undefined ? [] : parseList(v.runs, 'runs', runFigures),
    bytes_per: {},
  };
  for (const k of [
    'n',
    'ops',
    'seconds',
    'p50_us',
    'p99_us',
    'baseline_ops_per_sec',
    'ratio',
    'schedulers',
    'repeat',
    'id',
    'finished_at',
  ] as const) {
    const x = optNum(v[k]);
    if (x !== undefined) r[k] = x;
  }
  for (const [k, x] of Object.entries(v)) {
    const m = BYTES_PER.exec(k);
    if (m && isNum(x)) r.bytes_per[m[1]] = x;
  }
  return r;
}

function metrics(v: unknown): Metrics {
  if (!isObj(v)) fail('metrics is not an object');
  const m: Metrics = { sched: [] };
  for (const k of [
    'spawned',
    'exited',
    'live',
    'sent',
    'delivered',
    'dropped',
    'shed',
    'steals',
    'alloc_bytes',
    'alloc_count',
    'schedulers',
  ] as const) {
    const x = optNum(v[k]);
    if (x !== undefined) m[k] = x;
  }
  if (Array.isArray(v.sched)) {
    m.sched = v.sched.map((s) => {
      if (!isObj(s)) return {};
      const u = optNum(s.utilisation);
      return {
        utilisation: u === undefined ? undefined : Math.min(1, Math.max(0, u)),
        runs: optNum(s.runs),
        steals: optNum(s.steals),
      };
    });
  }
  return m;
}

function processRow(v: unknown): Process {
  if (!isObj(v)) fail('process is not an object');
  if (!isStr(v.pid) || v.pid === '') fail('process has no pid');
  const p: Process = { pid: v.pid };
  for (const k of ['name', 'kind', 'label', 'status'] as const) {
    const x = optStr(v[k]);
    if (x !== undefined) p[k] = x;
  }
  for (const k of [
    'scheduler',
    'mailbox_len',
    'handled',
    'reductions',
    'shed',
    'links',
    'monitors',
    'monitored_by',
    'memory',
  ] as const) {
    const x = optNum(v[k]);
    if (x !== undefined) p[k] = x;
  }
  if (typeof v.trap_exit === 'boolean') p.trap_exit = v.trap_exit;
  return p;
}

function pidOrNull(v: unknown, what: string): string | null {
  if (v === null || v === undefined || v === '') return null;
  if (!isStr(v)) fail(`${what} is not a pid`);
  return v;
}

function supNode(v: unknown): SupNode {
  if (!isObj(v)) fail('sup node is not an object');
  if (!isStr(v.id)) fail('sup node has no id');
  return {
    pid: pidOrNull(v.pid, 'pid'),
    parent: pidOrNull(v.parent, 'parent'),
    id: v.id,
    supervisor: v.supervisor === true,
    strategy: optStr(v.strategy) ?? null,
    restarts: optNum(v.restarts),
    children: optNum(v.children),
  };
}

// ---------------------------------------------------------------- messages

const BENCH_STATES = ['started', 'progress', 'done', 'error'] as const;

function message(v: unknown, warn: ListWarnings): ServerMessage {
  if (!isObj(v)) fail('message is not an object');
  switch (v.type) {
    case 'hello':
      if (!isNum(v.version)) fail('hello: no version');
      if (!isNum(v.schedulers)) fail('hello: no schedulers');
      if (!isNum(v.node) && !isStr(v.node)) fail('hello: no node');
      return {
        type: 'hello',
        version: v.version,
        node: v.node,
        schedulers: v.schedulers,
        scenarios: parseList(v.scenarios, 'hello.scenarios', scenario, warn),
      };
    case 'metrics':
      if (!isNum(v.t)) fail('metrics: no t');
      return { type: 'metrics', t: v.t, metrics: metrics(v.metrics) };
    case 'bench': {
      if (!isNum(v.id)) fail('bench: no id');
      if (!isStr(v.scenario) || v.scenario === '') fail('bench: no scenario');
      const state = v.state as (typeof BENCH_STATES)[number];
      const base = { type: 'bench' as const, id: v.id, scenario: v.scenario };
      switch (state) {
        case 'started':
          return { ...base, state };
        case 'progress':
          return { ...base, state, run: runFigures(v.run) };
        case 'done': {
          const r = result(v.result);
          if (r.scenario !== v.scenario) fail('bench: result of another scenario');
          return { ...base, state, result: r };
        }
        case 'error':
          if (!isStr(v.error)) fail('bench: error without text');
          return { ...base, state, error: v.error };
        default:
          return fail('bench: unknown state');
      }
    }
    case 'processes':
      if (!isNum(v.t)) fail('processes: no t');
      {
        const processes = parseList(v.processes, 'processes', processRow, warn);
        return {
          type: 'processes',
          t: v.t,
          total: optNum(v.total) ?? processes.length,
          processes,
        };
      }
    case 'sup_tree':
      if (!isNum(v.t)) fail('sup_tree: no t');
      return { type: 'sup_tree', t: v.t, nodes: parseList(v.nodes, 'nodes', supNode, warn) };
    case 'error':
      return { type: 'error', error: isStr(v.error) ? v.error : 'unknown error' };
    default:
      return fail(`unknown message type ${JSON.stringify(v.type)}`);
  }
}

/** Parses one WebSocket text frame. */
export function parseServerMessage(text: unknown, warn: ListWarnings = { dropped: 0 }): Parsed<ServerMessage> {
  if (typeof text !== 'string') return { ok: false, error: 'not a text frame' };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  return guard(() => message(v, warn));
}

/** The body of GET /api/scenarios. */
export function parseScenarios(v: unknown, warn: ListWarnings = { dropped: 0 }): Parsed<Scenario[]> {
  return guard(() => {
    if (!isObj(v)) fail('scenarios: not an object');
    return parseList(v.scenarios, 'scenarios', scenario, warn);
  });
}

/** The body of GET /api/results: results per scenario, oldest first. */
export function parseResults(v: unknown, warn: ListWarnings = { dropped: 0 }): Parsed<Record<string, Result[]>> {
  return guard(() => {
    if (!isObj(v) || !isObj(v.results)) fail('results: not an object');
    const out: Record<string, Result[]> = {};
    for (const [name, list] of Object.entries(v.results)) {
      const rs = parseList(list, `results.${name}`, result, warn).filter((r) => {
        if (r.scenario === name) return true;
        warn.dropped++;
        return false;
      });
      out[name] = rs;
    }
    return out;
  });
}

/** The body of POST /api/run when accepted (202). */
export function parseRunAccepted(v: unknown): Parsed<{ id: number | null }> {
  return guard(() => {
    if (!isObj(v) || v.accepted !== true) fail('run: not accepted');
    return { id: optNum(v.id) ?? null };
  });
}

/** The "error" text of an error body, if there is one. */
export function errorText(v: unknown): string | null {
  return isObj(v) && isStr(v.error) ? v.error : null;
}

/** The bytes-per figure of a result, in the scenario's unit. */
export function bytesPer(r: Result, s: Scenario | undefined): { unit: string; value: number } | null {
  const unit = s?.memory_per ?? null;
  if (unit !== null) {
    const value = r.bytes_per[unit];
    return value === undefined ? null : { unit, value };
  }
  const first = Object.entries(r.bytes_per)[0];
  return first ? { unit: first[0], value: first[1] } : null;
}
