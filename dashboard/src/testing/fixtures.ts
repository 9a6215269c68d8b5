// Protocol-shaped objects for tests (figures are arbitrary test inputs).

import type { Process, Result, Scenario, SupNode } from '../protocol';

export const pingPong: Scenario = {
  name: 'ping-pong',
  summary: 'two processes bounce a message',
  kind: 'latency',
  default_n: 100000,
  has_baseline: true,
  memory_per: null,
};
export const idleMemory: Scenario = {
  name: 'idle-memory',
  summary: 'parked processes',
  kind: 'memory',
  default_n: 1000000,
  has_baseline: false,
  memory_per: 'process',
};
export const spawnStorm: Scenario = {
  name: 'spawn-storm',
  summary: 'spawns',
  kind: 'throughput',
  default_n: 200000,
  has_baseline: false,
  memory_per: null,
};

/** A Result as it travels on the wire (before parsing). */
export function wireResult(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    scenario: 'ping-pong',
    n: 1000,
    ops: 1000,
    seconds: 0.00022942,
    ops_per_sec: 4358817.9,
    p50_us: 0.22,
    p99_us: 0.26,
    baseline_ops_per_sec: 96088.7,
    ratio: 45.3624,
    schedulers: 2,
    repeat: 5,
    runs: [{ seconds: 0.000224372, ops_per_sec: 4456884.1 }],
    id: 7,
    finished_at: 1700000000000,
    ...over,
  };
}

export function result(over: Partial<Result> = {}): Result {
  return { scenario: 'ping-pong', ops_per_sec: 1e6, runs: [], bytes_per: {}, ...over };
}

export function proc(pid: string, over: Partial<Process> = {}): Process {
  return { pid, name: '', kind: 'stackless', status: 'waiting', reductions: 0, ...over };
}

export function sup(over: Partial<SupNode> & { id: string }): SupNode {
  return { pid: null, parent: null, supervisor: false, strategy: null, restarts: 0, children: 0, ...over };
}
