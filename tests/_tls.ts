/**
 * Certificates for the TLS tests, made with openssl in a temporary directory: a CA, a node
 * certificate it signs for IP 127.0.0.1, and a second CA with its own node certificate (a server
 * that a client trusting the first CA must refuse). The commands are the ones docs/security.md
 * ("TLS") gives. Not a test file.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeDir, tempDir } from "./_harness.ts";

export const OPENSSL = "/usr/bin/openssl";

/** What the runtimes say of a certificate they cannot verify (Deno: rustls; Bun: BoringSSL). */
export const CERTIFICATE_ERROR = /certificate|UnknownIssuer|UNABLE_TO_VERIFY/i;

/** Why the TLS tests cannot run here, or undefined when they can (pass it as `skip`). */
export function tlsSkipReason(): string | undefined {
  return existsSync(OPENSSL) ? undefined : `${OPENSSL} is missing: it makes the test certificates`;
}

/** One CA and a node certificate it signed: file paths and PEM texts. */
export interface Authority {
  caFile: string;
  ca: string;
  certFile: string;
  cert: string;
  keyFile: string;
  key: string;
}

export interface TestCertificates {
  dir: string;
  /** The cluster's CA and the certificate every node of the test serves (SAN IP:127.0.0.1). */
  main: Authority;
  /** Another CA and a certificate for 127.0.0.1 it signed: valid, but not from the cluster's CA. */
  other: Authority;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  // stdio ignored: openssl writes progress dots and prompts' echo to stderr.
  execFileSync(OPENSSL, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

/** A CA (name-ca.pem, name-ca.key) and a node certificate for IP 127.0.0.1 (name-node.pem, name-node.key). */
function makeAuthority(dir: string, name: string): Authority {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(dir, ["req", "-x509", ...ec, "-days", "2", "-subj", `/CN=mutexd test CA ${name}`, "-keyout", `${name}-ca.key`, "-out", `${name}-ca.pem`]);
  openssl(dir, ["req", ...ec, "-subj", "/CN=127.0.0.1", "-keyout", `${name}-node.key`, "-out", `${name}-node.csr`]);
  writeFileSync(join(dir, `${name}-node.ext`), "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n");
  openssl(dir, [
    "x509", "-req", "-in", `${name}-node.csr`, "-CA", `${name}-ca.pem`, "-CAkey", `${name}-ca.key`, "-CAcreateserial",
    "-days", "2", "-extfile", `${name}-node.ext`, "-out", `${name}-node.pem`,
  ]);
  const file = (suffix: string) => join(dir, `${name}-${suffix}`);
  return {
    caFile: file("ca.pem"),
    ca: readFileSync(file("ca.pem"), "utf8"),
    certFile: file("node.pem"),
    cert: readFileSync(file("node.pem"), "utf8"),
    keyFile: file("node.key"),
    key: readFileSync(file("node.key"), "utf8"),
  };
}

/** Makes both authorities in a fresh temporary directory; `remove()` deletes it. */
export function makeCertificates(): TestCertificates {
  const dir = tempDir("mutexd-tls-");
  try {
    return { dir, main: makeAuthority(dir, "main"), other: makeAuthority(dir, "other"), remove: () => removeDir(dir) };
  } catch (error) {
    removeDir(dir);
    throw error;
  }
}

/** The options of tests/_lock_cluster.ts and _ring_cluster.ts that put every node on TLS with `authority`'s certificate. */
export interface TlsClusterOptions {
  clusterLines: string[];
  nodeLines: string[];
  ca: string;
}

export function tlsClusterOptions(authority: Authority): TlsClusterOptions {
  return {
    clusterLines: [`tlsCa = "${authority.caFile}"`],
    nodeLines: [`tlsCert = "${authority.certFile}"`, `tlsKey = "${authority.keyFile}"`],
    ca: authority.ca,
  };
}

/**
 * Makes the certificates and runs `start` with the options that put a cluster on the main CA's
 * TLS; when the start fails, the certificates are removed before the error goes on.
 */
export async function startOnTls<T>(start: (options: TlsClusterOptions) => Promise<T>): Promise<{ certs: TestCertificates; started: T }> {
  const certs = makeCertificates();
  try {
    return { certs, started: await start(tlsClusterOptions(certs.main)) };
  } catch (error) {
    certs.remove();
    throw error;
  }
}
