import { describe, expect, it } from 'vitest';
import {
  bytesPer,
  parseResults,
  parseRunAccepted,
  parseScenarios,
  parseServerMessage,
  type ListWarnings,
} from './protocol';
import { idleMemory, pingPong, wireResult } from './testing/fixtures';

const hello = {
  type: 'hello',
  version: 1,
  node: 0,
  schedulers: 2,
  scenarios: [
    { name: 'ping-pong', summary: 's', kind: 'latency', default_n: 100000, has_baseline: true, memory_per: null },
    { name: 'idle-memory', summary: 's', kind: 'memory', default_n: 1000000, has_baseline: false, memory_per: 'process' },
  ],
};

function parse(v: unknown) {
  return parseServerMessage(JSON.stringify(v));
}

describe('parseServerMessage: good messages', () => {
  it('reads hello with its scenarios', () => {
    const r = parse(hello);
    expect(r.ok).toBe(true);
    if (!r.ok || r.value.type !== 'hello') throw new Error('expected hello');
    expect(r.value.schedulers).toBe(2);
    expect(r.value.scenarios.map((s) => s.name)).toEqual(['ping-pong', 'idle-memory']);
    expect(r.value.scenarios[1].memory_per).toBe('process');
    expect(r.value.scenarios[0].has_baseline).toBe(true);
  });

  it('reads metrics, clamping utilisation into 0..1', () => {
    const r = parse({
      type: 'metrics',
      t: 1000,
      metrics: {
        spawned: 10,
        exited: 4,
        live: 6,
        sent: 100,
        exited_by: { normal: 4 },
        schedulers: 2,
        sched: [{ utilisation: 0.25 }, { utilisation: 1.5 }],
      },
    });
    if (!r.ok || r.value.type !== 'metrics') throw new Error('expected metrics');
    expect(r.value.metrics.live).toBe(6);
    expect(r.value.metrics.sched.map((s) => s.utilisation)).toEqual([0.25, 1]);
  });

  it('reads every bench state', () => {
    const base = { type: 'bench', id: 7, scenario: 'ping-pong' };
    expect(parse({ ...base, state: 'started' })).toMatchObject({ ok: true, value: { state: 'started', id: 7 } });
    const p = parse({ ...base, state: 'progress', run: { index: 1, ops_per_sec: 5e6, p50_us: 0.2, p99_us: 0.3 } });
    expect(p).toMatchObject({ ok: true, value: { run: { index: 1, ops_per_sec: 5e6, p50_us: 0.2 } } });
    const d = parse({ ...base, state: 'done', result: wireResult() });
    if (!d.ok || d.value.type !== 'bench' || d.value.state !== 'done') throw new Error('expected done');
    expect(d.value.result).toMatchObject({ ops_per_sec: 4358817.9, p50_us: 0.22, ratio: 45.3624, id: 7 });
    expect(parse({ ...base, state: 'error', error: 'boom' })).toMatchObject({ ok: true, value: { error: 'boom' } });
  });

  it('collects bytes_per_<unit> fields of a result', () => {
    const d = parse({
      type: 'bench',
      id: 1,
      scenario: 'idle-memory',
      state: 'done',
      result: wireResult({ scenario: 'idle-memory', bytes_per_process: 412.5, mappings: 300 }),
    });
    if (!d.ok || d.value.type !== 'bench' || d.value.state !== 'done') throw new Error('expected done');
    expect(d.value.result.bytes_per).toEqual({ process: 412.5 });
    expect(bytesPer(d.value.result, idleMemory)).toEqual({ unit: 'process', value: 412.5 });
    expect(bytesPer(d.value.result, pingPong)).toEqual({ unit: 'process', value: 412.5 });
  });

  it('reads processes and sup_tree, dropping bad rows only', () => {
    const warn: ListWarnings = { dropped: 0 };
    const r = parseServerMessage(
      JSON.stringify({
        type: 'processes',
        t: 5,
        total: 3,
        processes: [{ pid: '<0.1.0>', reductions: 4, trap_exit: true }, { name: 'no pid' }, 'junk'],
      }),
      warn,
    );
    if (!r.ok || r.value.type !== 'processes') throw new Error('expected processes');
    expect(r.value.processes).toEqual([{ pid: '<0.1.0>', reductions: 4, trap_exit: true }]);
    expect(r.value.total).toBe(3);
    expect(warn.dropped).toBe(2);

    const s = parse({
      type: 'sup_tree',
      t: 5,
      nodes: [
        { pid: '<0.5.1>', parent: null, id: 'root', supervisor: true, strategy: 'one_for_one', restarts: 3, children: 1 },
        { pid: null, parent: '<0.5.1>', id: 'w', supervisor: false, strategy: null, restarts: 0, children: 0 },
      ],
    });
    if (!s.ok || s.value.type !== 'sup_tree') throw new Error('expected sup_tree');
    expect(s.value.nodes[1]).toMatchObject({ pid: null, parent: '<0.5.1>', id: 'w' });
  });

  it('reads a server error', () => {
    expect(parse({ type: 'error', error: 'unknown topic' })).toEqual({
      ok: true,
      value: { type: 'error', error: 'unknown topic' },
    });
  });
});

describe('parseServerMessage: malformed messages', () => {
  const bad: [string, unknown][] = [
    ['not JSON', '{"type":'],
    ['a binary frame', new ArrayBuffer(4)],
    ['an array', '[1,2]'],
    ['no type', '{}'],
    ['an unknown type', '{"type":"bogus"}'],
    ['hello without schedulers', JSON.stringify({ ...hello, schedulers: 'two' })],
    ['hello with scenarios not a list', JSON.stringify({ ...hello, scenarios: {} })],
    ['metrics without t', '{"type":"metrics","metrics":{}}'],
    ['metrics not an object', '{"type":"metrics","t":1,"metrics":[]}'],
    ['bench without id', '{"type":"bench","scenario":"x","state":"started"}'],
    ['bench with an unknown state', '{"type":"bench","id":1,"scenario":"x","state":"paused"}'],
    ['progress without ops_per_sec', '{"type":"bench","id":1,"scenario":"x","state":"progress","run":{"index":0}}'],
    ['done without a result', '{"type":"bench","id":1,"scenario":"x","state":"done"}'],
    [
      'done with a NaN-ish rate',
      JSON.stringify({ type: 'bench', id: 1, scenario: 'ping-pong', state: 'done', result: wireResult({ ops_per_sec: 'fast' }) }),
    ],
    [
      'done carrying another scenario',
      JSON.stringify({ type: 'bench', id: 1, scenario: 'fan-in', state: 'done', result: wireResult() }),
    ],
    ['error state without text', '{"type":"bench","id":1,"scenario":"x","state":"error"}'],
    ['processes without a list', '{"type":"processes","t":1,"total":0}'],
    ['sup_tree with nodes not a list', '{"type":"sup_tree","t":1,"nodes":"x"}'],
  ];
  it.each(bad)('rejects %s', (_what, frame) => {
    const r = parseServerMessage(frame);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toBeTruthy();
  });

  it('never throws, whatever it is given', () => {
    for (const x of [null, undefined, 42, '', 'null', '"str"', '{"type":null}', '{"type":"hello","scenarios":[null]}']) {
      expect(() => parseServerMessage(x)).not.toThrow();
    }
  });

  it('drops a sup node with a non-string pid', () => {
    const warn: ListWarnings = { dropped: 0 };
    const r = parseServerMessage(
      JSON.stringify({ type: 'sup_tree', t: 1, nodes: [{ pid: 5, parent: null, id: 'x' }, { pid: '<0.1.0>', id: 'ok' }] }),
      warn,
    );
    if (!r.ok || r.value.type !== 'sup_tree') throw new Error('expected sup_tree');
    expect(r.value.nodes.map((n) => n.id)).toEqual(['ok']);
    expect(warn.dropped).toBe(1);
  });
});

describe('HTTP bodies', () => {
  it('parses /api/scenarios', () => {
    const r = parseScenarios({ scenarios: hello.scenarios });
    expect(r.ok && r.value.map((s) => s.name)).toEqual(['ping-pong', 'idle-memory']);
    expect(parseScenarios({ scenario: [] }).ok).toBe(false);
    expect(parseScenarios(null).ok).toBe(false);
  });

  it('parses /api/results, keeping order and dropping misfiled results', () => {
    const warn: ListWarnings = { dropped: 0 };
    const r = parseResults(
      {
        results: {
          'ping-pong': [wireResult({ id: 1, ops_per_sec: 1 }), wireResult({ id: 2, ops_per_sec: 2 })],
          'fan-in': [wireResult({ id: 3 })],
        },
      },
      warn,
    );
    if (!r.ok) throw new Error(r.error);
    expect(r.value['ping-pong'].map((x) => x.id)).toEqual([1, 2]);
    expect(r.value['fan-in']).toEqual([]);
    expect(warn.dropped).toBe(1);
    expect(parseResults({ results: [] }).ok).toBe(false);
  });

  it('parses a 202 answer of POST /api/run', () => {
    expect(parseRunAccepted({ accepted: true, id: 7 })).toEqual({ ok: true, value: { id: 7 } });
    expect(parseRunAccepted({ accepted: false }).ok).toBe(false);
  });
});
