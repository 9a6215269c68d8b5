import { fireEvent, render, screen, within } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { proc } from '../testing/fixtures';
import { comparePids, filterProcesses, ProcessTable, sortProcesses } from './ProcessTable';

const list = [
  proc('<0.10.0>', { name: 'logger', reductions: 50, mailbox_len: 2, memory: 512 }),
  proc('<0.2.1>', { name: 'app_sup', reductions: 900, mailbox_len: 0, memory: 384 }),
  proc('<0.9.0>', { name: '', reductions: 50, mailbox_len: undefined, memory: 2048 }),
  proc('<0.3.0>', { name: 'registry', reductions: 7, mailbox_len: 9, memory: 384 }),
];
const pids = (ps: { pid: string }[]) => ps.map((p) => p.pid);

describe('sorting and filtering', () => {
  it('orders pids numerically', () => {
    expect(['<0.10.0>', '<0.9.0>', '<0.2.1>', '<1.0.0>', '<0.2.0>'].sort(comparePids)).toEqual([
      '<0.2.0>',
      '<0.2.1>',
      '<0.9.0>',
      '<0.10.0>',
      '<1.0.0>',
    ]);
  });
  it('sorts numbers both ways, ties by pid, absent values last', () => {
    expect(pids(sortProcesses(list, 'reductions', 'desc'))).toEqual(['<0.2.1>', '<0.9.0>', '<0.10.0>', '<0.3.0>']);
    expect(pids(sortProcesses(list, 'reductions', 'asc'))).toEqual(['<0.3.0>', '<0.9.0>', '<0.10.0>', '<0.2.1>']);
    expect(pids(sortProcesses(list, 'mailbox_len', 'desc'))).toEqual(['<0.3.0>', '<0.10.0>', '<0.2.1>', '<0.9.0>']);
    expect(pids(sortProcesses(list, 'mailbox_len', 'asc'))).toEqual(['<0.2.1>', '<0.10.0>', '<0.3.0>', '<0.9.0>']);
  });
  it('sorts text columns', () => {
    expect(pids(sortProcesses(list, 'name', 'asc'))).toEqual(['<0.9.0>', '<0.2.1>', '<0.10.0>', '<0.3.0>']);
    expect(pids(sortProcesses(list, 'pid', 'desc'))).toEqual(['<0.10.0>', '<0.9.0>', '<0.3.0>', '<0.2.1>']);
  });
  it('does not change its input', () => {
    const copy = [...list];
    sortProcesses(list, 'pid', 'asc');
    expect(list).toEqual(copy);
  });
  it('filters on pid or name, case-insensitively', () => {
    expect(pids(filterProcesses(list, 'LOG'))).toEqual(['<0.10.0>']);
    expect(pids(filterProcesses(list, '0.9'))).toEqual(['<0.9.0>']);
    expect(pids(filterProcesses(list, 'sup'))).toEqual(['<0.2.1>']);
    expect(pids(filterProcesses(list, '  '))).toHaveLength(4);
    expect(filterProcesses(list, 'nothing-like-this')).toEqual([]);
  });
});

describe('ProcessTable', () => {
  const rowPids = () =>
    within(screen.getByTestId('observer-table'))
      .getAllByRole('row')
      .slice(1)
      .map((r) => r.getAttribute('data-testid'));

  it('renders a semantic table, busiest first, with a row per pid', () => {
    render(<ProcessTable processes={list} total={10} t={null} stale={false} />);
    const table = screen.getByTestId('observer-table');
    expect(table.tagName).toBe('TABLE');
    expect(within(table).getAllByRole('columnheader').map((h) => h.textContent?.replace(/[▲▼]/, ''))).toEqual([
      'pid',
      'name',
      'kind',
      'label',
      'status',
      'mailbox',
      'handled',
      'reductions',
      'memory',
      'links',
      'monitors',
    ]);
    expect(rowPids()).toEqual([
      'observer-row-<0.2.1>',
      'observer-row-<0.9.0>',
      'observer-row-<0.10.0>',
      'observer-row-<0.3.0>',
    ]);
    const row = screen.getByTestId('observer-row-<0.9.0>');
    expect(within(row).getByRole('rowheader').textContent).toBe('<0.9.0>');
    expect(row.textContent).toContain('2.00 KiB');
    expect(row.textContent).toContain('—'); // absent mailbox, not 0
    expect(screen.getByTestId('observer-count').textContent).toContain('4 shown of 10');
  });

  it('sorts by a clicked column, and reverses on a second click', () => {
    render(<ProcessTable processes={list} total={4} t={null} stale={false} />);
    fireEvent.click(screen.getByRole('button', { name: 'sort by pid' }));
    expect(rowPids()[0]).toBe('observer-row-<0.2.1>');
    const th = screen.getByRole('button', { name: 'sort by pid' }).closest('th')!;
    expect(th.getAttribute('aria-sort')).toBe('ascending');
    fireEvent.click(screen.getByRole('button', { name: 'sort by pid' }));
    expect(th.getAttribute('aria-sort')).toBe('descending');
    expect(rowPids()[0]).toBe('observer-row-<0.10.0>');
    fireEvent.click(screen.getByRole('button', { name: 'sort by mailbox' }));
    expect(rowPids()[0]).toBe('observer-row-<0.3.0>');
  });

  it('filters from the filter box', () => {
    render(<ProcessTable processes={list} total={4} t={null} stale={false} />);
    fireEvent.change(screen.getByTestId('observer-filter'), { target: { value: 'registry' } });
    expect(rowPids()).toEqual(['observer-row-<0.3.0>']);
    fireEvent.change(screen.getByTestId('observer-filter'), { target: { value: 'zzz' } });
    expect(screen.getByTestId('observer-table').textContent).toContain('no process matches the filter');
  });
});
