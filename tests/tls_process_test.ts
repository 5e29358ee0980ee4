/**
 * Whole clusters on TLS as real `mutexd node` processes (docs/security.md, "TLS"): every node
 * serves HTTPS with a certificate from the test's CA (made by openssl, tests/_tls.ts) and the
 * cluster file names that CA (`tlsCa`), so each peer call (replication, arbiter renewals and
 * claims, ring hand-offs, writes and view changes) is verified against it.
 *
 * - Lock service (primary, backup, arbiter): the backup gets in sync (replication and the
 *   arbiter's record travel over TLS); the TypeScript client with `tls: { ca }` and
 *   `mutexd lock --ca FILE` take a lock, `mutexd status --config` trusts the file's tlsCa; the
 *   CLI without the CA, or trusting another CA, is refused (exit 5, the certificate named);
 *   after the primary is killed (SIGKILL) the backup takes over and grants.
 * - Ring of 3: forms a view (the token everywhere), grants a section whose write goes round the
 *   ring, and `mutexd ring lock --config` runs a command in a section.
 *
 * Bounds are the settings' plus a slack for two shared cores; each test stops its processes and
 * removes its temp dirs (the cluster's and the certificates').
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import { DEFAULT_SETTINGS as S } from "../lib/settings.ts";
import { eventually, startMutexd } from "./_harness.ts";
import { httpAnswers200, startCluster, status } from "./_lock_cluster.ts";
import { roundMs, SLACK_MS, startRing } from "./_ring_cluster.ts";
import { CERTIFICATE_ERROR, startOnTls, tlsSkipReason } from "./_tls.ts";

const skip = tlsSkipReason() ?? false;

/** As failover_process_test.ts: the backup hears nothing for primarySilenceMs, waits out the leases, one claim may time out. */
const TAKEOVER_MS = S.primarySilenceMs + Math.max(S.primaryLeaseMs, S.backupLeaseMs) + S.peerTimeoutMs + SLACK_MS;

test("lock service on TLS: backup in sync, TS client and CLI with the CA lock, without it (or with another CA) refused, failover works", { timeout: 90_000, skip }, async () => {
  const { certs, started: c } = await startOnTls((tls) => startCluster([], tls));
  try {
    // startCluster waited for "p1 serves, b1 recorded in sync by the arbiter": both peer paths work over TLS.
    assert.match(c.urls.p1, /^https:\/\//);

    const client = connect({ servers: [c.urls.p1, c.urls.b1], tls: { ca: certs.main.ca } });
    const before = await httpAnswers200(c.urls.b1, c.fetch);
    const first = await client.lock("tls", { waitMs: 5_000 });
    assert.ok(first.token > 0);
    await first.release();
    for (let i = 0; i < 20; i++) await (await client.lock("tls", { waitMs: 5_000 })).release();
    // The replication stream runs over TLS too (Bun's WebSocket and cluster/ws_client.ts under Deno
    // trust tlsCa): the backup answers no HTTP request per replication round.
    const answered = (await httpAnswers200(c.urls.b1, c.fetch)) - before;
    assert.ok(answered <= 5, `the backup answered ${answered} HTTP requests for 21 locks and releases, each replicated`);

    const cli = startMutexd(["lock", "tls", "--server", c.urls.p1, "--ca", certs.main.caFile, "--wait", "5s", "--", "sh", "-c", "echo token=$MUTEXD_TOKEN"]);
    assert.equal(await cli.exited, 0, cli.stderr());
    assert.match(cli.stdout(), /token=\d+/);

    const shown = startMutexd(["status", "--config", c.file, "--json"]);
    assert.equal(await shown.exited, 0, shown.stderr());
    assert.equal(JSON.parse(shown.stdout()).shownFrom, c.urls.p1);

    // Refused: no CA (the runtime's roots do not know the test's CA), and a CA that did not sign the node's certificate.
    const noCa = startMutexd(["lock", "tls", "--server", c.urls.p1, "--wait", "0", "--", "true"], { env: { MUTEXD_CA: "" } });
    const otherCa = startMutexd(["lock", "tls", "--server", c.urls.p1, "--ca", certs.other.caFile, "--wait", "0", "--", "true"]);
    for (const refused of [noCa, otherCa]) {
      assert.equal(await refused.exited, 5, refused.stderr());
      assert.match(refused.stderr(), /unreachable/);
      assert.match(refused.stderr(), CERTIFICATE_ERROR);
    }

    c.procs.get("p1")!.kill("SIGKILL");
    await c.procs.get("p1")!.exited;
    await eventually("b1 serves after p1 was killed", async () => (await status(c.urls.b1, undefined, c.fetch))?.server?.serving === true, TAKEOVER_MS);
    const afterTakeover = await client.lock("tls", { waitMs: 5_000 });
    assert.ok(afterTakeover.token > first.token, `token ${afterTakeover.token} after ${first.token}`);
    await afterTakeover.release();
  } finally {
    await c.stopAll();
    certs.remove();
  }
});

test("ring of 3 on TLS: forms, grants a section whose write goes round the ring, and `mutexd ring lock --config` runs a command", { timeout: 90_000, skip }, async () => {
  const { certs, started: ring } = await startOnTls((tls) => startRing({ size: 3, ...tls }));
  try {
    assert.ok(ring.urls.every((url) => url.startsWith("https://")));
    {
      await using section = await ring.client("r1").lock({ waitMs: 30_000 });
      assert.ok(section.token > 0);
      await section.put("over", "tls");
    }
    // The write went round the ring before put returned (every node applied it); each commits it
    // when the commit watermark reaches it, within a round of the token.
    await eventually("every node has committed the write", async () => {
      const values = await Promise.all(ring.ids.map((id) => ring.client(id).get("over")));
      return values.every((got) => got?.value === "tls");
    }, 2 * roundMs(ring.ids.length) + SLACK_MS);

    const cli = startMutexd(["ring", "lock", "--config", ring.file, "--id", "r2", "--wait", "30s", "--", "sh", "-c", "echo section=$MUTEXD_TOKEN"]);
    assert.equal(await cli.exited, 0, cli.stderr());
    assert.match(cli.stdout(), /section=\d+/);
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${ring.logTails()}`);
  } finally {
    await ring.remove();
    certs.remove();
  }
});
