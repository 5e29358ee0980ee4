/**
 * Format versions (lib/wire/version.ts, cluster/format_version.ts), in process: the rules (the
 * same major is read whatever the minors, another major or a malformed version is refused
 * naming both versions); that every peer request names this build's wire format in a header
 * the peer MAC covers (1.2 today; any format other than 1.0: 1.0 is signed as a build before versions signs,
 * so the two understand each other), so a changed header is refused as a forgery; that a peer route answers a
 * request of another major 400 `version_mismatch` (signed, counted) and takes one of a newer
 * minor or none (a build before versions: 1.0); and that a dataDir's marker is written when
 * absent and refuses a start when of another major, naming the file and both versions; that a
 * repair datagram carries its format (none for 1.0) and one of another major is dropped. The two
 * builds run as one cluster in rolling_upgrade_process_test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Hono } from "hono";
import { manualClock } from "../cluster/clock.ts";
import { decodeDatagram, encodeDatagram, type RepairDatagram } from "../cluster/ring/udp.ts";
import { checkDiskFormat, DISK_FORMAT_FILE, DiskFormatError, peerFormatMiddleware } from "../cluster/format_version.ts";
import { installErrorHandlers, readBodyBytes } from "../cluster/http_util.ts";
import { memoryLogger } from "../cluster/log.ts";
import { peerAuthMiddleware } from "../cluster/peer_auth.ts";
import { PEER_HEADER, signRequest } from "../cluster/peer_head.ts";
import { peerKey } from "../cluster/peer_mac.ts";
import { PeerSigner, plainPeerFetch } from "../cluster/peer_signer.ts";
import { PeerVerifier } from "../cluster/peer_verifier.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { DISK_FORMAT, FORMAT_HEADER, formatRefusal, parseFormat, WIRE_FORMAT } from "../lib/wire/version.ts";
import { removeDir, tempDir } from "./_harness.ts";

const SECRET = "format-version-test-secret-0123456789abcdef";
const OURS = { major: 1, minor: 0 };

test("the rules: the same major is read whatever the minors; another major or a malformed version is refused naming both", () => {
  assert.deepEqual(WIRE_FORMAT, { major: 1, minor: 2 }, "this build's wire format (the tests below assume 1.2: the ring's section bound and section announcement)");
  assert.deepEqual(DISK_FORMAT, OURS, "this build's disk format (the tests below assume 1.0)");
  assert.deepEqual(parseFormat("12.3"), { major: 12, minor: 3 });
  for (const bad of ["1", "1.", "01.0", "1.0.0", "a.b", "", "1234567.0"]) assert.equal(parseFormat(bad), null, bad);
  assert.equal(formatRefusal("x", "1.0", OURS), null);
  assert.equal(formatRefusal("x", "1.9", OURS), null, "a newer minor only adds what an older build may ignore");
  assert.equal(formatRefusal("x", "1.0", { major: 1, minor: 4 }), null, "an older minor too");
  const newer = formatRefusal("the request", "2.0", OURS);
  assert.match(newer ?? "", /the request has format version 2\.0, this build reads 1\.0.*upgrade this node/);
  const older = formatRefusal("the request", "1.3", { major: 2, minor: 0 });
  assert.match(older ?? "", /format version 1\.3, this build reads 2\.0.*the other side is older/);
  assert.match(formatRefusal("the request", "v2", OURS) ?? "", /"v2", which is no major\.minor; this build reads 1\.0/);
});

/** A peer route `POST /peer/echo` behind the peer MAC (with `secret`) and the format check, as the apps mount them. */
async function receiver(secret: string | undefined) {
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  const app = new Hono();
  installErrorHandlers(app, () => {});
  if (secret !== undefined) {
    const verifier = new PeerVerifier(await peerKey(secret), "b", (id) => id === "a" || id === "b");
    app.use("/peer/*", peerAuthMiddleware(verifier, security, (c) => readBodyBytes(c, 65_536)));
  }
  app.use("/peer/*", peerFormatMiddleware(security));
  const taken: string[] = [];
  app.post("/peer/echo", async (c) => {
    taken.push(await c.req.text());
    return c.json({ ok: true });
  });
  return { app, security, taken };
}

/** Sends through `app`, with FORMAT_HEADER set to `format` (null: removed) after the signer signed it. */
function sendAs(app: Hono, sent: Request[], format?: string | null) {
  return (url: string, init: RequestInit) => {
    const request = new Request(url, init);
    if (format === null) request.headers.delete(FORMAT_HEADER);
    else if (format !== undefined) request.headers.set(FORMAT_HEADER, format);
    sent.push(request.clone());
    return Promise.resolve(app.fetch(request));
  };
}

const echo = { method: "POST", contentType: "application/json", body: "{\"n\":1}", timeoutMs: 5_000 } as const;

test("every peer request names this build's wire format, under the MAC: a header changed on the way is a forgery", async () => {
  const { app, security, taken } = await receiver(SECRET);
  const sent: Request[] = [];
  const signer = new PeerSigner(await peerKey(SECRET), "a", sendAs(app, sent));
  assert.equal((await signer.fetch("b", "http://b.test/peer/echo", echo)).status, 200);
  assert.ok(sent.every((r) => r.headers.get(FORMAT_HEADER) === "1.2"), "the challenged request and its retry both name 1.2");
  assert.equal(taken.length, 1);

  // The same signer's request with the header rewritten after signing: its MAC no longer holds.
  const tampered = new PeerSigner(await peerKey(SECRET), "a", sendAs(app, [], "1.7"));
  await assert.rejects(tampered.fetch("b", "http://b.test/peer/echo", echo), /answer \(status 401\) without a valid MAC.*MAC is not valid/);
  assert.equal(security.counts.peerForged, 1, "refused by the MAC, before the format is looked at");
  assert.equal(taken.length, 1, "nothing taken");

  const plain: Request[] = [];
  await plainPeerFetch(sendAs((await receiver(undefined)).app, plain))("b", "http://b.test/peer/echo", echo);
  assert.equal(plain[0].headers.get(FORMAT_HEADER), "1.2", "without a secret too");
});

test("a peer route refuses another major with 400 version_mismatch naming both (signed), takes a newer minor and none", async () => {
  // Without a secret: the header as sent.
  const { app, security, taken } = await receiver(undefined);
  const post = (headers: Record<string, string>) => app.request("/peer/echo", { method: "POST", headers, body: "{}" });
  for (const [headers, what] of [[{ [FORMAT_HEADER]: "1.7" }, "a newer minor"], [{}, "no header (a build before versions)"]] as const) {
    assert.equal((await post(headers)).status, 200, what);
  }
  const answer = await post({ [FORMAT_HEADER]: "2.0", [PEER_HEADER.from]: "a" });
  assert.equal(answer.status, 400);
  const body = await answer.json();
  assert.equal(body.error.code, "version_mismatch");
  assert.match(body.error.message, /format version 2\.0, this build reads 1\.2/);
  assert.equal(security.counts.versionMismatch, 1, "counted, shown in status under security");
  assert.equal(taken.length, 2, "the refused request changed nothing");

  // With a secret, a request signed as 2.0 (as a build of format 2 sends it): a signed refusal the sender reads.
  const signed = await receiver(SECRET);
  const refusal = await signedAs("2.0", signed.app);
  assert.equal(refusal.status, 400, "authenticated, then refused by its format");
  assert.equal((await refusal.json()).error.code, "version_mismatch");
  assert.ok(refusal.headers.get(PEER_HEADER.mac), "the refusal is signed: the sender trusts it and reports it");
  assert.equal(signed.taken.length, 0);
  assert.equal((await signedAs("1.7", signed.app)).status, 200, "a signed newer minor is taken");
  assert.equal((await signedAs("", signed.app)).status, 200, "a request of a build before versions (no header; its MAC without one) is taken");
  assert.equal(signed.taken.length, 2);
});

test("a 1.0 request is signed as a build before versions signed it (it still reads ours); any other format, this build's 1.2 too, is under the MAC", async () => {
  const { app, security, taken } = await receiver(SECRET);
  // A 1.0 build's request with its header removed on the way: what a build before versions
  // receives (it knows no header) must verify under its MAC, which covers no format.
  assert.equal((await signedAs("1.0", app, "")).status, 200);
  assert.equal(taken.length, 1);
  // This build (1.2) covers its format: a build before versions, which leaves it out of the MAC,
  // cannot verify its requests (docs/deploy.md: from there, upgrade to a 1.0 build first).
  const stripped = new PeerSigner(await peerKey(SECRET), "a", sendAs(app, [], null));
  await assert.rejects(stripped.fetch("b", "http://b.test/peer/echo", echo), /status 401/);
  assert.equal(security.counts.peerForged, 1);
  assert.equal(taken.length, 1);
  // A 1.7 request whose header is rewritten to 1.0 on the way: its MAC covered 1.7, so it is refused.
  const rewritten = await signedAs("1.7", app, "1.0");
  assert.equal(rewritten.status, 401);
  assert.equal(security.counts.peerForged, 2);
  assert.equal(taken.length, 1, "nothing taken");
});

/**
 * A request from "a" signed as of format `format` ("" none: a build before versions) after the
 * receiver's challenge, as another build sends it; `sentFormat`: the header as it arrives.
 */
async function signedAs(format: string, app: Hono, sentFormat = format): Promise<Response> {
  const key = await peerKey(SECRET);
  const body = "{}";
  const send = async (nonce: string, arriving: string) => {
    const head = { from: "a", to: "b", nonce, seq: 1, method: "POST", path: "/peer/echo", format };
    const mac = await signRequest(key, head, new TextEncoder().encode(body));
    const headers: Record<string, string> = { [PEER_HEADER.from]: "a", [PEER_HEADER.nonce]: nonce, [PEER_HEADER.seq]: "1", [PEER_HEADER.mac]: mac };
    if (arriving !== "") headers[FORMAT_HEADER] = arriving;
    return await app.request("/peer/echo", { method: "POST", headers, body });
  };
  const challenged = await send(`unknown-${format}`, format);
  assert.equal(challenged.status, 401);
  return send(challenged.headers.get(PEER_HEADER.challenge)!, sentFormat);
}

test("a dataDir's marker: written when absent (files from before versions read as 1.0), refuses another major naming file and versions", () => {
  const dir = tempDir();
  try {
    const fresh = join(dir, "fresh");
    assert.equal(checkDiskFormat(fresh), "1.0", "none: 1.0");
    const marker = join(fresh, DISK_FORMAT_FILE);
    assert.deepEqual(JSON.parse(readFileSync(marker, "utf8")), { format: "1.0" }, "written, before any other file");

    writeFileSync(marker, JSON.stringify({ format: "1.4" }));
    assert.equal(checkDiskFormat(fresh), "1.4", "a newer minor is read");
    assert.deepEqual(JSON.parse(readFileSync(marker, "utf8")), { format: "1.0" }, "and names the build that writes now");

    const newer = join(dir, "newer");
    mkdirSync(newer);
    writeFileSync(join(newer, DISK_FORMAT_FILE), JSON.stringify({ format: "2.1" }));
    assert.throws(() => checkDiskFormat(newer), (error: Error) => {
      assert.ok(error instanceof DiskFormatError);
      assert.ok(error.message.includes(join(newer, DISK_FORMAT_FILE)), error.message);
      assert.match(error.message, /format version 2\.1, this build reads 1\.0/);
      return true;
    });
    assert.deepEqual(JSON.parse(readFileSync(join(newer, DISK_FORMAT_FILE), "utf8")), { format: "2.1" }, "left as it was");

    writeFileSync(join(newer, DISK_FORMAT_FILE), "{");
    assert.throws(() => checkDiskFormat(newer), /format\.json is not JSON/);
    writeFileSync(join(newer, DISK_FORMAT_FILE), "{}");
    assert.throws(() => checkDiskFormat(newer), /has no "format" string/);
  } finally {
    removeDir(dir);
  }
});

test("repair datagrams: 1.0 goes without a format field (as before versions), another minor is read, another major dropped naming both", async () => {
  const datagram: RepairDatagram = { type: "whoLostPred", epoch: 4, suspect: "r2", from: "r3", inc: 2, seq: 7 };
  const ring = new Set(["r1", "r2", "r3"]);
  const unversioned = await encodeDatagram(datagram, undefined, { major: 1, minor: 0 });
  assert.ok(!new TextDecoder().decode(unversioned).includes("format"), "1.0: the bytes a build before versions sends and reads");
  assert.deepEqual(decodeDatagram(unversioned, ring), datagram);
  const ours = await encodeDatagram(datagram);
  assert.match(new TextDecoder().decode(ours), /"format":"1\.2"/, "this build's names 1.2");
  assert.deepEqual(decodeDatagram(ours, ring), datagram);
  const newerMinor = await encodeDatagram(datagram, undefined, { major: 1, minor: 3 });
  assert.match(new TextDecoder().decode(newerMinor), /"format":"1\.3"/);
  assert.deepEqual(decodeDatagram(newerMinor, ring), datagram, "read, the format left out of what the core gets");
  const newerMajor = decodeDatagram(await encodeDatagram(datagram, undefined, { major: 2, minor: 0 }), ring);
  assert.ok("error" in newerMajor);
  assert.equal(newerMajor.reason, "versionMismatch", "counted as datagramVersionMismatch, not as malformed");
  assert.match(newerMajor.error, /the datagram has format version 2\.0, this build reads 1\.2/);
});
