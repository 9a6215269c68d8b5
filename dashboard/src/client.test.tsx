import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay, FeedClient, feedUrl, IDLE_TIMEOUT_MS, type FeedStatus } from './client';
import type { ServerMessage } from './protocol';
import { socketFactory } from './testing/mockSocket';

function setup() {
  const sf = socketFactory();
  const messages: ServerMessage[] = [];
  const statuses: FeedStatus[] = [];
  const logs: unknown[][] = [];
  const onOpen = vi.fn();
  const client = new FeedClient({
    url: 'ws://test/ws',
    socket: sf.factory,
    onMessage: (m) => messages.push(m),
    onStatus: (s) => statuses.push(s),
    onOpen,
    log: (...a) => logs.push(a),
  });
  return { sf, messages, statuses, logs, onOpen, client };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('backoffDelay', () => {
  it('starts at 1 s, doubles, and stays at 10 s', () => {
    expect([0, 1, 2, 3, 4, 5, 20, 1000].map(backoffDelay)).toEqual([
      1000, 2000, 4000, 8000, 10000, 10000, 10000, 10000,
    ]);
  });
});

describe('FeedClient', () => {
  it('builds the feed URL from the page location', () => {
    expect(feedUrl({ protocol: 'http:', host: '127.0.0.1:8080' })).toBe('ws://127.0.0.1:8080/ws');
    expect(feedUrl({ protocol: 'https:', host: 'h' })).toBe('wss://h/ws');
  });

  it('connects, reports live, and passes parsed messages on', () => {
    const { sf, messages, statuses, onOpen, client } = setup();
    client.start();
    expect(sf.sockets).toHaveLength(1);
    expect(sf.last().url).toBe('ws://test/ws');
    sf.last().open();
    expect(statuses.at(-1)).toEqual({ status: 'live' });
    expect(onOpen).toHaveBeenCalledTimes(1);
    sf.last().receive({ type: 'hello', version: 1, node: 0, schedulers: 2, scenarios: [] });
    expect(messages).toEqual([{ type: 'hello', version: 1, node: 0, schedulers: 2, scenarios: [] }]);
    client.stop();
  });

  it('ignores malformed messages, logging them, and keeps the socket', () => {
    const { sf, messages, logs, client } = setup();
    client.start();
    sf.last().open();
    sf.last().receive('{"type":"metrics"');
    sf.last().receive({ type: 'nonsense' });
    sf.last().receive({ type: 'metrics', t: 1, metrics: { sched: [] } });
    expect(messages).toHaveLength(1);
    expect(logs).toHaveLength(2);
    expect(String(logs[0][0])).toMatch(/malformed/);
    expect(sf.sockets).toHaveLength(1);
    client.stop();
  });

  it('reconnects with backoff 1, 2, 4, 8, 10, 10 s and resets after a success', () => {
    const { sf, statuses, client } = setup();
    client.start();
    sf.last().open();
    const waits: number[] = [];
    for (let i = 0; i < 6; i++) {
      const before = sf.sockets.length;
      sf.last().drop();
      const st = statuses.at(-1);
      if (st?.status !== 'reconnecting') throw new Error('expected reconnecting');
      waits.push(st.retryInMs);
      vi.advanceTimersByTime(st.retryInMs - 1);
      expect(sf.sockets).toHaveLength(before);
      vi.advanceTimersByTime(1);
      expect(sf.sockets).toHaveLength(before + 1);
    }
    expect(waits).toEqual([1000, 2000, 4000, 8000, 10000, 10000]);
    sf.last().open();
    sf.last().drop();
    expect(statuses.at(-1)).toMatchObject({ status: 'reconnecting', retryInMs: 1000 });
    client.stop();
  });

  it('re-sends the subscription after a reconnect, and re-fetch hooks run', () => {
    const { sf, onOpen, client } = setup();
    client.start();
    client.setTopics(['processes', 'sup_tree']); // not open yet: nothing sent
    sf.last().open();
    expect(sf.last().sentJson()).toEqual([{ type: 'subscribe', topics: ['processes', 'sup_tree'] }]);
    sf.last().drop();
    vi.advanceTimersByTime(1000);
    sf.last().open();
    expect(sf.sockets).toHaveLength(2);
    expect(sf.last().sentJson()).toEqual([{ type: 'subscribe', topics: ['processes', 'sup_tree'] }]);
    expect(onOpen).toHaveBeenCalledTimes(2);
    client.setTopics([]);
    expect(sf.last().sentJson().at(-1)).toEqual({ type: 'subscribe', topics: [] });
    // Unsubscribed: a reconnect sends nothing.
    sf.last().drop();
    vi.advanceTimersByTime(1000);
    sf.last().open();
    expect(sf.last().sent).toEqual([]);
    client.stop();
  });

  it('sends run messages only while open', () => {
    const { sf, client } = setup();
    client.start();
    expect(client.run('ping-pong', 1000)).toBe(false);
    sf.last().open();
    expect(client.run('ping-pong', 1000, 3)).toBe(true);
    expect(client.run('fan-in')).toBe(true);
    expect(sf.last().sentJson()).toEqual([
      { type: 'run', scenario: 'ping-pong', n: 1000, repeat: 3 },
      { type: 'run', scenario: 'fan-in' },
    ]);
    client.stop();
  });

  it('drops a feed that went silent and reconnects', () => {
    const { sf, statuses, client, logs } = setup();
    client.start();
    sf.last().open();
    vi.advanceTimersByTime(IDLE_TIMEOUT_MS - 100);
    sf.last().receive({ type: 'metrics', t: 1, metrics: {} }); // resets the watchdog
    vi.advanceTimersByTime(IDLE_TIMEOUT_MS - 100);
    expect(sf.last().closed).toBe(false);
    vi.advanceTimersByTime(100);
    expect(sf.sockets[0].closed).toBe(true);
    expect(statuses.at(-1)).toMatchObject({ status: 'reconnecting' });
    expect(String(logs.at(-1)?.[0])).toMatch(/silent/);
    vi.advanceTimersByTime(1000);
    expect(sf.sockets).toHaveLength(2);
    client.stop();
  });

  it('gives up on a connection that never opens', () => {
    const { sf, client } = setup();
    client.start();
    vi.advanceTimersByTime(10000);
    expect(sf.sockets[0].closed).toBe(true);
    vi.advanceTimersByTime(1000);
    expect(sf.sockets).toHaveLength(2);
    client.stop();
  });

  it('stops for good: no reconnect, late events ignored', () => {
    const { sf, client, statuses } = setup();
    client.start();
    const ws = sf.last();
    ws.open();
    client.stop();
    expect(ws.closed).toBe(true);
    const n = statuses.length;
    vi.advanceTimersByTime(60000);
    expect(sf.sockets).toHaveLength(1);
    expect(statuses).toHaveLength(n);
  });

  it('survives a socket constructor that throws', () => {
    let calls = 0;
    const statuses: FeedStatus[] = [];
    const client = new FeedClient({
      url: 'ws://x/ws',
      socket: () => {
        calls++;
        throw new Error('blocked');
      },
      onMessage: () => {},
      onStatus: (s) => statuses.push(s),
      log: () => {},
    });
    client.start();
    expect(statuses.at(-1)).toMatchObject({ status: 'reconnecting', retryInMs: 1000 });
    vi.advanceTimersByTime(1000);
    expect(calls).toBe(2);
    client.stop();
  });
});
