// The supervision tree, rebuilt from the server's flat SupNode list.

import { formatClock, formatCount } from '../format';
import type { SupNode } from '../protocol';

export interface TreeNode {
  node: SupNode;
  key: string;
  children: TreeNode[];
  /** Its parent pid is not in the list (or the links form a loop). */
  orphan: boolean;
}

/**
 * Nests the list by parent pid. The server sends parents before children,
 * but nothing here depends on it; a node whose parent is missing becomes a
 * root marked orphan, and nodes caught in a parent loop are shown that way
 * too, so every node of the list appears exactly once.
 */
export function buildTree(nodes: readonly SupNode[]): TreeNode[] {
  const tn: TreeNode[] = nodes.map((node, i) => ({
    node,
    key: node.pid ?? `${node.parent ?? ''}/${node.id}#${i}`,
    children: [],
    orphan: false,
  }));
  const byPid = new Map<string, number>();
  nodes.forEach((n, i) => {
    if (n.pid !== null && !byPid.has(n.pid)) byPid.set(n.pid, i);
  });
  const roots: number[] = [];
  const kids = new Map<number, number[]>();
  nodes.forEach((n, i) => {
    const p = n.parent === null ? undefined : byPid.get(n.parent);
    if (p === undefined || p === i) {
      if (n.parent !== null) tn[i].orphan = true;
      roots.push(i);
    } else {
      const list = kids.get(p) ?? [];
      list.push(i);
      kids.set(p, list);
    }
  });
  const placed = new Set<number>();
  const attach = (i: number): TreeNode => {
    placed.add(i);
    for (const c of kids.get(i) ?? []) if (!placed.has(c)) tn[i].children.push(attach(c));
    return tn[i];
  };
  const out = roots.map(attach);
  nodes.forEach((_, i) => {
    if (!placed.has(i)) {
      tn[i].orphan = true;
      out.push(attach(i));
    }
  });
  return out;
}

function Node({ t }: { t: TreeNode }) {
  const n = t.node;
  const running = n.pid !== null;
  return (
    <li
      className={`sup-node ${n.supervisor ? 'supervisor' : 'worker'}${running ? '' : ' not-running'}`}
      data-testid={`sup-node-${n.pid ?? n.id}`}
    >
      <div className="sup-line">
        <span className="sup-id">{n.id}</span>
        {n.supervisor && <span className="tag">supervisor</span>}
        {n.supervisor && n.strategy && <span className="strategy">{n.strategy}</span>}
        <span className="pid">{running ? n.pid : 'not running'}</span>
        {n.restarts !== undefined && <span className="restarts">restarts {formatCount(n.restarts)}</span>}
        {n.supervisor && n.children !== undefined && (
          <span className="children">
            {formatCount(n.children)} child{n.children === 1 ? '' : 'ren'}
          </span>
        )}
        {t.orphan && <span className="orphan">parent {n.parent} not in the tree</span>}
      </div>
      {t.children.length > 0 && (
        <ul>
          {t.children.map((c) => (
            <Node key={c.key} t={c} />
          ))}
        </ul>
      )}
    </li>
  );
}

export function SupTree({ nodes, t, stale }: { nodes: readonly SupNode[]; t: number | null; stale: boolean }) {
  const roots = buildTree(nodes);
  return (
    <section className={`sup${stale ? ' stale' : ''}`} aria-labelledby="sup-h">
      <div className="section-head">
        <h2 id="sup-h">Supervision tree</h2>
        {t !== null && <span className="meta">as of {formatClock(t)}</span>}
      </div>
      <ul className="sup-tree" data-testid="sup-tree">
        {roots.map((r) => (
          <Node key={r.key} t={r} />
        ))}
        {roots.length === 0 && <li className="empty">no supervisors</li>}
      </ul>
    </section>
  );
}
