/**
 * The dashboard page's script is TypeScript (cluster/dashboard/page_script.ts) bundled by
 * tools/build_dashboard.ts into the committed page_script.generated.ts that page.ts embeds. This
 * proves the committed file is what the tool makes from the source now (so an edit of the source
 * without a rebuild fails here), that the check does fail on a file that differs, and that the
 * page served carries the bundle whole inside its <script> element. The check runs in a Bun
 * process (the bundler is Bun's), from either runtime; the test removes its temporary folder.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DASHBOARD_PAGE } from "../cluster/dashboard/page.ts";
import { PAGE_SCRIPT } from "../cluster/dashboard/page_script.generated.ts";
import { removeDir, ROOT, startProcess, tempDir } from "./_harness.ts";

const BUN = `${ROOT}/node_modules/.bin/bun`;
const GENERATED = join(ROOT, "cluster", "dashboard", "page_script.generated.ts");

async function check(...extra: string[]): Promise<{ code: number; output: string }> {
  const proc = startProcess(BUN, ["tools/build_dashboard.ts", "--check", ...extra], { cwd: ROOT });
  const code = await proc.exited;
  return { code, output: proc.stdout() + proc.stderr() };
}

test("dashboard build: the committed page_script.generated.ts is the bundle of page_script.ts as it is now", async () => {
  const fresh = await check();
  assert.equal(fresh.code, 0, fresh.output);

  // The same check fails on a file one character off (so the first pass is not vacuous).
  const dir = tempDir("mutexd-dashboard-build-");
  try {
    const stale = join(dir, "stale.generated.ts");
    writeFileSync(stale, readFileSync(GENERATED, "utf8").replace("mutexdToken", "mutexdTokeN"));
    const outdated = await check("--against", stale);
    assert.equal(outdated.code, 1, outdated.output);
    assert.match(outdated.output, /out of date/);
  } finally {
    removeDir(dir);
  }
});

test("dashboard build: the page embeds the bundle whole, which never closes its <script> element early", () => {
  assert.ok(PAGE_SCRIPT.length > 1000, "the bundle is there");
  assert.ok(!/<\/script/i.test(PAGE_SCRIPT));
  const start = DASHBOARD_PAGE.indexOf("<script>");
  const end = DASHBOARD_PAGE.indexOf("</script>");
  assert.equal(DASHBOARD_PAGE.slice(start + "<script>".length, end), PAGE_SCRIPT);
  // The ring's states come from ring_states.ts, bundled in (not a copy in the page).
  assert.match(PAGE_SCRIPT, /function ringStates\(/);
});
