// Processes and the supervision tree, subscribed to while the view is shown.

import { useEffect } from 'react';
import type { Topic } from '../protocol';
import { isStale, type State } from '../state';
import { ProcessTable } from './ProcessTable';
import { SupTree } from './SupTree';

const TOPICS: Topic[] = ['processes', 'sup_tree'];

export interface ObserverViewProps {
  state: State;
  setTopics: (topics: Topic[]) => void;
  loadObserver: () => void;
}

export function ObserverView({ state, setTopics, loadObserver }: ObserverViewProps) {
  useEffect(() => {
    setTopics(TOPICS);
    loadObserver();
    return () => setTopics([]);
  }, [setTopics, loadObserver]);

  const stale = isStale(state);
  const p = state.processes;
  return (
    <div className="observer">
      <ProcessTable processes={p?.processes ?? []} total={p?.total ?? 0} t={p?.t ?? null} stale={stale} />
      <SupTree nodes={state.supTree?.nodes ?? []} t={state.supTree?.t ?? null} stale={stale} />
    </div>
  );
}
