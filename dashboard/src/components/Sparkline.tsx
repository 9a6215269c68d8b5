// A small SVG line of a series (oldest first), scaled to its own range.

export interface SparklineProps {
  values: number[];
  width?: number;
  height?: number;
  label: string;
}

export function sparkPoints(values: number[], width: number, height: number, pad = 2): string {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return '';
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  const span = hi - lo;
  const w = width - 2 * pad;
  const h = height - 2 * pad;
  const step = finite.length > 1 ? w / (finite.length - 1) : 0;
  return finite
    .map((v, i) => {
      const x = pad + (finite.length > 1 ? i * step : w / 2);
      // A flat series sits in the middle rather than on an edge.
      const y = pad + (span > 0 ? h - ((v - lo) / span) * h : h / 2);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}

export function Sparkline({ values, width = 160, height = 32, label }: SparklineProps) {
  const points = sparkPoints(values, width, height);
  if (points === '') return null;
  const last = points.split(' ').at(-1)!.split(',');
  return (
    <svg
      className="sparkline"
      width={width}
      height={height}
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={label}
      data-points={values.length}
    >
      <title>{label}</title>
      {values.length > 1 && <polyline points={points} fill="none" />}
      <circle cx={last[0]} cy={last[1]} r={2.5} />
    </svg>
  );
}
