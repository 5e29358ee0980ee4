/**
 * The replication path of real `mutexd node` processes (primary, backup, arbiter, with the
 * cluster secret): under both runtimes the primary's appends reach the backup on the replication
 * stream (cluster/peer_stream.ts; under Deno with cluster/ws_client.ts), not as HTTP requests. Read from the backup's
 * count of HTTP answers (`GET /metrics`) around 100 replicated enter+leave pairs. Stops the
 * processes it started and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import { httpAnswers200, startCluster } from "./_lock_cluster.ts";

const PAIRS = 100;

test(`peer stream, processes: ${PAIRS} replicated enter+leave pairs reach the backup on the stream (no HTTP request each)`, async () => {
  const c = await startCluster();
  try {
    const client = connect({ servers: [c.urls.p1, c.urls.b1] });
    const session = await client.openSession();
    const before = await httpAnswers200(c.urls.b1);
    for (let i = 0; i < PAIRS; i++) {
      const entered = await client.enter("s1", { session, waitMs: 0 });
      assert.ok(entered.granted);
      // A leave is answered once the backup acknowledged it: each pair is two replication rounds.
      await client.leave("s1", { session, token: entered.token });
    }
    await session.close();
    const answered = (await httpAnswers200(c.urls.b1)) - before;
    // The second scrape, and at most a reconnect's probe or two: nothing per replication round.
    assert.ok(answered <= 5, `the backup answered ${answered} HTTP requests for ${PAIRS * 2} replication rounds`);
  } finally {
    await c.stopAll();
  }
});

test("peer stream, processes: with client tokens the stream opens too (its probe needs no bearer token: the cluster secret guards it)", async () => {
  const reader = "reader-".padEnd(40, "1");
  const tables = ["[[tokens]]", 'name = "ops"', `secret = "${reader}"`, 'permissions = [{ prefix = "", allow = ["admin"] }]'];
  const c = await startCluster([], { tables, token: reader });
  try {
    const client = connect({ servers: [c.urls.p1, c.urls.b1], token: reader });
    const session = await client.openSession();
    const before = await httpAnswers200(c.urls.b1, c.fetch);
    for (let i = 0; i < PAIRS; i++) {
      const entered = await client.enter("s1", { session, waitMs: 0 });
      assert.ok(entered.granted);
      await client.leave("s1", { session, token: entered.token });
    }
    await session.close();
    const answered = (await httpAnswers200(c.urls.b1, c.fetch)) - before;
    assert.ok(answered <= 5, `the backup answered ${answered} HTTP requests for ${PAIRS * 2} replication rounds`);
  } finally {
    await c.stopAll();
  }
});
