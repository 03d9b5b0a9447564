// The decision view of an offboarding case, as people use it: one auditor decides in bulk and
// carries the case out, a second one signs it off. Prints what it saw as JSON.
// Usage: node cases.mjs BASE_URL CASE_ID DECIDER_TOKEN SIGNER_TOKEN
import { chromium } from 'playwright-core';

const [base, caseId, decider, signer] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const out = {};

async function as(token) {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  await page.goto(base + '/audit#/case/' + caseId, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#token', { timeout: 10000 });
  await page.fill('#token', token);
  await page.click('form.login button[type="submit"]');
  await page.waitForSelector('#case', { timeout: 15000 });
  return page;
}
const state = (page) => page.$eval('#case', (e) => e.dataset.state);
const count = (page, g) => page.$eval(`.card.count[data-group="${g}"] .n`, (e) => Number(e.textContent.replace(/,/g, '')));

try {
  const page = await as(decider);
  out.initialState = await state(page);
  out.undecided = await count(page, 'UNDECIDED');
  // Bulk: every undecided item to the first agent offered.
  await page.selectOption('#bulk-filter', 'undecided');
  await page.selectOption('#bulk-decision', 'REASSIGN');
  let t0 = Date.now();
  await page.click('#bulk-apply');
  await page.waitForFunction(() => Number(((document.querySelector('.card.count[data-group="TO_REASSIGN"] .n') || {}).textContent || '0').replace(/,/g, '')) > 0, null, { timeout: 15000 });
  out.decideMs = Date.now() - t0;
  // Accounts are moved in Drift's UI, not through its API: kept here, with a reason.
  if ((await count(page, 'UNDECIDED')) > 0) {
    await page.selectOption('#bulk-filter', 'accounts');
    await page.selectOption('#bulk-decision', 'KEEP');
    await page.fill('#bulk-reason', 'accounts stay with the team inbox');
    await page.click('#bulk-apply');
  }
  await page.waitForFunction(() => document.querySelector('#case') && document.querySelector('#case').dataset.state === 'DECIDED', null, { timeout: 15000 });
  out.toReassign = await count(page, 'TO_REASSIGN');
  out.kept = await count(page, 'KEEP');
  // Carry out, and watch the progress until every move is confirmed.
  t0 = Date.now();
  await page.click('#carry-out');
  await page.waitForFunction(() => document.querySelector('#case') && document.querySelector('#case').dataset.state === 'CARRIED_OUT', null, { timeout: 60000 });
  out.carryMs = Date.now() - t0;
  out.confirmed = await count(page, 'CONFIRMED');
  // The decider may not sign off: the page says why.
  await page.click('#sign-off');
  await page.waitForFunction(() => /separation of duties/.test(document.querySelector('#case-message').textContent), null, { timeout: 10000 });
  out.deciderRefused = await page.textContent('#case-message');
  await page.close();
  // The second auditor signs off.
  const page2 = await as(signer);
  await page2.fill('#sign-note', 'checked');
  t0 = Date.now();
  await page2.click('#sign-off');
  await page2.waitForFunction(() => document.querySelector('#case') && document.querySelector('#case').dataset.state === 'SIGNED_OFF', null, { timeout: 15000 });
  out.signMs = Date.now() - t0;
  out.finalState = await state(page2);
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.failure = String((e && e.stack) || e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
