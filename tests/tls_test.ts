/**
 * Optional TLS (docs/security.md, "TLS"), in one process: the cluster file's tlsCa is read at
 * load, a node's tlsCert and tlsKey when that node starts (readNodeTls), never by the others: a
 * missing, unreadable, half-given or swapped file is a ConfigError naming its key, and the keys
 * make a node's URL https://; a server from cluster/runtime.ts serveHttp with
 * the certificate answers a fetch that trusts the CA (lib/client/tls.ts fetchTrusting), and is
 * refused by one that does not: the runtime's roots, or another CA. A server with a certificate
 * from another CA is refused by a fetch trusting the cluster's CA. The clients say why (the
 * certificate) in their "unreachable" error. The certificates are made by openssl for the test
 * (tests/_tls.ts) and removed after. tls_process_test.ts runs whole clusters on TLS.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadClusterFile, nodeUrl, parseClusterText, readNodeTls } from "../cluster/config.ts";
import { type HttpServer, serveHttp } from "../cluster/runtime.ts";
import { connect } from "../lib/client/lock_client.ts";
import { connectRing } from "../lib/client/ring_client.ts";
import { fetchTrusting } from "../lib/client/tls.ts";
import { MutexdError } from "../lib/wire/errors.ts";
import { startMutexd } from "./_harness.ts";
import { CERTIFICATE_ERROR, makeCertificates, type TestCertificates, tlsSkipReason } from "./_tls.ts";

const skip = tlsSkipReason() ?? false;
let certs: TestCertificates;

before(() => {
  if (!skip) certs = makeCertificates();
});
after(() => certs?.remove());

/** A cluster file in the certificates' directory, so relative paths resolve there. */
function clusterText(nodeLines: string, clusterLines = ""): string {
  return `[cluster]\nname = "tls"\n${clusterLines}\n[[nodes]]\nid = "r1"\nrole = "ring"\nhttp = "127.0.0.1:7201"\n${nodeLines}\n`;
}

/** The ConfigError of loading `text` as a cluster file and reading node r1's TLS files (as r1's start does). */
function configError(text: string): ConfigError {
  const file = join(certs.dir, "cluster.toml");
  writeFileSync(file, text);
  try {
    const config = loadClusterFile(file);
    readNodeTls(config, config.nodes[0]);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  assert.fail("the cluster file was accepted");
}

test("config: tlsCa is read at load; a node's tlsCert and tlsKey (relative to the cluster file) when it starts; its URL is https://", { skip }, () => {
  const config = parseClusterText(
    clusterText(`tlsCert = "main-node.pem"\ntlsKey = "main-node.key"`, `tlsCa = "main-ca.pem"`),
    join(certs.dir, "cluster.toml"),
  );
  assert.deepEqual(readNodeTls(config, config.nodes[0]), { cert: certs.main.cert, key: certs.main.key });
  assert.equal(config.tlsCa, certs.main.ca);
  assert.equal(nodeUrl(config.nodes[0]), "https://127.0.0.1:7201");
  const plain = parseClusterText(clusterText(""), join(certs.dir, "cluster.toml"));
  assert.equal(plain.nodes[0].tls, undefined);
  assert.equal(plain.tlsCa, undefined);
  assert.equal(nodeUrl(plain.nodes[0]), "http://127.0.0.1:7201");
  assert.equal(readNodeTls(plain, plain.nodes[0]), undefined);
});

test("config: another node's key files are not read (on its own host only): the file loads where they do not exist", { skip }, () => {
  const text = clusterText(`tlsCert = "main-node.pem"\ntlsKey = "main-node.key"`) +
    `\n[[nodes]]\nid = "r2"\nrole = "ring"\nhttp = "127.0.0.1:7202"\ntlsCert = "/elsewhere/r2.pem"\ntlsKey = "/elsewhere/r2.key"\n`;
  const config = parseClusterText(text, join(certs.dir, "cluster.toml"));
  assert.equal(nodeUrl(config.nodes[1]), "https://127.0.0.1:7202");
  assert.ok(readNodeTls(config, config.nodes[0]));
  // Only r2's own start reads them, and there they are missing.
  assert.throws(() => readNodeTls(config, config.nodes[1]), (error) => error instanceof ConfigError && error.key === "nodes[1].tlsCert");
});

test("config: a TLS file missing, half of the pair, or holding the wrong PEM is refused naming the key and line", { skip }, () => {
  const missing = configError(clusterText(`tlsCert = "nowhere.pem"\ntlsKey = "main-node.key"`));
  assert.equal(missing.key, "nodes[0].tlsCert");
  assert.equal(missing.line, 8);
  assert.match(missing.detail, /cannot read .*nowhere\.pem/);

  const half = configError(clusterText(`tlsCert = "main-node.pem"`));
  assert.equal(half.key, "nodes[0].tlsKey");
  assert.match(half.detail, /both tlsCert and tlsKey/);

  // Swapped: the key where the certificate belongs.
  const swapped = configError(clusterText(`tlsCert = "main-node.key"\ntlsKey = "main-node.pem"`));
  assert.equal(swapped.key, "nodes[0].tlsCert");
  assert.match(swapped.detail, /holds no PEM CERTIFICATE/);

  writeFileSync(join(certs.dir, "empty.pem"), "");
  const emptyCa = configError(clusterText("", `tlsCa = "empty.pem"`));
  assert.equal(emptyCa.key, "cluster.tlsCa");
  assert.equal(emptyCa.line, 3);
  assert.match(emptyCa.detail, /holds no PEM CERTIFICATE/);
});

test("`mutexd node` whose own key file is missing exits 2 before it listens, naming the file, line and key", { skip }, async () => {
  const file = join(certs.dir, "missing-key.toml");
  writeFileSync(file, clusterText(`tlsCert = "main-node.pem"\ntlsKey = "gone.key"`));
  const node = startMutexd(["node", "--config", file, "--id", "r1"]);
  assert.equal(await node.exited, 2, node.stderr());
  assert.match(node.stderr(), /missing-key\.toml:9: nodes\[0\]\.tlsKey: cannot read .*gone\.key/);
});

/** Runs `body` against an HTTPS server on 127.0.0.1 presenting `authority`'s node certificate. */
async function withServer(which: "main" | "other", body: (url: string) => Promise<void>): Promise<void> {
  const { cert, key } = certs[which];
  const server: HttpServer = await serveHttp(
    () => Response.json({ ok: true }),
    { hostname: "127.0.0.1", port: 0, tls: { cert, key } },
  );
  try {
    await body(`https://127.0.0.1:${server.port}`);
  } finally {
    await server.close();
  }
}

async function refusal(request: Promise<Response>): Promise<string> {
  try {
    const response = await request;
    await response.body?.cancel();
  } catch (error) {
    const cause = (error as { cause?: Error }).cause?.message ?? "";
    return `${(error as Error).message} ${cause}`;
  }
  assert.fail("the request was answered");
}

test("serveHttp over TLS: a fetch trusting the CA gets the answer; the runtime's roots and another CA are refused", { skip }, async () => {
  await withServer("main", async (url) => {
    const response = await fetchTrusting(certs.main.ca)(`${url}/v1/health`);
    assert.deepEqual(await response.json(), { ok: true });
    assert.match(await refusal(fetch(`${url}/v1/health`)), CERTIFICATE_ERROR);
    assert.match(await refusal(fetchTrusting(certs.other.ca)(`${url}/v1/health`)), CERTIFICATE_ERROR);
    // Plain HTTP to the TLS port gets no answer either.
    await refusal(fetch(`${url.replace("https:", "http:")}/v1/health`));
  });
});

test("a server presenting a certificate from another CA (same address) is refused by a fetch trusting the cluster's CA", { skip }, async () => {
  await withServer("other", async (url) => {
    assert.match(await refusal(fetchTrusting(certs.main.ca)(`${url}/v1/health`)), CERTIFICATE_ERROR);
    // The certificate itself is fine: its own CA accepts it (so the refusal above is the CA's doing).
    const response = await fetchTrusting(certs.other.ca)(`${url}/v1/health`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });
});

test("the clients take `tls: { ca }`; without it their 'unreachable' error names the certificate problem", { skip }, async () => {
  await withServer("main", async (url) => {
    const trusted = connectRing({ server: url, tls: { ca: certs.main.ca }, requestTimeoutMs: 5_000 });
    assert.deepEqual(await trusted.request("GET", "/v1/health"), { ok: true });

    const untrusted = connectRing({ server: url, requestTimeoutMs: 5_000 });
    const ringError = await untrusted.request("GET", "/v1/health").then(() => assert.fail("answered"), (e) => e);
    assert.ok(ringError instanceof MutexdError);
    assert.equal(ringError.code, "unreachable");
    assert.match(ringError.message, CERTIFICATE_ERROR);

    // The lock client tries every server until failoverTimeoutMs; one server and a short timeout end it.
    const lockClient = connect({ servers: [url], requestTimeoutMs: 5_000, failoverTimeoutMs: 100 });
    const lockError = await lockClient.request("GET", "/v1/health").then(() => assert.fail("answered"), (e) => e);
    assert.ok(lockError instanceof MutexdError);
    assert.equal(lockError.code, "unreachable");
    assert.match(lockError.message, CERTIFICATE_ERROR);
    assert.deepEqual(await connect({ servers: [url], tls: { ca: certs.main.ca } }).request("GET", "/v1/health"), { ok: true });
  });
});
