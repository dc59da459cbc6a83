/**
 * A tiny dependency-free SVG line plot: one or more series over a shared x axis, with axes,
 * min/max tick labels and a legend. Enough for training curves and benchmark sweeps.
 */

export interface Series {
  label: string;
  /** Points in data units; NaN/Infinity points are skipped. */
  x: ArrayLike<number>;
  y: ArrayLike<number>;
  /** CSS colour; a palette colour when omitted. */
  color?: string;
}

export interface PlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Pixels, default 640 x 360. */
  width?: number;
  height?: number;
  /** Plot y on a log10 scale (non-positive values are skipped). Default false. */
  logY?: boolean;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
const MARGIN = { left: 64, right: 16, top: 32, bottom: 44 };

/** Renders the series as a standalone SVG document. */
export function linePlot(series: Series[], opts: PlotOptions = {}): string {
  const W = opts.width ?? 640, H = opts.height ?? 360;
  const fy = opts.logY ? (v: number) => (v > 0 ? Math.log10(v) : NaN) : (v: number) => v;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of series)
    for (let i = 0; i < s.x.length; i++) {
      const x = s.x[i], y = fy(s.y[i]);
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      (x0 = Math.min(x0, x)), (x1 = Math.max(x1, x)), (y0 = Math.min(y0, y)), (y1 = Math.max(y1, y));
    }
  if (!(x1 >= x0)) (x0 = 0), (x1 = 1), (y0 = 0), (y1 = 1); // no finite point: draw empty axes
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) (y0 -= 0.5), (y1 += 0.5);
  const pw = W - MARGIN.left - MARGIN.right, ph = H - MARGIN.top - MARGIN.bottom;
  const px = (x: number) => MARGIN.left + ((x - x0) / (x1 - x0)) * pw;
  const py = (y: number) => MARGIN.top + (1 - (y - y0) / (y1 - y0)) * ph;
  const tick = (v: number) => fmt(opts.logY ? 10 ** v : v);

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
    text(MARGIN.left - 4, MARGIN.top + 4, tick(y1), 'end'),
    text(MARGIN.left - 4, MARGIN.top + ph, tick(y0), 'end'),
    text(MARGIN.left, H - MARGIN.bottom + 14, fmt(x0), 'start'),
    text(W - MARGIN.right, H - MARGIN.bottom + 14, fmt(x1), 'end'),
  ];
  if (opts.title) out.push(text(W / 2, 20, opts.title, 'middle', 13));
  if (opts.xLabel) out.push(text(MARGIN.left + pw / 2, H - 8, opts.xLabel, 'middle'));
  if (opts.yLabel) out.push(`<text transform="translate(14 ${MARGIN.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  series.forEach((s, k) => {
    const color = s.color ?? PALETTE[k % PALETTE.length];
    const pts: string[] = [];
    for (let i = 0; i < s.x.length; i++) {
      const y = fy(s.y[i]);
      if (Number.isFinite(s.x[i]) && Number.isFinite(y)) pts.push(`${px(s.x[i]).toFixed(1)},${py(y).toFixed(1)}`);
    }
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.join(' ')}"/>`);
    const ly = MARGIN.top + 14 + 14 * k;
    out.push(`<line x1="${W - MARGIN.right - 110}" y1="${ly - 4}" x2="${W - MARGIN.right - 94}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`);
    out.push(text(W - MARGIN.right - 90, ly, s.label, 'start'));
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function text(x: number, y: number, s: string, anchor: 'start' | 'middle' | 'end', size?: number): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" text-anchor="${anchor}"${size ? ` font-size="${size}"` : ''}>${esc(s)}</text>`;
}

function fmt(v: number): string {
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(2) : String(+v.toPrecision(4));
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
