// Browser tests of the storefront in headless Debian chromium (playwright-core, no browser
// download). The servers are started by scripts/web.sh test, which passes:
//   BASE_URL       the dev gateway in front of booking replica 1 (and the other services)
//   BASE_URL_2     a second gateway in front of booking replica 2 (same stores and broker)
//   HOLD_SECONDS   the seat hold the booking services were started with (short, for expiry)
//   CHROMIUM       the browser binary
//   SCREENSHOTS    a folder: screenshots of the main pages, desktop and phone, go there
// `MEASURE_ONLY=1 BASE_URL=http://127.0.0.1:8000 node test/e2e/run.mjs` only measures the time
// to first render (against `make dev`).
import assert from "node:assert/strict";
import { createPublicKey, verify as edVerify } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL ?? "http://127.0.0.1:8000";
const BASE2 = process.env.BASE_URL_2 ?? BASE;
const HOLD = Number(process.env.HOLD_SECONDS ?? 15);
const SHOTS = process.env.SCREENSHOTS || "";
const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const DESKTOP = { viewport: { width: 1280, height: 860 } };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});

const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, "ok", Date.now() - t0]);
    console.log(`ok    ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push([name, "FAIL", Date.now() - t0]);
    console.log(`FAIL  ${name}\n${e?.stack ?? e}`);
  }
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

let userCounter = 0;
/** A new account through the gateway's user API; returns the session the page stores. */
async function account(base = BASE) {
  const email = `web-e2e-${Date.now()}-${process.pid}-${userCounter++}@example.com`;
  const password = "Correct-Horse-9-battery";
  const post = (path, body) =>
    fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const r = await post("/api/v1/register", { email, password, first_name: "Ada", last_name: "Lovelace" });
  assert.equal(r.status, 201, `register: ${r.status} ${await r.text()}`);
  const l = await post("/api/v1/login", { email, password });
  assert.equal(l.status, 200);
  const body = await l.json();
  return { email, password, session: { token: body.token, user: body.user } };
}

async function context(opts = DESKTOP, session = null) {
  const ctx = await browser.newContext({ ...opts, baseURL: BASE });
  if (session) {
    await ctx.addInitScript((s) => localStorage.setItem("moviebook.session", JSON.stringify(s)), session);
  }
  return ctx;
}

/** Showtime ids in page order, so each test takes its own showtime and none races another. */
async function showtimeIds() {
  const r = await fetch(`${BASE}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: "{ movies(limit: 50) { showtimes { id } } }" }),
  });
  const body = await r.json();
  return body.data.movies.flatMap((m) => m.showtimes.map((s) => s.id));
}

async function availableSeats(page, n) {
  await page.locator('button.seat[data-status="AVAILABLE"]').first().waitFor();
  return page.locator('button.seat[data-status="AVAILABLE"]:not(.picked)').evaluateAll(
    (els, n) => els.slice(0, n).map((e) => e.dataset.seat),
    n,
  );
}

async function holdSeats(page, showtime, count) {
  await page.goto(`/#/showtime/${showtime}`);
  const seats = await availableSeats(page, count);
  for (const s of seats) await page.click(`button.seat[data-seat="${s}"]`);
  await page.getByRole("button", { name: /^Hold \d+ seats?$/ }).click();
  await page.waitForURL(/#\/booking\//);
  await page.locator("[data-countdown]").waitFor();
  return seats;
}

function verifyTicket(ticket, publicKey) {
  const [h, p, s] = ticket.split(".");
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: publicKey }, format: "jwk" });
  const ok = edVerify(null, Buffer.from(`${h}.${p}`), key, Buffer.from(s, "base64url"));
  return ok ? JSON.parse(Buffer.from(p, "base64url").toString()) : null;
}

async function firstRender(url) {
  const ctx = await browser.newContext(DESKTOP);
  const page = await ctx.newPage();
  const t0 = Date.now();
  await page.goto(url, { waitUntil: "commit" });
  await page.locator(".movie").first().waitFor({ timeout: 15_000 });
  const listed = Date.now() - t0;
  const fcp = await page.evaluate(
    () => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null,
  );
  const transfer = await page.evaluate(() =>
    performance
      .getEntriesByType("resource")
      .concat(performance.getEntriesByType("navigation"))
      .reduce((sum, e) => sum + (e.transferSize || 0), 0),
  );
  await ctx.close();
  return { fcp, listed, transfer };
}

if (process.env.MEASURE_ONLY) {
  const runs = [];
  for (let i = 0; i < 5; i++) runs.push(await firstRender(BASE));
  for (const r of runs)
    console.log(`first contentful paint ${r.fcp?.toFixed(0)} ms, movies listed ${r.listed} ms, ${(r.transfer / 1024).toFixed(1)} KiB transferred`);
  await browser.close();
  process.exit(0);
}

const ids = await showtimeIds();
assert.ok(ids.length >= 6, `the seeded catalogue has showtimes (got ${ids.length})`);

await test("the GraphQL IDE loads from this origin only (no CDN)", async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  const foreign = [];
  await page.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== new URL(BASE).origin) {
      foreign.push(url.href);
      return route.abort();
    }
    return route.continue();
  });
  await page.goto("/graphql");
  await page.locator(".graphiql-container").waitFor({ timeout: 20_000 });
  assert.deepEqual(foreign, [], "requests to other origins");
  await shot(page, "graphql-ide-desktop");
  await ctx.close();
});

await test("the whole booking through the page: browse, keyboard seat pick, register, hold, pay, ticket, my bookings, cancel", async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await page.goto("/");
  await page.locator(".movie").first().waitFor();
  await shot(page, "movies-desktop");
  await page.click(`a.showtime[data-showtime="${ids[0]}"]`);
  await page.locator(".live.on").waitFor({ timeout: 10_000 });
  // keyboard: focus the first seat, move right, pick with Space, move right, pick with Enter
  const [first] = await availableSeats(page, 1);
  await page.focus(`button.seat[data-seat="${first}"]`);
  await page.keyboard.press("Space");
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("Enter");
  const picked = await page.locator("button.seat.picked").evaluateAll((els) => els.map((e) => e.dataset.seat));
  assert.equal(picked.length, 2, `two seats picked by keyboard, got ${picked}`);
  await shot(page, "seatmap-desktop");
  await page.getByRole("button", { name: "Log in to hold seats" }).click();
  await page.waitForURL(/#\/login\//);
  await page.getByRole("button", { name: "Create an account" }).click();
  const email = `web-e2e-ui-${Date.now()}@example.com`;
  await page.getByLabel("First name").fill("Grace");
  await page.getByLabel("Last name").fill("Hopper");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("Correct-Horse-9-battery");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(new RegExp(`#/showtime/${ids[0]}`));
  await page.getByRole("button", { name: "Hold 2 seats" }).click();
  await page.waitForURL(/#\/booking\//);
  const countdown = Number(await page.locator("[data-countdown]").getAttribute("data-countdown"));
  assert.ok(countdown > 0 && countdown <= HOLD, `countdown ${countdown} within the ${HOLD} s hold`);
  await shot(page, "checkout-desktop");
  await page.getByLabel(/ending 4242/).check();
  await page.getByRole("button", { name: /^Pay / }).click();
  await page.locator(".ticket").waitFor();
  await page.locator(".status[data-status=CONFIRMED]").waitFor();
  const bookingId = await page.locator("[data-booking-id]").getAttribute("data-booking-id");
  const ticket = await page.locator("img.qr").getAttribute("data-ticket");
  const src = await page.locator("img.qr").getAttribute("src");
  assert.ok(src.startsWith("data:image/svg+xml"), "a QR code image");
  const key = await (
    await fetch(`${BASE}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: "{ ticketVerificationKey }" }),
    })
  ).json();
  const claims = verifyTicket(ticket, key.data.ticketVerificationKey);
  assert.ok(claims, "the ticket verifies with the published key");
  assert.equal(claims.sub, bookingId);
  assert.deepEqual([...claims.seats].sort(), [...picked].sort());
  await shot(page, "ticket-desktop");
  await page.getByRole("link", { name: "My bookings", exact: true }).click();
  const row = page.locator(`.booking[data-booking="${bookingId}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute("data-status"), "CONFIRMED");
  await shot(page, "bookings-desktop");
  await row.getByRole("button", { name: /Cancel booking/ }).click();
  await page.locator(`.booking[data-booking="${bookingId}"][data-status=CANCELLED]`).waitFor();
  // the seats are for sale again
  await page.goto(`/#/showtime/${ids[0]}`);
  for (const s of picked) await page.locator(`button.seat[data-seat="${s}"][data-status=AVAILABLE]`).waitFor();
  await ctx.close();
});

await test("live seat map: a hold made through one replica shows on another replica's page without reloading", async () => {
  const a = await account();
  const ctxA = await context(DESKTOP, a.session);
  const ctxB = await browser.newContext({ ...DESKTOP, baseURL: BASE2 });
  const pageA = await ctxA.newPage();
  const pageB = await ctxB.newPage();
  await pageB.goto(`/#/showtime/${ids[1]}`);
  await pageB.locator(".live.on").waitFor({ timeout: 10_000 });
  let reloads = 0;
  pageB.on("framenavigated", (f) => f === pageB.mainFrame() && reloads++);
  const seats = await holdSeats(pageA, ids[1], 2);
  const t0 = Date.now();
  for (const s of seats) await pageB.locator(`button.seat[data-seat="${s}"][data-status=LOCKED]`).waitFor({ timeout: 5_000 });
  const seen = Date.now() - t0;
  console.log(`      the other page saw the hold ${seen} ms after the booking page opened`);
  assert.equal(await pageB.locator(`button.seat[data-seat="${seats[0]}"]`).getAttribute("aria-disabled"), "true");
  await shot(pageB, "seatmap-live-held-desktop");
  await pageA.getByRole("button", { name: "Release the seats" }).click();
  await pageA.locator(".status[data-status=CANCELLED]").waitFor();
  for (const s of seats) await pageB.locator(`button.seat[data-seat="${s}"][data-status=AVAILABLE]`).waitFor({ timeout: 5_000 });
  assert.equal(reloads, 0, "page B never reloaded");
  await ctxA.close();
  await ctxB.close();
});

await test("a declined card shows the decline in words, and another card then pays", async () => {
  const a = await account();
  const ctx = await context(PHONE, a.session);
  const page = await ctx.newPage();
  await page.goto("/");
  await page.locator(".movie").first().waitFor();
  await shot(page, "movies-phone");
  await page.goto(`/#/showtime/${ids[2]}`);
  await page.locator("button.seat").first().waitFor();
  await shot(page, "seatmap-phone");
  await holdSeats(page, ids[2], 1);
  await shot(page, "checkout-phone");
  await page.getByLabel(/ending 0002/).check();
  await page.getByRole("button", { name: /^Pay / }).click();
  await page.getByRole("alert").filter({ hasText: "Your card was declined" }).waitFor();
  await page.locator(".status[data-status=PAYMENT_FAILED]").waitFor();
  await shot(page, "declined-phone");
  await page.getByLabel(/ending 4242/).check();
  await page.getByRole("button", { name: /^Pay / }).click();
  await page.locator(".status[data-status=CONFIRMED]").waitFor();
  await page.locator("img.qr").waitFor();
  await shot(page, "ticket-phone");
  await ctx.close();
});

await test(`a hold expires on screen (${HOLD} s hold)`, async () => {
  const a = await account();
  const ctx = await context(DESKTOP, a.session);
  const page = await ctx.newPage();
  const seats = await holdSeats(page, ids[3], 1);
  const first = Number(await page.locator("[data-countdown]").getAttribute("data-countdown"));
  await page.waitForFunction(
    (n) => Number(document.querySelector("[data-countdown]")?.getAttribute("data-countdown")) < n,
    first,
    { timeout: 5_000 },
  );
  await page.locator(".status[data-status=EXPIRED]").waitFor({ timeout: (HOLD + 15) * 1000 });
  await page.getByRole("alert").filter({ hasText: "Your hold expired" }).waitFor();
  assert.equal(await page.getByRole("button", { name: /^Pay / }).count(), 0, "no pay button after expiry");
  await shot(page, "expired-desktop");
  await page.getByRole("link", { name: "Pick seats again" }).click();
  await page.locator(`button.seat[data-seat="${seats[0]}"][data-status=AVAILABLE]`).waitFor({ timeout: 5_000 });
  await ctx.close();
});

await test("errors in words: wrong password, taken seats", async () => {
  const a = await account();
  const ctx = await context(DESKTOP);
  const page = await ctx.newPage();
  await page.goto("/#/login/");
  await page.getByLabel("Email").fill(a.email);
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Log in" }).last().click();
  await page.getByRole("alert").filter({ hasText: "That email and password do not match an account." }).waitFor();
  await ctx.close();
  // two customers pick the same seat; the second one's hold is refused in words
  const b = await account();
  const ctxB = await context(DESKTOP, b.session);
  const ctxC = await context(DESKTOP, (await account()).session);
  const pageB = await ctxB.newPage();
  const pageC = await ctxC.newPage();
  for (const p of [pageB, pageC]) await p.goto(`/#/showtime/${ids[4]}`);
  const [seat] = await availableSeats(pageB, 1);
  // page C picks the seat before B holds it, with its live feed cut so it cannot know
  await pageC.locator(".live.on").waitFor();
  await pageC.click(`button.seat[data-seat="${seat}"]`);
  await ctxC.setOffline(true);
  await pageB.click(`button.seat[data-seat="${seat}"]`);
  await pageB.getByRole("button", { name: "Hold 1 seat" }).click();
  await pageB.waitForURL(/#\/booking\//);
  await ctxC.setOffline(false);
  await pageC.getByRole("button", { name: "Hold 1 seat" }).click().catch(() => undefined);
  const words = pageC.getByRole("alert").or(pageC.locator(".notice"));
  await words.filter({ hasText: new RegExp(`${seat} was just taken`) }).first().waitFor();
  await ctxB.close();
  await ctxC.close();
});

const timing = [];
for (let i = 0; i < 3; i++) timing.push(await firstRender(BASE));
for (const t of timing)
  console.log(`first render: first contentful paint ${t.fcp?.toFixed(0)} ms, movies listed after ${t.listed} ms, ${(t.transfer / 1024).toFixed(1)} KiB transferred`);

await browser.close();
const failed = results.filter((r) => r[1] !== "ok");
console.log(`\n${results.length - failed.length} of ${results.length} browser tests passed`);
process.exit(failed.length ? 1 : 0);
