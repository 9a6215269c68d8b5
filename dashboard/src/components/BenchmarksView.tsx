// One tile per scenario the server offers.

import { isStale, type State } from '../state';
import { Tile } from './Tile';

export function BenchmarksView({ state, onRun }: { state: State; onRun: (scenario: string, n?: number) => void }) {
  const stale = isStale(state);
  if (state.scenarios.length === 0) {
    return (
      <p className="placeholder" data-testid="no-scenarios">
        {state.conn.status === 'live' ? 'The server offers no scenarios.' : 'Waiting for the server’s scenario list…'}
      </p>
    );
  }
  return (
    <section className="tiles" aria-label="benchmarks">
      {state.scenarios.map((s) => (
        <Tile
          key={s.name}
          scenario={s}
          results={state.results[s.name] ?? []}
          run={state.runs[s.name]}
          stale={stale}
          onRun={onRun}
        />
      ))}
    </section>
  );
}
