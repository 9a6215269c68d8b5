// Number formatting. Rates follow the units of `rusm bench`'s text output
// (k / M / G) so the page and the CLI read alike. Absent or non-finite
// figures print as an em dash, never as zero.

export const NONE = '—';

function finite(v: number | null | undefined): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** 4358817.9 -> "4.36M", 43210 -> "43.2k", 812 -> "812", 2.5 -> "2.5". */
export function formatRate(v: number | null | undefined): string {
  if (!finite(v)) return NONE;
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  if (a >= 10 || a === 0) return v.toFixed(0);
  return v.toFixed(1);
}

/** Microseconds: 0.22 -> "0.22 µs", 56.3 -> "56.3 µs", 5600 -> "5.60 ms". */
export function formatMicros(us: number | null | undefined): string {
  if (!finite(us)) return NONE;
  const a = Math.abs(us);
  if (a >= 1e6) return `${(us / 1e6).toFixed(2)} s`;
  if (a >= 1e3) return `${(us / 1e3).toFixed(2)} ms`;
  if (a >= 100) return `${us.toFixed(0)} µs`;
  if (a >= 10) return `${us.toFixed(1)} µs`;
  return `${us.toFixed(2)} µs`;
}

/** Bytes in binary units: 432.4 -> "432 B", 8448 -> "8.25 KiB". */
export function formatBytes(b: number | null | undefined): string {
  if (!finite(b)) return NONE;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = b;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${Math.abs(v) < 10 && v !== Math.round(v) ? v.toFixed(1) : v.toFixed(0)} B`;
  return `${v.toFixed(Math.abs(v) < 10 ? 2 : 1)} ${units[i]}`;
}

/** rusm / baseline: 45.36 -> "45.4×", 1.234 -> "1.23×", 0.0312 -> "0.031×". */
export function formatRatio(r: number | null | undefined): string {
  if (!finite(r)) return NONE;
  const a = Math.abs(r);
  if (a >= 100) return `${r.toFixed(0)}×`;
  if (a >= 10) return `${r.toFixed(1)}×`;
  if (a >= 1) return `${r.toFixed(2)}×`;
  if (a === 0) return '0×';
  return `${r.toPrecision(2)}×`;
}

/** Whole numbers with thousands separators: 1234567 -> "1,234,567". */
export function formatCount(n: number | null | undefined): string {
  if (!finite(n)) return NONE;
  return Math.round(n).toLocaleString('en-US');
}

/** 0..1 -> "37%". */
export function formatPercent(u: number | null | undefined): string {
  if (!finite(u)) return NONE;
  return `${Math.round(u * 100)}%`;
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** Milliseconds since the epoch -> local "HH:MM:SS". */
export function formatClock(ms: number | null | undefined): string {
  if (!finite(ms)) return NONE;
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Milliseconds since the epoch -> local "YYYY-MM-DD HH:MM:SS". */
export function formatDateTime(ms: number | null | undefined): string {
  if (!finite(ms)) return NONE;
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${formatClock(ms)}`;
}
