/**
 * The dashboard in a real browser (docs/dashboard.md): headless Chromium, driven by
 * playwright-core, opens `/` of a live local cluster (primary, backup, arbiter and a 3-node ring,
 * with client tokens, so the page's login form and its Authorization header are exercised) and
 * sees: the token move between ring nodes, a contended lock's holder (with its fencing token) in
 * the hottest locks, a killed ring node marked down, after the serving lock server is killed the
 * other's takeover on the timeline, when the node it talks to is killed, the page moving to another
 * member, and the ring node left alone marked a minority; it saves a screenshot to a temp dir.
 * Skipped, saying why, where no chromium is installed. Bounded: the whole test within 60 s.
 * MUTEXD_DASHBOARD_PNG=path also copies the final screenshot there (docs/dashboard.png).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { eventually, freePort, type Proc, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, TEST_SECRET, waitForHttp, writeCluster } from "./_harness.ts";

const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((path) => existsSync(path));
const READ_TOKEN = "dashboard-read-token-0123456789abcdef";
const LOCK_TOKEN = "dashboard-lock-token-0123456789abcdef";
const TEST_MS = 60_000;

test("dashboard: a browser sees the token move, a killed ring node down and a takeover on the timeline", { skip: CHROMIUM === undefined ? "no chromium at /usr/bin/chromium (apt-get install chromium)" : false, timeout: TEST_MS }, async () => {
  const { chromium } = await import("playwright-core");
  const dir = tempDir("mutexd-dashboard-");
  const ids = ["p1", "b1", "a1", "r1", "r2", "r3"];
  const roles: Record<string, string> = { p1: "primary", b1: "backup", a1: "arbiter", r1: "ring", r2: "ring", r3: "ring" };
  const urls: Record<string, string> = {};
  for (const id of ids) urls[id] = `http://127.0.0.1:${await freePort()}`;
  const file = writeCluster(dir, [
    "[cluster]",
    `secret = "${TEST_SECRET}"`,
    "[settings]",
    ...QUICK_RING_SETTINGS,
    "[[tokens]]",
    'name = "viewer"',
    `secret = "${READ_TOKEN}"`,
    "permissions = [{ prefix = \"\", allow = [\"read\"] }]",
    "[[tokens]]",
    'name = "worker"',
    `secret = "${LOCK_TOKEN}"`,
    "permissions = [{ prefix = \"\", allow = [\"lock\"] }]",
    ...ids.flatMap((id) => ["[[nodes]]", `id = "${id}"`, `role = "${roles[id]}"`, `http = "${urls[id].slice("http://".length)}"`, `dataDir = "data/${id}"`]),
  ].join("\n") + "\n");
  const procs = new Map<string, Proc>();
  const waiting = new AbortController();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    for (const id of ["a1", "p1", "b1", "r1", "r2", "r3"]) {
      const proc = startMutexd(["node", "--config", file, "--id", id]);
      procs.set(id, proc);
      await waitForHttp(`${urls[id]}/v1/health`).catch((error) => {
        throw new Error(`${id} did not start: ${error.message}\n${proc.stderr().slice(-2000)}`);
      });
    }
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${urls.r1}/`);
    // The cluster has tokens: the page asks for one and keeps it in sessionStorage.
    await page.locator("#login").waitFor({ state: "visible", timeout: 10_000 });
    await page.fill("#tokenInput", READ_TOKEN);
    await page.click("#login button");
    await page.locator("#conn", { hasText: "talking to r1" }).waitFor({ timeout: 10_000 });
    assert.equal(page.url().includes(READ_TOKEN), false, "the token never goes into the URL");

    const holder = () => page.locator("#token").getAttribute("data-holder");
    const seen = new Set<string>();
    await eventually("the token seen at every ring node", async () => {
      const at = await holder();
      if (at) seen.add(at);
      return seen.size === 3;
    }, 20_000);

    // The lock server that serves with the other in sync (a takeover needs a backup the arbiter
    // recorded in sync: docs/failover.md). Usually p1; but a stall of p1 longer than the lease
    // (Chromium starting on 2 cores stalled it 406 ms once in CI) rightly moves the service to b1,
    // and the test then follows b1: what it checks is the page, not which server serves.
    let serving: "p1" | "b1" = "p1";
    const servesWithBackup = async () => {
      let lastStatus = "";
      await eventually("a lock server serves with the other in sync", async () => {
        for (const id of ["p1", "b1"] as const) {
          const answer = await fetch(`${urls[id]}/v1/status?summary=1`, { headers: { authorization: `Bearer ${LOCK_TOKEN}` } });
          lastStatus = `${id}: ${await answer.text()}`;
          const server = answer.ok ? JSON.parse(lastStatus.slice(id.length + 2)).server : undefined;
          if (server?.serving === true && server.backup?.arbiterRecordedInSync === true) {
            serving = id;
            return true;
          }
        }
        return false;
      }, 15_000).catch((error) => {
        throw new Error(`${error.message}; the last status: ${lastStatus}`);
      });
      return serving;
    };
    // A contended lock: one holder, one waiter (a long-poll, ended in `finally`).
    const asWorker = (path: string, body: unknown, signal?: AbortSignal) =>
      fetch(`${urls[serving]}${path}`, { method: "POST", body: JSON.stringify(body), signal, headers: { authorization: `Bearer ${LOCK_TOKEN}`, "content-type": "application/json" } });
    await servesWithBackup();
    const holderSession = await (await asWorker("/v1/sessions", {})).json();
    const waiterSession = await (await asWorker("/v1/sessions", {})).json();
    const granted = await (await asWorker("/v1/enter", { name: "orders", session: holderSession.session, sessionSecret: holderSession.sessionSecret })).json();
    assert.equal(typeof granted.token, "number", JSON.stringify(granted));
    asWorker("/v1/enter", { name: "orders", session: waiterSession.session, sessionSecret: waiterSession.sessionSecret, waitMs: 30_000 }, waiting.signal)
      .then((answer) => answer.body?.cancel(), () => {});
    await page.locator("#hottest tr", { hasText: "orders" }).waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#hottest tr", { hasText: "orders" }).innerText(), new RegExp(`worker #${granted.token}`));

    // The table by name, a page at a time, read from the primary.
    await page.fill("#prefix", "ord");
    await page.click("#browse button");
    await page.locator("#lockPage tr", { hasText: "orders" }).waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#pageInfo").innerText(), /^1 locks match/);

    const stateOf = (id: string) => page.locator(`[data-node="${id}"]`).first().getAttribute("data-state");
    procs.get("r3")!.kill("SIGKILL");
    await eventually("r3 marked down", async () => (await stateOf("r3")) === "down", 10_000);

    const victim = await servesWithBackup();
    const survivor = victim === "p1" ? "b1" : "p1";
    const takeoversBefore = await page.locator('#timeline [data-event="takeover"]').count();
    procs.get(victim)!.kill("SIGKILL");
    await eventually(`${victim} marked down`, async () => (await stateOf(victim)) === "down", 10_000);
    await eventually("the takeover on the timeline", async () => (await page.locator('#timeline [data-event="takeover"]').count()) > takeoversBefore, 15_000);
    assert.equal(await stateOf(survivor), "primary");
    // The token keeps moving between the two ring nodes left.
    const moved = new Set<string>();
    await eventually("the token moves between r1 and r2", async () => {
      const at = await holder();
      if (at) moved.add(at);
      return moved.has("r1") && moved.has("r2");
    }, 15_000);

    // The node the page talks to dies: the page moves to another member and marks r1 down.
    procs.get("r1")!.kill("SIGKILL");
    await page.locator("#conn", { hasText: /talking to (?!r1)/ }).waitFor({ timeout: 15_000 });
    await eventually("r1 marked down by the next node", async () => (await stateOf("r1")) === "down", 10_000);
    // r2, alone of three, has no quorum for its token lease: a minority.
    await eventually("r2 marked minority", async () => (await stateOf("r2")) === "minority", 15_000);

    const shot = join(dir, "dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, "a screenshot of the page");
    const docsCopy = process.env.MUTEXD_DASHBOARD_PNG;
    if (docsCopy) copyFileSync(shot, docsCopy);
  } finally {
    waiting.abort();
    await browser.close();
    for (const proc of procs.values()) proc.kill("SIGKILL");
    await Promise.all([...procs.values()].map((proc) => proc.exited));
    removeDir(dir);
  }
});
