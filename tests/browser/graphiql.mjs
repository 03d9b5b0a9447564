// Opens idgraph's GraphiQL page, runs the default query and checks the answer shows.
// Usage: node graphiql.mjs URL [SCREENSHOT.png]
import { chromium } from 'playwright-core';

const url = process.argv[2];
const shot = process.argv[3];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const failed = [];
  page.on('requestfailed', (r) => failed.push(r.url()));
  await page.goto(url, { waitUntil: 'networkidle' });
  await page.waitForSelector('.graphiql-container', { timeout: 20000 });
  await page.click('.graphiql-execute-button');
  // The result pane is a read-only editor: wait until it shows data.
  await page.waitForFunction(() => {
    const el = document.querySelector('.result-window');
    return el && el.textContent.includes('indexStatus') && el.textContent.includes('generation');
  }, null, { timeout: 20000 });
  const text = await page.$eval('.result-window', (el) => el.textContent);

  // The Docs explorer fills in from the introspection query GraphiQL sends itself.
  await page.click('button[aria-label="Show Documentation Explorer"]');
  await page.waitForSelector('.graphiql-doc-explorer', { timeout: 20000 });
  const rootLink = page.locator('.graphiql-doc-explorer a.graphiql-doc-explorer-type-name', { hasText: 'Query' });
  await rootLink.first().click({ timeout: 20000 });
  await page.waitForFunction(() => {
    const el = document.querySelector('.graphiql-doc-explorer');
    return el && el.textContent.includes('orphans') && el.textContent.includes('contactsByEmails');
  }, null, { timeout: 20000 });
  const docs = await page.$eval('.graphiql-doc-explorer', (el) => el.textContent);
  const docsError = docs.includes('Error fetching schema');

  // Autocomplete: type the start of a field and a suggestion list appears.
  await page.click('.graphiql-query-editor .CodeMirror');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type('{ indexSt', { delay: 50 });
  await page.waitForSelector('.CodeMirror-hints', { timeout: 20000 });
  const hints = await page.$$eval('.CodeMirror-hint', (els) => els.map((e) => e.textContent));
  if (shot) await page.screenshot({ path: shot });
  const external = failed.filter((u) => !u.startsWith(url));
  console.log(JSON.stringify({
    ok: !docsError, resultChars: text.length, docsHasQueryFields: docs.includes('orphans'), docsError, hints,
    failedRequests: failed, external,
  }));
} finally {
  await browser.close();
}
