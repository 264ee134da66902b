// Drives Swagger UI in headless Chromium: Authorize as alice through the OAuth2 password flow,
// upload a file with POST /uploads, execute POST /tickets/ (with the file) and GET /tickets/my from
// the page, download the file with GET /attachments/{id}/content with every optional parameter as
// Swagger UI leaves it (nothing pre-filled, checked on GET /tickets/ too), check the responses
// shown; then open
// the new ticket's embed link as a browser would and check the status card, and follow the
// ticket's live stream with EventSource through a change.
import { chromium } from 'playwright-core';

const base = process.env.BASE_URL ?? 'http://127.0.0.1:8000';
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
const failures = [];
page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));
page.on('requestfailed', (r) => failures.push(`request failed: ${r.url()}`));
// The server's Content-Security-Policy must leave Swagger UI fully working.
page.on('console', (m) => {
  if (/Content Security Policy|Refused to/i.test(m.text())) failures.push(`CSP violation: ${m.text()}`);
});

await page.goto(`${base}/docs/`);
await page.waitForSelector('.opblock', { timeout: 15000 });

await page.click('button.authorize');
await page.fill('#oauth_username', 'alice');
await page.fill('#oauth_password', 'alice123');
await page.click('.auth-btn-wrapper button.authorize');
await page.waitForSelector('.auth-container h6:has-text("Authorized")', { timeout: 10000 });
await page.click('.auth-btn-wrapper button.btn-done');

// What "Try it out" puts in each optional parameter's input before anyone types: must be nothing.
const prefilled = [];
const documented = await (await page.request.get(`${base}/openapi.json`)).json();
const operations = Object.values(documented.paths).flatMap((path) => Object.values(path));

async function tryOut(opblockId) {
  const block = page.locator(`#${opblockId}`);
  await block.locator('.opblock-summary').first().click();
  await block.locator('button.try-out__btn').click();
  // Every documented parameter gets an input; wait for the last before reading them, so that no
  // input goes unread (`all()` does not wait).
  const operationId = opblockId.split('-').slice(2).join('-');
  const expected = (operations.find((o) => o.operationId === operationId)?.parameters ?? []).length;
  const inputs = block.locator('.parameters input[type=text], .parameters select');
  if (expected > 0) await inputs.nth(expected - 1).waitFor({ timeout: 10000 });
  const shown = await inputs.all();
  if (shown.length !== expected) failures.push(`${opblockId}: ${shown.length} inputs for ${expected} parameters`);
  for (const input of shown) {
    const value = await input.inputValue();
    if (value !== '') prefilled.push(`${opblockId}: ${await input.getAttribute('placeholder') ?? 'a select'} = ${value}`);
  }
  return block;
}

async function execute(opblockId, body, fill) {
  const block = await tryOut(opblockId);
  if (body !== undefined) await block.locator('textarea.body-param__text').fill(body);
  if (fill) await fill(block);
  await block.locator('button.execute').click();
  const status = block.locator('.live-responses-table .response .response-col_status').first();
  await status.waitFor({ timeout: 10000 });
  const code = (await status.innerText()).trim();
  const shown = await block.locator('.live-responses-table .response-col_description pre').first().innerText();
  return { code, shown };
}

// A file through the form Swagger UI draws for multipart/form-data: a file picker.
const fileText = 'hello from the browser\n';
const uploaded = await execute('operations-attachments-upload', undefined, (block) =>
  block.locator('input[type=file]').setInputFiles({ name: 'hello.txt', mimeType: 'text/plain', buffer: Buffer.from(fileText) }));
console.log(`POST /uploads -> ${uploaded.code}`);
if (uploaded.code !== '201') failures.push(`POST /uploads answered ${uploaded.code}: ${uploaded.shown}`);
const upload = JSON.parse(uploaded.shown);
const created = await execute('operations-tickets-create_ticket',
  JSON.stringify({ subject: 'Filed from Swagger UI', description: 'via headless Chromium', attachments: [upload.token] }));
// An admin assigns it, behind the page's back: the listing below must still show it.
const api = page.request;
const tokenOf = async (username, password) =>
  (await (await api.post(`${base}/auth/token`, { form: { username, password } })).json()).access_token;
const carol = { Authorization: `Bearer ${await tokenOf('carol', 'carol123')}` };
const [bob] = await (await api.get(`${base}/users?role=agent`, { headers: carol })).json();
const assigned = await api.patch(`${base}/tickets/${JSON.parse(created.shown).id}/assign`,
  { headers: carol, data: { agent_id: bob.id } });
if (assigned.status() !== 200) failures.push(`assigning answered ${assigned.status()}`);
const mine = await execute('operations-tickets-my_tickets');
// The download, from the page: Swagger UI offers the bytes it got as a file to save.
const downloadBlock = await tryOut('operations-attachments-download');
await downloadBlock.locator('.parameters input[type=text]').first().fill(String(upload.attachment.id));
await downloadBlock.locator('button.execute').click();
const downloadStatus = downloadBlock.locator('.live-responses-table .response .response-col_status').first();
await downloadStatus.waitFor({ timeout: 10000 });
const downloadCode = (await downloadStatus.innerText()).trim();
const saved = downloadBlock.locator('.live-responses-table .response-col_description a[download]').first();
await saved.waitFor({ timeout: 10000 });
const [download] = await Promise.all([page.waitForEvent('download'), saved.click()]);
const savedName = download.suggestedFilename();
const chunks = [];
for await (const chunk of await download.createReadStream()) chunks.push(chunk);
const savedBytes = Buffer.concat(chunks).toString();
console.log(`GET /attachments/{id}/content -> ${downloadCode}: ${savedName}`);
if (downloadCode !== '200') failures.push(`the download answered ${downloadCode}`);
if (savedName !== 'hello.txt' || savedBytes !== fileText) failures.push(`downloaded ${savedName}: ${JSON.stringify(savedBytes)}`);
if (!created.shown.includes('hello.txt')) failures.push(`the ticket does not list its file: ${created.shown}`);
await tryOut('operations-tickets-list_tickets'); // staff only: checked for pre-filled values alone
await page.screenshot({ path: process.env.SCREENSHOT ?? 'swagger.png', fullPage: false });

// The embed card: what a web page's iframe shows.
const token = JSON.parse(created.shown).embed_token;
const card = await browser.newPage({ viewport: { width: 520, height: 220 } });
const cardResponse = await card.goto(`${base}/tickets/embed/${token}`);
const cardType = cardResponse.headers()['content-type'] ?? '';
const heading = await card.locator('h1').innerText();
const badge = await card.locator('.badge').innerText();
await card.screenshot({ path: process.env.CARD_SCREENSHOT ?? 'card.png' });
console.log(`embed card -> ${cardResponse.status()} ${cardType}: "${heading}" [${badge}]`);
if (!cardType.startsWith('text/html')) failures.push(`the embed link served ${cardType} to a browser`);
if (heading !== 'Filed from Swagger UI' || badge !== 'Open') failures.push(`the card shows "${heading}" [${badge}]`);

// The live stream, as a chat widget on a customer's site (another origin) reads it with
// EventSource: an HTTP/1.0 answer framed by the close, its body sent by the server loop rather
// than the HTTP library. The view now, then a new one when alice comments.
const widget = await browser.newPage();
await widget.setContent('<!doctype html><title>A customer site</title>');
await widget.evaluate((url) => {
  window.views = [];
  window.source = new EventSource(url);
  window.source.onmessage = (e) => window.views.push(JSON.parse(e.data));
}, `${base}/tickets/embed/${token}/stream`);
const streamed = { views: [] };
try {
  await widget.waitForFunction(() => window.views.length >= 1, null, { timeout: 5000 });
  const login = await fetch(`${base}/auth/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'username=alice&password=alice123',
  });
  const { access_token } = await login.json();
  const id = JSON.parse(created.shown).id;
  const comment = await fetch(`${base}/tickets/${id}/comments`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${access_token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ body: 'Any news?' }),
  });
  if (comment.status !== 201) failures.push(`the comment answered ${comment.status}`);
  await widget.waitForFunction(() => window.views.length >= 2, null, { timeout: 5000 });
} catch (e) {
  streamed.error = e.message;
}
Object.assign(streamed, await widget.evaluate(() => ({ views: window.views, open: window.source.readyState === EventSource.OPEN })));
console.log(`embed stream -> ${JSON.stringify(streamed)}`);
const [first, second] = streamed.views;
if (streamed.error || !streamed.open) failures.push(`the live stream: ${JSON.stringify(streamed)}`);
else if (first.subject !== 'Filed from Swagger UI' || !(second.last_updated > first.last_updated)) {
  failures.push(`the live stream showed ${JSON.stringify(streamed.views)}`);
}

console.log(`POST /tickets/ -> ${created.code}; GET /tickets/my -> ${mine.code}`);
if (created.code !== '201') failures.push(`POST /tickets/ answered ${created.code}: ${created.shown}`);
if (!created.shown.includes('Filed from Swagger UI')) failures.push('the created ticket is not shown');
// With the defaults as Swagger UI fills them, the assigned ticket is listed (a pre-filled
// assigned_to=none would hide it).
if (mine.code !== '200' || !mine.shown.includes('Filed from Swagger UI')) failures.push(`GET /tickets/my: ${mine.code} ${mine.shown}`);
if (prefilled.length) failures.push(`optional parameters pre-filled: ${prefilled.join('; ')}`);
await browser.close();
if (failures.length) { console.error(failures.join('\n')); process.exit(1); }
console.log('swagger ui: ok');
