// The customer portal (docs/dashboard.md): one customer's own usage and invoice, through a
// short-lived token that the application minted for them (POST /api/v1/customers/{id}/portal-tokens)
// and put in this page's fragment (/portal#token=pgc_...). The fragment is never sent to a server;
// the token moves to this tab's sessionStorage and out of the address bar at once.
'use strict';

function token() {
  const match = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
  if (match) {
    sessionStorage.setItem('paygent_portal_token', decodeURIComponent(match[1]));
    history.replaceState(null, '', location.pathname);
  }
  return sessionStorage.getItem('paygent_portal_token') || '';
}

async function show() {
  const main = document.getElementById('view');
  const auth = {headers: {authorization: 'Bearer ' + token()}};
  let usage, invoice;
  try {
    // The invoice covers the usage's period. Its bounds are exact in the JSON text, not always as
    // JS numbers (nanoseconds pass 2^53), so they are read from the text.
    const response = await fetch('/api/v1/portal/usage', auth);
    const text = await response.text();
    if (!response.ok) throw new ApiError(response.status, text);
    usage = JSON.parse(text);
    const bound = (name) => (new RegExp(`"${name}":(\\d+)`).exec(text) || [])[1];
    invoice = await fetchJson(`/api/v1/portal/invoice?from_ns=${bound('period_start_ns')}&to_ns=${bound('period_end_ns')}`, auth);
  } catch (e) {
    main.replaceChildren(el('p', {class: 'error', id: 'portal-error'},
      e.status === 401 ? 'This link has expired. Open your usage again from the application.' : e.message));
    main.dataset.ready = 'error';
    return;
  }
  document.getElementById('who').textContent = usage.user_id;
  const models = Object.entries(usage.models).map(([model, m]) => ({model, ...m}));
  const lines = invoice.lines.filter((l) => l.amount_nanos !== 0 || l.events.counted !== 0)
    .map((l) => ({...l, what: `${l.agent} / ${l.indicator}`}));
  main.replaceChildren(
    el('div', {class: 'cards'},
      card('Plan', usage.plan || 'none'),
      card('Period', `${nsText(usage.period_start_ns).slice(0, 10)} → ${nsText(usage.period_end_ns).slice(0, 10)}`),
      card('Usage cost this period', usd(usage.spend_nanos), {'data-figure': 'spend', 'data-nanos': usage.spend_nanos}),
      card('Calls', count(usage.calls), {'data-figure': 'calls'}),
      card('Billed this period', usd(invoice.total_nanos), {'data-figure': 'invoice-total', 'data-nanos': invoice.total_nanos})),
    table('By model', [
      {key: 'model', label: 'Model'}, {key: 'calls', label: 'Calls', num: true},
      {key: 'input_tokens', label: 'Input tokens', num: true}, {key: 'output_tokens', label: 'Output tokens', num: true},
      {key: 'cost_nanos', label: 'Cost', money: true},
    ], models, {id: 'models', keyOf: 'model', empty: 'No usage this period.'}),
    table('Invoice lines', [
      {key: 'what', label: 'Service'}, {key: 'quantity', label: 'Quantity', num: true, render: (l) => `${l.quantity} ${l.unit}`},
      {key: 'amount_nanos', label: 'Amount', money: true},
    ], lines, {id: 'invoice', keyOf: 'what', empty: 'Nothing billed this period.'}));
  main.dataset.ready = 'portal';
}

show();
