// Supervisor dashboard: live queues and agents (polled every POLL_MS), and statistics per
// agent, queue and day for a range of days, with two inline SVG bar charts (no library).
//
// The server computes every figure (rounded half to even, one decimal); this page only
// formats them. Names are agents' display names, always set with textContent.

import { api, ApiError } from './api.js';
import { clearMessage, showError, showMessage, showNotice } from './errors.js';
import { currentLanguage, LANGUAGE_CHANGE_EVENT, setText, t } from './i18n.js';
import { ready } from './shell.js';

const $ = (id) => document.getElementById(id);
const SVG_NS = 'http://www.w3.org/2000/svg';
const POLL_MS = 2000;
const STATS_REFRESH_MS = 30_000;
const MAX_DAYS = 92;
const LONG_WAIT_S = 120; // a queue card turns amber past this longest wait
const DASH = '—';

const els = {
  notices: $('notices'),
  overviewStatus: $('overview-status'),
  queueCards: $('queue-cards'),
  agentRows: $('agent-rows'),
  agentsEmpty: $('agents-empty'),
  form: $('stats-form'),
  from: $('stats-from'),
  to: $('stats-to'),
  last7: $('stats-last7'),
  last30: $('stats-last30'),
  statsError: $('stats-error'),
  statsStatus: $('stats-status'),
  total: $('stats-total'),
  chartContacts: $('chart-contacts'),
  chartCsat: $('chart-csat'),
  statsAgents: $('stats-agents'),
  statsAgentsEmpty: $('stats-agents-empty'),
  statsSkills: $('stats-skills'),
  statsDays: $('stats-days'),
};

const STATE_LABELS = {
  available: { key: 'supervisor.state.available' },
  away: { key: 'supervisor.state.away' },
  offline: { key: 'supervisor.state.offline' },
};
const SKILLS = new Set(['accounts', 'cards', 'wealth', 'loans', 'general']);

let overview = null; // last /api/supervisor/overview body
let stats = null; // last /api/supervisor/stats body
let pollTimer = null;
let statsTimer = null;
let overviewFailed = false;
let bankToday = null; // the server's "to" of the default period: today in the bank's zone

// ---- formatting ------------------------------------------------------------------------

function skillMessage(skill) {
  return SKILLS.has(skill) ? { key: `skill.${skill}` } : { text: String(skill) };
}

function numberFormat(digits) {
  return new Intl.NumberFormat(currentLanguage(), {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** 170 → "2:50", 3723 → "1:02:03"; whole seconds (the server's tenth is kept in data-value). */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

function formatPercent(value) {
  return value === null || value === undefined ? DASH : `${numberFormat(1).format(value)} %`;
}

function formatNps(value) {
  if (value === null || value === undefined) return DASH;
  const text = numberFormat(1).format(value);
  return value > 0 ? `+${text}` : text;
}

function formatCount(value) {
  return numberFormat(0).format(value);
}

/** "2026-03-10" as a short local date label (the day itself, not shifted by time zones). */
function formatDay(iso, style = { month: 'short', day: 'numeric' }) {
  const day = new Date(`${iso}T00:00:00Z`);
  if (Number.isNaN(day.getTime())) return iso;
  return new Intl.DateTimeFormat(currentLanguage(), { ...style, timeZone: 'UTC' }).format(day);
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function make(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

// ---- live overview -----------------------------------------------------------------------

function renderQueues(queues) {
  const cards = queues.map((q) => {
    const card = make('article', 'queue-card');
    card.dataset.skill = q.skill;
    const wait = q.longest_wait_s;
    card.dataset.level = wait !== null && wait >= LONG_WAIT_S ? 'warn' : q.queued > 0 ? 'busy' : 'idle';
    const title = make('h3', 'queue-skill');
    setText(title, skillMessage(q.skill));
    const length = make('p', 'queue-length');
    length.dataset.value = String(q.queued);
    const number = make('span', 'queue-number', formatCount(q.queued));
    const label = make('span', 'queue-label');
    setText(label, { key: 'supervisor.queues.waiting' });
    length.append(number, label);
    const stats = make('dl', 'queue-facts');
    const fact = (className, key, text, attrs = {}) => {
      const dt = make('dt');
      setText(dt, { key });
      const dd = make('dd', className, text);
      for (const [name, value] of Object.entries(attrs)) dd.dataset[name] = value;
      stats.append(dt, dd);
    };
    fact('queue-wait', 'supervisor.queues.longest_wait', formatDuration(wait), {
      seconds: wait === null ? '' : String(wait),
    });
    fact('queue-avg-wait', 'supervisor.queues.avg_wait', formatDuration(q.avg_wait_s));
    fact('queue-agents', 'supervisor.queues.agents_available', formatCount(q.agents_available), {
      value: String(q.agents_available),
    });
    fact('queue-slots', 'supervisor.queues.free_slots', formatCount(q.free_slots));
    card.append(title, length, stats);
    return card;
  });
  els.queueCards.replaceChildren(...cards);
}

function renderAgents(agents) {
  const rows = agents.map((a) => {
    const tr = make('tr', 'agent-row');
    tr.dataset.agentId = String(a.agent_id);
    const state = a.state in STATE_LABELS ? a.state : 'offline';
    tr.dataset.state = state;
    const name = make('td', 'name', a.name);
    const stateCell = make('td', 'state');
    const badge = make('span', `state-badge state-${state}`);
    setText(badge, STATE_LABELS[state]);
    stateCell.append(badge);
    const load = make('td', 'load num', `${formatCount(a.load)} / ${formatCount(a.capacity)}`);
    load.dataset.load = String(a.load);
    load.dataset.capacity = String(a.capacity);
    const skills = make('td', 'skills');
    for (const skill of a.skills) {
      const tag = make('span', 'tag');
      setText(tag, skillMessage(skill));
      skills.append(tag, ' ');
    }
    tr.append(name, stateCell, load, skills);
    return tr;
  });
  els.agentRows.replaceChildren(...rows);
  els.agentsEmpty.hidden = agents.length > 0;
}

function renderOverview() {
  if (!overview) return;
  renderQueues(overview.queues);
  renderAgents(overview.agents);
  const time = new Intl.DateTimeFormat(currentLanguage(), { timeStyle: 'medium' }).format(new Date());
  setText(els.overviewStatus, { key: 'supervisor.overview.updated', args: { time } });
  els.overviewStatus.dataset.live = 'true';
}

function authLost(err) {
  if (err instanceof ApiError && err.status === 401) {
    window.location.replace('/signin');
    return true;
  }
  return false;
}

async function pollOverview() {
  pollTimer = null;
  try {
    overview = await api('GET', '/api/supervisor/overview');
    overviewFailed = false;
    renderOverview();
  } catch (err) {
    if (authLost(err)) return;
    els.overviewStatus.dataset.live = 'false';
    if (!overviewFailed) showNotice(els.notices, { key: 'supervisor.overview.failed' });
    overviewFailed = true; // one notice per outage, not one every two seconds
    setText(els.overviewStatus, { key: 'supervisor.overview.stale' });
  }
  schedulePoll();
}

function schedulePoll() {
  if (pollTimer === null && !document.hidden) pollTimer = setTimeout(pollOverview, POLL_MS);
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    clearTimeout(pollTimer);
    pollTimer = null;
  } else if (pollTimer === null) {
    void pollOverview(); // back on the tab: fresh figures at once
  }
});

// ---- statistics tables -------------------------------------------------------------------

function metricCells(row) {
  const cell = (className, text, value) => {
    const td = make('td', `${className} num`, text);
    td.dataset.value = value === null || value === undefined ? '' : String(value);
    return td;
  };
  return [
    cell('contacts', formatCount(row.contacts), row.contacts),
    cell('aht', formatDuration(row.aht_s), row.aht_s),
    cell('verify-rate', formatPercent(row.verify_rate), row.verify_rate),
    cell('csat', formatPercent(row.csat_pct), row.csat_pct),
    cell('nps', formatNps(row.nps), row.nps),
  ];
}

const METRIC_COLUMNS = [
  { key: 'supervisor.col.contacts' },
  { key: 'supervisor.col.aht' },
  { key: 'supervisor.col.verify_rate' },
  { key: 'supervisor.col.csat' },
  { key: 'supervisor.col.nps' },
];

/** Head of a statistics table: its own first column (data-first-col), then the metrics. */
function writeHead(table) {
  const tr = make('tr');
  const first = make('th');
  first.scope = 'col';
  setText(first, { key: table.dataset.firstCol });
  tr.append(first);
  for (const column of METRIC_COLUMNS) {
    const th = make('th', 'num');
    th.scope = 'col';
    setText(th, column);
    tr.append(th);
  }
  table.tHead.replaceChildren(tr);
}

function fillTable(table, rows, head) {
  const body = table.tBodies[0];
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = make('tr');
      const th = make('th');
      th.scope = 'row';
      head(tr, th, row);
      tr.append(th, ...metricCells(row));
      return tr;
    }),
  );
}

function renderTotals(total) {
  const items = [
    ['contacts', 'supervisor.col.contacts', formatCount(total.contacts), total.contacts],
    ['aht', 'supervisor.col.aht', formatDuration(total.aht_s), total.aht_s],
    ['verify-rate', 'supervisor.col.verify_rate', formatPercent(total.verify_rate), total.verify_rate],
    ['csat', 'supervisor.col.csat', formatPercent(total.csat_pct), total.csat_pct],
    ['nps', 'supervisor.col.nps', formatNps(total.nps), total.nps],
  ];
  const nodes = [];
  for (const [name, key, text, value] of items) {
    const wrap = make('div', 'sup-total');
    wrap.dataset.metric = name;
    const dt = make('dt');
    setText(dt, { key });
    const dd = make('dd', name, text);
    dd.dataset.value = value === null ? '' : String(value);
    wrap.append(dt, dd);
    nodes.push(wrap);
  }
  els.total.replaceChildren(...nodes);
}

// ---- charts (inline SVG) -----------------------------------------------------------------

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

/**
 * A bar per day. `max` fixes the scale (100 for percentages); days without a value get
 * no bar. Every bar carries data-day/data-value and a <title> for hover and screen readers.
 */
function barChart(container, days, { value, max, format, labelKey }) {
  const width = 640;
  const height = 180;
  const pad = { top: 18, right: 8, bottom: 22, left: 8 };
  const plotH = height - pad.top - pad.bottom;
  const values = days.map(value);
  const top = max ?? Math.max(1, ...values.filter((v) => v !== null));
  const slot = (width - pad.left - pad.right) / Math.max(1, days.length);
  const barW = Math.max(2, Math.min(36, slot * 0.7));
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    class: 'chart-svg',
  });
  chart.setAttribute('aria-label', t(labelKey));
  chart.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, class: 'chart-axis' }));
  const labelEvery = Math.ceil(days.length / 16); // keep day labels readable on long ranges
  days.forEach((day, i) => {
    const x = pad.left + slot * i + (slot - barW) / 2;
    const v = values[i];
    if (v !== null) {
      const h = top > 0 ? (Math.max(0, v) / top) * plotH : 0;
      const bar = svg('rect', {
        x,
        y: height - pad.bottom - h,
        width: barW,
        height: Math.max(h, v > 0 ? 1 : 0),
        class: 'bar',
        'data-day': day.day,
        'data-value': v,
      });
      const tip = svg('title');
      tip.textContent = `${formatDay(day.day)}: ${format(v)}`;
      bar.append(tip);
      chart.append(bar);
      if (days.length <= 31) {
        const label = svg('text', { x: x + barW / 2, y: height - pad.bottom - h - 4, class: 'chart-value' });
        label.textContent = format(v);
        chart.append(label);
      }
    }
    if (i % labelEvery === 0) {
      const label = svg('text', { x: pad.left + slot * i + slot / 2, y: height - 6, class: 'chart-day' });
      label.textContent = formatDay(day.day, { day: 'numeric' });
      chart.append(label);
    }
  });
  container.replaceChildren(chart);
}

function renderCharts(days) {
  barChart(els.chartContacts, days, {
    value: (d) => d.contacts,
    max: null,
    format: formatCount,
    labelKey: 'supervisor.chart.contacts',
  });
  barChart(els.chartCsat, days, {
    value: (d) => d.csat_pct,
    max: 100,
    format: (v) => `${numberFormat(0).format(v)}%`,
    labelKey: 'supervisor.chart.csat',
  });
}

function renderStats() {
  if (!stats) return;
  renderTotals(stats.total);
  renderCharts(stats.days);
  fillTable(els.statsAgents, stats.agents, (tr, th, row) => {
    tr.dataset.agentId = String(row.agent_id);
    th.textContent = row.name;
  });
  els.statsAgentsEmpty.hidden = stats.agents.length > 0;
  fillTable(els.statsSkills, stats.skills, (tr, th, row) => {
    tr.dataset.skill = row.skill;
    setText(th, skillMessage(row.skill));
  });
  fillTable(els.statsDays, stats.days, (tr, th, row) => {
    tr.dataset.day = row.day;
    th.textContent = formatDay(row.day, { weekday: 'short', month: 'short', day: 'numeric' });
  });
  setText(els.statsStatus, {
    key: 'supervisor.stats.period',
    args: { from: formatDay(stats.from, { dateStyle: 'medium' }), to: formatDay(stats.to, { dateStyle: 'medium' }), tz: stats.timezone },
  });
}

// ---- range picker ------------------------------------------------------------------------

/** Client-side check mirroring the server's (which has the last word). */
function rangeProblem(from, to) {
  if (!from || !to) return { key: 'supervisor.stats.error_missing' };
  if (from > to) return { key: 'supervisor.stats.error_order' };
  const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
  if (days > MAX_DAYS) return { key: 'supervisor.stats.error_long', args: { max: MAX_DAYS } };
  return null;
}

async function loadStats(from, to, { quiet = false } = {}) {
  clearTimeout(statsTimer);
  const query = from && to ? `?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}` : '';
  if (!quiet) els.form.setAttribute('aria-busy', 'true');
  try {
    stats = await api('GET', `/api/supervisor/stats${query}`);
    if (!query) bankToday = stats.to;
    clearMessage(els.statsError);
    els.from.value = stats.from;
    els.to.value = stats.to;
    renderStats();
    document.body.dataset.stats = 'loaded';
  } catch (err) {
    if (authLost(err)) return;
    showError(els.statsError, err);
  } finally {
    els.form.removeAttribute('aria-busy');
  }
  // Keep a period that includes today current while the page stays open.
  if (stats && stats.to >= isoDay(new Date(Date.now() - 86_400_000))) {
    statsTimer = setTimeout(() => void loadStats(stats.from, stats.to, { quiet: true }), STATS_REFRESH_MS);
  }
}

function lastDays(n) {
  const today = bankToday || isoDay(new Date());
  const end = new Date(`${today}T00:00:00Z`);
  const start = new Date(end.getTime() - (n - 1) * 86_400_000);
  return [isoDay(start), isoDay(end)];
}

function wireRange() {
  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const problem = rangeProblem(els.from.value, els.to.value);
    if (problem) {
      showMessage(els.statsError, problem);
      return;
    }
    void loadStats(els.from.value, els.to.value);
  });
  els.last7.addEventListener('click', () => void loadStats(...lastDays(7)));
  els.last30.addEventListener('click', () => void loadStats(...lastDays(30)));
}

// ---- optional sections ---------------------------------------------------------------------

/** The webhooks admin (dead letters, endpoints) lives in its own module, mounted when the
 *  page carries its <section id="webhooks-admin">. */
async function mountWebhooksSection() {
  const section = $('webhooks-admin');
  if (!section) return;
  try {
    const { mountWebhooksAdmin } = await import('./webhooks_admin.js');
    await mountWebhooksAdmin(section);
  } catch (err) {
    console.error('webhooks admin failed to load', err);
    showNotice(els.notices, { key: 'supervisor.section_failed' });
  }
}

// ---- start ---------------------------------------------------------------------------------

async function main() {
  await ready;
  for (const table of [els.statsAgents, els.statsSkills, els.statsDays]) writeHead(table);
  wireRange();
  document.addEventListener(LANGUAGE_CHANGE_EVENT, () => {
    renderOverview();
    renderStats();
  });
  await Promise.all([pollOverview(), loadStats(null, null), mountWebhooksSection()]);
}

main().catch((err) => {
  const box = $('shell-error');
  if (box) showError(box, err);
});
