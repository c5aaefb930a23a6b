// What the dashboard (app.js) and the customer portal (portal.js) share: building elements,
// showing exact money, tables with CSV export, a bar chart. No third-party code.
'use strict';

// An element: el('td', {class: 'num', 'data-nanos': 5}, 'text', child, ...). Attributes are set
// with setAttribute and text with text nodes: nothing from the API is ever parsed as HTML.
function el(tag, attrs, ...children) {
  const node = document.createElementNS(
    tag === 'svg' || el.svgTags.has(tag) ? 'http://www.w3.org/2000/svg' : 'http://www.w3.org/1999/xhtml', tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
el.svgTags = new Set(['rect', 'text', 'line', 'g', 'title', 'polyline', 'circle']);

// nano-USD (an integer) as exact dollars: 8135400000 -> "$8.1354", 49000000000 -> "$49.00".
// Exact up to 2^53 nano-USD ($9 million) per figure; null (not known) shows as "—".
function usd(nanos) {
  if (nanos === null || nanos === undefined) return '—';
  const negative = nanos < 0;
  const n = Math.abs(nanos);
  const whole = Math.floor(n / 1e9);
  let frac = String(n - whole * 1e9).padStart(9, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  return (negative ? '-$' : '$') + whole.toLocaleString('en-US') + '.' + frac;
}

function count(n) { return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'); }

// margin in parts per million -> "27.8%".
function percentPpm(ppm) { return ppm === null || ppm === undefined ? '—' : (ppm / 10000).toFixed(1) + '%'; }

// A UTC date (YYYY-MM-DD) as Unix nanoseconds, in a string: exact (nanoseconds pass 2^53).
function dateNs(date) {
  const [y, m, d] = date.split('-').map(Number);
  return (BigInt(Date.UTC(y, m - 1, d)) * 1000000n).toString();
}

// Unix nanoseconds (a JSON number: precise to ~a microsecond) as "2026-11-30 14:05 UTC".
function nsText(ns) {
  if (!ns) return '—';
  return new Date(Number(ns) / 1e6).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

// A table with a CSV button. columns: [{key, label, num, money, render(row) -> text|Node, csv(row)}].
// A money column shows usd() and carries the exact nano-USD in data-nanos; every cell has
// data-col, and every row data-key = row[keyOf], so that tests and scripts read the figures.
function table(title, columns, rows, options = {}) {
  const head = el('tr', {}, columns.map((c) => el('th', {class: c.num || c.money ? 'num' : null}, c.label)));
  const body = rows.map((row) => el('tr', {
    'data-key': options.keyOf ? row[options.keyOf] : null,
    class: options.onRow ? 'clickable' : null,
    onclick: options.onRow ? () => options.onRow(row) : null,
  }, columns.map((c) => {
    const value = row[c.key];
    const shown = c.render ? c.render(row) : c.money ? usd(value) : c.num ? count(value) : (value ?? '—');
    return el('td', {class: c.num || c.money ? 'num' : null, 'data-col': c.key,
                     'data-nanos': c.money && value !== null && value !== undefined ? value : null}, shown);
  })));
  const csv = () => {
    // A text a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading
    // apostrophe; numbers stay numbers. Quotes, commas and line breaks are quoted.
    const quote = (v) => {
      let s = v === null || v === undefined ? '' : String(v);
      if (typeof v !== 'number' && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
      return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    const lines = [columns.map((c) => quote(c.money ? c.label + ' (nano-USD)' : c.label)).join(',')];
    for (const row of rows) lines.push(columns.map((c) => quote(c.csv ? c.csv(row) : row[c.key])).join(','));
    const link = el('a', {href: URL.createObjectURL(new Blob([lines.join('\n') + '\n'], {type: 'text/csv'})),
                          download: (options.file || title.toLowerCase().replace(/[^a-z0-9]+/g, '-')) + '.csv'});
    document.body.append(link);
    link.click();
    link.remove();
  };
  return el('div', {class: 'panel', 'data-table': options.id || null},
    el('h3', {}, title, el('button', {type: 'button', class: 'small', onclick: csv}, 'CSV')),
    rows.length ? el('table', {}, el('thead', {}, head), el('tbody', {}, body)) : el('p', {class: 'empty'}, options.empty || 'Nothing in this range.'));
}

// A bar chart of one or two series over labelled buckets: [{label, a, b}], values in nano-USD.
function barChart(points, names) {
  const width = 900, height = 220, pad = 40, bottom = 30;
  const max = Math.max(1, ...points.map((p) => Math.max(p.a || 0, p.b || 0)));
  const slot = (width - pad) / Math.max(1, points.length);
  const twoSeries = points.some((p) => p.b !== undefined && p.b !== null);
  const barWidth = Math.max(1, (twoSeries ? slot / 2 : slot) - 2);
  const y = (v) => height - bottom - (v / max) * (height - bottom - 10);
  const svg = el('svg', {class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img'});
  svg.append(el('text', {x: 0, y: 12}, usd(max)), el('line', {x1: pad, x2: width, y1: y(0), y2: y(0), stroke: '#ccc'}));
  points.forEach((p, i) => {
    const x = pad + i * slot;
    svg.append(el('rect', {class: 'bar', x, y: y(p.a || 0), width: barWidth, height: Math.max(0, y(0) - y(p.a || 0))},
                  el('title', {}, `${p.label}: ${names[0]} ${usd(p.a || 0)}`)));
    if (twoSeries) {
      svg.append(el('rect', {class: 'bar2', x: x + barWidth + 1, y: y(p.b || 0), width: barWidth, height: Math.max(0, y(0) - y(p.b || 0))},
                    el('title', {}, `${p.label}: ${names[1]} ${usd(p.b || 0)}`)));
    }
    if (points.length <= 16 || i % Math.ceil(points.length / 16) === 0) {
      svg.append(el('text', {x, y: height - 12}, p.label));
    }
  });
  return el('div', {class: 'panel'}, el('div', {class: 'legend'},
    el('span', {}, el('span', {class: 'sw a'}), names[0]), twoSeries ? el('span', {}, el('span', {class: 'sw b'}), names[1]) : null), svg);
}

function card(label, value, attrs = {}) {
  return el('div', {class: 'card', ...attrs}, el('div', {class: 'label'}, label), el('div', {class: 'value'}, value));
}

// A failed API call: its HTTP status and the API's own message.
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function fetchJson(path, init = {}) {
  const response = await fetch(path, {credentials: 'same-origin', ...init,
                                      headers: {'content-type': 'application/json', ...(init.headers || {})}});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, (body.error && body.error.message) || response.statusText);
  return body;
}
