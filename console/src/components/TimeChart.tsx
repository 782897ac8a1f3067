/** A time series chart drawn with uPlot on a canvas, sized to its container. */
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';

export const PALETTE = ['#ea580c', '#2563eb', '#059669', '#9333ea', '#db2777', '#64748b'];

export interface ChartSeries {
  label: string;
  values: (number | null)[];
}

interface TimeChartProps {
  /** Bucket starts, in seconds since the epoch. */
  xs: number[];
  series: ChartSeries[];
  /** Draws a single series as bars (otherwise lines). */
  bars?: boolean;
  height?: number;
  label: string;
  format?: (value: number) => string;
}

const AXIS = {
  stroke: '#6b7280',
  grid: { stroke: '#eef0f3', width: 1 },
  ticks: { stroke: '#e5e7eb', width: 1 },
  font: '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
};

export function TimeChart(props: TimeChartProps) {
  const container = useRef<HTMLDivElement>(null);
  const latest = useRef(props);
  latest.current = props;
  // Redrawn when the data changes, not when the parent renders new arrays of the same numbers.
  const signature = JSON.stringify([props.xs, props.series, props.bars, props.height]);

  // biome-ignore lint/correctness/useExhaustiveDependencies: the signature stands for the props' content
  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const { xs, series, bars = false, height = 220, format } = latest.current;
    const fmt = format ?? ((v: number) => String(v));
    const barPaths = uPlot.paths.bars?.({ size: [0.7, 40], gap: 1 });
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height,
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { ...AXIS },
        {
          ...AXIS,
          size: 56,
          values: (_u, splits) => splits.map((v) => fmt(v)),
        },
      ],
      series: [
        {},
        ...series.map((s, i) => {
          const color = PALETTE[i % PALETTE.length] ?? '#ea580c';
          return {
            label: s.label,
            stroke: color,
            width: bars ? 0 : 2,
            fill: bars ? `${color}cc` : `${color}14`,
            points: { show: !bars && xs.length <= 48, size: 4, fill: color },
            value: (_u: uPlot, v: number | null) => (v === null ? '—' : fmt(v)),
            ...(bars && barPaths ? { paths: barPaths } : {}),
          };
        }),
      ],
    };
    const plot = new uPlot(options, [xs, ...series.map((s) => s.values)], element);
    const observer = new ResizeObserver(() => {
      const width = Math.max(element.clientWidth, 200);
      if (width !== plot.width) plot.setSize({ width, height });
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      plot.destroy();
    };
  }, [signature]);

  return <div ref={container} className="chart" role="img" aria-label={props.label} />;
}
