import { describe, expect, it } from 'vitest';
import type { BenchMsg, Metrics, ServerMessage } from './protocol';
import { initialState, isBusy, isStale, reducer, type Action, type State } from './state';
import { pingPong, result, spawnStorm } from './testing/fixtures';

function run(actions: Action[], from: State = initialState): State {
  return actions.reduce(reducer, from);
}
const msg = (m: ServerMessage, at = 0): Action => ({ type: 'message', msg: m, at });
const bench = (m: Omit<BenchMsg, 'type'> & Record<string, unknown>, at = 0): Action =>
  msg({ type: 'bench', ...m } as BenchMsg, at);
const live: Action = { type: 'conn', status: 'live', at: 0 };

describe('results history', () => {
  it('appends done results in order and ignores a repeated id', () => {
    const s = run([
      { type: 'results', results: { 'ping-pong': [result({ id: 1, ops_per_sec: 1 })] } },
      bench({ id: 2, scenario: 'ping-pong', state: 'done', result: result({ id: 2, ops_per_sec: 2 }) }),
      bench({ id: 2, scenario: 'ping-pong', state: 'done', result: result({ id: 2, ops_per_sec: 2 }) }),
      bench({ id: 3, scenario: 'ping-pong', state: 'done', result: result({ ops_per_sec: 3 }) }),
    ]);
    expect(s.results['ping-pong'].map((r) => r.ops_per_sec)).toEqual([1, 2, 3]);
    // The message's id stands in when the result has none.
    expect(s.results['ping-pong'][2].id).toBe(3);
  });

  it('replaces the history with a fresh /api/results and clears runs it shows finished', () => {
    const s = run([
      live,
      bench({ id: 4, scenario: 'ping-pong', state: 'started' }),
      bench({ id: 5, scenario: 'spawn-storm', state: 'started' }),
      { type: 'conn', status: 'reconnecting', at: 10 },
      live,
      {
        type: 'results',
        results: { 'ping-pong': [result({ id: 4 })], 'spawn-storm': [] },
      },
    ]);
    expect(s.runs['ping-pong']).toBeUndefined();
    expect(s.runs['spawn-storm']).toMatchObject({ phase: 'running', id: 5, uncertain: true });
    expect(isBusy(s.runs['spawn-storm'])).toBe(false);
  });

  it('takes scenarios from /api/scenarios only until hello has come', () => {
    let s = run([{ type: 'scenarios', scenarios: [pingPong] }]);
    expect(s.scenarios).toEqual([pingPong]);
    s = run(
      [msg({ type: 'hello', version: 1, node: 0, schedulers: 2, scenarios: [spawnStorm] }), { type: 'scenarios', scenarios: [pingPong] }],
      s,
    );
    expect(s.scenarios).toEqual([spawnStorm]);
  });
});

describe('runs and progress', () => {
  it('follows a run from request to done', () => {
    let s = run([live, { type: 'runRequested', scenario: 'ping-pong', at: 1 }]);
    expect(s.runs['ping-pong'].phase).toBe('starting');
    expect(isBusy(s.runs['ping-pong'])).toBe(true);
    s = run([{ type: 'runAccepted', scenario: 'ping-pong', id: 9 }], s);
    expect(s.runs['ping-pong'].id).toBe(9);
    s = run(
      [
        bench({ id: 9, scenario: 'ping-pong', state: 'started' }),
        bench({ id: 9, scenario: 'ping-pong', state: 'progress', run: { index: 1, ops_per_sec: 20 } }),
        bench({ id: 9, scenario: 'ping-pong', state: 'progress', run: { index: 0, ops_per_sec: 10 } }),
        bench({ id: 9, scenario: 'ping-pong', state: 'progress', run: { index: 1, ops_per_sec: 21 } }),
      ],
      s,
    );
    expect(s.runs['ping-pong'].phase).toBe('running');
    expect(s.runs['ping-pong'].progress.map((p) => p.ops_per_sec)).toEqual([10, 21]);
    s = run([bench({ id: 9, scenario: 'ping-pong', state: 'done', result: result({ id: 9, ops_per_sec: 15 }) })], s);
    expect(s.runs['ping-pong']).toBeUndefined();
    expect(s.results['ping-pong'].at(-1)?.ops_per_sec).toBe(15);
  });

  it('a 202 arriving after "started" does not go back to starting', () => {
    const s = run([
      { type: 'runRequested', scenario: 'ping-pong', at: 1 },
      bench({ id: 9, scenario: 'ping-pong', state: 'started' }),
      { type: 'runAccepted', scenario: 'ping-pong', id: 9 },
    ]);
    expect(s.runs['ping-pong']).toMatchObject({ phase: 'running', id: 9 });
  });

  it('shows progress of a run that started before the page loaded', () => {
    const s = run([bench({ id: 3, scenario: 'ping-pong', state: 'progress', run: { index: 2, ops_per_sec: 5 } })]);
    expect(s.runs['ping-pong']).toMatchObject({ phase: 'running', id: 3, progress: [{ index: 2, ops_per_sec: 5 }] });
  });

  it('keeps errors on the tile until the next run', () => {
    let s = run([
      bench({ id: 3, scenario: 'ping-pong', state: 'started' }),
      bench({ id: 3, scenario: 'ping-pong', state: 'error', error: 'child exited 1' }),
    ]);
    expect(s.runs['ping-pong']).toMatchObject({ phase: 'error', error: 'child exited 1' });
    expect(isBusy(s.runs['ping-pong'])).toBe(false);
    s = run([{ type: 'runFailed', scenario: 'ping-pong', error: 'already running', at: 2 }], s);
    expect(s.runs['ping-pong'].error).toBe('already running');
    s = run([bench({ id: 4, scenario: 'ping-pong', state: 'started' })], s);
    expect(s.runs['ping-pong']).toMatchObject({ phase: 'running', id: 4 });
  });

  it('a done of an older run leaves a newer run in place', () => {
    const s = run([
      bench({ id: 5, scenario: 'ping-pong', state: 'started' }),
      bench({ id: 4, scenario: 'ping-pong', state: 'done', result: result({ id: 4 }) }),
    ]);
    expect(s.runs['ping-pong']).toMatchObject({ phase: 'running', id: 5 });
    expect(s.results['ping-pong']).toHaveLength(1);
  });
});

describe('connection and staleness', () => {
  it('is not stale before any data, stale after a live feed drops, fresh again when live', () => {
    let s = run([{ type: 'conn', status: 'reconnecting', at: 5, attempt: 1, retryInMs: 1000 }]);
    expect(isStale(s)).toBe(false);
    s = run([live, { type: 'conn', status: 'reconnecting', at: 100, attempt: 1, retryInMs: 1000 }], s);
    expect(isStale(s)).toBe(true);
    expect(s.conn.staleSince).toBe(100);
    // Later failures keep the time the data went stale.
    s = run([{ type: 'conn', status: 'reconnecting', at: 3000, attempt: 2, retryInMs: 2000 }], s);
    expect(s.conn).toMatchObject({ staleSince: 100, attempt: 2, retryInMs: 2000 });
    s = run([live], s);
    expect(isStale(s)).toBe(false);
    expect(s.conn.staleSince).toBeNull();
  });

  it('keeps the last data when the feed drops', () => {
    const s = run([
      live,
      msg({ type: 'metrics', t: 1000, metrics: { live: 12, sched: [] } }),
      msg({ type: 'processes', t: 1000, total: 1, processes: [{ pid: '<0.1.0>' }] }),
      { type: 'results', results: { 'ping-pong': [result({ id: 1 })] } },
      { type: 'conn', status: 'reconnecting', at: 2000 },
    ]);
    expect(s.metrics?.metrics.live).toBe(12);
    expect(s.processes?.processes).toHaveLength(1);
    expect(s.results['ping-pong']).toHaveLength(1);
  });
});

describe('metrics rates', () => {
  const m = (spawned: number, sent: number): Metrics => ({ spawned, sent, sched: [] });
  it('computes per-second rates from successive snapshots', () => {
    const s = run([
      live,
      msg({ type: 'metrics', t: 1000, metrics: m(100, 1000) }),
      msg({ type: 'metrics', t: 3000, metrics: m(300, 5000) }),
    ]);
    expect(s.rates).toEqual({ spawnedPerSec: 100, sentPerSec: 2000 });
  });
  it('has no rate from one snapshot, across a reconnect, or from counters that went down', () => {
    let s = run([live, msg({ type: 'metrics', t: 1000, metrics: m(100, 1000) })]);
    expect(s.rates.spawnedPerSec).toBeNull();
    s = run([msg({ type: 'metrics', t: 2000, metrics: m(200, 2000) })], s);
    expect(s.rates.spawnedPerSec).toBe(100);
    s = run([{ type: 'conn', status: 'reconnecting', at: 2500 }, live, msg({ type: 'metrics', t: 60000, metrics: m(5, 5) })], s);
    // The old rate stays shown until a new pair exists.
    expect(s.rates.spawnedPerSec).toBe(100);
    s = run([msg({ type: 'metrics', t: 61000, metrics: m(3, 10) })], s);
    expect(s.rates).toEqual({ spawnedPerSec: null, sentPerSec: 5 });
  });
});

describe('observer data', () => {
  it('does not let an older HTTP snapshot replace a newer feed one', () => {
    const s = run([
      msg({ type: 'processes', t: 2000, total: 2, processes: [{ pid: '<0.2.0>' }] }),
      { type: 'processes', msg: { type: 'processes', t: 1000, total: 1, processes: [{ pid: '<0.1.0>' }] } },
      { type: 'sup_tree', msg: { type: 'sup_tree', t: 1000, nodes: [] } },
    ]);
    expect(s.processes?.t).toBe(2000);
    expect(s.supTree?.t).toBe(1000);
  });
  it('shows and dismisses server errors', () => {
    let s = run([msg({ type: 'error', error: 'unknown topic' }, 42)]);
    expect(s.serverError).toEqual({ text: 'unknown topic', at: 42 });
    s = run([{ type: 'dismissServerError' }], s);
    expect(s.serverError).toBeNull();
  });
});
