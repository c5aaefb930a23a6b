// The dashboard in Debian's Chromium (run_browser.sh): node browser.mjs URL KEY KEY2 SCREENSHOT_DIR
// KEY's product holds the demo's $49 Pro-plan month (November 2026), KEY2's the agents' revenue
// month. Every figure the page shows is compared with what the JSON API answers for the same
// question; each view is kept as a screenshot. Exits 1 on the first failed check.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

const [url, key, key2, shots] = process.argv.slice(2);
const november = 'from=2026-11-01&to=2026-12-01';
const novemberNs = 'from_ns=1793491200000000000&to_ns=1796083200000000000';
let checks = 0;
let shot = 0;

function check(ok, what) {
  checks++;
  if (!ok) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

// The API's answer, with `apiKey`, as text (exact integers) and parsed.
async function api(apiKey, path, init = {}) {
  const response = await fetch(url + path, {...init, headers: {authorization: `Bearer ${apiKey}`, 'content-type': 'application/json'}});
  const text = await response.text();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

const browser = await chromium.launch({executablePath: process.env.CHROMIUM, args: ['--no-sandbox']});
const context = await browser.newContext({viewport: {width: 1280, height: 900}, acceptDownloads: true});
const page = await context.newPage();
page.on('pageerror', (e) => check(false, `no script error on the page (${e.message})`));
page.on('console', (m) => { if (m.type() === 'error' && !/401|Unauthorized/.test(m.text())) console.error(`console: ${m.text()}`); });

async function screenshot(name) {
  const file = `${shots}/${String(++shot).padStart(2, '0')}-${name}.png`;
  await page.screenshot({path: file, fullPage: true});
}

// Shows `hash` and waits until the view has drawn it (main[data-ready] is set after the data is in).
async function show(view, extra = '') {
  const params = new URLSearchParams(`${november}&by=day`);
  for (const [k, v] of new URLSearchParams(extra)) params.set(k, v);
  await page.evaluate((h) => { document.getElementById('view').removeAttribute('data-ready'); location.hash = h; },
                      `#${view}?${params}`);
  await page.waitForSelector(`main[data-ready="${view}"]`, {timeout: 15000});
  await screenshot(view + extra.replace(/[^a-z0-9]+/gi, '-'));
}

// The exact nano-USD of every row of table `id`, column `col`: {rowKey: nanos}.
async function column(id, col) {
  return page.$$eval(`[data-table="${id}"] tbody tr`, (rows, c) => Object.fromEntries(rows.map((r) => {
    const cell = r.querySelector(`td[data-col="${c}"]`);
    return [r.dataset.key, cell.dataset.nanos === undefined ? null : cell.dataset.nanos];
  })), col);
}
async function figure(name) { return page.$eval(`[data-figure="${name}"]`, (e) => e.dataset.nanos ?? null); }
// The text's exact integers (JSON.parse would round nano-USD past 2^53).
const str = (n) => (n === null || n === undefined ? null : String(n));

// ---- sign-in ----
await page.goto(`${url}/dashboard`);
await page.waitForSelector('#sign-in:not([hidden])');
await screenshot('sign-in');
await page.fill('#api-key', 'pg_live_not_a_key');
await page.click('#sign-in-form button[type=submit]');
await page.waitForFunction(() => document.getElementById('sign-in-error').textContent !== '');
check((await page.textContent('#sign-in-error')).includes('invalid API key'), 'a wrong key is refused with the API\'s message');
await page.fill('#api-key', key);
await page.click('#sign-in-form button[type=submit]');
await page.waitForSelector('main[data-ready="overview"]');
check(await page.evaluate(() => document.cookie === ''), 'the session cookie is HttpOnly (scripts cannot read it)');

// ---- the demo product: overview, users, models, plans, alerts ----
const byDay = await api(key, `/api/v1/reports/usage?${novemberNs}&group_by=day`);
const byUser = await api(key, `/api/v1/reports/usage?${novemberNs}&group_by=user`);
const byModel = await api(key, `/api/v1/reports/usage?${novemberNs}&group_by=model`);
const byProvider = await api(key, `/api/v1/reports/usage?${novemberNs}&group_by=provider`);
const spend = byUser.rows.reduce((s, r) => s + BigInt(r.cost_nanos), 0n);

await show('overview');
check(await figure('spend') === String(spend), `overview: spend ${spend} nano-USD as the API's sum`);
const days = await column('overview', 'spend_nanos');
check(byDay.rows.every((r) => days[r.key] === str(r.cost_nanos)) && Object.keys(days).length === byDay.rows.length,
      `overview: each of the ${byDay.rows.length} days' spend equals the API's`);
await show('overview', '&by=month');
check((await column('overview', 'spend_nanos'))['2026-11'] === String(spend), 'overview by month: one row, the month\'s spend');
await show('overview', '&by=week');
const weeks = await column('overview', 'spend_nanos');
const mondays = new Set(byDay.rows.map((r) => {
  const d = new Date(`${r.key}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  return d.toISOString().slice(0, 10);
}));
check(Object.values(weeks).reduce((s, v) => s + BigInt(v), 0n) === spend && Object.keys(weeks).length === mondays.size &&
      [...mondays].every((m) => weeks[`week of ${m}`] !== undefined),
      `overview by week: the ${mondays.size} ISO weeks (from Monday) of the month's days, summing to the month`);

// An application process's report that it refused charlie on the period cap (a hard gate spends
// nothing, so only this report puts it in the gate history).
const before = await api(key, '/api/v1/users/charlie/usage');
await api(key, '/api/v1/events:batch', {method: 'POST', body: JSON.stringify({v: 5, events: [], hard_gates: [
  {user_id: 'charlie', limit: 'total_spend', period_start_ns: before.period_start_ns, threshold_ppm: 1000000,
   fired_ns: before.period_start_ns + 3600e9}]})});

await show('users');
const users = await column('users', 'cost_nanos');
check(byUser.rows.every((r) => users[r.key] === str(r.cost_nanos)), 'users: each user\'s spend equals the API\'s');
const order = await page.$$eval('[data-table="users"] tbody tr', (rows) => rows.map((r) => r.dataset.key));
check(order.join() === 'charlie,bob,alice', 'users: top spenders first');
await page.click('[data-table="users"] tbody tr[data-key="charlie"]');
await page.waitForSelector('main[data-ready="users"] [data-user="charlie"]');
await screenshot('user-charlie');
const charlie = await api(key, '/api/v1/users/charlie/usage');
check(await figure('user-spend') === str(charlie.spend_nanos), 'users: a user\'s detail shows their period spend from the API');
const gateRows = await page.$$eval('[data-table="gates"] tbody tr', (rows) => rows.map((r) => r.cells[0].textContent + ' ' + r.cells[1].textContent));
check(charlie.hard_gates.length === 1 && gateRows.length === charlie.hard_gates.length + charlie.soft_gates.length &&
      gateRows[0] === 'hard total_spend', `users: a user's gates, hard and soft, as the API has them (${gateRows.join('; ')})`);

await show('models');
const models = await column('models', 'cost_nanos');
check(byModel.rows.length > 0 && byModel.rows.every((r) => models[r.key] === str(r.cost_nanos)), 'models: each model\'s spend equals the API\'s');
const providers = await column('providers', 'cost_nanos');
check(byProvider.rows.length > 0 && byProvider.rows.every((r) => providers[r.key] === str(r.cost_nanos)) &&
      byProvider.rows.reduce((t, r) => t + BigInt(r.cost_nanos), 0n) === spend,
      `models: each of the ${byProvider.rows.length} providers' spend equals the API's, and they sum to the month's`);

await show('plans');
check(await page.$('[data-table="plans"] tbody tr') !== null &&
      (await page.textContent('[data-table="plans"]')).includes('pro (default)'), 'plans: the demo\'s pro plan, marked default');

const hook = await api(key, '/api/v1/webhooks', {method: 'POST', body: JSON.stringify({url: 'http://127.0.0.1:9/hook'})});
await show('alerts');
check((await page.$(`[data-table="webhooks"] tr[data-key="${hook.id}"]`)) !== null, 'alerts: the webhook is listed');
check((await page.$('[data-table="deliveries"]')) !== null, 'alerts: its delivery log is shown');

// CSV export of a table: the exact figures, one row per user.
const [download] = await Promise.all([page.waitForEvent('download'), show('users').then(() => page.click('[data-table="users"] h3 button'))]);
const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
check(csv[0].includes('Spend (nano-USD)') && csv.length === byUser.rows.length + 1 &&
      byUser.rows.every((r) => csv.some((line) => line.startsWith(`${r.key},`) && line.includes(`,${r.cost_nanos},`))),
      'CSV export: a header and every user with their exact nano-USD');

// ---- sign out; the agents' product: agents, overview revenue, billing ----
await page.click('#sign-out');
await page.waitForSelector('#sign-in:not([hidden])');
check((await fetch(`${url}/api/v1/dashboard/session`, {headers: {cookie: (await context.cookies())
  .map((c) => `${c.name}=${c.value}`).join('; ')}})).status === 401, 'signed out: the old cookie no longer works');
await page.fill('#api-key', key2);
await page.click('#sign-in-form button[type=submit]');
await page.waitForSelector('main[data-ready]');

const profit = await api(key2, `/api/v1/reports/profit?${novemberNs}&by=agent`);
await show('agents');
const agentProfit = await column('agents', 'profit_nanos');
const agentCost = await column('agents', 'cost_nanos');
check(profit.rows.every((r) => agentProfit[r.key] === str(r.profit_nanos) && agentCost[r.key] === str(r.cost_nanos)),
      'agents: each agent\'s cost and profit equal the API\'s');
const tags = await page.$$eval('[data-table="agents"] tbody tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.key, r.querySelector('td[data-col="kind"]').textContent])));
check(tags['internal-summarizer'] === 'cost-only' && tags['stripe-webhook'] === 'revenue-only' && tags['dental-clinic'] === 'profit',
      'agents: cost-only and revenue-only agents are shown as such');
await show('overview');
check(await figure('revenue') === str(profit.total.revenue_nanos) && await figure('profit') === str(profit.total.profit_nanos),
      'overview: revenue and profit equal the profit report\'s totals');

// Group-by on a meta tag: two events of a new user tagged region=eu and one untagged, then the
// controls' tag field; the agents view's table equals the API's by=tag:region.
const tagged = (n, tags) => ({id: n.toString(16).padStart(32, '0'), user_id: 'tagged-user', session_id: '', agent_id: 'internal-summarizer',
  indicator: '', model: 'gpt-4o', provider: 'openai', input_tokens: 10, output_tokens: 5, cached_input_tokens: 0,
  cache_creation_input_tokens: 0, reasoning_tokens: 0, cost_nanos: 1000 * n, ts_ns: Date.UTC(2026, 10, 20) * 1e6,
  meta_tags: tags, estimated: false});
await api(key2, '/api/v1/events:batch', {method: 'POST', body: JSON.stringify({events: [
  tagged(0xb1, {region: 'eu'}), tagged(0xb2, {region: 'eu', tier: 'gold'}), tagged(0xb3, {})]})});
await show('agents');
await page.fill('#tag', 'region');
await page.evaluate(() => document.getElementById('view').removeAttribute('data-ready'));
await page.click('#controls button[type=submit]');
await page.waitForSelector('main[data-ready="agents"] [data-table="by-tag"]');
await screenshot('agents-by-tag-region');
const byRegion = await api(key2, `/api/v1/reports/profit?${novemberNs}&by=tag%3Aregion`);
const regionCost = await column('by-tag', 'cost_nanos');
check(byRegion.rows.length >= 2 && byRegion.rows.find((r) => r.key === 'eu').cost_nanos === 0xb1 * 1000 + 0xb2 * 1000 &&
      byRegion.rows.every((r) => regionCost[r.key] === str(r.cost_nanos)),
      'group by tag: the table of region\'s values equals the API\'s by=tag:region (eu: the two tagged events)');

const inv = await api(key2, `/api/v1/customers/customer-123/invoice?${novemberNs}`);
await show('billing', '&customer=customer-123');
check(await figure('invoice-total') === str(inv.total_nanos) && inv.total_nanos > 0, `billing: customer-123's invoice total ${inv.total_nanos} equals the API's`);
// The customer's credit wallet (a top-up through the API first), and one without a wallet.
const topped = await api(key2, '/api/v1/customers/customer-123/wallet/top-ups',
                         {method: 'POST', body: JSON.stringify({credits: '250', paidUsd: '25', id: 'browser-topup-1'})});
await show('billing', '&customer=customer-456');
check((await page.textContent('#wallet')).includes('has no credit wallet'), 'billing: a customer without a wallet is said to have none');
await show('billing', '&customer=customer-123');
const walletText = await page.textContent('#wallet');
check(walletText.includes(`Credit balance (customer-123)${topped.wallet.balance}`) && walletText.includes('browser-topup-1'),
      `billing: customer-123's wallet shows the API's balance ${topped.wallet.balance} and its top-up`);
// Billable Metrics -> Create metric, with the API's validation.
await page.fill('#metric-form input[name=name]', 'GPU compute hours');
await page.fill('#metric-form input[name=expression]', 'event.properties.hours * (2');
await page.selectOption('#metric-form select[name=aggregation]', 'sum');
await page.click('#metric-form button[type=submit]');
await page.waitForFunction(() => document.getElementById('metric-error').textContent !== '');
check((await page.textContent('#metric-error')).includes('position'), 'billing: a malformed expression is refused naming its position');
await page.fill('#metric-form input[name=expression]', '');
await page.fill('#metric-form input[name=field]', 'hours');
await page.evaluate(() => document.getElementById('view').removeAttribute('data-ready'));
await page.click('#metric-form button[type=submit]');
await page.waitForSelector('main[data-ready="billing"] [data-table="metrics"] tr[data-key="gpu_compute_hours"]');
await screenshot('billing-metric-created');
check((await api(key2, '/api/v1/billable-metrics/gpu_compute_hours')).aggregation === 'sum', 'billing: the metric created in the page is stored');

// Agents -> indicators -> link a billable metric -> pricing, with the API's validation: tiers out
// of order are refused with the API's message, then a GRADUATED indicator on the new metric is
// stored, a per-minute one with a custom rate joins an existing agent's indicators (the others
// kept), and the linked metric is shown locked.
await show('agents');
const fillIndicator = async (fields) => {
  for (const [name, v] of Object.entries(fields)) {
    const selector = `#indicator-form [name=${name}]`;
    if (await page.$eval(selector, (n) => n.tagName) === 'SELECT') await page.selectOption(selector, v);
    else await page.fill(selector, v);
  }
};
await fillIndicator({agent: 'gpu-agent', indicator: 'inference', billed: 'pricing', metric: 'gpu_compute_hours',
                     model: 'graduated', tiers: '100 0.50\n50 0.40\n- 0.30'});
check(await page.isHidden('#indicator-form [name=unitPrice]') && await page.isVisible('#indicator-form [name=tiers]'),
      'agents: the indicator form shows the tiers of a GRADUATED price, not a unit price');
await page.click('#indicator-form button[type=submit]');
await page.waitForFunction(() => document.getElementById('indicator-error').textContent !== '');
const tierError = await page.textContent('#indicator-error');
check(tierError.includes('tiers[1].upTo: 50 is not above tiers[0].upTo 100'), `agents: tiers out of order are refused naming the field (${tierError})`);
check((await fetch(`${url}/api/v1/agents/gpu-agent`, {headers: {authorization: `Bearer ${key2}`}})).status === 404,
      'agents: nothing is stored for a refused indicator');
await fillIndicator({tiers: '100 0.50\n- 0.40 10'});
await page.evaluate(() => document.getElementById('view').removeAttribute('data-ready'));
await page.click('#indicator-form button[type=submit]');
await page.waitForSelector('main[data-ready="agents"] [data-table="pricing"] tr[data-key="gpu-agent/inference"]');
const gpu = await api(key2, '/api/v1/agents/gpu-agent');
check(gpu.indicators.length === 1 && gpu.indicators[0].metric === 'gpu_compute_hours' && gpu.indicators[0].pricing.model === 'graduated' &&
      gpu.indicators[0].pricing.tiers.length === 2 && gpu.indicators[0].pricing.tiers[1].flatFee === '10',
      'agents: the GRADUATED indicator saved in the page is stored with its metric and tiers');
const dentalBefore = await api(key2, '/api/v1/agents/dental-clinic');
await fillIndicator({agent: 'dental-clinic', indicator: 'browser-minutes', billed: 'minute', price: '0.15', rates: 'stt nova-2 0.05'});
await page.evaluate(() => document.getElementById('view').removeAttribute('data-ready'));
await page.click('#indicator-form button[type=submit]');
await page.waitForSelector('main[data-ready="agents"] [data-table="pricing"] tr[data-key="dental-clinic/browser-minutes"]');
await screenshot('agents-indicator-saved');
const dental = await api(key2, '/api/v1/agents/dental-clinic');
const added = dental.indicators.find((i) => i.indicator === 'browser-minutes');
check(dental.indicators.length === dentalBefore.indicators.length + 1 && added && added.perMinute && added.customRates.length === 1 &&
      JSON.stringify(dental.indicators.filter((i) => i !== added)) === JSON.stringify(dentalBefore.indicators),
      'agents: a per-minute indicator with a custom rate joins the agent, its other indicators unchanged');
await show('billing', '&customer=customer-123');
check((await page.textContent('[data-table="metrics"] tr[data-key="gpu_compute_hours"] td[data-col="locked"]')).includes('locked'),
      'billing: the metric linked in the agents view is shown locked');

// ---- a session that expires ----
const shortContext = await browser.newContext();
const shortPage = await shortContext.newPage();
await shortPage.goto(`${url}/dashboard`);
await shortPage.evaluate(async (k) => {
  await fetch('/api/v1/dashboard/session', {method: 'POST', headers: {'content-type': 'application/json'},
                                            body: JSON.stringify({api_key: k, ttl_seconds: 1})});
}, key);
await shortPage.reload();
await shortPage.waitForSelector('main[data-ready="overview"]');
await new Promise((r) => setTimeout(r, 1500));
await shortPage.evaluate(() => { location.hash = '#users'; });
await shortPage.waitForSelector('#sign-in:not([hidden])');
check((await shortPage.textContent('#sign-in-error')).includes('expired'), 'an expired session returns to sign-in, saying why');
await shortContext.close();

// ---- a customer's portal token ----
// customer-456 uses the product now (this period), through the tracking API.
await api(key2, '/api/v2/usage', {method: 'POST', body: JSON.stringify({agentId: 'lead-qualification', customerId: 'customer-456',
  indicator: 'lead_qualified', rawUsage: {provider: 'openai', model: 'gpt-4o', inputTokens: 1000, outputTokens: 500}})});
const minted = await api(key2, '/api/v1/customers/customer-456/portal-tokens', {method: 'POST', body: '{"ttl_seconds": 300}'});
const portalContext = await browser.newContext({viewport: {width: 1280, height: 900}});
const portal = await portalContext.newPage();
portal.on('pageerror', (e) => check(false, `no script error in the portal (${e.message})`));
await portal.goto(url + minted.portal_path);
await portal.waitForSelector('main[data-ready="portal"]');
await portal.screenshot({path: `${shots}/${String(++shot).padStart(2, '0')}-portal.png`, fullPage: true});
const usage456 = await (await fetch(`${url}/api/v1/portal/usage`, {headers: {authorization: `Bearer ${minted.token}`}})).json();
check(usage456.user_id === 'customer-456' && usage456.spend_nanos > 0 &&
      await portal.$eval('[data-figure="spend"]', (e) => e.dataset.nanos) === String(usage456.spend_nanos),
      'portal: the customer\'s period spend equals the API\'s');
check(await portal.$eval('[data-figure="invoice-total"]', (e) => e.dataset.nanos) === '200000000', 'portal: the lead billed this period ($0.20)');
check(!(await portal.evaluate(() => location.href)).includes('pgc_'), 'portal: the token leaves the address bar');
const other = await portal.evaluate(async (t) => Promise.all(['/api/v1/users/customer-123/usage', '/api/v1/customers/customer-123/invoice',
  `/api/v1/reports/usage?from_ns=0&to_ns=1&group_by=user`].map(async (p) => (await fetch(p, {headers: {authorization: `Bearer ${t}`}})).status)), minted.token);
check(other.every((s) => s === 401), `portal: the token reaches no other customer's data nor the product's (${other})`);
const expired = await api(key2, '/api/v1/customers/customer-456/portal-tokens', {method: 'POST', body: '{"ttl_seconds": 1}'});
await new Promise((r) => setTimeout(r, 1500));
const late = await portalContext.newPage();
await late.goto(url + expired.portal_path);
await late.waitForSelector('main[data-ready="error"]');
check((await late.textContent('#portal-error')).includes('expired'), 'portal: an expired link says so');

await browser.close();
console.log(`dashboard browser test: ${checks} checks passed; screenshots in ${shots}`);
