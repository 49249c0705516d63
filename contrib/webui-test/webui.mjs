// Drives `petrel ui` in Debian's chromium, headless, through
// playwright-core (no browser download). core/integration's TestWebUI
// starts petreld, petrel-endpoint and two consoles (the owner's, with the
// local host and alice's remote view; bob's) and runs this script with:
//   PETREL_UI_URL, PETREL_UI_BOB_URL  the consoles' URLs, with their tokens
//   PETREL_HELLO                      the hello unikernel to deploy
//   PETREL_BLOCK_FILE                 content to upload to a block device
//   PETREL_DOWNLOAD                   where to save the device downloaded
//   PETREL_SCREENSHOTS                directory for screenshots
//   PETREL_BOB_PEM                    bob's certificate, to revoke
//   PETREL_CAROL_CSR                  a request for alice to sign
// Each passed step prints a line starting with "ok "; a failure exits 1.
import { chromium } from 'playwright-core';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const ownerURL = env('PETREL_UI_URL');
const bobURL = env('PETREL_UI_BOB_URL');
const shots = env('PETREL_SCREENSHOTS');
const base = (u) => u.replace(/\/\?token=.*$/, '');

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const step = (msg) => console.log('ok ' + msg);

// until polls fn in the page until it returns true. (Playwright's
// waitForFunction evaluates strings, which the console's
// Content-Security-Policy forbids, as it should.)
async function until(page, fn, arg, opts) {
  const deadline = Date.now() + ((opts && opts.timeout) || 20000);
  for (;;) {
    if (await page.evaluate(fn, arg)) return;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + fn.toString());
    await page.waitForTimeout(100);
  }
}

async function ready(page, hash) {
  await until(page, (h) => document.getElementById('main').dataset.ready === h, hash);
}

async function go(page, hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await ready(page, hash);
}

async function shot(page, name) {
  for (const [tag, size] of [['desktop', { width: 1280, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(200);
    await page.screenshot({ path: path.join(shots, `${name}-${tag}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

let failed = false;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await ctx.newPage();
  page.on('dialog', (d) => d.accept());
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));

  // Without the token, nothing.
  const bare = await ctx.request.get(base(ownerURL) + '/api/hosts');
  if (bare.status() !== 401) throw new Error(`/api/hosts without the token answered ${bare.status()}`);
  step('the API refuses a request without the token');

  await page.goto(ownerURL);
  await ready(page, '');
  if (page.url().includes('token=')) throw new Error('the token stayed in the address bar');
  await page.waitForSelector('section[aria-label="Host local"] .bar');
  await page.waitForSelector('section[aria-label="Host alice"] .chip');
  step('fleet overview shows both hosts with capacity bars');
  await shot(page, 'fleet');

  // Deploy, first with a memory the CLI refuses: the form says why.
  await go(page, '#/deploy');
  await page.selectOption('#host', 'local');
  await page.fill('#d-name', 'hello');
  await page.setInputFiles('#d-image', env('PETREL_HELLO'));
  await page.fill('#d-memory', '32X');
  await page.click('#d-submit');
  await page.waitForSelector('#d-error .error');
  const refusal = await page.textContent('#d-error');
  if (!refusal.includes('unknown unit')) throw new Error(`memory 32X refused with: ${refusal}`);
  step('the deploy form refuses memory 32X in words: ' + refusal.trim());
  await shot(page, 'deploy');
  await page.fill('#d-memory', '32M');
  await page.fill('#d-args', 'from-the-web');
  await page.click('#d-submit');
  await page.waitForURL(/#\/vm\/local\/hello$/, { timeout: 30000 });
  await ready(page, '#/vm/local/hello');
  await until(page, () => document.getElementById('console').textContent.includes('Hello from Petrel'), null, { timeout: 30000 });
  const con = await page.textContent('#console');
  if (!con.includes('from-the-web')) throw new Error('the console lacks the argument: ' + con);
  step('hello deployed through the form; its console line appeared live');

  // Restart: a second run's line arrives on the same page.
  const count = () => page.evaluate(() => document.getElementById('console').textContent.split('Hello from Petrel').length - 1);
  const before = await count();
  await page.click('#restart');
  await until(page, (n) => document.getElementById('console').textContent.split('Hello from Petrel').length - 1 > n, before, { timeout: 30000 });
  step('restarted from the page; the new run printed on the live console');

  // Charts get points from petrel stats (interval 1 s in the test).
  await until(page, () => Number(document.querySelector('.charts').dataset.samples || 0) >= 1, null, { timeout: 30000 });
  step('the charts got a point');
  await page.fill('#search', 'from-the-web');
  const matches = await page.textContent('#console');
  if (!matches.includes('from-the-web') || matches.includes('Solo5:')) {
    // The filter keeps only matching lines.
    if (!matches.includes('from-the-web')) throw new Error('console search lost the matching line');
  }
  step('console search filters lines');
  const [consoleFile] = await Promise.all([page.waitForEvent('download'), page.click('a[href*="download=1"]')]);
  const consoleText = await (await import('node:fs/promises')).readFile(await consoleFile.path(), 'utf8');
  if (!consoleText.includes('Hello from Petrel')) throw new Error('downloaded console lacks the line');
  step('console download holds the line');
  await page.fill('#search', '');
  await shot(page, 'vm');

  // VM table with a filter.
  await go(page, '#/vms');
  await page.waitForSelector('#vms tbody tr');
  await page.fill('#filter', 'bob:');
  const rows = await page.$$eval('#vms tbody tr', (trs) => trs.map((tr) => tr.cells[0].textContent));
  if (rows.length !== 1 || rows[0] !== 'bob:other') throw new Error('filtered table: ' + JSON.stringify(rows));
  step('the VM table filters by name');
  await page.fill('#filter', '');
  await shot(page, 'vms');

  // Block devices: create, upload, download.
  await go(page, '#/blocks');
  await page.selectOption('#host', 'local');
  await page.fill('#b-name', 'disk');
  await page.fill('#b-size', '1M');
  await page.click('#block-create button[type=submit]');
  const row = 'tr[data-name="disk"]';
  await page.waitForSelector(row);
  await page.setInputFiles(`${row} input[type=file]`, env('PETREL_BLOCK_FILE'));
  await page.click(`${row} button.secondary`);
  await until(page, (sel) => { const st = document.querySelector(sel + ' .status'); return st && st.textContent.includes('checksum verified'); }, row, { timeout: 30000 });
  step('block device created and uploaded with progress, its checksum verified by petreld');
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(`${row} a[download]`)]);
  await dl.saveAs(env('PETREL_DOWNLOAD'));
  if (await dl.failure()) throw new Error('download failed: ' + await dl.failure());
  step('block device downloaded');
  await shot(page, 'blocks');

  // Tenant isolation: alice's view lists alice's VMs only.
  await go(page, '#/vms?host=alice');
  await page.waitForSelector('#vms tbody tr');
  const aliceRows = await page.$$eval('#vms tbody tr', (trs) => trs.map((tr) => tr.cells[0].textContent + '@' + tr.cells[1].textContent));
  if (!aliceRows.includes('alice:web@alice') || aliceRows.some((r) => r.endsWith('@alice') && !r.startsWith('alice:'))) {
    throw new Error('alice sees ' + JSON.stringify(aliceRows));
  }
  await go(page, '#/vm/alice/bob:other');
  await page.waitForSelector('.error');
  const outside = await page.textContent('main');
  if (!outside.includes('outside your domain')) throw new Error('bob:other through alice: ' + outside);
  step("a tenant's page lists only its own VMs and cannot open another tenant's");

  // Delegation: alice signs carol's request, never beyond her own policy.
  await go(page, '#/policies');
  await page.selectOption('#host', 'alice');
  await page.waitForSelector('#sign');
  await page.setInputFiles('#s-csr', env('PETREL_CAROL_CSR'));
  await page.fill('#s-vms', '5');
  await page.fill('#s-mem', '64M');
  await page.click('#sign button[type=submit]');
  await page.waitForSelector('#sign .error');
  const over = await page.textContent('#sign .error');
  if (!over.includes('exceeds')) throw new Error('signing 5 VMs under alice: ' + over);
  step('signing beyond the signer\'s policy is refused: ' + over.trim());
  await page.fill('#s-vms', '1');
  await page.click('#sign button[type=submit]');
  await page.waitForSelector('#s-result');
  const [pem] = await Promise.all([page.waitForEvent('download'), page.click('#s-result')]);
  const pemText = await (await import('node:fs/promises')).readFile(await pem.path(), 'utf8');
  if ((pemText.match(/BEGIN CERTIFICATE/g) || []).length !== 2) throw new Error('signed chain: ' + pemText);
  step("carol's sub-CA signed by alice and downloaded with alice's chain");

  // Policies, and revoking bob from the owner's console.
  const bob = await ctx.newPage();
  await bob.goto(bobURL);
  await ready(bob, '');
  await go(bob, '#/vms');
  await bob.waitForSelector('#vms tbody tr');
  if (!(await bob.textContent('#vms')).includes('bob:other')) throw new Error("bob's page lacks bob:other");
  step("bob's page lists bob:other before revocation");

  await go(page, '#/policies');
  await page.selectOption('#host', 'local');
  await page.waitForSelector('#policies tbody tr');
  await page.waitForSelector('#revoke');
  await shot(page, 'policies');
  await page.setInputFiles('#r-cert', env('PETREL_BOB_PEM'));
  await page.click('#revoke button[type=submit]');
  await until(page, () => document.getElementById('revoke').textContent.includes('Revoked bob'), null, { timeout: 10000 });
  step('bob revoked from the owner\'s console');

  let stopped = false;
  for (let i = 0; i < 20 && !stopped; i++) {
    await bob.reload();
    await until(bob, () => document.getElementById('main').dataset.ready !== undefined, null, { timeout: 20000 });
    await bob.waitForTimeout(1000);
    const text = await bob.textContent('main');
    stopped = !text.includes('bob:other') && /refused|revoked|denied|certificate/i.test(text);
  }
  if (!stopped) throw new Error("bob's page still works after revocation: " + await bob.textContent('main'));
  step("the revoked certificate's page stops working");
  await shot(bob, 'revoked');

  await go(page, '#/hosts');
  await shot(page, 'hosts');
  // Destroy, with confirmation.
  await go(page, '#/vm/local/hello');
  await page.click('#destroy');
  await page.waitForURL(/#\/vms$/, { timeout: 30000 });
  step('hello destroyed after confirmation');

  if (pageErrors.length) throw new Error('errors in the page: ' + pageErrors.join('; '));
  step('no script errors in the page');
} catch (e) {
  failed = true;
  console.log('FAIL ' + (e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
