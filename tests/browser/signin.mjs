// Signs in to idgraph's audit page through the identity provider, as a person would, then checks
// what the role allows, signs out, and prints what it saw as JSON.
// Usage: node signin.mjs BASE_URL USER
import { chromium } from 'playwright-core';

const [base, user] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const out = { user };
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  // 1. The audit page sends a stranger to the provider's sign-in.
  await page.goto(base + '/audit', { waitUntil: 'domcontentloaded' });
  out.signInAt = new URL(page.url()).origin;
  await page.fill('input[name="login"]', user);
  await page.fill('input[name="password"]', 'any password: the development login page takes any');
  await Promise.all([page.waitForURL((u) => u.toString().startsWith(base + '/audit'), { timeout: 20000 }), page.click('button[type="submit"]')]);
  out.backAt = page.url();
  // 2. The page knows who signed in.
  await page.waitForSelector('#whoami', { timeout: 20000 });
  out.whoami = await page.textContent('#whoami');
  // 3. The org audit (an auditor sees its cards; a viewer the refusal).
  await page.waitForSelector('.card, #error', { timeout: 20000 });
  out.cards = await page.$$eval('.card', (cs) => cs.length);
  out.error = await page.$eval('#error', (e) => e.textContent).catch(() => null);
  const cookies = await page.context().cookies();
  const c = cookies.find((x) => x.name === 'idgraph_session');
  out.cookie = c ? { httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure } : null;
  // 4. What the role allows, asked from the page itself (its cookie goes along).
  out.export = await page.evaluate(async () => {
    const r = await fetch('/export/orphans?format=csv');
    const text = await r.text();
    let code = null;
    try { code = JSON.parse(text).errors[0].extensions.code; } catch (e) { /* CSV */ }
    return { status: r.status, code, rows: r.ok ? text.trim().split('\n').length - 1 : null };
  });
  out.withoutCsrf = await page.evaluate(async () => {
    const r = await fetch('/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ me { name } }' }) });
    return r.status;
  });
  // 5. Sign-out ends the session.
  await page.click('#signout');
  await page.waitForSelector('#signed-out', { timeout: 10000 });
  out.meAfter = await page.evaluate(async () => (await fetch('/auth/me')).status);
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.failure = String(e && e.stack || e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
