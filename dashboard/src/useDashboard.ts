// Wires the feed, the API and the reducer together for the components.

import { useCallback, useEffect, useMemo, useReducer, useRef } from 'react';
import { fetchProcesses, fetchResults, fetchScenarios, fetchSupTree, postRun } from './api';
import { FeedClient, feedUrl, type SocketFactory } from './client';
import type { Topic } from './protocol';
import { initialState, reducer, type State } from './state';

export interface Deps {
  fetch?: typeof fetch;
  socket?: SocketFactory;
  url?: string;
  now?: () => number;
  log?: (...args: unknown[]) => void;
}

export interface Dashboard {
  state: State;
  run: (scenario: string, n?: number) => void;
  setTopics: (topics: Topic[]) => void;
  /** One HTTP read of the process table and the tree (the feed follows every 2 s). */
  loadObserver: () => void;
  dismissServerError: () => void;
}

export function useDashboard(deps: Deps = {}): Dashboard {
  const [state, dispatch] = useReducer(reducer, initialState);
  const depsRef = useRef(deps);
  const clientRef = useRef<FeedClient | null>(null);
  const now = useCallback(() => (depsRef.current.now ?? Date.now)(), []);
  const log = useCallback((...args: unknown[]) => (depsRef.current.log ?? console.warn)(...args), []);
  const f = useCallback<typeof fetch>((...args) => (depsRef.current.fetch ?? fetch)(...args), []);

  const loadResults = useCallback(async () => {
    const r = await fetchResults(f);
    if (r.ok) dispatch({ type: 'results', results: r.value });
    else log('rusm: could not load results:', r.error);
  }, [f, log]);

  useEffect(() => {
    let alive = true;
    void fetchScenarios(f).then((r) => {
      if (!alive) return;
      if (r.ok) dispatch({ type: 'scenarios', scenarios: r.value });
      else log('rusm: could not load scenarios:', r.error);
    });
    const client = new FeedClient({
      url: depsRef.current.url ?? feedUrl(window.location),
      socket: depsRef.current.socket,
      log,
      onMessage: (msg) => dispatch({ type: 'message', msg, at: now() }),
      onStatus: (s) => {
        if (s.status === 'live') dispatch({ type: 'conn', status: 'live', at: now() });
        else if (s.status === 'reconnecting')
          dispatch({ type: 'conn', status: 'reconnecting', at: now(), attempt: s.attempt, retryInMs: s.retryInMs });
        else
          dispatch({
            type: 'conn',
            status: s.attempt > 0 ? 'reconnecting' : 'connecting',
            at: now(),
            attempt: s.attempt,
            retryInMs: null,
          });
      },
      // Every (re)connect: results may have finished while we were away.
      onOpen: () => {
        if (alive) void loadResults();
      },
    });
    clientRef.current = client;
    client.start();
    return () => {
      alive = false;
      client.stop();
      clientRef.current = null;
    };
  }, [f, log, now, loadResults]);

  const run = useCallback(
    (scenario: string, n?: number) => {
      dispatch({ type: 'runRequested', scenario, at: now() });
      void postRun(scenario, n, f).then((r) => {
        if (r.ok) dispatch({ type: 'runAccepted', scenario, id: r.value.id });
        else dispatch({ type: 'runFailed', scenario, error: r.error, at: now() });
      });
    },
    [f, now],
  );

  const setTopics = useCallback((topics: Topic[]) => {
    clientRef.current?.setTopics(topics);
  }, []);

  const loadObserver = useCallback(() => {
    void fetchProcesses(f).then((r) => {
      if (r.ok) dispatch({ type: 'processes', msg: r.value });
    });
    void fetchSupTree(f).then((r) => {
      if (r.ok) dispatch({ type: 'sup_tree', msg: r.value });
    });
  }, [f]);

  const dismissServerError = useCallback(() => dispatch({ type: 'dismissServerError' }), []);

  return useMemo(
    () => ({ state, run, setTopics, loadObserver, dismissServerError }),
    [state, run, setTopics, loadObserver, dismissServerError],
  );
}
