// The page: header, tabs, and the view the hash names.

import { ErrorBoundary } from './components/ErrorBoundary';
import { BenchmarksView } from './components/BenchmarksView';
import { Header } from './components/Header';
import { ObserverView } from './components/ObserverView';
import { useRoute } from './route';
import { formatClock } from './format';
import { useDashboard, type Deps } from './useDashboard';

export function App({ deps }: { deps?: Deps }) {
  const d = useDashboard(deps);
  const route = useRoute();
  const { state } = d;
  return (
    <>
      <ErrorBoundary what="header" resetKey={state}>
        <Header state={state} />
      </ErrorBoundary>
      <nav className="tabs" aria-label="views">
        <a href="#/" aria-current={route === 'benchmarks' ? 'page' : undefined} data-testid="tab-benchmarks">
          Benchmarks
        </a>
        <a href="#/observer" aria-current={route === 'observer' ? 'page' : undefined} data-testid="tab-observer">
          Observer
        </a>
      </nav>
      {state.serverError && (
        <div className="server-error" role="alert" data-testid="server-error">
          <span>
            server said at {formatClock(state.serverError.at)}: {state.serverError.text}
          </span>
          <button type="button" onClick={d.dismissServerError} aria-label="dismiss the server message">
            ×
          </button>
        </div>
      )}
      <main>
        <ErrorBoundary what={route === 'observer' ? 'observer' : 'benchmark view'} resetKey={state}>
          {route === 'observer' ? (
            <ObserverView state={state} setTopics={d.setTopics} loadObserver={d.loadObserver} />
          ) : (
            <BenchmarksView state={state} onRun={d.run} />
          )}
        </ErrorBoundary>
      </main>
    </>
  );
}
