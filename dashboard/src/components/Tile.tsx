// One benchmark scenario: its latest result, its history and its live run.

import { useId, useState, type FormEvent } from 'react';
import { formatBytes, formatClock, formatCount, formatMicros, formatRate, formatRatio } from '../format';
import { bytesPer, type Result, type Scenario } from '../protocol';
import { isBusy, type RunState } from '../state';
import { Sparkline } from './Sparkline';

export interface TileProps {
  scenario: Scenario;
  results: Result[];
  run: RunState | undefined;
  stale: boolean;
  onRun: (scenario: string, n?: number) => void;
}

/** Progress lines shown; older runs are counted, not listed. */
const MAX_PROGRESS = 5;

type Shown = 'idle' | 'starting' | 'running' | 'unknown' | 'error' | 'done';

function stateOf(run: RunState | undefined, hasResult: boolean): { key: Shown; text: string } {
  // The feed dropped during the run: it may have ended unseen (a progress
  // message or the re-fetched results settle it).
  if (run && run.phase !== 'error' && run.uncertain) return { key: 'unknown', text: 'unknown (feed lost during a run)' };
  if (run?.phase === 'starting') return { key: 'starting', text: 'starting…' };
  if (run?.phase === 'running') {
    const k = run.progress.length;
    return { key: 'running', text: k ? `running · ${k} run${k === 1 ? '' : 's'} measured` : 'running' };
  }
  if (run?.phase === 'error') return { key: 'error', text: 'error' };
  return hasResult ? { key: 'done', text: 'done' } : { key: 'idle', text: 'not run yet' };
}

/** Parses the optional N box: undefined when empty, null when invalid. */
export function parseN(text: string): number | undefined | null {
  const t = text.trim().replace(/[,_\s]/g, '');
  if (t === '') return undefined;
  if (!/^\d+$/.test(t)) return null;
  const n = Number(t);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

export function Tile({ scenario, results, run, stale, onRun }: TileProps) {
  const s = scenario.name;
  const tid = `tile-${s}`;
  const latest = results.at(-1);
  const state = stateOf(run, latest !== undefined);
  const busy = isBusy(run);
  const [nText, setNText] = useState('');
  const [nError, setNError] = useState<string | null>(null);
  const inputId = useId();

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const n = parseN(nText);
    if (n === null) {
      setNError('N must be a positive whole number');
      return;
    }
    setNError(null);
    onRun(s, n);
  };

  const mem = latest ? bytesPer(latest, scenario) : null;
  const history = results.map((r) => r.ops_per_sec);

  return (
    <article
      className={`tile tile-${state.key}${stale ? ' stale' : ''}`}
      data-testid={tid}
      data-state={state.key}
      aria-labelledby={`${inputId}-h`}
    >
      <header className="tile-head">
        <h2 id={`${inputId}-h`}>{s}</h2>
        <span className={`badge badge-${state.key}`} data-testid={`${tid}-state`}>
          {state.text}
        </span>
      </header>
      {scenario.summary && <p className="summary">{scenario.summary}</p>}

      {latest ? (
        <div className="figures">
          <div className="rate" data-testid={`${tid}-rate`}>
            {formatRate(latest.ops_per_sec)} <span className="unit">ops/s</span>
          </div>
          {(latest.p50_us !== undefined || latest.p99_us !== undefined) && (
            <div className="latency" data-testid={`${tid}-latency`}>
              {latest.p50_us !== undefined && <span>p50 {formatMicros(latest.p50_us)}</span>}
              {latest.p99_us !== undefined && <span>p99 {formatMicros(latest.p99_us)}</span>}
            </div>
          )}
          {mem && (
            <div className="memory" data-testid={`${tid}-memory`}>
              {formatBytes(mem.value)} <span className="unit">per {mem.unit}</span>
            </div>
          )}
          {latest.baseline_ops_per_sec !== undefined && (
            <div className="baseline" data-testid={`${tid}-baseline`}>
              <span>baseline {formatRate(latest.baseline_ops_per_sec)} ops/s</span>
              {latest.ratio !== undefined && (
                <span className={`ratio ${latest.ratio >= 1 ? 'ahead' : 'behind'}`} title="rusm / baseline">
                  {formatRatio(latest.ratio)}
                </span>
              )}
            </div>
          )}
          <div className="meta">
            {[
              latest.n !== undefined ? `n ${formatCount(latest.n)}` : null,
              latest.repeat !== undefined ? `median of ${latest.repeat}` : null,
              latest.schedulers !== undefined
                ? `${latest.schedulers} scheduler${latest.schedulers === 1 ? '' : 's'}`
                : null,
              latest.finished_at !== undefined ? `at ${formatClock(latest.finished_at)}` : null,
            ]
              .filter(Boolean)
              .join(' · ')}
          </div>
          <div className="history">
            <Sparkline
              values={history}
              label={`ops/s of ${history.length} result${history.length === 1 ? '' : 's'}, oldest first: ${formatRate(Math.min(...history))} to ${formatRate(Math.max(...history))}`}
            />
            <span className="unit">
              {history.length} result{history.length === 1 ? '' : 's'}
            </span>
          </div>
        </div>
      ) : (
        <p className="not-run">not run yet</p>
      )}

      {run && run.progress.length > 0 && run.phase !== 'error' && (
        <ol className="progress" data-testid={`${tid}-progress`} aria-label={`runs of ${s} so far`}>
          {run.progress.length > MAX_PROGRESS && <li className="unit">{run.progress.length - MAX_PROGRESS} earlier runs</li>}
          {run.progress.slice(-MAX_PROGRESS).map((p, i) => (
            <li key={p.index ?? `i${i}`}>
              run {(p.index ?? i) + 1}: {formatRate(p.ops_per_sec)} ops/s
              {p.p50_us !== undefined && ` · p50 ${formatMicros(p.p50_us)}`}
              {p.bytes !== undefined && ` · ${formatBytes(p.bytes)}`}
            </li>
          ))}
        </ol>
      )}

      {run?.phase === 'error' && (
        <p className="error" role="alert" data-testid={`${tid}-error`}>
          {run.error}
        </p>
      )}

      <form className="run" onSubmit={submit}>
        <label htmlFor={inputId} className="visually-hidden">
          N for {s}
        </label>
        <input
          id={inputId}
          inputMode="numeric"
          placeholder={scenario.default_n !== null ? `N (${formatCount(scenario.default_n)})` : 'N'}
          value={nText}
          onChange={(e) => setNText(e.target.value)}
          aria-invalid={nError !== null}
          data-testid={`${tid}-n`}
        />
        <button type="submit" disabled={busy} data-testid={`${tid}-run`} aria-label={`Run ${s}`}>
          {busy ? 'Running…' : 'Run'}
        </button>
        {nError && <span className="error">{nError}</span>}
      </form>
    </article>
  );
}
