// The page's state and the reducer that folds server messages, HTTP answers
// and connection changes into it. Pure: time comes in with each action.

import type {
  Metrics,
  ProcessesMsg,
  Result,
  RunFigures,
  Scenario,
  ServerMessage,
  SupTreeMsg,
} from './protocol';

export type ConnStatus = 'connecting' | 'live' | 'reconnecting';

export interface ConnState {
  status: ConnStatus;
  /** When the page's data stopped being live (null while live or never had any). */
  staleSince: number | null;
  /** Reconnection attempts since the socket was last open. */
  attempt: number;
  /** Milliseconds until the next attempt, while reconnecting. */
  retryInMs: number | null;
}

export interface RunState {
  phase: 'starting' | 'running' | 'error';
  /** Run id, once the server has said it (202 answer or a bench message). */
  id: number | null;
  /** Per-run figures from progress messages, in run order. */
  progress: RunFigures[];
  error?: string;
  /** The feed dropped during this run: it may have ended unseen. */
  uncertain?: boolean;
  since: number;
}

export interface MetricsState {
  t: number;
  metrics: Metrics;
}

export interface Rates {
  spawnedPerSec: number | null;
  sentPerSec: number | null;
}

export interface State {
  conn: ConnState;
  hello: { version: number; node: number | string; schedulers: number } | null;
  scenarios: Scenario[];
  /** Per scenario, oldest first. */
  results: Record<string, Result[]>;
  runs: Record<string, RunState>;
  metrics: MetricsState | null;
  /** The snapshot rates are computed against; cleared when the feed drops. */
  rateBase: MetricsState | null;
  rates: Rates;
  processes: ProcessesMsg | null;
  supTree: SupTreeMsg | null;
  serverError: { text: string; at: number } | null;
}

export const initialState: State = {
  conn: { status: 'connecting', staleSince: null, attempt: 0, retryInMs: null },
  hello: null,
  scenarios: [],
  results: {},
  runs: {},
  metrics: null,
  rateBase: null,
  rates: { spawnedPerSec: null, sentPerSec: null },
  processes: null,
  supTree: null,
  serverError: null,
};

export type Action =
  | { type: 'conn'; status: ConnStatus; at: number; attempt?: number; retryInMs?: number | null }
  | { type: 'message'; msg: ServerMessage; at: number }
  | { type: 'scenarios'; scenarios: Scenario[] }
  | { type: 'results'; results: Record<string, Result[]> }
  | { type: 'processes'; msg: ProcessesMsg }
  | { type: 'sup_tree'; msg: SupTreeMsg }
  | { type: 'runRequested'; scenario: string; at: number }
  | { type: 'runAccepted'; scenario: string; id: number | null }
  | { type: 'runFailed'; scenario: string; error: string; at: number }
  | { type: 'dismissServerError' };

/** True when the page shows data that is no longer being updated. */
export function isStale(s: State): boolean {
  return s.conn.status !== 'live' && s.conn.staleSince !== null;
}

/** A run is in flight and the Run button should stay disabled. */
export function isBusy(r: RunState | undefined): boolean {
  return !!r && (r.phase === 'starting' || r.phase === 'running') && !r.uncertain;
}

function rate(cur: number | undefined, prev: number | undefined, dtMs: number): number | null {
  if (cur === undefined || prev === undefined || dtMs <= 0 || cur < prev) return null;
  return ((cur - prev) * 1000) / dtMs;
}

function onMetrics(s: State, t: number, m: Metrics): State {
  const cur: MetricsState = { t, metrics: m };
  const base = s.rateBase;
  let rates = s.rates;
  if (base && t > base.t) {
    const dt = t - base.t;
    const spawned = rate(m.spawned, base.metrics.spawned, dt);
    const sent = rate(m.sent, base.metrics.sent, dt);
    // A counter that went down means a new server: no rate from that pair.
    rates = { spawnedPerSec: spawned, sentPerSec: sent };
  }
  return { ...s, metrics: cur, rateBase: cur, rates };
}

function withRun(s: State, scenario: string, r: RunState | undefined): State {
  const runs = { ...s.runs };
  if (r) runs[scenario] = r;
  else delete runs[scenario];
  return { ...s, runs };
}

function appendResult(s: State, r: Result): State {
  const list = s.results[r.scenario] ?? [];
  if (r.id !== undefined && list.some((x) => x.id === r.id)) return s;
  return { ...s, results: { ...s.results, [r.scenario]: [...list, r] } };
}

function onBench(s: State, msg: Extract<ServerMessage, { type: 'bench' }>, at: number): State {
  const cur = s.runs[msg.scenario];
  const sameRun = cur !== undefined && (cur.id === null || cur.id === msg.id);
  switch (msg.state) {
    case 'started':
      return withRun(s, msg.scenario, { phase: 'running', id: msg.id, progress: [], since: at });
    case 'progress': {
      const base: RunState =
        sameRun && cur.phase !== 'error'
          ? { ...cur, phase: 'running', id: msg.id, uncertain: false }
          : { phase: 'running', id: msg.id, progress: [], since: at };
      const progress = base.progress.filter((p) => msg.run.index === undefined || p.index !== msg.run.index);
      progress.push(msg.run);
      progress.sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
      return withRun(s, msg.scenario, { ...base, progress });
    }
    case 'done': {
      const result: Result = { ...msg.result, id: msg.result.id ?? msg.id };
      const next = appendResult(s, result);
      // Only the run that finished leaves the tile; a newer one stays.
      return cur && cur.id !== null && cur.id !== msg.id ? next : withRun(next, msg.scenario, undefined);
    }
    case 'error':
      if (cur && cur.id !== null && cur.id !== msg.id && cur.phase !== 'error') return s;
      return withRun(s, msg.scenario, {
        phase: 'error',
        id: msg.id,
        progress: sameRun ? cur.progress : [],
        error: msg.error,
        since: at,
      });
  }
}

export function reducer(s: State, a: Action): State {
  switch (a.type) {
    case 'conn': {
      if (a.status === 'live') {
        return {
          ...s,
          conn: { status: 'live', staleSince: null, attempt: 0, retryInMs: null },
        };
      }
      const hadData = s.conn.status === 'live' || s.conn.staleSince !== null;
      const staleSince = s.conn.staleSince ?? (hadData ? a.at : null);
      let runs = s.runs;
      if (s.conn.status === 'live') {
        // Runs we were following may end while we cannot see it.
        runs = Object.fromEntries(
          Object.entries(s.runs).map(([k, r]) => [k, r.phase === 'error' ? r : { ...r, uncertain: true }]),
        );
      }
      return {
        ...s,
        runs,
        rateBase: null,
        conn: {
          status: a.status,
          staleSince,
          attempt: a.attempt ?? s.conn.attempt,
          retryInMs: a.retryInMs ?? null,
        },
      };
    }
    case 'message': {
      const m = a.msg;
      switch (m.type) {
        case 'hello':
          return {
            ...s,
            hello: { version: m.version, node: m.node, schedulers: m.schedulers },
            scenarios: m.scenarios,
          };
        case 'metrics':
          return onMetrics(s, m.t, m.metrics);
        case 'bench':
          return onBench(s, m, a.at);
        case 'processes':
          return { ...s, processes: m };
        case 'sup_tree':
          return { ...s, supTree: m };
        case 'error':
          return { ...s, serverError: { text: m.error, at: a.at } };
      }
      return s;
    }
    case 'scenarios':
      // hello's list is as good and newer; this one fills in until hello comes.
      return s.hello ? s : { ...s, scenarios: a.scenarios };
    case 'results': {
      // The server's list is the truth; runs it shows finished leave the tiles.
      const runs = { ...s.runs };
      for (const [name, r] of Object.entries(runs)) {
        if (r.phase === 'error' || r.id === null) continue;
        if ((a.results[name] ?? []).some((x) => x.id === r.id)) delete runs[name];
      }
      return { ...s, results: a.results, runs };
    }
    // HTTP reads: never replace a newer snapshot the feed already brought.
    case 'processes':
      return s.processes && s.processes.t > a.msg.t ? s : { ...s, processes: a.msg };
    case 'sup_tree':
      return s.supTree && s.supTree.t > a.msg.t ? s : { ...s, supTree: a.msg };
    case 'runRequested':
      return withRun(s, a.scenario, { phase: 'starting', id: null, progress: [], since: a.at });
    case 'runAccepted': {
      const cur = s.runs[a.scenario];
      if (!cur || cur.phase !== 'starting') return s; // "started" came first
      return withRun(s, a.scenario, { ...cur, id: a.id });
    }
    case 'runFailed':
      return withRun(s, a.scenario, { phase: 'error', id: null, progress: [], error: a.error, since: a.at });
    case 'dismissServerError':
      return { ...s, serverError: null };
  }
}
