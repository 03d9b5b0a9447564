// idgraph's audit view. One script for two homes:
//  - served at /audit, it reads everything from /graphql (auditReport, auditTimeline,
//    auditDocument, indexStatus) and redraws when the index changes;
//  - inside the HTML report (`idgraph audit --format html`), it reads the report embedded in the
//    file (#idgraph-data) and never touches the network.
// Chart.js and Cytoscape.js are used when they were bundled; without them the same numbers are
// drawn as plain HTML bars and lists.
// An org's pages live under /orgs/NAME/ on a server of several orgs: requests go to the same org.
const BASE = (/^\/orgs\/[^/]+\//.exec(location.pathname) || ['/'])[0];
(function () {
  'use strict';

  const ORPHAN_LIMIT = 2000; // orphans fetched for the page's table; the downloads hold them all
  const MAX_DRAWN_CONTACTS = 80; // above this an agent's graph is summarised
  const MAX_DRAWN_ACCOUNTS = 40;
  const SAMPLE_ACCOUNTS = 30; // above MAX_DRAWN_ACCOUNTS: these, and one node for the rest
  const BARS = 25;
  const PAGE = 25;
  const POLL_MS = 5000;
  const TOKEN_KEY = 'idgraph.token';

  // Signed in through the identity provider: who, and the session's CSRF token (the server puts
  // them in the page); otherwise null, and a pasted token is used.
  const meta = (name) => { const m = document.querySelector('meta[name="' + name + '"]'); return m ? m.content : null; };
  const CSRF = meta('idgraph-csrf');
  const USER = meta('idgraph-user');
  const ROLE = meta('idgraph-role');
  const embedded = document.getElementById('idgraph-data');
  const FILE = embedded ? JSON.parse(embedded.textContent) : null;
  const app = document.getElementById('app');
  const view = { charts: [], cy: null, tables: {}, seq: null, route: null };
  window.idgraphAudit = view; // for tests and the curious: the charts, the graph, the numbers

  // ---- small helpers -------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid == null || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  const num = (n) => (n == null ? '—' : Number(n).toLocaleString('en-US'));
  const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : '—');
  const upper = (s) => String(s || '').replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
  const age = (s) => (s == null ? '—' : s < 120 ? s + ' s' : s < 7200 ? Math.round(s / 60) + ' min' : s < 172800 ? Math.round(s / 3600) + ' h' : Math.round(s / 86400) + ' days');
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
  const statusColor = (s) => css('--' + upper(s).toLowerCase());
  const badge = (s) => h('span', { class: 'status ' + upper(s) }, upper(s));
  const goneAt = (a) => a.departed_at_ms || a.deactivated_at_ms || null;
  const verifiedAfter = (verifiedMs, goneMs) => (verifiedMs ? !goneMs || verifiedMs >= goneMs : false);
  const agentHref = (id) => '#/agent/' + encodeURIComponent(id);

  // ---- data ----------------------------------------------------------------------------------
  class AuthError extends Error {}
  class NotReady extends Error {}

  async function gql(query, variables) {
    const headers = { 'content-type': 'application/json', accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (CSRF) headers['x-csrf-token'] = CSRF;
    else if (token) headers.authorization = 'Bearer ' + token;
    const r = await fetch(BASE + 'graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
    let body;
    try { body = await r.json(); } catch (e) { throw new Error('the server answered HTTP ' + r.status); }
    const err = body.errors && body.errors[0];
    if (err) {
      const code = err.extensions && err.extensions.code;
      if (code === 'UNAUTHENTICATED' || code === 'FORBIDDEN') throw new AuthError(err.message);
      if (code === 'NOT_READY') throw new NotReady(err.message);
      throw new Error(err.message);
    }
    return body.data;
  }

  // First the summary (totals, rows, timeline: cheap at any size), drawn at once; then the whole
  // report (the orphans list and the digest), which fills its two slots when it comes.
  async function loadOrg() {
    if (FILE) return { doc: FILE.org, timeline: FILE.timeline };
    const d = await gql('{ auditSummary auditTimeline indexStatus { lastChangeSeq generation } }');
    view.seq = d.indexStatus.lastChangeSeq + ':' + d.indexStatus.generation;
    const full = gql('query($n: Int) { auditReport(all: true, orphanLimit: $n) }', { n: ORPHAN_LIMIT }).then((x) => x.auditReport);
    return { doc: { kind: 'org', report: d.auditSummary, digest: null, truncated: null }, timeline: d.auditTimeline, full };
  }

  async function loadAgent(id) {
    if (FILE) return { doc: FILE.agent && String(FILE.agent.report.agent.id) === String(id) ? FILE.agent : null };
    const d = await gql('query($a: String, $n: Int) { auditReport(agent: $a, orphanLimit: $n) indexStatus { lastChangeSeq generation } }', { a: String(id), n: ORPHAN_LIMIT });
    view.seq = d.indexStatus.lastChangeSeq + ':' + d.indexStatus.generation;
    const doc = d.auditReport;
    const email = doc && doc.report && doc.report.agent.email;
    if (email) {
      // An email a rehire reused belongs to several agents: the page names the others.
      const o = await gql('query($e: String) { agents(email: $e, first: 100) { edges { node { id status } } } }', { e: email });
      doc.sameEmail = o.agents.edges.map((x) => x.node).filter((x) => String(x.id) !== String(doc.report.agent.id));
    }
    return { doc };
  }

  async function download(format, args, name) {
    let text;
    if (FILE) {
      text = JSON.stringify(FILE.org || FILE.agent, null, 2);
    } else {
      const d = await gql('query($a: String, $all: Boolean, $f: AuditFormat!) { auditDocument(agent: $a, all: $all, format: $f) }', Object.assign({ f: format }, args));
      text = d.auditDocument;
    }
    const type = { CSV: 'text/csv', JSON: 'application/json', MARKDOWN: 'text/markdown' }[format] || 'text/plain';
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = h('a', { href: url, download: name });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function downloads(args, stem) {
    const formats = FILE ? [['JSON', 'json']] : [['CSV', 'csv'], ['JSON', 'json'], ['MARKDOWN', 'md']];
    return h('div', { class: 'downloads' },
      formats.map(([f, ext]) => h('button', { class: 'download', 'data-format': f, onclick: () => download(f, args, stem + '.' + ext).catch(showError) }, 'Download ' + (f === 'MARKDOWN' ? 'Markdown' : f))),
      h('button', { onclick: () => window.print() }, 'Print'));
  }

  // ---- tables: search, sort, paging ----------------------------------------------------------
  // columns: [{key, label, num, get(row) -> sortable value, cell(row) -> node|string}]
  function table(id, rows, columns, opts) {
    const st = view.tables[id] || (view.tables[id] = { q: (opts && opts.q) || '', sort: (opts && opts.sort) || null, dir: -1, page: 0 });
    const box = h('div', { class: 'table', id });
    const draw = () => {
      const q = st.q.trim().toLowerCase();
      let shown = q ? rows.filter((r) => columns.some((c) => String(c.get(r) ?? '').toLowerCase().includes(q))) : rows.slice();
      const col = columns.find((c) => c.key === st.sort);
      if (col) shown.sort((a, b) => { const x = col.get(a), y = col.get(b); return (x > y ? 1 : x < y ? -1 : 0) * st.dir; });
      const pages = Math.max(1, Math.ceil(shown.length / PAGE));
      st.page = Math.min(st.page, pages - 1);
      const slice = shown.slice(st.page * PAGE, st.page * PAGE + PAGE);
      const search = h('input', { type: 'search', placeholder: 'Search…', value: st.q, 'aria-label': 'Search ' + id });
      search.addEventListener('input', () => { st.q = search.value; st.page = 0; draw(); const again = box.querySelector('input'); again.focus(); again.setSelectionRange(again.value.length, again.value.length); });
      const head = h('tr', {}, columns.map((c) => h('th', {
        class: c.num ? 'num' : null, 'aria-sort': c.key === st.sort ? (st.dir > 0 ? 'ascending' : 'descending') : null,
        onclick: () => { st.dir = st.sort === c.key ? -st.dir : (c.num ? -1 : 1); st.sort = c.key; draw(); },
      }, c.label)));
      const body = slice.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : c.wrap ? 'wrap' : null }, c.cell ? c.cell(r) : c.get(r) ?? ''))));
      box.replaceChildren(
        h('div', { class: 'tablebar' }, search, h('span', { class: 'grow' }),
          h('span', { class: 'count' }, num(shown.length) + ' of ' + num(rows.length)),
          h('span', { class: 'pager' },
            h('button', { disabled: st.page === 0, onclick: () => { st.page--; draw(); } }, '‹ Prev'),
            ' page ' + (st.page + 1) + ' of ' + pages + ' ',
            h('button', { disabled: st.page >= pages - 1, onclick: () => { st.page++; draw(); } }, 'Next ›'))),
        h('table', {}, h('thead', {}, head), h('tbody', {}, body)));
    };
    draw();
    return box;
  }

  // ---- charts --------------------------------------------------------------------------------
  function barChart(rows) {
    const top = rows.slice().sort((a, b) => b.contacts + b.accounts - (a.contacts + a.accounts)).slice(0, BARS);
    const labels = top.map((r) => r.agent.email || 'agent ' + r.agent.id);
    if (!window.Chart) {
      const max = Math.max(1, ...top.map((r) => r.contacts));
      return h('div', { class: 'plainbars', id: 'orphans-chart' }, top.map((r, i) => h('div', { class: 'row bar-row' },
        h('a', { class: 'lab agent', href: agentHref(r.agent.id) }, labels[i]),
        h('span', { class: 'bar', style: 'width:' + Math.max(1, (50 * r.contacts) / max) + '%;background:' + statusColor(r.agent.status) }),
        num(r.contacts))));
    }
    const canvas = h('canvas', { id: 'orphans-chart', role: 'img', 'aria-label': 'Orphaned contacts per gone owner' });
    const box = h('div', { class: 'chart' }, canvas);
    requestAnimationFrame(() => {
      const chart = new window.Chart(canvas, {
        type: 'bar',
        data: { labels, datasets: [
          { label: 'orphaned contacts', data: top.map((r) => r.contacts), backgroundColor: top.map((r) => statusColor(r.agent.status)) },
          { label: 'orphaned accounts', data: top.map((r) => r.accounts), backgroundColor: '#34495e' },
        ] },
        options: { indexAxis: 'y', animation: false, responsive: true, maintainAspectRatio: false,
          plugins: { legend: { position: 'bottom' } },
          onClick: (_e, els) => { if (els.length) location.hash = agentHref(top[els[0].index].agent.id); } },
      });
      view.charts.push(chart);
      view.barChart = chart;
    });
    return box;
  }

  function timelineChart(t) {
    const pts = (t && t.points) || [];
    const labels = pts.map((p) => new Date(p.at_ms).toISOString().replace('T', ' ').slice(0, t.bucket_s >= 86400 ? 10 : t.bucket_s >= 60 ? 16 : 19));
    if (!window.Chart) {
      return h('ul', { id: 'timeline-chart', class: 'timeline-list' }, pts.filter((p) => p.departures || p.orphans != null).slice(-30)
        .map((p) => h('li', {}, when(p.at_ms) + ': ' + (p.orphans == null ? 'no history yet' : num(p.orphans) + ' orphans') + (p.departures ? ', ' + p.departures + ' departures' : ''))));
    }
    const canvas = h('canvas', { id: 'timeline-chart', role: 'img', 'aria-label': 'Orphans and departures over time' });
    requestAnimationFrame(() => {
      const chart = new window.Chart(canvas, {
        data: { labels, datasets: [
          { type: 'line', label: 'orphaned contacts', data: pts.map((p) => p.orphans), borderColor: css('--departed'), backgroundColor: css('--departed'), pointRadius: 0, spanGaps: false, yAxisID: 'y' },
          { type: 'bar', label: 'departures', data: pts.map((p) => p.departures), backgroundColor: '#34495e', yAxisID: 'y1' },
        ] },
        options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { position: 'bottom' } },
          scales: { x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 6 } }, y: { beginAtZero: true, position: 'left', title: { display: true, text: 'orphans' } },
            y1: { beginAtZero: true, position: 'right', grid: { drawOnChartArea: false }, ticks: { precision: 0 }, title: { display: true, text: 'departures' } } } },
      });
      view.charts.push(chart);
      view.timelineChart = chart;
    });
    return h('div', { class: 'chart' }, canvas);
  }

  // ---- the agent's graph ---------------------------------------------------------------------
  // Agent in the middle; contacts and accounts around it, coloured by status. Large sets become
  // one node per status with its count, so 100,000 contacts stay a handful of nodes.
  function agentGraphModel(a, truncated) {
    const gone = goneAt(a.agent);
    const nodes = [{ id: 'agent', label: (a.agent.email || 'agent ' + a.agent.id), kind: 'agent', color: statusColor(a.agent.status), size: 46 }];
    const contacts = a.orphaned_contacts || [];
    const drawEach = !truncated && contacts.length === a.contacts_now && contacts.length <= MAX_DRAWN_CONTACTS;
    if (drawEach) {
      for (const c of contacts) {
        const s = !c.verified_at_ms ? 'never' : verifiedAfter(c.verified_at_ms, gone) ? 'verified' : 'unverified';
        nodes.push({ id: 'c' + c.id, label: c.email || c.name || String(c.id), kind: 'contact', status: s, color: css('--' + s), size: 18 });
      }
    } else if (a.contacts_now > 0) {
      const groups = a.orphan_reason
        ? [['verified', a.orphans_verified_after_departure, 'verified after it went'], ['unverified', a.contacts_now - a.orphans_verified_after_departure, 'not verified since it went']]
        : [['active', a.contacts_now, 'owned']];
      for (const [s, n, what] of groups) {
        if (n > 0) nodes.push({ id: 'g-' + s, label: num(n) + ' contacts ' + what, kind: 'group', status: s, count: n, color: css('--' + s), size: 24 + Math.min(40, Math.log10(n + 1) * 12) });
      }
    }
    const accounts = a.orphaned_accounts || [];
    const drawn = accounts.length === a.accounts_now ? accounts.slice(0, accounts.length <= MAX_DRAWN_ACCOUNTS ? accounts.length : SAMPLE_ACCOUNTS) : [];
    for (const acc of drawn) nodes.push({ id: 'a' + acc.id, label: acc.name || acc.domain || acc.id, kind: 'account', color: '#34495e', size: 22 });
    const rest = a.accounts_now - drawn.length;
    if (rest > 0) {
      nodes.push({ id: 'g-accounts', label: num(rest) + (drawn.length ? ' more accounts' : ' accounts'), kind: 'group', count: rest, color: '#34495e', size: 30 });
    }
    return nodes;
  }

  function agentGraph(a, truncated) {
    const nodes = agentGraphModel(a, truncated);
    view.graphNodes = nodes.length;
    const legend = h('div', { class: 'legend' },
      [['--verified', 'contact verified after the agent went'], ['--unverified', 'not verified since'], ['--never', 'never verified'], ['--active', 'owned by an active agent']]
        .map(([v, l]) => h('span', {}, h('i', { style: 'background:' + css(v) }), l)),
      h('span', {}, h('i', { style: 'background:#34495e' }), 'account'));
    if (!window.cytoscape) {
      return h('div', {}, legend, h('ul', { id: 'agent-graph', class: 'plain-graph' }, nodes.map((n) => h('li', { class: 'node ' + n.kind }, n.label))));
    }
    const box = h('div', { id: 'agent-graph', role: 'img', 'aria-label': 'The agent and what it owns' });
    requestAnimationFrame(() => {
      view.cy = window.cytoscape({
        container: box,
        elements: nodes.map((n) => ({ data: n })).concat(nodes.slice(1).map((n) => ({ data: { id: 'e-' + n.id, source: 'agent', target: n.id } }))),
        style: [
          { selector: 'node', style: { 'background-color': 'data(color)', width: 'data(size)', height: 'data(size)', label: 'data(label)', 'font-size': 9, color: '#1d2330', 'text-valign': 'bottom', 'text-margin-y': 3, 'text-background-color': '#fff', 'text-background-opacity': 0.75, 'text-background-padding': 1 } },
          { selector: 'node[kind = "agent"]', style: { 'font-size': 12, 'font-weight': 'bold' } },
          { selector: 'node[kind = "account"]', style: { shape: 'round-rectangle' } },
          { selector: 'node[kind = "group"]', style: { shape: 'ellipse', 'font-size': 11, 'border-width': 2, 'border-color': '#fff' } },
          { selector: 'edge', style: { width: 1, 'line-color': '#c5ccd8' } },
        ],
        // The agent in the middle, summary nodes around it, single contacts and accounts outside.
        layout: { name: 'concentric', concentric: (n) => ({ agent: 3, group: 2 })[n.data('kind')] || 1, levelWidth: () => 1, minNodeSpacing: 16, animate: false },
        wheelSensitivity: 0.3,
      });
    });
    return h('div', {}, legend, box);
  }

  // ---- pages ---------------------------------------------------------------------------------
  function evidenceBlock(e, digest, truncated) {
    return h('div', { class: 'evidence', id: 'evidence' },
      h('div', {}, 'Generation ', h('b', {}, e.generation), ' · crawl finished ', when(e.crawl_finished_at_ms), ' · agents refreshed ', when(e.agents_refreshed_at_ms),
        ' · data age ', age(e.data_age_s), ' · SCIM ', e.scim_available ? 'yes' : 'no', ' · report generated ', when(e.generated_at_ms)),
      h('div', {}, 'Digest ', digest ? h('code', { id: 'digest' }, 'sha256:' + digest) : h('span', { class: 'note' }, 'computing…'),
        h('span', { class: 'note' }, ' — the SHA-256 of the report\'s canonical JSON (`idgraph audit --format json`); recompute it to show the report was not edited.')),
      truncated ? h('div', { class: 'note' }, 'This page lists ' + num(truncated.shown) + ' of ' + num(truncated.total) + ' orphaned contacts; the CSV and JSON downloads (or `idgraph audit --format csv`) hold them all.') : null);
  }

  function shownNote(truncated) {
    return truncated ? h('p', { class: 'note', id: 'truncated-note' }, 'Showing the first ' + num(truncated.shown) + ' of ' + num(truncated.total) + '; the CSV download has them all.') : null;
  }

  function card(n, label, id) {
    return h('div', { class: 'card', id }, h('div', { class: 'n' }, n), h('div', { class: 'l' }, label));
  }

  function orgPage(doc, timeline) {
    const o = doc.report;
    const verifiedTotal = o.orphans_verified_after_departure + o.orphans_not_yet_verified;
    const share = verifiedTotal ? Math.round((1000 * o.orphans_verified_after_departure) / verifiedTotal) / 10 + '%' : '—';
    const agentCols = [
      { key: 'id', label: 'Agent', num: true, get: (r) => r.agent.id, cell: (r) => agentLink(r.agent.id, String(r.agent.id)) },
      { key: 'email', label: 'Email', get: (r) => r.agent.email || '', cell: (r) => agentLink(r.agent.id, r.agent.email || '(unknown)') },
      { key: 'name', label: 'Name', get: (r) => r.agent.name || '' },
      { key: 'status', label: 'Status', get: (r) => upper(r.agent.status), cell: (r) => badge(r.agent.status) },
      { key: 'gone', label: 'Gone since', get: (r) => r.gone_at_ms || 0, cell: (r) => when(r.gone_at_ms) },
      { key: 'contacts', label: 'Contacts', num: true, get: (r) => r.contacts, cell: (r) => num(r.contacts) },
      { key: 'accounts', label: 'Accounts', num: true, get: (r) => r.accounts, cell: (r) => num(r.accounts) },
    ];
    const orphanCols = [
      { key: 'contact', label: 'Contact', num: true, get: (r) => r.contact_id },
      { key: 'email', label: 'Email', get: (r) => r.contact_email || '' },
      { key: 'name', label: 'Name', get: (r) => r.contact_name || '' },
      { key: 'owner', label: 'Owner', get: (r) => r.owner_email || String(r.owner_id), cell: (r) => agentLink(r.owner_id, r.owner_email || String(r.owner_id)) },
      { key: 'reason', label: 'Reason', get: (r) => upper(r.reason) },
      { key: 'verified', label: 'Verified at', get: (r) => r.contact_verified_at_ms || 0, cell: (r) => verifiedCell(r.contact_verified_at_ms, r.owner_gone_at_ms) },
    ];
    view.fillOrg = (full) => {
      document.getElementById('orphans-slot').replaceChildren(shownNote(full.truncated) || '', table('orphans-table', full.report.orphans, orphanCols));
      document.getElementById('evidence-slot').replaceChildren(evidenceBlock(full.report.evidence, full.digest, full.truncated));
      view.doc = full;
      view.complete = true;
    };
    return [
      h('h1', {}, 'Org offboarding audit'),
      h('p', { class: 'sub' }, 'Departed, deactivated or unknown owners who still own contacts or accounts in Drift, most exposed first.'),
      h('div', { class: 'cards' },
        card(num(o.total_contacts), 'orphaned contacts', 'total-contacts'),
        card(num(o.total_accounts), 'orphaned accounts', 'total-accounts'),
        card(num(o.unowned_contacts), 'contacts with no owner at all', 'unowned-contacts'),
        card(num(o.total_agents), 'gone agents still owning something', 'total-agents'),
        card(share, 'orphans verified in Drift after their owner went (' + num(o.orphans_verified_after_departure) + ' of ' + num(verifiedTotal) + ')', 'verified-share'),
        card(age(o.evidence.data_age_s), 'data age (since the last crawl or agents refresh)', 'data-age')),
      h('div', { class: 'panels' },
        h('section', { class: 'panel' }, h('h2', {}, 'Orphans per gone owner (top ' + Math.min(BARS, o.rows.length) + ')'), barChart(o.rows)),
        h('section', { class: 'panel' }, h('h2', {}, 'Orphans and departures over time'), timelineChart(timeline))),
      h('h2', {}, 'Gone owners'),
      table('agents-table', o.rows, agentCols, { sort: 'contacts' }),
      h('h2', {}, 'Orphaned contacts'),
      h('div', { id: 'orphans-slot' }, doc.digest ? [shownNote(doc.truncated), table('orphans-table', o.orphans, orphanCols)] : h('p', { class: 'note' }, 'Loading the orphans…')),
      h('h2', {}, 'Evidence'),
      h('div', { id: 'evidence-slot' }, doc.digest ? evidenceBlock(o.evidence, doc.digest, doc.truncated) : evidenceBlock(o.evidence, null, null)),
      h('h2', { class: 'noprint' }, 'Download'),
      downloads({ all: true }, 'idgraph-org-audit'),
    ];
  }

  function agentLink(id, text) {
    // The report file holds the org's data only: a click there narrows the orphans to the agent.
    if (FILE && !FILE.agent) return h('a', { class: 'agent', href: '#', onclick: (e) => { e.preventDefault(); filterOrphans(text); } }, text);
    return h('a', { class: 'agent', href: agentHref(id) }, text);
  }

  function filterOrphans(q) {
    const st = view.tables['orphans-table'];
    if (st) { st.q = q; st.page = 0; }
    render().then(() => document.getElementById('orphans-table').scrollIntoView());
  }

  function verifiedCell(v, gone) {
    if (!v) return 'never';
    return verifiedAfter(v, gone) ? when(v) : when(v) + ' (before the owner went)';
  }

  function agentPage(doc) {
    const a = doc.report;
    const ag = a.agent;
    const gone = goneAt(ag);
    const contactCols = [
      { key: 'id', label: 'Contact', num: true, get: (c) => c.id },
      { key: 'email', label: 'Email', get: (c) => c.email || '' },
      { key: 'name', label: 'Name', get: (c) => c.name || '' },
      { key: 'verified', label: 'Verified at', get: (c) => c.verified_at_ms || 0, cell: (c) => verifiedCell(c.verified_at_ms, gone) },
    ];
    const accountCols = [
      { key: 'id', label: 'Account', get: (x) => x.id },
      { key: 'name', label: 'Name', get: (x) => x.name || '' },
      { key: 'domain', label: 'Domain', get: (x) => x.domain || '' },
    ];
    const movedCols = [
      { key: 'contact', label: 'Contact', num: true, get: (m) => m.contact_id },
      { key: 'to', label: 'Moved to', get: (m) => (m.to == null ? 'nobody' : m.to), cell: (m) => (m.to == null ? 'nobody' : agentLink(m.to, String(m.to))) },
      { key: 'at', label: 'At', get: (m) => m.at_ms, cell: (m) => when(m.at_ms) },
      { key: 'via', label: 'Via', get: (m) => m.via },
    ];
    return [
      FILE ? null : h('p', { class: 'noprint' }, h('a', { href: '#/' }, '← Org audit')),
      h('h1', {}, (ag.name || '(no name)') + ' ', h('span', { class: 'note' }, '<' + (ag.email || 'no email') + '> · id ' + ag.id + ' '), badge(ag.status)),
      h('p', { class: 'sub' }, 'Role ', ag.role || '—', ' · first seen ', when(ag.first_seen_ms), ' · last confirmed by Drift ', when(ag.verified_at_ms)),
      doc.sameEmail && doc.sameEmail.length
        ? h('p', { class: 'sub', id: 'same-email' }, 'This email also belonged to ', doc.sameEmail.flatMap((o, i) => [i ? ', ' : '', agentLink(o.id, 'agent ' + o.id), ' ', badge(o.status)]))
        : null,
      h('div', { class: 'cards' },
        card(num(a.contacts_now), 'contacts it owns now', 'contacts-now'),
        card(num(a.accounts_now), 'accounts it owns now', 'accounts-now'),
        card(a.contacts_at_departure == null ? '—' : num(a.contacts_at_departure), 'contacts it owned when it went', 'contacts-at-departure'),
        card(num(a.orphan_reason ? a.contacts_now : 0), 'orphaned contacts' + (a.orphan_reason ? ' (' + upper(a.orphan_reason) + ')' : ''), 'orphaned-contacts'),
        card(num(a.orphans_verified_after_departure), 'orphans verified after it went', 'verified-after'),
        card(num(a.reassigned_since.length), 'contacts reassigned since it went', 'reassigned')),
      h('div', { class: 'panels' },
        h('section', { class: 'panel' }, h('h2', {}, 'What it owns'), agentGraph(a, doc.truncated)),
        h('section', { class: 'panel' }, h('h2', {}, 'Timeline'),
          h('ol', { class: 'timeline-list', id: 'agent-timeline' }, a.timeline.map((e) => h('li', {}, badge(e.status), ' ', when(e.at_ms)))))),
      h('h2', {}, 'Orphaned contacts'), shownNote(doc.truncated), table('agent-contacts', a.orphaned_contacts, contactCols),
      a.orphaned_accounts.length ? [h('h2', {}, 'Orphaned accounts'), table('agent-accounts', a.orphaned_accounts, accountCols)] : null,
      a.reassigned_since.length ? [h('h2', {}, 'Reassigned since it went'), table('agent-moved', a.reassigned_since, movedCols)] : null,
      h('h2', {}, 'Evidence'),
      evidenceBlock(a.evidence, doc.digest, doc.truncated),
      h('h2', { class: 'noprint' }, 'Download'),
      downloads({ a: String(ag.id) }, 'idgraph-audit-' + ag.id),
    ];
  }

  // ---- routing, login, live updates ----------------------------------------------------------
  function frame(content) {
    const live = FILE ? 'report file · generated ' + when(((FILE.org || FILE.agent).report.evidence || {}).generated_at_ms) : 'live · updates when the index changes';
    return [
      h('header', { class: 'bar' }, h('b', {}, 'idgraph'), FILE ? null : h('a', { href: '#/' }, 'Audit'), FILE ? null : h('a', { href: '#/cases', id: 'nav-cases' }, 'Cases'), FILE ? null : h('a', { href: '/' }, 'GraphiQL'),
        h('span', { class: 'grow' }), h('span', { class: 'live' }, live),
        USER && !FILE ? h('span', { id: 'whoami', class: 'live' }, USER + ' · ' + ROLE) : null,
        USER && !FILE ? h('button', { id: 'signout', type: 'button', onclick: signOut }, 'Sign out') : null),
      h('main', {}, content),
    ];
  }

  async function signOut() {
    const r = await fetch('/auth/logout', { method: 'POST', headers: { 'x-csrf-token': CSRF, 'content-type': 'application/json' }, body: '{}' });
    const done = r.ok ? await r.json() : {};
    app.replaceChildren(h('div', { class: 'login', id: 'signed-out' }, h('h1', {}, 'Signed out'),
      h('p', {}, 'Your idgraph session has ended.'),
      done.endSession ? h('p', {}, h('a', { href: done.endSession }, 'Sign out of the identity provider too')) : null,
      h('p', {}, h('a', { href: '/auth/login?next=/audit' }, 'Sign in again'))));
  }

  function login(message) {
    const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', placeholder: 'read token' });
    const form = h('form', { class: 'login', onsubmit: (e) => { e.preventDefault(); sessionStorage.setItem(TOKEN_KEY, input.value.trim()); render(); } },
      h('h1', {}, 'Sign in to the audit'), h('p', {}, message),
      h('p', { class: 'note' }, 'Paste a read token of this server. It is kept for this tab only (sessionStorage) and sent to /graphql alone.'),
      input, h('button', { type: 'submit' }, 'Open the audit'));
    app.replaceChildren(form);
    input.focus();
  }

  function showError(e) {
    if (e instanceof AuthError && USER) {
      return app.replaceChildren(...frame(h('div', { class: 'error', id: 'error' }, 'Signed in as ' + USER + ' (' + ROLE + '): ' + e.message)));
    }
    if (e instanceof AuthError) return login(sessionStorage.getItem(TOKEN_KEY) ? 'That token was refused: ' + e.message : 'This server needs a bearer token.');
    const msg = e instanceof NotReady ? 'No index is loaded yet (the first crawl is still running). This page fills in by itself when it is.' : 'Could not load the audit: ' + e.message;
    app.replaceChildren(...frame(h('div', { class: 'error', id: 'error' }, msg)));
  }

  let rendering = Promise.resolve();
  function render() {
    rendering = rendering.then(renderNow, renderNow);
    return rendering;
  }

  // ---- offboarding cases ---------------------------------------------------------------------
  const CASE_FIELDS = 'id state overdue totalItems openedAt openedBy dueAt reactivatedAt signedOffBy signedOffAt decidedBy jobs notifyFailures agent { id email name status } counts { group count }';
  const GROUPS = ['UNDECIDED', 'TO_REASSIGN', 'MOVING', 'CONFIRMED', 'FAILED', 'KEEP', 'ALREADY_MOVED'];

  async function casesPage() {
    const d = await gql('{ cases(first: 100) { edges { node { ' + CASE_FIELDS + ' } } } }');
    const rows = d.cases.edges.map(({ node: c }) => h('tr', { class: c.overdue ? 'overdue' : '' },
      h('td', {}, h('a', { href: '#/case/' + c.id }, '#' + c.id)), h('td', {}, c.agent.email || c.agent.id),
      h('td', {}, badge(c.state)), h('td', {}, num(c.totalItems)), h('td', {}, String(c.dueAt || '').slice(0, 16).replace('T', ' ')),
      h('td', {}, c.overdue ? h('b', { class: 'late' }, 'overdue') : '')));
    return h('section', { id: 'cases' }, h('h1', {}, 'Offboarding cases'),
      h('p', { class: 'note' }, 'A case opens by itself when an agent is deactivated or departs: what it held is frozen, each item gets a decision, reassignments are carried out and checked in Drift, and someone who made none of the decisions signs it off.'),
      rows.length ? h('table', { id: 'cases-table' }, h('thead', {}, h('tr', {}, h('th', {}, 'case'), h('th', {}, 'agent'), h('th', {}, 'state'), h('th', {}, 'items'), h('th', {}, 'due'), h('th', {}, ''))), h('tbody', {}, rows))
        : h('p', { id: 'no-cases' }, 'No case yet.'));
  }

  async function casePage(id) {
    const d = await gql('query($id: ID!) { case(id: $id) { ' + CASE_FIELDS + ' items(first: 1000) { edges { node { kind id email domain group failure decision { kind to reason by } } } } } agents(status: [ACTIVE], first: 100) { edges { node { id email name } } } me { name role } }', { id });
    const c = d.case;
    if (!c) return h('div', { class: 'error' }, 'No such case.');
    const count = (g) => (c.counts.find((x) => x.group === g) || { count: 0 }).count;
    const message = h('div', { id: 'case-message', class: 'note' });
    const act = async (query, variables, done) => {
      message.textContent = '…';
      try { const r = await gql(query, variables); message.textContent = done(r); await render(); } catch (e) { message.textContent = e.message; message.className = 'error'; }
    };
    const target = h('select', { id: 'bulk-target' }, d.agents.edges.filter((e) => e.node.id !== c.agent.id).map((e) => h('option', { value: e.node.id }, (e.node.email || e.node.id))));
    const decision = h('select', { id: 'bulk-decision', onchange: () => { target.disabled = decision.value !== 'REASSIGN'; } }, h('option', { value: 'REASSIGN' }, 'Reassign to'), h('option', { value: 'KEEP' }, 'Keep (give a reason)'));
    const which = h('select', { id: 'bulk-filter' }, h('option', { value: 'undecided' }, 'every undecided contact'), h('option', { value: 'accounts' }, 'every undecided account'), h('option', { value: 'domain' }, 'items of the domain'), h('option', { value: 'ids' }, 'these ids'), h('option', { value: 'failed' }, 'failed reassignments'));
    const arg = h('input', { id: 'bulk-arg', placeholder: 'domain, or ids separated by spaces' });
    const reason = h('input', { id: 'bulk-reason', placeholder: 'reason' });
    const apply = h('button', { id: 'bulk-apply', type: 'button', onclick: () => {
      const filter = which.value === 'undecided' ? { undecided: true, kind: 'CONTACT' } : which.value === 'accounts' ? { undecided: true, kind: 'ACCOUNT' } : which.value === 'domain' ? { domain: arg.value.trim() } : which.value === 'failed' ? { group: 'FAILED' } : { ids: arg.value.split(/[\s,]+/).filter(Boolean) };
      act('mutation($c: ID!, $k: CaseDecisionKind!, $to: ID, $r: String, $f: CaseItemFilter) { decide(case: $c, decision: $k, to: $to, reason: $r, filter: $f) { decided } }',
        { c: c.id, k: decision.value, to: decision.value === 'REASSIGN' ? target.value : null, r: reason.value || null, f: filter }, (r) => r.decide.decided + ' items decided.');
    } }, 'Apply');
    const signed = c.state === 'SIGNED_OFF';
    const carry = h('button', { id: 'carry-out', type: 'button', disabled: signed || (count('TO_REASSIGN') + count('FAILED') === 0), onclick: () =>
      act('mutation($c: ID!) { carryOut(case: $c) { state } }', { c: c.id }, () => 'Carrying out: moves go through Drift at the rate budget, then each is read back.') }, 'Carry out');
    const note = h('input', { id: 'sign-note', placeholder: 'note (optional)' });
    const sign = h('button', { id: 'sign-off', type: 'button', disabled: signed || c.state !== 'CARRIED_OUT', onclick: () =>
      act('mutation($c: ID!, $n: String) { signOff(case: $c, note: $n) { state } }', { c: c.id, n: note.value || null }, () => 'Signed off.') }, 'Sign off');
    const bundle = h('button', { id: 'download-bundle', type: 'button', onclick: async () => {
      const headers = {};
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (!CSRF && token) headers.authorization = 'Bearer ' + token;
      const r = await fetch(BASE + 'cases/' + c.id + '/bundle', { headers });
      const a = h('a', { href: URL.createObjectURL(await r.blob()), download: 'idgraph-case-' + c.id + '.html' });
      document.body.append(a); a.click(); a.remove();
    } }, 'Download the evidence bundle');
    const byGroup = GROUPS.map((g) => {
      const items = c.items.edges.map((e) => e.node).filter((i) => i.group === g);
      if (!items.length) return null;
      return h('details', { class: 'group', 'data-group': g, open: g !== 'KEEP' && g !== 'CONFIRMED' },
        h('summary', {}, upper(g).replace(/_/g, ' ') + ' (' + num(items.length) + ')'),
        h('table', {}, h('tbody', {}, items.slice(0, 200).map((i) => h('tr', {}, h('td', {}, i.kind.toLowerCase() + ' ' + i.id), h('td', {}, i.email || i.domain || ''),
          h('td', {}, i.decision ? i.decision.kind + (i.decision.to ? ' → ' + i.decision.to : '') : ''), h('td', {}, (i.decision && i.decision.reason) || i.failure || ''), h('td', {}, i.decision ? i.decision.by : ''))))));
    });
    const moving = count('MOVING') > 0;
    if (moving) setTimeout(() => { if (view.route === 'case:' + c.id) render(); }, 1500);
    return h('section', { id: 'case', 'data-state': c.state },
      h('h1', {}, 'Case #' + c.id + ': ' + (c.agent.email || c.agent.id)),
      h('p', {}, 'Agent ', c.agent.id, ' (', c.agent.status, ') · opened ', String(c.openedAt).slice(0, 16).replace('T', ' '), ' by ', c.openedBy, ' · due ', String(c.dueAt).slice(0, 16).replace('T', ' '), ' · ', h('span', { id: 'case-state' }, badge(c.state)),
        c.overdue ? h('b', { class: 'late' }, ' overdue') : null, c.reactivatedAt ? h('b', {}, ' · the agent was reactivated') : null,
        c.signedOffBy ? ' · signed off by ' + c.signedOffBy : null),
      h('div', { class: 'cards' }, GROUPS.map((g) => h('div', { class: 'card count', 'data-group': g }, h('div', { class: 'n' }, num(count(g))), h('div', {}, upper(g).replace(/_/g, ' '))))),
      moving ? h('p', { id: 'progress' }, 'Carrying out: ' + count('MOVING') + ' moving, ' + count('CONFIRMED') + ' confirmed, ' + count('FAILED') + ' failed.') : null,
      signed ? null : h('div', { class: 'bulk' }, h('b', {}, 'Decide: '), which, arg, decision, target, reason, apply),
      h('div', { class: 'actions' }, carry, ' ', note, sign, ' ', bundle),
      c.decidedBy.length ? h('p', { class: 'note' }, 'Decided by ' + c.decidedBy.join(', ') + ': someone else signs off.') : null,
      message, byGroup);
  }

  async function renderNow() {
    const cm = /^#\/case\/(\d+)$/.exec(location.hash);
    if (!FILE && (cm || location.hash === '#/cases')) {
      const route = cm ? 'case:' + cm[1] : 'cases';
      if (route !== view.route) window.scrollTo(0, 0);
      view.route = route;
      try {
        const content = cm ? await casePage(cm[1]) : await casesPage();
        app.replaceChildren(...frame(content));
        view.rendered = (view.rendered || 0) + 1;
      } catch (e) {
        showError(e);
      }
      return;
    }
    const m = /^#\/agent\/(.+)$/.exec(location.hash);
    const route = FILE && FILE.agent ? 'agent:' + FILE.agent.report.agent.id : m ? 'agent:' + decodeURIComponent(m[1]) : 'org';
    if (route !== view.route) { view.tables = {}; window.scrollTo(0, 0); }
    view.pending = null;
    view.route = route;
    try {
      let content;
      if (route.startsWith('agent:')) {
        const { doc } = await loadAgent(route.slice(6));
        content = doc ? agentPage(doc) : h('div', { class: 'error' }, 'No such agent.');
        view.doc = doc;
      } else {
        const { doc, timeline, full } = await loadOrg();
        content = orgPage(doc, timeline);
        view.doc = doc;
        view.timeline = timeline;
        view.pending = full;
      }
      view.charts.forEach((c) => c.destroy());
      view.charts = [];
      if (view.cy) { view.cy.destroy(); view.cy = null; }
      view.complete = !view.pending;
      app.replaceChildren(...frame(content));
      view.rendered = (view.rendered || 0) + 1;
      if (view.pending) {
        const full = await view.pending;
        view.pending = null;
        if (view.route === route) view.fillOrg(full);
      }
    } catch (e) {
      showError(e);
    }
  }

  async function poll() {
    if (FILE || !view.seq || String(view.route).startsWith('case')) return;
    try {
      const d = await gql('{ indexStatus { lastChangeSeq generation } }');
      const seq = d.indexStatus.lastChangeSeq + ':' + d.indexStatus.generation;
      if (seq !== view.seq) await render();
    } catch (e) { /* the next poll tries again; an auth error shows on the next render */ }
  }

  window.addEventListener('hashchange', render);
  render();
  if (!FILE) setInterval(() => { if (view.seq) poll(); else if (document.getElementById('error')) render(); }, POLL_MS);
})();
