/** SecurityLog: every refusal counted, logged at most once per sender and reason per interval. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { SecurityLog } from "../cluster/security_log.ts";

test("SecurityLog counts every refusal but logs one line per sender and reason per interval, then says how many it left out", () => {
  const clock = manualClock(0);
  const lines: Record<string, unknown>[] = [];
  const security = new SecurityLog(clock, { event: (event, fields) => lines.push({ event, ...fields }), flush() {} }, 1_000);
  for (let i = 0; i < 5; i++) security.refused("peerForged", "p1");
  security.refused("peerForged", "b1");
  security.refused("peerReplayed", "p1");
  assert.deepEqual(security.view(), { peerForged: 6, peerReplayed: 1 });
  assert.deepEqual(lines.map((l) => `${l.reason}/${l.sender}`), ["peerForged/p1", "peerForged/b1", "peerReplayed/p1"]);
  clock.advance(999);
  security.refused("peerForged", "p1");
  assert.equal(lines.length, 3, "still within the interval: counted, not logged");
  clock.advance(1);
  security.refused("peerForged", "p1");
  assert.equal(lines.length, 4);
  assert.equal(lines[3].unloggedBefore, 5, "the line after the quiet interval says how many were left out");
  assert.equal(security.view().peerForged, 8);
});
