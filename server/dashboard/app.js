// The operator's dashboard (docs/dashboard.md). Every figure comes from paygentd's JSON API, called
// with the session cookie that sign-in set; nothing is computed here but sums of the API's exact
// integers and their display. The location's hash is the state: #view?from=YYYY-MM-DD&to=...&by=day.
'use strict';

const views = {
  overview: {title: 'Overview', render: overview},
  users: {title: 'Users & customers', render: users},
  models: {title: 'Models & providers', render: models},
  agents: {title: 'Agents', render: agents},
  billing: {title: 'Billing', render: billing},
  plans: {title: 'Plans', render: plans},
  alerts: {title: 'Alerts & forecast', render: alerts},
};

// ---- state in the URL ----

function utcToday() { return new Date().toISOString().slice(0, 10); }
function monthStart(date, add = 0) {
  const [y, m] = date.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1 + add, 1)).toISOString().slice(0, 10);
}

function state() {
  const [name, query] = location.hash.slice(1).split('?');
  const params = new URLSearchParams(query || '');
  const today = utcToday();
  return {
    view: views[name] ? name : 'overview',
    from: params.get('from') || monthStart(today),
    to: params.get('to') || monthStart(today, 1),
    by: ['day', 'week', 'month'].includes(params.get('by')) ? params.get('by') : 'day',
    user: params.get('user') || '',
    customer: params.get('customer') || '',
    tag: params.get('tag') || '',
  };
}

function link(s, changes = {}) {
  const next = {...s, ...changes};
  const params = new URLSearchParams({from: next.from, to: next.to, by: next.by});
  if (next.user) params.set('user', next.user);
  if (next.customer) params.set('customer', next.customer);
  if (next.tag) params.set('tag', next.tag);
  return '#' + next.view + '?' + params.toString();
}

function range(s) { return `from_ns=${dateNs(s.from)}&to_ns=${dateNs(s.to)}`; }

// ---- the API, signed in by cookie ----

async function api(path, init) {
  try {
    return await fetchJson(path, init);
  } catch (e) {
    // The cookie expires with the session, so the browser may no longer send one: say what happened.
    if (e instanceof ApiError && e.status === 401 && !path.endsWith('/dashboard/session')) {
      showSignIn('Your session has expired or was signed out: sign in again.');
    }
    throw e;
  }
}

function showSignIn(message) {
  document.getElementById('sign-in').hidden = false;
  for (const id of ['nav', 'controls', 'sign-out']) document.getElementById(id).hidden = true;
  document.getElementById('view').replaceChildren();
  document.getElementById('who').textContent = '';
  document.getElementById('sign-in-error').textContent = message || '';
  document.body.dataset.signedIn = 'false';
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById('api-key');
  try {
    await fetchJson('/api/v1/dashboard/session', {method: 'POST', body: JSON.stringify({api_key: input.value})});
    input.value = '';
    document.getElementById('sign-in-error').textContent = '';
    await start();
  } catch (e) {
    document.getElementById('sign-in-error').textContent = e.message;
  }
}

async function signOut() {
  await fetchJson('/api/v1/dashboard/session', {method: 'DELETE'}).catch(() => {});
  showSignIn('Signed out.');
}

// ---- views ----

// The bucket of a day row ("2026-11-03") for `by`: the day, its ISO week's Monday, or its month.
function bucketOf(day, by) {
  if (by === 'month') return day.slice(0, 7);
  if (by === 'week') {
    const d = new Date(day + 'T00:00:00Z');
    d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    return 'week of ' + d.toISOString().slice(0, 10);
  }
  return day;
}

// With a tag key in the controls: cost, revenue, profit and margin grouped by that meta tag's
// value over the range (read from the events, not a rollup), or nothing.
async function tagTable(s) {
  if (!s.tag) return [];
  const byTag = await api(`/api/v1/reports/profit?${range(s)}&by=${encodeURIComponent('tag:' + s.tag)}`);
  return [table(`Profit by tag "${s.tag}"`, [
    {key: 'key', label: s.tag, render: (r) => r.key === '' ? el('em', {}, `(no ${s.tag})`) : r.key,
     csv: (r) => r.key},
    {key: 'cost_nanos', label: 'Cost', money: true},
    {key: 'revenue_nanos', label: 'Revenue', money: true},
    {key: 'profit_nanos', label: 'Profit', money: true},
    {key: 'margin_ppm', label: 'Margin', render: (r) => percentPpm(r.margin_ppm)},
    {key: 'events', label: 'Events', num: true},
  ], byTag.rows, {id: 'by-tag', keyOf: 'key', empty: `No event in this range.`})];
}

async function overview(s) {
  const [usage, profit, byTag] = await Promise.all([
    api(`/api/v1/reports/usage?${range(s)}&group_by=day`),
    api(`/api/v1/reports/profit?${range(s)}&by=day`),
    tagTable(s),
  ]);
  const buckets = new Map();
  const bucket = (day) => {
    const key = bucketOf(day, s.by);
    if (!buckets.has(key)) buckets.set(key, {key, calls: 0, input_tokens: 0, output_tokens: 0, spend_nanos: 0, revenue_nanos: null, profit_nanos: null});
    return buckets.get(key);
  };
  let spend = 0, calls = 0;
  for (const r of usage.rows) {
    const b = bucket(r.key);
    b.calls += r.calls; b.input_tokens += r.input_tokens; b.output_tokens += r.output_tokens; b.spend_nanos += r.cost_nanos;
    spend += r.cost_nanos; calls += r.calls;
  }
  for (const r of profit.rows) {
    const b = bucket(r.key);
    if (r.revenue_nanos !== null) b.revenue_nanos = (b.revenue_nanos || 0) + r.revenue_nanos;
    if (r.profit_nanos !== null) b.profit_nanos = (b.profit_nanos || 0) + r.profit_nanos;
  }
  const rows = [...buckets.values()].sort((a, b) => a.key.localeCompare(b.key));
  const t = profit.total || {};
  return [
    el('div', {class: 'cards'},
      card('Spend', usd(spend), {'data-figure': 'spend', 'data-nanos': spend}),
      card('Calls', count(calls), {'data-figure': 'calls'}),
      card('Revenue', usd(t.revenue_nanos), {'data-figure': 'revenue', 'data-nanos': t.revenue_nanos}),
      card('Profit', usd(t.profit_nanos), {'data-figure': 'profit', 'data-nanos': t.profit_nanos}),
      card('Margin', percentPpm(t.margin_ppm), {'data-figure': 'margin'})),
    barChart(rows.map((r) => ({label: r.key, a: r.spend_nanos, b: r.revenue_nanos})), ['spend', 'revenue']),
    table(`Spend and revenue by ${s.by}`, [
      {key: 'key', label: s.by},
      {key: 'calls', label: 'Calls', num: true},
      {key: 'input_tokens', label: 'Input tokens', num: true},
      {key: 'output_tokens', label: 'Output tokens', num: true},
      {key: 'spend_nanos', label: 'Spend', money: true},
      {key: 'revenue_nanos', label: 'Revenue', money: true},
      {key: 'profit_nanos', label: 'Profit', money: true},
    ], rows, {id: 'overview', keyOf: 'key'}),
    ...byTag,
  ];
}

async function users(s) {
  const [usage, forecast, customers] = await Promise.all([
    api(`/api/v1/reports/usage?${range(s)}&group_by=user`),
    api('/api/v1/forecast'),
    api(`/api/v1/reports/profit?${range(s)}&by=customer`),
  ]);
  // A user's forecasts: reaching the cap ("total_spend"), costing more than the plan charges ("plan_price").
  const forecastOf = (limit) => new Map(forecast.forecasts.filter((f) => f.limit === limit).map((f) => [f.user_id, f]));
  const reach = forecastOf('total_spend'), overPrice = forecastOf('plan_price');
  const rows = usage.rows.map((r) => ({...r, forecast: reach.get(r.key), overPrice: overPrice.get(r.key)}))
    .sort((a, b) => b.cost_nanos - a.cost_nanos);
  const parts = [
    table('Top spenders', [
      {key: 'key', label: 'User'},
      {key: 'calls', label: 'Calls', num: true},
      {key: 'input_tokens', label: 'Input tokens', num: true},
      {key: 'output_tokens', label: 'Output tokens', num: true},
      {key: 'cost_nanos', label: 'Spend', money: true},
      {key: 'forecast', label: 'Reaches its cap', render: (r) => r.forecast ? el('span', {class: 'tag bad'}, nsText(r.forecast.predicted_reach_ns)) : '—',
       csv: (r) => r.forecast ? r.forecast.predicted_reach_at : ''},
      {key: 'overPrice', label: 'Costs more than its plan', render: (r) => r.overPrice ? el('span', {class: 'tag bad'}, nsText(r.overPrice.predicted_reach_ns)) : '—',
       csv: (r) => r.overPrice ? r.overPrice.predicted_reach_at : ''},
    ], rows, {id: 'users', keyOf: 'key', onRow: (r) => { location.hash = link(s, {user: r.key}); }}),
    table('Customers: cost, revenue, profit', [
      {key: 'key', label: 'Customer'},
      {key: 'cost_nanos', label: 'Cost', money: true},
      {key: 'revenue_nanos', label: 'Revenue', money: true},
      {key: 'profit_nanos', label: 'Profit', money: true},
      {key: 'margin_ppm', label: 'Margin', render: (r) => percentPpm(r.margin_ppm)},
      {key: 'events', label: 'Events', num: true},
    ], customers.rows, {id: 'customers', keyOf: 'key', onRow: (r) => { location.hash = link(s, {view: 'billing', customer: r.key}); }}),
  ];
  if (s.user) parts.unshift(await userDetail(s.user));
  return parts;
}

// One user's current period: plan, spend against the plan's caps, the soft and hard gates of each
// limit (a hard gate: the first call an application process refused on it), models, sessions.
async function userDetail(user) {
  let u, config;
  try {
    [u, config] = await Promise.all([api(`/api/v1/users/${encodeURIComponent(user)}/usage`), api('/api/v1/config/plans')]);
  } catch (e) {
    return el('div', {class: 'panel error'}, `${user}: ${e.message}`);
  }
  const plan = (config.plans || []).find((p) => p.name === u.plan);
  const cap = plan && plan.max_spend_per_period !== undefined ? Math.round(plan.max_spend_per_period * 1e9) : null;
  const models = Object.entries(u.models).map(([model, m]) => ({model, ...m}));
  const gates = [
    ...(u.hard_gates || []).map((g) => ({...g, gate: 'hard', at: g.fired_ns ? nsText(g.fired_ns) : '—'})),
    ...u.soft_gates.map((g) => ({...g, gate: 'soft', at: ''})),
  ].map((g) => ({...g, threshold: (g.threshold_ppm / 10000) + '%'}));
  return el('div', {'data-user': user},
    el('div', {class: 'cards'},
      card(`${user}: plan`, u.plan || 'none'),
      card('Period', `${nsText(u.period_start_ns).slice(0, 10)} → ${nsText(u.period_end_ns).slice(0, 10)}`),
      card('Spend this period', usd(u.spend_nanos), {'data-figure': 'user-spend', 'data-nanos': u.spend_nanos}),
      card('Of the period cap', cap ? (100 * u.spend_nanos / cap).toFixed(1) + '% of ' + usd(cap) : 'no cap')),
    table(`${user}: gates this period`, [
      {key: 'gate', label: 'Gate'}, {key: 'limit', label: 'Limit'}, {key: 'threshold', label: 'Threshold'},
      {key: 'at', label: 'First refused'},
    ], gates, {id: 'gates', empty: 'No gate has fired this period.'}),
    table(`${user}: models this period`, [
      {key: 'model', label: 'Model'}, {key: 'calls', label: 'Calls', num: true},
      {key: 'input_tokens', label: 'Input tokens', num: true}, {key: 'output_tokens', label: 'Output tokens', num: true},
      {key: 'cost_nanos', label: 'Spend', money: true},
    ], models, {id: 'user-models', keyOf: 'model'}));
}

async function models(s) {
  const [usage, byProvider] = await Promise.all([
    api(`/api/v1/reports/usage?${range(s)}&group_by=model`),
    api(`/api/v1/reports/usage?${range(s)}&group_by=provider`),
  ]);
  const bySpend = (rows) => [...rows].sort((a, b) => b.cost_nanos - a.cost_nanos);
  const rows = bySpend(usage.rows);
  const usageColumns = (label) => [
    {key: 'key', label, render: (r) => r.key || '(none)', csv: (r) => r.key},
    {key: 'calls', label: 'Calls', num: true},
    {key: 'input_tokens', label: 'Input tokens', num: true},
    {key: 'output_tokens', label: 'Output tokens', num: true},
    {key: 'cost_nanos', label: 'Spend', money: true},
  ];
  return [
    barChart(rows.map((r) => ({label: r.key, a: r.cost_nanos})), ['spend']),
    table('Models', usageColumns('Model'), rows, {id: 'models', keyOf: 'key'}),
    table('Providers', usageColumns('Provider'), bySpend(byProvider.rows), {id: 'providers', keyOf: 'key'}),
  ];
}

// "cost-only" and "revenue-only" rows are shown as such, not as a loss or a 100% margin.
function kindTag(r) {
  if (r.revenue_nanos === null) return el('span', {class: 'tag'}, 'cost-only');
  if (r.cost_nanos === null) return el('span', {class: 'tag'}, 'revenue-only');
  return el('span', {class: r.profit_nanos < 0 ? 'tag bad' : 'tag good'}, r.profit_nanos < 0 ? 'loss' : 'profit');
}

async function agents(s) {
  const [byAgent, byIndicator, list, byTag, metrics] = await Promise.all([
    api(`/api/v1/reports/profit?${range(s)}&by=agent`),
    api(`/api/v1/reports/profit?${range(s)}&by=indicator`),
    api('/api/v1/agents'),
    tagTable(s),
    api('/api/v1/billable-metrics'),
  ]);
  const profitColumns = (label) => [
    {key: 'key', label},
    {key: 'kind', label: '', render: kindTag, csv: (r) => kindTag(r).textContent},
    {key: 'cost_nanos', label: 'Cost', money: true},
    {key: 'revenue_nanos', label: 'Revenue', money: true},
    {key: 'profit_nanos', label: 'Profit', money: true},
    {key: 'margin_ppm', label: 'Margin', render: (r) => percentPpm(r.margin_ppm)},
    {key: 'events', label: 'Events', num: true},
  ];
  const indicators = list.agents.flatMap((a) => a.indicators.map((i) => ({
    key: `${a.agentId}/${i.indicator}`, agent: a.agentId, indicator: i.indicator, metric: i.metric || '—',
    pricing: i.perMinute ? `per minute ${i.pricePerMinute ? '$' + i.pricePerMinute : ''}`
             : i.pricing ? i.pricing.model : i.pricePerEvent !== undefined ? `per event $${i.pricePerEvent}` : '—',
  })));
  return [
    ...byTag,
    table('Profit by agent', profitColumns('Agent'), byAgent.rows, {id: 'agents', keyOf: 'key'}),
    table('Profit by indicator', profitColumns('Indicator'),
          byIndicator.rows.map((r) => ({...r, key: r.key || '(costs, which name no indicator)'})), {id: 'indicators', keyOf: 'key'}),
    table('Indicators and their pricing', [
      {key: 'agent', label: 'Agent'}, {key: 'indicator', label: 'Indicator'},
      {key: 'metric', label: 'Billable metric'}, {key: 'pricing', label: 'Pricing'},
    ], indicators, {id: 'pricing', keyOf: 'key', empty: 'No agent is configured yet: add an indicator below.'}),
    indicatorForm(list, metrics.metrics),
  ];
}

// Agents -> indicators -> link a billable metric -> pricing (seed 003's flow): one indicator of one
// agent, created or replaced (the agent's other indicators are kept as they are), with the API's
// validation and its messages. Only the fields of the chosen billing are shown and sent.
function indicatorForm(list, metrics) {
  const field = (label, input, show) => el('label', {'data-show': show || null}, label, input);
  const form = el('form', {class: 'inline', id: 'indicator-form'},
    field('Agent', el('input', {name: 'agent', required: true, list: 'agent-ids', placeholder: 'gpu-agent'})),
    el('datalist', {id: 'agent-ids'}, list.agents.map((a) => el('option', {value: a.agentId}))),
    field('Indicator', el('input', {name: 'indicator', required: true, placeholder: 'inference'})),
    field('Billed', el('select', {name: 'billed'},
      [['pricing', 'by a pricing model'], ['event', 'per event'], ['minute', 'per minute']].map(([v, t]) => el('option', {value: v}, t)))),
    field('Billable metric', el('select', {name: 'metric'}, el('option', {value: ''}, '(none: each event is one unit)'),
      metrics.map((m) => el('option', {value: m.identifier}, m.identifier))), 'pricing'),
    field('Pricing model', el('select', {name: 'model'},
      ['flat', 'volume', 'graduated', 'credits'].map((m) => el('option', {value: m}, m.toUpperCase()))), 'pricing'),
    field('Unit price (USD)', el('input', {name: 'unitPrice', placeholder: '0.50'}), 'flat'),
    field('Tiers: "upTo unitPrice [flatFee]" a line, the last "- unitPrice [flatFee]"',
      el('textarea', {name: 'tiers', rows: 3, placeholder: '100 0.50\n- 0.40 10'}), 'tiers'),
    field('Credits per unit', el('input', {name: 'creditsPerUnit', placeholder: '2'}), 'credits'),
    field('Price (USD)', el('input', {name: 'price', placeholder: '0.15'}), 'event minute'),
    field('Custom per-model rates (USD per minute): "kind model rate" a line',
      el('textarea', {name: 'rates', rows: 2, placeholder: 'stt nova-2 0.05'}), 'minute'),
    el('button', {type: 'submit'}, 'Save indicator'),
    el('p', {class: 'error', id: 'indicator-error', role: 'alert'}));
  const value = (name) => String(form.elements[name].value || '').trim();
  const sync = () => {
    const billed = value('billed'), model = value('model');
    const shown = new Set([billed]);
    if (billed === 'pricing') shown.add(model === 'volume' || model === 'graduated' ? 'tiers' : model);
    for (const label of form.querySelectorAll('label[data-show]')) {
      label.hidden = !label.dataset.show.split(' ').some((k) => shown.has(k));
    }
  };
  form.elements.billed.addEventListener('change', sync);
  form.elements.model.addEventListener('change', sync);
  sync();
  const lines = (text) => text.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => l.split(/\s+/));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = form.querySelector('#indicator-error');
    error.textContent = '';
    const indicator = {indicator: value('indicator')};
    const billed = value('billed');
    if (billed === 'event') {
      indicator.pricePerEvent = value('price');
    } else if (billed === 'minute') {
      indicator.perMinute = true;
      if (value('price')) indicator.pricePerMinute = value('price');
      indicator.customRates = lines(value('rates')).map(([kind, model, pricePerMinute]) => ({kind, model, pricePerMinute}));
    } else {
      if (value('metric')) indicator.metric = value('metric');
      const pricing = {model: value('model')};
      if (pricing.model === 'flat') pricing.unitPrice = value('unitPrice');
      else if (pricing.model === 'credits') pricing.creditsPerUnit = value('creditsPerUnit');
      else {
        pricing.tiers = lines(value('tiers')).map(([upTo, unitPrice, flatFee]) =>
          ({...(upTo === '-' ? {} : {upTo}), unitPrice, ...(flatFee ? {flatFee} : {})}));
      }
      indicator.pricing = pricing;
    }
    const agentId = value('agent');
    const path = `/api/v1/agents/${encodeURIComponent(agentId)}`;
    try {
      let agent = {name: '', indicators: []};
      try {
        agent = await api(path);
      } catch (err) {
        if (err.status !== 404) throw err;
      }
      // The agent's other indicators as the API gave them (without the fields it writes as null).
      const kept = agent.indicators.filter((i) => i.indicator !== indicator.indicator).map((i) =>
        Object.fromEntries(Object.entries(i).filter(([, v]) => v !== null)));
      await api(path, {method: 'PUT', body: JSON.stringify({name: agent.name, indicators: [...kept, indicator]})});
      render();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  return el('div', {class: 'panel'}, el('h3', {}, 'Add or change an indicator'), form);
}

async function billing(s) {
  const [metrics, customers] = await Promise.all([
    api('/api/v1/billable-metrics'),
    api(`/api/v1/reports/profit?${range(s)}&by=customer`),
  ]);
  const parts = [
    table('Billable metrics', [
      {key: 'identifier', label: 'Identifier'}, {key: 'name', label: 'Name'},
      {key: 'aggregation', label: 'Aggregation'},
      {key: 'field', label: 'Field or expression', render: (m) => m.expression || m.field || '—', csv: (m) => m.expression || m.field || ''},
      {key: 'linkedTo', label: 'Linked to', render: (m) => (m.linkedTo || []).join(', ') || '—', csv: (m) => (m.linkedTo || []).join(' ')},
      {key: 'locked', label: 'Counting rules', render: (m) => m.locked ? el('span', {class: 'tag'}, 'locked (linked)') : 'editable',
       csv: (m) => m.locked ? 'locked' : 'editable'},
    ], metrics.metrics, {id: 'metrics', keyOf: 'identifier', empty: 'No billable metric yet: create one below.'}),
    metricForm(),
  ];
  const names = customers.rows.map((r) => r.key);
  const chosen = s.customer || names[0];
  const picker = el('select', {id: 'invoice-customer', onchange: (e) => { location.hash = link(s, {customer: e.target.value}); }},
    names.map((n) => el('option', {value: n, selected: n === chosen}, n)));
  parts.push(el('div', {class: 'panel'}, el('h3', {}, 'Invoice preview for ', picker)));
  if (chosen) parts.push(await invoice(`/api/v1/customers/${encodeURIComponent(chosen)}/invoice?${range(s)}`, chosen));
  if (chosen) parts.push(await wallet(chosen));
  return parts;
}

// A customer's prepaid credit wallet: its balance and top-ups (docs/billing.md, "Credit wallets").
async function wallet(who) {
  let w;
  try {
    w = await api(`/api/v1/customers/${encodeURIComponent(who)}/wallet`);
  } catch (e) {
    const text = e.status === 404 ? `${who} has no credit wallet: CREDITS lines are billed as overage.` : `${who}: ${e.message}`;
    return el('div', {class: 'panel', id: 'wallet'}, el('h3', {}, 'Credit wallet'), el('p', {class: e.status === 404 ? 'empty' : 'error'}, text));
  }
  const x = w.wallet;
  return el('div', {id: 'wallet'},
    el('div', {class: 'cards'},
      card(`Credit balance (${who})`, x.balance, {'data-figure': 'wallet-balance'}),
      card('Credits used', x.used), card('Overage credits', x.overage), card('Credits bought', `${x.granted} for $${x.paidUsd}`)),
    table('Top-ups', [
      {key: 'id', label: 'Top-up'}, {key: 'credits', label: 'Credits', num: true},
      {key: 'paidUsd', label: 'Paid (USD)', num: true}, {key: 'createdAt', label: 'When'},
    ], w.topUps, {id: 'top-ups', keyOf: 'id', empty: 'No top-up.'}));
}

// The invoice of `path` (an invoice URL of the API), as lines and a total.
async function invoice(path, who) {
  let inv;
  try {
    inv = await api(path);
  } catch (e) {
    return el('div', {class: 'panel error'}, `${who}: ${e.message}`);
  }
  const lines = inv.lines.map((l) => ({...l, what: `${l.agent} / ${l.indicator}`, excluded: l.events.excluded, counted: l.events.counted}));
  return el('div', {'data-invoice': inv.customer},
    el('div', {class: 'cards'}, card(`Invoice total (${who})`, usd(inv.total_nanos), {'data-figure': 'invoice-total', 'data-nanos': inv.total_nanos}),
      card('Unbilled events', count(inv.unbilledEvents))),
    table('Invoice lines', [
      {key: 'what', label: 'Agent / indicator'}, {key: 'metric', label: 'Metric'}, {key: 'pricing', label: 'Pricing'},
      {key: 'quantity', label: 'Quantity', num: true, render: (l) => `${l.quantity} ${l.unit}`},
      {key: 'counted', label: 'Events', num: true}, {key: 'excluded', label: 'Excluded', num: true},
      {key: 'creditsUsed', label: 'Credits used', num: true, render: (l) => l.pricing === 'credits' ? l.creditsUsed : '—',
       csv: (l) => l.pricing === 'credits' ? l.creditsUsed : ''},
      {key: 'creditsOverage', label: 'Overage credits', num: true, render: (l) => l.pricing === 'credits' ? l.creditsOverage : '—',
       csv: (l) => l.pricing === 'credits' ? l.creditsOverage : ''},
      {key: 'amount_nanos', label: 'Amount', money: true},
    ], lines, {id: 'invoice', keyOf: 'what'}));
}

// Billable Metrics -> Create metric (seed 003's flow), with the API's validation and its messages.
function metricForm() {
  const field = (label, input) => el('label', {}, label, input);
  const form = el('form', {class: 'inline', id: 'metric-form'},
    field('Name', el('input', {name: 'name', required: true, placeholder: 'GPU compute hours'})),
    field('Identifier (optional)', el('input', {name: 'identifier', placeholder: 'derived from the name'})),
    field('Aggregation', el('select', {name: 'aggregation'}, ['count', 'sum', 'max', 'unique_count', 'latest'].map((a) => el('option', {value: a}, a)))),
    field('Meta-tag field', el('input', {name: 'field', placeholder: 'hours'})),
    field('or expression', el('input', {name: 'expression', placeholder: 'event.properties.tokens * 2'})),
    field('Rounding', el('select', {name: 'rounding'}, ['', 'round', 'ceil', 'floor'].map((a) => el('option', {value: a}, a || 'none')))),
    field('Precision', el('input', {name: 'precision', type: 'number', min: 0, max: 18, value: 0})),
    field('Filter (key=value1,value2)', el('input', {name: 'filter', placeholder: 'region=us-east-1'})),
    el('button', {type: 'submit'}, 'Create metric'),
    el('p', {class: 'error', id: 'metric-error', role: 'alert'}));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = {name: data.get('name'), aggregation: data.get('aggregation')};
    for (const k of ['identifier', 'field', 'expression']) if (data.get(k)) body[k] = data.get(k);
    if (data.get('rounding')) body.rounding = {mode: data.get('rounding'), precision: Number(data.get('precision'))};
    const filter = String(data.get('filter') || '');
    if (filter) {
      const [key, values] = filter.split('=');
      body.filters = [{key, values: (values || '').split(',')}];
    }
    try {
      await api('/api/v1/billable-metrics', {method: 'POST', body: JSON.stringify(body)});
      render();
    } catch (err) {
      form.querySelector('#metric-error').textContent = err.message;
    }
  });
  return el('div', {class: 'panel'}, el('h3', {}, 'Create a billable metric'), form);
}

async function plans() {
  const config = await api('/api/v1/config/plans');
  const rows = (config.plans || []).map((p) => ({
    name: p.name + (p.name === config.default_plan ? ' (default)' : ''),
    period: p.period || 'month',
    // null or absent: unlimited (or, for the price, not said).
    price: p.price != null ? usd(Math.round(p.price * 1e9)) : '—',
    per_period: p.max_spend_per_period != null ? usd(Math.round(p.max_spend_per_period * 1e9)) : '—',
    per_session: p.max_spend_per_session != null ? usd(Math.round(p.max_spend_per_session * 1e9)) : '—',
    models: Object.entries(p.model_limits || {}).map(([m, l]) => `${m}: ${Object.entries(l).map(([k, v]) => `${k} ${v}`).join(', ')}`).join('; ') || '—',
  }));
  return [
    el('div', {class: 'cards'},
      card('Soft gate at', config.soft_gate_at !== undefined ? config.soft_gate_at * 100 + '%' : '—'),
      card('Hard gate at', config.hard_gate_at !== undefined ? config.hard_gate_at * 100 + '%' : '—')),
    table('Plans', [
      {key: 'name', label: 'Plan'}, {key: 'period', label: 'Period'}, {key: 'price', label: 'Price per period'},
      {key: 'per_period', label: 'Max spend per period'}, {key: 'per_session', label: 'Max spend per session'},
      {key: 'models', label: 'Model limits'},
    ], rows, {id: 'plans', empty: 'No plan config (POST /api/v1/config/plans or `paygent plan push`).'}),
    el('div', {class: 'panel'}, el('h3', {}, 'The plan config as stored'), el('pre', {}, JSON.stringify(config, null, 2))),
  ];
}

async function alerts() {
  const [forecast, hooks] = await Promise.all([api('/api/v1/forecast'), api('/api/v1/webhooks')]);
  const parts = [
    table('Forecast: users predicted to reach a cap, or to cost more than their plan, this period', [
      {key: 'user_id', label: 'User'},
      {key: 'limit', label: 'Limit', render: (f) => f.limit === 'plan_price' ? 'plan price' : f.limit, csv: (f) => f.limit},
      {key: 'spend_nanos', label: 'Spent', money: true}, {key: 'cap_nanos', label: 'Cap or price', money: true},
      {key: 'predicted_reach_at', label: 'Predicted to reach it'},
    ], forecast.forecasts, {id: 'forecast', keyOf: 'user_id', empty: `No user is on course to reach a cap (${forecast.users_scanned} scanned).`}),
    table('Webhooks', [
      {key: 'id', label: 'Id'}, {key: 'url', label: 'URL'},
      {key: 'events', label: 'Alerts', render: (w) => (w.events || []).join(', '), csv: (w) => (w.events || []).join(' ')},
    ], hooks.webhooks, {id: 'webhooks', keyOf: 'id', empty: 'No webhook (POST /api/v1/webhooks).'}),
  ];
  for (const w of hooks.webhooks) {
    const log = await api(`/api/v1/webhooks/${encodeURIComponent(w.id)}/deliveries`);
    parts.push(table(`Deliveries to ${w.url}`, [
      {key: 'delivery_id', label: 'Delivery'}, {key: 'type', label: 'Alert'}, {key: 'status', label: 'Status'},
      {key: 'attempts', label: 'Attempts', num: true}, {key: 'last_http_status', label: 'Last HTTP status'},
      {key: 'created_ns', label: 'Raised', render: (d) => nsText(d.created_ns)}, {key: 'last_error', label: 'Last error'},
    ], log.deliveries, {id: 'deliveries', keyOf: 'delivery_id', empty: 'Nothing delivered yet.'}));
  }
  return parts;
}

// ---- the frame ----

let renderCount = 0;

async function render() {
  const s = state();
  const mine = ++renderCount;
  const main = document.getElementById('view');
  document.body.dataset.view = s.view;
  delete main.dataset.ready;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('current', a.dataset.view === s.view);
  document.getElementById('from').value = s.from;
  document.getElementById('to').value = s.to;
  document.getElementById('by').value = s.by;
  document.getElementById('tag').value = s.tag;
  let parts;
  try {
    parts = await views[s.view].render(s);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    parts = [el('p', {class: 'error'}, e.message)];
  }
  if (mine !== renderCount) return;  // a newer render started meanwhile
  main.replaceChildren(el('h2', {}, views[s.view].title), ...parts);
  main.dataset.ready = s.view;
}

async function start() {
  let session;
  try {
    session = await fetchJson('/api/v1/dashboard/session');
  } catch (e) {
    showSignIn(e.status === 401 ? '' : e.message);
    return;
  }
  document.body.dataset.signedIn = 'true';
  document.getElementById('sign-in').hidden = true;
  for (const id of ['nav', 'controls', 'sign-out']) document.getElementById(id).hidden = false;
  document.getElementById('who').textContent =
    session.product_id + (session.expires_at ? ` · session until ${session.expires_at.slice(0, 16).replace('T', ' ')} UTC` : '');
  await render();
}

function setUp() {
  const nav = document.getElementById('nav');
  for (const [name, v] of Object.entries(views)) {
    nav.append(el('a', {href: '#' + name, 'data-view': name, onclick: (e) => {
      e.preventDefault();
      location.hash = link(state(), {view: name, user: '', customer: ''});
    }}, v.title));
  }
  document.getElementById('controls').addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = link(state(), {from: document.getElementById('from').value, to: document.getElementById('to').value,
                                   by: document.getElementById('by').value, tag: document.getElementById('tag').value.trim()});
  });
  document.getElementById('sign-in-form').addEventListener('submit', signIn);
  document.getElementById('sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => { if (document.body.dataset.signedIn === 'true') render(); });
  start();
}

setUp();
