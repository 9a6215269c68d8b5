// The JSON API (same origin as the page).

import {
  errorText,
  parseResults,
  parseRunAccepted,
  parseScenarios,
  parseServerMessage,
  type Parsed,
  type ProcessesMsg,
  type Result,
  type Scenario,
  type SupTreeMsg,
} from './protocol';

type Fetch = typeof fetch;

async function getJson(f: Fetch, path: string): Promise<Parsed<unknown>> {
  let res: Response;
  try {
    res = await f(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  } catch (e) {
    return { ok: false, error: `${path}: ${e instanceof Error ? e.message : String(e)}` };
  }
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    // Not JSON: reported below.
  }
  if (!res.ok) return { ok: false, error: `${path}: ${errorText(body) ?? `HTTP ${res.status}`}` };
  if (body === null) return { ok: false, error: `${path}: not JSON` };
  return { ok: true, value: body };
}

function then<A, B>(p: Parsed<A>, f: (a: A) => Parsed<B>): Parsed<B> {
  return p.ok ? f(p.value) : p;
}

export async function fetchScenarios(f: Fetch = fetch): Promise<Parsed<Scenario[]>> {
  return then(await getJson(f, '/api/scenarios'), (v) => parseScenarios(v));
}

export async function fetchResults(f: Fetch = fetch): Promise<Parsed<Record<string, Result[]>>> {
  return then(await getJson(f, '/api/results'), (v) => parseResults(v));
}

export async function fetchProcesses(f: Fetch = fetch): Promise<Parsed<ProcessesMsg>> {
  return then(await getJson(f, '/api/processes'), (v) => {
    const m = parseServerMessage(JSON.stringify(v));
    return m.ok && m.value.type === 'processes' ? { ok: true, value: m.value } : { ok: false, error: 'bad processes' };
  });
}

export async function fetchSupTree(f: Fetch = fetch): Promise<Parsed<SupTreeMsg>> {
  return then(await getJson(f, '/api/sup-tree'), (v) => {
    const m = parseServerMessage(JSON.stringify(v));
    return m.ok && m.value.type === 'sup_tree' ? { ok: true, value: m.value } : { ok: false, error: 'bad sup_tree' };
  });
}

/** POST /api/run: the run id when accepted (202), else the server's reason. */
export async function postRun(
  scenario: string,
  n: number | undefined,
  f: Fetch = fetch,
): Promise<Parsed<{ id: number | null }>> {
  const body: Record<string, unknown> = { scenario };
  if (n !== undefined) body.n = n;
  let res: Response;
  try {
    res = await f('/api/run', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, error: `cannot reach the server (${e instanceof Error ? e.message : String(e)})` };
  }
  let json: unknown = null;
  try {
    json = await res.json();
  } catch {
    // Reported below.
  }
  if (res.status === 202 || res.ok) {
    const a = parseRunAccepted(json);
    return a.ok ? a : { ok: true, value: { id: null } };
  }
  const why = errorText(json);
  if (res.status === 409) return { ok: false, error: why ?? 'already running' };
  if (res.status === 404) return { ok: false, error: why ?? 'unknown scenario' };
  return { ok: false, error: why ?? `HTTP ${res.status}` };
}
