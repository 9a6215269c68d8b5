import { render, screen, within } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { sup } from '../testing/fixtures';
import { buildTree, SupTree, type TreeNode } from './SupTree';

const shape = (ts: TreeNode[]): unknown[] =>
  ts.map((t) => (t.children.length ? { [t.node.id]: shape(t.children) } : t.node.id));

const flat = [
  sup({ pid: '<0.1.0>', id: 'app', supervisor: true, strategy: 'one_for_one', restarts: 0, children: 2 }),
  sup({ pid: '<0.2.0>', parent: '<0.1.0>', id: 'workers', supervisor: true, strategy: 'one_for_all', restarts: 3, children: 2 }),
  sup({ pid: '<0.3.0>', parent: '<0.2.0>', id: 'worker-1', restarts: 1 }),
  sup({ pid: null, parent: '<0.2.0>', id: 'worker-2', restarts: 5 }),
  sup({ pid: '<0.4.0>', parent: '<0.1.0>', id: 'registry' }),
];

describe('buildTree', () => {
  it('nests a flat list, parents before children, keeping sibling order', () => {
    expect(shape(buildTree(flat))).toEqual([{ app: [{ workers: ['worker-1', 'worker-2'] }, 'registry'] }]);
  });
  it('does not need parents first', () => {
    expect(shape(buildTree([...flat].reverse()))).toEqual([{ app: ['registry', { workers: ['worker-2', 'worker-1'] }] }]);
  });
  it('shows a node whose parent is missing as an orphan root', () => {
    const t = buildTree([...flat, sup({ pid: '<0.9.0>', parent: '<0.8.0>', id: 'lost', supervisor: true })]);
    expect(shape(t)).toEqual([{ app: [{ workers: ['worker-1', 'worker-2'] }, 'registry'] }, 'lost']);
    expect(t[1].orphan).toBe(true);
    expect(t[0].orphan).toBe(false);
  });
  it('shows every node once even when parents form a loop', () => {
    const t = buildTree([
      sup({ pid: '<0.1.0>', parent: '<0.2.0>', id: 'a' }),
      sup({ pid: '<0.2.0>', parent: '<0.1.0>', id: 'b' }),
      sup({ pid: '<0.3.0>', parent: '<0.3.0>', id: 'self' }),
    ]);
    const ids: string[] = [];
    const walk = (ts: TreeNode[]) => ts.forEach((x) => (ids.push(x.node.id), walk(x.children)));
    walk(t);
    expect(ids.sort()).toEqual(['a', 'b', 'self']);
  });
  it('handles an empty list', () => {
    expect(buildTree([])).toEqual([]);
  });
});

describe('SupTree', () => {
  it('renders nested lists with strategy, restarts and greyed stopped children', () => {
    render(<SupTree nodes={flat} t={null} stale={false} />);
    const tree = screen.getByTestId('sup-tree');
    expect(tree.tagName).toBe('UL');
    const app = screen.getByTestId('sup-node-<0.1.0>');
    expect(app.textContent).toContain('one_for_one');
    const workers = within(app).getByTestId('sup-node-<0.2.0>');
    expect(workers.textContent).toContain('one_for_all');
    expect(workers.textContent).toContain('restarts 3');
    expect(workers.textContent).toContain('2 children');
    const w1 = within(workers).getByTestId('sup-node-<0.3.0>');
    expect(w1.textContent).toContain('<0.3.0>');
    expect(w1.textContent).toContain('restarts 1');
    const w2 = within(workers).getByTestId('sup-node-worker-2');
    expect(w2.className).toContain('not-running');
    expect(w2.textContent).toContain('not running');
    expect(w2.textContent).toContain('restarts 5');
    expect(w1.className).not.toContain('not-running');
  });
  it('renders an orphan with a note', () => {
    render(<SupTree nodes={[sup({ pid: '<0.9.0>', parent: '<0.8.0>', id: 'lost' })]} t={null} stale={false} />);
    expect(screen.getByTestId('sup-node-<0.9.0>').textContent).toContain('parent <0.8.0> not in the tree');
  });
});
