/**
 * The replication stream's receiving glue (cluster/lock/api_peer.ts answerPeerFrame, what
 * peer_stream_server.ts calls for every request frame) answers a frame ONCE: when the answer's own send
 * throws (the socket went away under it), that error is not taken for the request's refusal and
 * answered a second time with an error status. Without the guard, the backup would send (or try to)
 * an error answer for a request it applied. A refused frame is answered once too. In process, with
 * the pair of tests/_fuzz_apps.ts (p1 and b1 in sync, nothing ticking).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LockApiOptions } from "../cluster/lock/api_options.ts";
import { answerPeerFrame } from "../cluster/lock/api_peer.ts";
import { encodePeerBody } from "../cluster/peer_transport.ts";
import { lockPair } from "./_fuzz_apps.ts";

test("peer frame answer: a frame whose answer's send throws is answered once (the error goes up, no second answer with an error status); a refused frame is answered once", async () => {
  const pair = await lockPair();
  try {
    const { b, settings } = pair;
    const options: LockApiOptions = { nodeId: "b1", role: "backup", settings };
    // p1's last append to b1, as a heartbeat (no entries): b1 answers it at once with its ack.
    const lastAppend = pair.recorded.filter((r) => r.to === "b1" && r.message.type === "append").at(-1);
    assert.ok(lastAppend, "p1 sent appends to b1");
    const heartbeat = encodePeerBody({ ...lastAppend.message, entries: [] });
    const before = pair.state();

    const statuses: number[] = [];
    const sendThrowsOnce = (status: number) => {
      statuses.push(status);
      if (statuses.length === 1) throw new Error("the socket's send failed");
    };
    assert.throws(() => answerPeerFrame(b, options, heartbeat, undefined, sendThrowsOnce), /the socket's send failed/);
    assert.deepEqual(statuses, [200], "answered once, with the ack");

    // The same frame with a send that works: one answer, the ack (the guard is per frame, not sticky).
    const answers: Array<[number, string]> = [];
    answerPeerFrame(b, options, heartbeat, undefined, (status, body) => void answers.push([status, body]));
    assert.equal(answers.length, 1);
    assert.equal(answers[0][0], 200);
    assert.equal(JSON.parse(answers[0][1]).type, "appendAck");

    // A malformed frame is refused: one answer with its status (400), and nothing changed.
    const refused: number[] = [];
    answerPeerFrame(b, options, "{not json", undefined, (status) => void refused.push(status));
    assert.deepEqual(refused, [400]);
    // A refusal whose send throws: still one answer; the send's error goes up.
    const refusedOnce: number[] = [];
    assert.throws(() => answerPeerFrame(b, options, "{not json", undefined, (status) => {
      refusedOnce.push(status);
      throw new Error("the socket's send failed");
    }), /the socket's send failed/);
    assert.deepEqual(refusedOnce, [400]);
    assert.equal(pair.state(), before, "heartbeats and refusals changed no table");
  } finally {
    pair.stop();
  }
});
