// The page header: identity, connection state and live runtime metrics.

import { formatBytes, formatClock, formatCount, formatPercent, formatRate } from '../format';
import { isStale, type State } from '../state';

export function ConnState({ conn }: { conn: State['conn'] }) {
  const text = conn.status === 'live' ? 'live' : conn.status === 'connecting' ? 'connecting…' : 'reconnecting…';
  const title =
    conn.status === 'reconnecting'
      ? `attempt ${conn.attempt}${conn.retryInMs !== null ? `, next one ${Math.round(conn.retryInMs / 1000)} s after the last` : ''}`
      : undefined;
  return (
    <span
      className={`conn conn-${conn.status}`}
      data-testid="conn-state"
      data-state={conn.status}
      role="status"
      title={title}
    >
      <span className="dot" aria-hidden="true" />
      {text}
      {conn.status !== 'live' && conn.staleSince !== null && (
        <span className="stale-note"> · stale since {formatClock(conn.staleSince)}</span>
      )}
    </span>
  );
}

export function Header({ state }: { state: State }) {
  const m = state.metrics?.metrics;
  const stale = isStale(state);
  const schedulers = state.hello?.schedulers ?? m?.schedulers;
  return (
    <header className="top">
      <div className="ident">
        <h1>RUSM</h1>
        <span className="meta" data-testid="node-info">
          {state.hello ? `node ${state.hello.node}` : 'node —'}
          {schedulers !== undefined && ` · ${schedulers} scheduler${schedulers === 1 ? '' : 's'}`}
        </span>
        <ConnState conn={state.conn} />
      </div>
      <dl className={`live-metrics${stale ? ' stale' : ''}`} data-testid="metrics">
        <div>
          <dt>live processes</dt>
          <dd data-testid="metric-live">{formatCount(m?.live)}</dd>
        </div>
        <div>
          <dt>spawned/s</dt>
          <dd data-testid="metric-spawn-rate">{formatRate(state.rates.spawnedPerSec)}</dd>
        </div>
        <div>
          <dt>messages/s</dt>
          <dd data-testid="metric-msg-rate" title="send calls per second">
            {formatRate(state.rates.sentPerSec)}
          </dd>
        </div>
        <div>
          <dt>allocated</dt>
          <dd data-testid="metric-alloc">{formatBytes(m?.alloc_bytes)}</dd>
        </div>
        <div className="sched">
          <dt>schedulers</dt>
          <dd>
            {m && m.sched.length > 0 ? (
              <ul className="bars" aria-label="scheduler utilisation">
                {m.sched.map((s, i) => (
                  <li key={i} title={`scheduler ${i}: ${formatPercent(s.utilisation)} busy`}>
                    <span className="bar" aria-hidden="true">
                      <span style={{ width: `${Math.round((s.utilisation ?? 0) * 100)}%` }} />
                    </span>
                    <span className="pct">
                      #{i} {formatPercent(s.utilisation)}
                    </span>
                  </li>
                ))}
              </ul>
            ) : (
              '—'
            )}
          </dd>
        </div>
      </dl>
    </header>
  );
}
