// Charts of the report: a Vega-Lite spec is compiled to Vega, rendered to SVG headless (vega's 'none' renderer
// needs no canvas) and rasterised to PNG by resvg (prebuilt binary from npm). Every chart is also written as data
// (CSV + JSON) so a reader can re-plot or check it.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { logger } from '../util/log.js';

const log = logger('report.charts');
let warnedFonts = false;

export type Datum = Record<string, string | number | null>;

export interface ChartFiles {
  name: string;
  svg: string;
  png: string;
  csv: string;
  json: string;
}

/** Font folders resvg may read (it has no built-in font: without one, text silently disappears). */
const FONT_DIRS = ['/usr/share/fonts', '/usr/local/share/fonts', '/Library/Fonts', 'C:\\Windows\\Fonts'];

export function fontDirs(): string[] {
  const extra = process.env['GEMS_REPORT_FONT_DIR'];
  return [...(extra ? [extra] : []), ...FONT_DIRS].filter((d) => existsSync(d));
}

function csvCell(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(rows: Datum[]): string {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return [cols.join(','), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(','))].join('\n') + '\n';
}

/** Renders a Vega-Lite spec (without data) over `rows`; returns the SVG text. */
export async function renderSvg(spec: Omit<vl.TopLevelSpec, 'data'>, rows: Datum[]): Promise<string> {
  const full = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    background: 'white',
    // Without a canvas vega estimates text as 0.8 em per character (wider than real), so allow long labels.
    config: { font: 'DejaVu Sans, Liberation Sans, Arial, sans-serif', view: { stroke: null }, axis: { labelLimit: 420 }, legend: { labelLimit: 420 } },
    ...spec,
    data: { values: rows },
  } as vl.TopLevelSpec;
  const compiled = vl.compile(full).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** SVG → PNG at 2× (readable on high-DPI screens and in Markdown previews). */
export function svgToPng(svg: string): Buffer {
  if (!warnedFonts && fontDirs().length === 0) {
    warnedFonts = true;
    log.warn('no font folder found: PNG charts will have no text (install fonts-dejavu-core or set GEMS_REPORT_FONT_DIR); the SVGs are fine');
  }
  const r = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: 2 },
    background: 'white',
    font: { loadSystemFonts: true, fontDirs: fontDirs(), defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' },
  });
  return r.render().asPng();
}

/** Writes <dir>/<name>.{svg,png,csv,json}; the JSON holds the rows and the Vega-Lite spec. */
export async function writeChart(dir: string, name: string, spec: Omit<vl.TopLevelSpec, 'data'>, rows: Datum[]): Promise<ChartFiles> {
  if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`chart name '${name}' must be lower-case letters, digits and dashes`);
  mkdirSync(dir, { recursive: true });
  const svg = await renderSvg(spec, rows);
  const files: ChartFiles = { name, svg: join(dir, `${name}.svg`), png: join(dir, `${name}.png`), csv: join(dir, `${name}.csv`), json: join(dir, `${name}.json`) };
  writeFileSync(files.svg, svg);
  writeFileSync(files.png, svgToPng(svg));
  writeFileSync(files.csv, toCsv(rows));
  writeFileSync(files.json, JSON.stringify({ rows, vegaLite: spec }, null, 2) + '\n');
  return files;
}
