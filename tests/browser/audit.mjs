// Opens idgraph's audit view as a person would, then the HTML report from a file with the network
// cut, and prints what it saw as JSON.
// Usage: node audit.mjs BASE_URL REPORT.html AGENT_REPORT.html [TOKEN] [SHOT_DIR]
//   BASE_URL      the server, e.g. http://127.0.0.1:8080 (its /audit is opened)
//   REPORT.html   `idgraph audit --all --format html` written to a file
//   AGENT_REPORT  `idgraph audit --agent X --format html` written to a file
//   TOKEN         a read token typed into the page's sign-in form ('' for none)
import { chromium } from 'playwright-core';
import { pathToFileURL } from 'node:url';

const [base, report, agentReport, token, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// What the page shows: the cards' numbers, the charts' bars, the graph's nodes.
async function seen(page) {
  return page.evaluate(() => {
    const v = window.idgraphAudit;
    const text = (id) => { const e = document.getElementById(id); return e ? e.querySelector('.n').textContent : null; };
    const cards = {};
    for (const c of document.querySelectorAll('.card')) cards[c.id] = c.querySelector('.n').textContent;
    const canvasInk = (id) => {
      const c = document.getElementById(id);
      if (!c || !c.getContext) return 0;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let ink = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
      return ink;
    };
    return {
      cards,
      digest: (document.getElementById('digest') || {}).textContent || null,
      bars: v.barChart ? v.barChart.data.labels.length : document.querySelectorAll('#orphans-chart .bar-row').length,
      barInk: canvasInk('orphans-chart'),
      timelinePoints: v.timelineChart ? v.timelineChart.data.labels.length : null,
      timelineInk: canvasInk('timeline-chart'),
      nodes: v.cy ? v.cy.nodes().length : null,
      graphNodes: v.graphNodes ?? null,
      graphDrawn: v.cy ? v.cy.nodes().every((n) => n.renderedPosition().x > 0) : false,
      rows: document.querySelectorAll('#agents-table tbody tr').length,
      rendered: v.rendered || 0,
      title: document.querySelector('h1') ? document.querySelector('h1').textContent : null,
      downloads: [...document.querySelectorAll('button.download')].map((b) => b.dataset.format),
      text: text('total-contacts'),
    };
  });
}

const out = {};
try {
  // 1. The served page.
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  let started = Date.now();
  await page.goto(base + '/audit', { waitUntil: 'domcontentloaded' });
  if (token) {
    await page.waitForSelector('#token', { timeout: 20000 });
    await page.fill('#token', token);
    started = Date.now(); // first paint counted from the sign-in
    await page.click('form.login button');
  }
  await page.waitForFunction(() => window.idgraphAudit && window.idgraphAudit.barChart && window.idgraphAudit.timelineChart, null, { timeout: 30000 });
  out.firstPaintMs = Date.now() - started;
  await page.waitForFunction(() => window.idgraphAudit.complete, null, { timeout: 60000 });
  out.completeMs = Date.now() - started;
  out.org = await seen(page);
  if (shots) await page.screenshot({ path: shots + '/audit-org.png', fullPage: false });

  // A download is the CLI's file.
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('button.download[data-format="MARKDOWN"]')]);
  out.markdownName = dl.suggestedFilename();
  const chunks = [];
  for await (const c of await dl.createReadStream()) chunks.push(c);
  out.markdown = Buffer.concat(chunks).toString('utf8');

  // The page follows the index: an agent deprovisioned in Drift, an agents refresh, and the
  // numbers change without a reload.
  if (process.env.LIVE_DELETE_URL) {
    const before = await seen(page);
    await fetch(process.env.LIVE_DELETE_URL, { method: 'DELETE', headers: { authorization: 'Bearer ' + process.env.LIVE_SIM_TOKEN } });
    await fetch(base + '/graphql', { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer ' + process.env.LIVE_ADMIN_TOKEN },
      body: JSON.stringify({ query: 'mutation { reindex(scope: AGENTS) { crawling } }' }) });
    await page.waitForFunction((n) => window.idgraphAudit.rendered > n && window.idgraphAudit.barChart && window.idgraphAudit.complete, before.rendered, { timeout: 30000 });
    out.live = { before, after: await seen(page) };
  }

  // 2. Click the most exposed agent in the table: its page.
  const link = page.locator('#agents-table tbody tr').first().locator('a.agent').first();
  out.clickedAgent = await link.textContent();
  const clickedAt = Date.now();
  await link.click();
  await page.waitForFunction(() => window.idgraphAudit.cy && window.idgraphAudit.cy.nodes().length > 0, null, { timeout: 30000 });
  out.agentPageMs = Date.now() - clickedAt;
  // Responsive: the page answers a scripted click on its table's next page promptly.
  const t = Date.now();
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
  out.agentFrameMs = Date.now() - t;
  await page.waitForTimeout(300);
  out.agentHash = await page.evaluate(() => location.hash);
  out.agent = await seen(page);
  if (shots) await page.screenshot({ path: shots + '/audit-agent.png', fullPage: false });
  out.requests = requests;
  out.external = requests.filter((u) => !u.startsWith(base));
  await page.close();

  // 2b. Without the chart and graph libraries (a build that could not fetch them): plain HTML
  // bars and lists with the same numbers.
  {
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    await ctx.route(/\/assets\/(chart\.umd\.min|cytoscape\.min)\.js$/, (route) => route.abort());
    const p = await ctx.newPage();
    await p.addInitScript((t) => { if (t) sessionStorage.setItem('idgraph.token', t); }, token || '');
    await p.goto(base + '/audit', { waitUntil: 'domcontentloaded' });
    await p.waitForFunction(() => window.idgraphAudit && window.idgraphAudit.complete && document.querySelector('#orphans-chart'), null, { timeout: 60000 });
    out.fallback = await seen(p);
    out.fallback.charts = await p.evaluate(() => typeof window.Chart + ' ' + typeof window.cytoscape);
    await ctx.close();
  }

  // 3. The report files, opened from disk with every network request refused.
  for (const [key, file] of [['report', report], ['agentReport', agentReport]]) {
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const p = await ctx.newPage();
    const tried = [];
    await ctx.route('**/*', (route) => {
      const u = route.request().url();
      if (u.startsWith('file:')) return route.continue();
      tried.push(u);
      return route.abort();
    });
    const opened = Date.now();
    await p.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    await p.waitForFunction((k) => window.idgraphAudit && window.idgraphAudit.rendered > 0 &&
      (k === 'report' ? window.idgraphAudit.barChart : window.idgraphAudit.cy), key, { timeout: 30000 });
    await p.waitForTimeout(300);
    out[key] = await seen(p);
    out[key].openMs = Date.now() - opened;
    out[key].network = tried;
    if (shots && key === 'report') await p.screenshot({ path: shots + '/audit-report.png', fullPage: false });
    await ctx.close();
  }
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
