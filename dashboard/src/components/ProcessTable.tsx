// The observer's process table: sortable columns and a pid / name filter.

import { useMemo, useState } from 'react';
import { formatBytes, formatClock, formatCount } from '../format';
import type { Process } from '../protocol';

export type SortKey =
  | 'pid'
  | 'name'
  | 'kind'
  | 'label'
  | 'status'
  | 'mailbox_len'
  | 'handled'
  | 'reductions'
  | 'memory'
  | 'links'
  | 'monitors';
export type SortDir = 'asc' | 'desc';

interface Column {
  key: SortKey;
  label: string;
  numeric: boolean;
}

export const COLUMNS: readonly Column[] = [
  { key: 'pid', label: 'pid', numeric: false },
  { key: 'name', label: 'name', numeric: false },
  { key: 'kind', label: 'kind', numeric: false },
  { key: 'label', label: 'label', numeric: false },
  { key: 'status', label: 'status', numeric: false },
  { key: 'mailbox_len', label: 'mailbox', numeric: true },
  { key: 'handled', label: 'handled', numeric: true },
  { key: 'reductions', label: 'reductions', numeric: true },
  { key: 'memory', label: 'memory', numeric: true },
  { key: 'links', label: 'links', numeric: true },
  { key: 'monitors', label: 'monitors', numeric: true },
];

/** "<0.12.3>" -> [0, 12, 3]; null when not in that form. */
function pidParts(pid: string): number[] | null {
  const m = /^<(\d+)\.(\d+)\.(\d+)>$/.exec(pid);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

export function comparePids(a: string, b: string): number {
  const pa = pidParts(a);
  const pb = pidParts(b);
  if (pa && pb) {
    for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
    return 0;
  }
  if (pa) return -1;
  if (pb) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A new array sorted by key; absent values go last either way; ties by pid. */
export function sortProcesses(list: readonly Process[], key: SortKey, dir: SortDir): Process[] {
  const sign = dir === 'asc' ? 1 : -1;
  return [...list].sort((a, b) => {
    if (key === 'pid') return sign * comparePids(a.pid, b.pid);
    const va = a[key];
    const vb = b[key];
    if (va === undefined || vb === undefined) {
      if (va === vb) return comparePids(a.pid, b.pid);
      return va === undefined ? 1 : -1;
    }
    let c: number;
    if (typeof va === 'number' && typeof vb === 'number') c = va - vb;
    else c = String(va).localeCompare(String(vb));
    return c !== 0 ? sign * c : comparePids(a.pid, b.pid);
  });
}

/** Processes whose pid or name contains the text (case-insensitive). */
export function filterProcesses(list: readonly Process[], text: string): Process[] {
  const q = text.trim().toLowerCase();
  if (q === '') return [...list];
  return list.filter((p) => p.pid.toLowerCase().includes(q) || (p.name ?? '').toLowerCase().includes(q));
}

function cell(p: Process, c: Column): string {
  const v = p[c.key];
  if (c.key === 'memory') return formatBytes(v as number | undefined);
  if (c.numeric) return formatCount(v as number | undefined);
  return v === undefined ? '' : String(v);
}

export interface ProcessTableProps {
  processes: readonly Process[];
  total: number;
  t: number | null;
  stale: boolean;
}

export function ProcessTable({ processes, total, t, stale }: ProcessTableProps) {
  const [filter, setFilter] = useState('');
  const [sort, setSort] = useState<{ key: SortKey; dir: SortDir }>({ key: 'reductions', dir: 'desc' });
  const rows = useMemo(
    () => sortProcesses(filterProcesses(processes, filter), sort.key, sort.dir),
    [processes, filter, sort],
  );

  const toggle = (c: Column) =>
    setSort((s) =>
      s.key === c.key ? { key: c.key, dir: s.dir === 'asc' ? 'desc' : 'asc' } : { key: c.key, dir: c.numeric ? 'desc' : 'asc' },
    );

  return (
    <section className={`processes${stale ? ' stale' : ''}`} aria-labelledby="processes-h">
      <div className="section-head">
        <h2 id="processes-h">Processes</h2>
        <input
          type="search"
          placeholder="filter by pid or name"
          aria-label="filter processes by pid or name"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
          data-testid="observer-filter"
        />
        <span className="meta" data-testid="observer-count">
          {rows.length} shown of {formatCount(total)}
          {processes.length < total ? ` (the ${processes.length} busiest sent)` : ''}
          {t !== null && ` · as of ${formatClock(t)}`}
        </span>
      </div>
      <div className="table-wrap">
        <table data-testid="observer-table">
          <thead>
            <tr>
              {COLUMNS.map((c) => (
                <th
                  key={c.key}
                  scope="col"
                  className={c.numeric ? 'num' : undefined}
                  aria-sort={sort.key === c.key ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none'}
                >
                  <button type="button" onClick={() => toggle(c)} aria-label={`sort by ${c.label}`}>
                    {c.label}
                    <span aria-hidden="true" className="arrow">
                      {sort.key === c.key ? (sort.dir === 'asc' ? '▲' : '▼') : ''}
                    </span>
                  </button>
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map((p) => (
              <tr key={p.pid} data-testid={`observer-row-${p.pid}`}>
                {COLUMNS.map((c) =>
                  c.key === 'pid' ? (
                    <th key={c.key} scope="row" className="pid">
                      {p.pid}
                    </th>
                  ) : (
                    <td key={c.key} className={c.numeric ? 'num' : undefined}>
                      {cell(p, c)}
                    </td>
                  ),
                )}
              </tr>
            ))}
            {rows.length === 0 && (
              <tr>
                <td colSpan={COLUMNS.length} className="empty">
                  {processes.length === 0 ? 'no processes' : 'no process matches the filter'}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}
