import { act, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { App } from './App';
import { socketFactory } from './testing/mockSocket';
import { wireResult } from './testing/fixtures';

const scenarios = [
  { name: 'ping-pong', summary: 'bounce', kind: 'latency', default_n: 100000, has_baseline: true, memory_per: null },
  { name: 'spawn-storm', summary: 'spawn', kind: 'throughput', default_n: 200000, has_baseline: true, memory_per: null },
];

interface Call {
  url: string;
  method: string;
  body: unknown;
}

function fakeServer() {
  const calls: Call[] = [];
  let results: Record<string, unknown[]> = { 'ping-pong': [wireResult({ id: 1, ops_per_sec: 4358817.9 })], 'spawn-storm': [] };
  let runAnswer: [number, unknown] = [202, { accepted: true, id: 7 }];
  const f = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    const method = init?.method ?? 'GET';
    calls.push({ url, method, body: init?.body ? JSON.parse(String(init.body)) : undefined });
    const answer = (status: number, body: unknown) =>
      ({ ok: status >= 200 && status < 300, status, json: async () => body }) as Response;
    switch (url) {
      case '/api/scenarios':
        return answer(200, { scenarios });
      case '/api/results':
        return answer(200, { results });
      case '/api/run':
        return answer(...runAnswer);
      case '/api/processes':
        return answer(200, { type: 'processes', t: 1, total: 0, processes: [] });
      case '/api/sup-tree':
        return answer(200, { type: 'sup_tree', t: 1, nodes: [] });
      default:
        return answer(404, { error: 'not found' });
    }
  });
  return {
    f,
    calls,
    setResults: (r: Record<string, unknown[]>) => (results = r),
    setRunAnswer: (a: [number, unknown]) => (runAnswer = a),
    count: (url: string) => calls.filter((c) => c.url === url).length,
  };
}

const flush = () =>
  act(async () => {
    for (let i = 0; i < 10; i++) await Promise.resolve();
  });
const tid = (id: string) => screen.getByTestId(id);

function mount() {
  const server = fakeServer();
  const sf = socketFactory();
  const logs: unknown[][] = [];
  render(<App deps={{ fetch: server.f, socket: sf.factory, url: 'ws://t/ws', now: () => 0, log: (...a) => logs.push(a) }} />);
  return { server, sf, logs };
}

async function connect(sf: ReturnType<typeof socketFactory>) {
  act(() => sf.last().open());
  act(() =>
    sf.last().receive({ type: 'hello', version: 1, node: 0, schedulers: 2, scenarios }),
  );
  await flush();
}

beforeEach(() => {
  vi.useFakeTimers();
  window.location.hash = '';
});
afterEach(() => {
  vi.useRealTimers();
});

describe('App', () => {
  it('shows tiles from /api/scenarios before the feed, then results once connected', async () => {
    const { sf } = mount();
    await flush();
    expect(tid('conn-state').dataset.state).toBe('connecting');
    expect(tid('tile-ping-pong-state').textContent).toBe('not run yet');
    await connect(sf);
    expect(tid('conn-state').textContent).toBe('live');
    expect(tid('node-info').textContent).toBe('node 0 · 2 schedulers');
    expect(tid('tile-ping-pong-rate').textContent).toBe('4.36M ops/s');
    expect(tid('tile-spawn-storm-state').textContent).toBe('not run yet');
  });

  it('runs a scenario through POST /api/run and follows its progress', async () => {
    const { server, sf } = mount();
    await connect(sf);
    fireEvent.change(tid('tile-spawn-storm-n'), { target: { value: '5000' } });
    fireEvent.click(tid('tile-spawn-storm-run'));
    expect(tid('tile-spawn-storm-state').textContent).toBe('starting…');
    expect((tid('tile-spawn-storm-run') as HTMLButtonElement).disabled).toBe(true);
    await flush();
    expect(server.calls.find((c) => c.url === '/api/run')).toMatchObject({
      method: 'POST',
      body: { scenario: 'spawn-storm', n: 5000 },
    });
    const ws = sf.last();
    act(() => ws.receive({ type: 'bench', id: 7, scenario: 'spawn-storm', state: 'started' }));
    act(() =>
      ws.receive({ type: 'bench', id: 7, scenario: 'spawn-storm', state: 'progress', run: { index: 0, ops_per_sec: 1.2e6 } }),
    );
    expect(tid('tile-spawn-storm-state').textContent).toBe('running · 1 run measured');
    expect(tid('tile-spawn-storm-progress').textContent).toContain('run 1: 1.20M ops/s');
    act(() =>
      ws.receive({
        type: 'bench',
        id: 7,
        scenario: 'spawn-storm',
        state: 'done',
        result: wireResult({ scenario: 'spawn-storm', id: 7, ops_per_sec: 1.25e6, p50_us: undefined, p99_us: undefined }),
      }),
    );
    expect(tid('tile-spawn-storm-state').textContent).toBe('done');
    expect(tid('tile-spawn-storm-rate').textContent).toBe('1.25M ops/s');
    expect((tid('tile-spawn-storm-run') as HTMLButtonElement).disabled).toBe(false);
  });

  it('shows the server’s refusal on the tile', async () => {
    const { server, sf } = mount();
    await connect(sf);
    server.setRunAnswer([409, { error: 'ping-pong is already running' }]);
    fireEvent.click(tid('tile-ping-pong-run'));
    await flush();
    expect(tid('tile-ping-pong-state').textContent).toBe('error');
    expect(tid('tile-ping-pong-error').textContent).toBe('ping-pong is already running');
    // The last result stays.
    expect(tid('tile-ping-pong-rate').textContent).toBe('4.36M ops/s');
  });

  it('keeps the page when the feed drops, marks it stale, reconnects and re-fetches results', async () => {
    const { server, sf } = mount();
    await connect(sf);
    act(() => sf.last().receive({ type: 'metrics', t: 1000, metrics: { live: 42, spawned: 10, sent: 10, sched: [{ utilisation: 0.5 }] } }));
    act(() => sf.last().receive({ type: 'metrics', t: 2000, metrics: { live: 43, spawned: 30, sent: 110, sched: [{ utilisation: 0.5 }] } }));
    expect(tid('metric-live').textContent).toBe('43');
    expect(tid('metric-spawn-rate').textContent).toBe('20');
    expect(tid('metric-msg-rate').textContent).toBe('100');
    expect(server.count('/api/results')).toBe(1);

    act(() => sf.last().drop());
    expect(tid('conn-state').dataset.state).toBe('reconnecting');
    expect(tid('conn-state').textContent).toContain('stale since');
    expect(tid('metric-live').textContent).toBe('43');
    expect(tid('metrics').className).toContain('stale');
    expect(tid('tile-ping-pong-rate').textContent).toBe('4.36M ops/s');

    server.setResults({
      'ping-pong': [wireResult({ id: 1, ops_per_sec: 4358817.9 }), wireResult({ id: 2, ops_per_sec: 5e6 })],
      'spawn-storm': [],
    });
    act(() => vi.advanceTimersByTime(1000));
    expect(sf.sockets).toHaveLength(2);
    await connect(sf);
    expect(tid('conn-state').textContent).toBe('live');
    expect(server.count('/api/results')).toBe(2);
    expect(tid('tile-ping-pong-rate').textContent).toBe('5.00M ops/s');
    expect(tid('metrics').className).not.toContain('stale');
  });

  it('ignores malformed frames without breaking the page', async () => {
    const { sf, logs } = mount();
    await connect(sf);
    act(() => sf.last().receive('{"type":"bench","id":"x"'));
    act(() => sf.last().receive({ type: 'bench', id: 1, scenario: 'ping-pong', state: 'done', result: { ops_per_sec: 'NaN' } }));
    act(() => sf.last().receive({ type: 'metrics', t: 'later', metrics: null }));
    expect(logs.length).toBeGreaterThanOrEqual(3);
    expect(tid('tile-ping-pong-rate').textContent).toBe('4.36M ops/s');
    expect(tid('conn-state').textContent).toBe('live');
  });

  it('subscribes on the observer view, re-subscribes after a reconnect, unsubscribes on leaving', async () => {
    const { server, sf } = mount();
    await connect(sf);
    act(() => {
      window.location.hash = '#/observer';
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    });
    await flush();
    expect(sf.last().sentJson()).toEqual([{ type: 'subscribe', topics: ['processes', 'sup_tree'] }]);
    expect(server.count('/api/processes')).toBe(1);
    act(() =>
      sf.last().receive({
        type: 'processes',
        t: 5,
        total: 2,
        processes: [
          { pid: '<0.1.0>', name: 'app_sup', reductions: 10 },
          { pid: '<0.2.0>', name: 'worker', reductions: 99 },
        ],
      }),
    );
    act(() =>
      sf.last().receive({
        type: 'sup_tree',
        t: 5,
        nodes: [{ pid: '<0.1.0>', parent: null, id: 'app', supervisor: true, strategy: 'one_for_one', restarts: 0, children: 1 }],
      }),
    );
    expect(tid('observer-row-<0.2.0>')).toBeTruthy();
    expect(tid('sup-tree').textContent).toContain('one_for_one');

    act(() => sf.last().drop());
    act(() => vi.advanceTimersByTime(1000));
    act(() => sf.last().open());
    expect(sf.last().sentJson()).toEqual([{ type: 'subscribe', topics: ['processes', 'sup_tree'] }]);
    // Still shown while stale-then-live.
    expect(tid('observer-row-<0.1.0>')).toBeTruthy();

    act(() => {
      window.location.hash = '#/';
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    });
    expect(sf.last().sentJson().at(-1)).toEqual({ type: 'subscribe', topics: [] });
    expect(screen.queryByTestId('observer-table')).toBeNull();
    expect(tid('tile-ping-pong')).toBeTruthy();
  });

  it('shows an error message from the server and lets it be dismissed', async () => {
    const { sf } = mount();
    await connect(sf);
    act(() => sf.last().receive({ type: 'error', error: 'unknown topic' }));
    expect(tid('server-error').textContent).toContain('unknown topic');
    fireEvent.click(screen.getByRole('button', { name: 'dismiss the server message' }));
    expect(screen.queryByTestId('server-error')).toBeNull();
  });
});
