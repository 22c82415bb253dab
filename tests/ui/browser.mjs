// Drives the web UI in Debian's headless Chromium through playwright-core. Run by
// tests/api/ui.rs against a registry it prepared; fails (non-zero exit) on the first broken
// expectation. Screenshots of the main pages go to $SCREENSHOT_DIR (test artefacts, not committed).
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.RELIQUARY_URL;
const adminToken = process.env.ADMIN_TOKEN;
const shots = process.env.SCREENSHOT_DIR;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let checks = 0;
const check = (what, fn) => { fn(); checks += 1; console.log(`ok - ${what}`); };

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("dialog", (dialog) => dialog.accept());

  // Anonymous visitors see releases only (the federation filter applies to the UI too).
  await page.goto(`${base}/`);
  assert.equal(new URL(page.url()).pathname, "/ui/");
  const ids = await page.locator('[data-testid="artefacts"] tbody td:first-child').allTextContents();
  check("the list shows releases", () => assert.ok(ids.includes("acme-plugin@1") && ids.includes("widget@2")));
  check("branch artefacts are invisible anonymously", () => assert.ok(!ids.some((id) => id.includes("@main"))));
  const firstRow = page.locator('[data-testid="artefacts"] tbody tr', { hasText: "acme-plugin@1" });
  const chip = await firstRow.locator(".chip").textContent();
  const arches = await firstRow.locator("td").nth(3).textContent();
  check("rows show kind chips and architectures", () => {
    assert.equal(chip, "release");
    assert.match(arches, /noarch, x64/);
  });
  await page.screenshot({ path: `${shots}/list.png`, fullPage: true });

  // Search.
  await page.fill('[data-testid="search"]', "widget");
  await page.press('[data-testid="search"]', "Enter");
  await page.waitForURL(/q=widget/);
  const found = await page.locator('[data-testid="artefacts"] tbody td:first-child').allTextContents();
  check("search narrows the list", () => assert.deepEqual(found, ["widget@2"]));

  // One artefact with every slot.
  await page.goto(`${base}/ui/`);
  await page.click("text=acme-plugin@1");
  await page.waitForURL(/\/ui\/artefacts\//);
  const slotArches = await page.locator('[data-testid="slots"] tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.arch));
  check("every slot is shown", () => assert.deepEqual(slotArches.sort(), ["noarch", "x64"]));
  const signatures = await page.locator(".sig").allTextContents();
  check("slot signatures verify", () => assert.deepEqual(signatures, ["verified", "verified"]));
  const description = await page.locator('[data-testid="description"]').textContent();
  check("markup in a description is shown as text", () => assert.equal(description, "<b>Acme</b> plugin x64"));
  await page.screenshot({ path: `${shots}/artefact.png`, fullPage: true });

  // History: visitors see it, but no rollback form.
  await page.goto(`${base}/ui/artefacts/widget@2`);
  const historyVersions = await page.locator('[data-testid="history"] tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.version));
  check("the history of each slot is shown", () => assert.deepEqual(historyVersions, ["2.0.0"]));
  const visitorForms = await page.locator('[data-testid="rollback-form"]').count();
  check("visitors get no rollback form", () => assert.equal(visitorForms, 0));

  // Admin pages ask for a token and keep a session cookie.
  await page.goto(`${base}/ui/keys`);
  check("admin pages redirect to the login form", () => assert.match(page.url(), /\/ui\/login/));
  await page.fill('[data-testid="token"]', "rlq_wrongwrongwrongwrongwrongwrongwrongwrong");
  await page.click('button:has-text("Log in")');
  const refusal = await page.locator(".flash.error").textContent();
  check("a wrong token is refused", () => assert.match(refusal, /not valid/));
  await page.fill('[data-testid="token"]', adminToken);
  await page.click('button:has-text("Log in")');
  await page.waitForURL(/\/ui\/keys/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "reliquary_session");
  check("the session cookie is HttpOnly and SameSite=Strict", () => {
    assert.ok(session.httpOnly);
    assert.equal(session.sameSite, "Strict");
    assert.ok(!session.value.includes(adminToken));
  });

  const publisherRow = await page.locator('[data-testid="publishers"] tr[data-publisher="acme-release"]').textContent();
  check("trusted publishers are listed with their claims", () => {
    assert.match(publisherRow, /token\.actions\.githubusercontent\.com/);
    assert.match(publisherRow, /ref=refs\/tags\/v1\.\*/);
  });

  // Create a key: the token is shown once.
  await page.fill('input[name="name"]', "ui-created");
  await page.selectOption('select[name="role"]', "publish");
  await page.fill('input[name="allowed_name_prefix"]', "acme-");
  await page.click('button:has-text("Create key")');
  const token = await page.locator('[data-testid="new-token"]').textContent();
  check("a new key's token is shown once", () => assert.match(token, /^rlq_[A-Za-z0-9]{40,}$/));
  await page.screenshot({ path: `${shots}/keys.png`, fullPage: true });
  const works = await fetch(`${base}/artefacts`, { headers: { authorization: `Bearer ${token}` } });
  check("the new token works", () => assert.equal(works.status, 200));

  // Revoke it.
  await page.goto(`${base}/ui/keys`);
  const shownAgain = await page.locator('[data-testid="new-token"]').count();
  check("the token is not shown again", () => assert.equal(shownAgain, 0));
  const row = page.locator('tr[data-key="ui-created"]');
  await row.locator('button:has-text("Revoke")').click();
  await page.waitForLoadState();
  const revokedRow = await page.locator('tr[data-key="ui-created"]').textContent();
  check("revoked keys stay listed", () => assert.match(revokedRow, /revoked/));
  const refused = await fetch(`${base}/artefacts`, { headers: { authorization: `Bearer ${token}` } });
  check("a revoked token is refused", () => assert.equal(refused.status, 401));

  // As admin, branch artefacts appear.
  await page.goto(`${base}/ui/?kind=branch`);
  const branches = await page.locator('[data-testid="artefacts"] tbody td:first-child').allTextContents();
  check("an admin sees branch artefacts", () => assert.deepEqual(branches, ["acme-plugin@main"]));

  // Roll a release back from its page: the replaced version is marked yanked, with the reason.
  await page.goto(`${base}/ui/artefacts/widget@2`);
  await page.selectOption('[data-testid="rollback-form"] select[name="version"]', "2.0.0");
  await page.fill('[data-testid="rollback-form"] input[name="reason"]', "2.1.0 loses data");
  await page.screenshot({ path: `${shots}/rollback.png`, fullPage: true });
  await page.click('button:has-text("Roll back and yank")');
  await page.waitForSelector('[data-testid="flash"]');
  check("the message comes from the session, not the URL", () => assert.ok(!page.url().includes("flash")));
  const rolled = await page.locator('[data-testid="flash"]').textContent();
  check("a rollback reports what it did", () => assert.match(rolled, /Rolled back to 2\.0\.0/));
  const served = await page.locator('[data-testid="slots"] tbody tr td:nth-child(2)').allTextContents();
  check("the slot serves the earlier version again", () => assert.deepEqual(served, ["2.0.0"]));
  const yanked = await page.locator('[data-testid="history"] tr[data-version="2.1.0"]').textContent();
  check("the version rolled back from is yanked with its reason", () => {
    assert.match(yanked, /yanked/);
    assert.match(yanked, /2\.1\.0 loses data/);
  });

  // Audit and remotes.
  await page.goto(`${base}/ui/audit?action=key.revoke`);
  const actions = await page.locator('[data-testid="audit"] tbody td:nth-child(2)').allTextContents();
  check("the audit log shows the revocation", () => assert.deepEqual(actions, ["key.revoke"]));
  await page.goto(`${base}/ui/audit`);
  await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });
  await page.goto(`${base}/ui/remotes`);
  const remotes = await page.locator('[data-testid="remotes"] tbody tr').count();
  check("remotes are listed with their state", () => assert.equal(remotes, 1));
  await page.click('button:has-text("Sync now")');
  await page.waitForSelector(".flash");
  const flash = await page.locator(".flash").textContent();
  check("sync now reports what it did", () => assert.match(flash, /mirrored 1/));
  await page.screenshot({ path: `${shots}/remotes.png`, fullPage: true });

  // Keyboard: the first Tab stop is the home link, and it is visibly focused.
  await page.goto(`${base}/ui/`);
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.getAttribute("href"));
  check("keyboard navigation starts at the home link", () => assert.equal(focused, "/ui/"));

  // Logging out ends the session.
  await page.click('button:has-text("Log out")');
  await page.goto(`${base}/ui/keys`);
  check("after logging out admin pages ask for a token again", () => assert.match(page.url(), /\/ui\/login/));

  // Dark mode.
  const dark = await browser.newContext({ colorScheme: "dark" });
  const darkPage = await dark.newPage();
  await darkPage.goto(`${base}/ui/`);
  const background = await darkPage.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check("dark mode uses a dark background", () => assert.equal(background, "rgb(20, 22, 24)"));
  await darkPage.screenshot({ path: `${shots}/list-dark.png`, fullPage: true });
  console.log(`${checks} browser checks passed`);
} finally {
  await browser.close();
}
