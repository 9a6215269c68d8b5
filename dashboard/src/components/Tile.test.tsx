import { fireEvent, render, screen } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import type { RunState } from '../state';
import { idleMemory, pingPong, result, spawnStorm } from '../testing/fixtures';
import { parseN, Tile } from './Tile';

const byId = (id: string) => screen.getByTestId(id);
const noop = () => {};

describe('Tile', () => {
  it('shows "not run yet" and no figure for a scenario never run', () => {
    render(<Tile scenario={spawnStorm} results={[]} run={undefined} stale={false} onRun={noop} />);
    expect(byId('tile-spawn-storm-state').textContent).toBe('not run yet');
    expect(byId('tile-spawn-storm').dataset.state).toBe('idle');
    expect(screen.queryByTestId('tile-spawn-storm-rate')).toBeNull();
    expect(byId('tile-spawn-storm').textContent).not.toMatch(/\d+(\.\d+)?[kMG]? ops\/s/);
    expect((byId('tile-spawn-storm-run') as HTMLButtonElement).disabled).toBe(false);
  });

  it('shows the latest result with latency, baseline and ratio', () => {
    const results = [
      result({ id: 1, ops_per_sec: 3e6 }),
      result({
        id: 2,
        ops_per_sec: 4358817.9,
        p50_us: 0.22,
        p99_us: 0.26,
        baseline_ops_per_sec: 96088.7,
        ratio: 45.3624,
        n: 1000,
        repeat: 5,
        schedulers: 2,
      }),
    ];
    render(<Tile scenario={pingPong} results={results} run={undefined} stale={false} onRun={noop} />);
    expect(byId('tile-ping-pong-state').textContent).toBe('done');
    expect(byId('tile-ping-pong-rate').textContent).toBe('4.36M ops/s');
    expect(byId('tile-ping-pong-latency').textContent).toBe('p50 0.22 µsp99 0.26 µs');
    expect(byId('tile-ping-pong-baseline').textContent).toContain('baseline 96.1k ops/s');
    expect(byId('tile-ping-pong-baseline').textContent).toContain('45.4×');
    expect(screen.queryByTestId('tile-ping-pong-memory')).toBeNull();
    const spark = byId('tile-ping-pong').querySelector('svg.sparkline');
    expect(spark?.getAttribute('data-points')).toBe('2');
    expect(byId('tile-ping-pong').textContent).toContain('n 1,000 · median of 5 · 2 schedulers');
  });

  it('shows bytes per process and no baseline or latency when the result has none', () => {
    const r = result({ scenario: 'idle-memory', ops_per_sec: 2.5e6, bytes_per: { process: 421.7 } });
    render(<Tile scenario={idleMemory} results={[r]} run={undefined} stale={false} onRun={noop} />);
    expect(byId('tile-idle-memory-rate').textContent).toBe('2.50M ops/s');
    expect(byId('tile-idle-memory-memory').textContent).toBe('422 B per process');
    expect(screen.queryByTestId('tile-idle-memory-baseline')).toBeNull();
    expect(screen.queryByTestId('tile-idle-memory-latency')).toBeNull();
  });

  it('shows a baseline without a ratio when only the baseline is there', () => {
    const r = result({ ops_per_sec: 10, baseline_ops_per_sec: 20 });
    render(<Tile scenario={pingPong} results={[r]} run={undefined} stale={false} onRun={noop} />);
    expect(byId('tile-ping-pong-baseline').textContent).toBe('baseline 20 ops/s');
  });

  it('shows progress while running and disables Run', () => {
    const run: RunState = {
      phase: 'running',
      id: 3,
      since: 0,
      progress: [
        { index: 0, ops_per_sec: 4.1e6 },
        { index: 1, ops_per_sec: 4.2e6, p50_us: 0.21 },
      ],
    };
    render(<Tile scenario={pingPong} results={[]} run={run} stale={false} onRun={noop} />);
    expect(byId('tile-ping-pong-state').textContent).toBe('running · 2 runs measured');
    expect(byId('tile-ping-pong').dataset.state).toBe('running');
    expect(byId('tile-ping-pong-progress').textContent).toContain('run 1: 4.10M ops/s');
    expect(byId('tile-ping-pong-progress').textContent).toContain('run 2: 4.20M ops/s · p50 0.21 µs');
    expect((byId('tile-ping-pong-run') as HTMLButtonElement).disabled).toBe(true);
    // Still never run: no rate yet.
    expect(screen.queryByTestId('tile-ping-pong-rate')).toBeNull();
  });

  it('lists the last five runs of a long run', () => {
    const progress = Array.from({ length: 8 }, (_, i) => ({ index: i, ops_per_sec: (i + 1) * 1e6 }));
    const run: RunState = { phase: 'running', id: 3, since: 0, progress };
    render(<Tile scenario={pingPong} results={[]} run={run} stale={false} onRun={noop} />);
    const items = byId('tile-ping-pong-progress').querySelectorAll('li');
    expect([...items].map((li) => li.textContent)).toEqual([
      '3 earlier runs',
      'run 4: 4.00M ops/s',
      'run 5: 5.00M ops/s',
      'run 6: 6.00M ops/s',
      'run 7: 7.00M ops/s',
      'run 8: 8.00M ops/s',
    ]);
  });

  it('enables Run again when the feed lost a run', () => {
    const run: RunState = { phase: 'running', id: 3, since: 0, progress: [], uncertain: true };
    render(<Tile scenario={pingPong} results={[]} run={run} stale={true} onRun={noop} />);
    expect(byId('tile-ping-pong-state').textContent).toBe('unknown (feed lost during a run)');
    expect(byId('tile-ping-pong').dataset.state).toBe('unknown');
    expect((byId('tile-ping-pong-run') as HTMLButtonElement).disabled).toBe(false);
    expect(byId('tile-ping-pong').className).toContain('stale');
  });

  it('shows an error on the tile, with the last result still there', () => {
    const run: RunState = { phase: 'error', id: 4, since: 0, progress: [], error: 'ping-pong is already running' };
    render(<Tile scenario={pingPong} results={[result({ ops_per_sec: 5 })]} run={run} stale={false} onRun={noop} />);
    expect(byId('tile-ping-pong-state').textContent).toBe('error');
    expect(byId('tile-ping-pong-error').textContent).toBe('ping-pong is already running');
    expect(byId('tile-ping-pong-rate').textContent).toBe('5.0 ops/s');
  });

  it('runs with the default N or the N typed, and refuses a bad N', () => {
    const onRun = vi.fn();
    render(<Tile scenario={pingPong} results={[]} run={undefined} stale={false} onRun={onRun} />);
    fireEvent.click(byId('tile-ping-pong-run'));
    expect(onRun).toHaveBeenLastCalledWith('ping-pong', undefined);
    fireEvent.change(byId('tile-ping-pong-n'), { target: { value: '10,000' } });
    fireEvent.click(byId('tile-ping-pong-run'));
    expect(onRun).toHaveBeenLastCalledWith('ping-pong', 10000);
    fireEvent.change(byId('tile-ping-pong-n'), { target: { value: '-3' } });
    fireEvent.click(byId('tile-ping-pong-run'));
    expect(onRun).toHaveBeenCalledTimes(2);
    expect(byId('tile-ping-pong').textContent).toContain('N must be a positive whole number');
    expect(screen.getByRole('button', { name: 'Run ping-pong' })).toBeTruthy();
  });
});

describe('parseN', () => {
  it('accepts positive integers with separators, nothing else', () => {
    expect(parseN('')).toBeUndefined();
    expect(parseN(' 1_000 ')).toBe(1000);
    expect(parseN('0')).toBeNull();
    expect(parseN('1.5')).toBeNull();
    expect(parseN('1e6')).toBeNull();
    expect(parseN('99999999999999999999')).toBeNull();
  });
});
