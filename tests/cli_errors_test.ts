/**
 * Errors a person can act on, as real processes with no server running (issue 16): a flag
 * error is one line naming the closest known flag and exits 2 (before the fix: parseArgs's raw
 * text, an unbalanced quote, then the whole help); `--wait -1s` says the duration is negative
 * (before: "ambiguous"); a server that is no URL is refused at once with exit 2 (before: "fetch()
 * URL is invalid" after the 5 s failover window, exit 5); `mutexd help lock` prints lock's help
 * (before: the general help).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startMutexd } from "./_harness.ts";

async function runMutexd(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = startMutexd(args, { env });
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** Exit 2 with exactly one line on stderr that matches `pattern`, and nothing on stdout. */
function assertOneLineUsageError(result: { code: number; stdout: string; stderr: string }, pattern: RegExp, what: string): void {
  assert.equal(result.code, 2, `${what}: exit ${result.code}, stderr: ${result.stderr}`);
  assert.equal(result.stdout, "", `${what}: nothing on stdout`);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, `${what}: one line, got:\n${result.stderr}`);
  assert.match(lines[0], pattern, what);
}

// Port 1 on loopback: nothing listens there, and none of these cases may get as far as asking it.
const NOWHERE = "http://127.0.0.1:1";

test("cli errors: an unknown flag is one line naming the closest known flag, exit 2, for every command", { timeout: 60_000 }, async () => {
  const cases = [
    { args: ["status", "--confg", "x.toml"], want: /^mutexd: unknown flag --confg \(did you mean --config\?\); `mutexd status --help` shows the usage$/ },
    { args: ["lock", "L", "--server", NOWHERE, "--wiat", "0", "--", "true"], want: /unknown flag --wiat \(did you mean --wait\?\); `mutexd lock --help`/ },
    { args: ["lock", "L", "--server", NOWHERE, "--sh", "--", "true"], want: /unknown flag --sh \(did you mean --shared\?\)/ },
    { args: ["ring", "lock", "--serer", NOWHERE, "--", "true"], want: /unknown flag --serer \(did you mean --server\?\); `mutexd ring lock --help`/ },
    { args: ["up", "--conifg", "x.toml"], want: /unknown flag --conifg \(did you mean --config\?\)/ },
    // Nothing close: no guess, still one line.
    { args: ["status", "--xyzzy"], want: /^mutexd: unknown flag --xyzzy; `mutexd status --help` shows the usage$/ },
  ];
  for (const { args, want } of cases) assertOneLineUsageError(await runMutexd(args), want, `mutexd ${args.join(" ")}`);
});

test("cli errors: a negative --wait says so (not 'ambiguous'); a flag without its value says which flag", { timeout: 60_000 }, async () => {
  assertOneLineUsageError(
    await runMutexd(["lock", "L", "--server", NOWHERE, "--wait", "-1s", "--", "true"]),
    /^mutexd: --wait: a duration cannot be negative: "-1s"/,
    "lock --wait -1s",
  );
  assertOneLineUsageError(await runMutexd(["ring", "put", "k", "v", "--server", NOWHERE, "--wait", "-5ms"]), /--wait: a duration cannot be negative/, "ring put --wait -5ms");
  assertOneLineUsageError(await runMutexd(["lock", "L", "--config", "--server", NOWHERE, "--", "true"]), /^mutexd: --config needs a value;/, "lock --config --server");
  assertOneLineUsageError(await runMutexd(["up", "--only"]), /^mutexd: --only needs a value;/, "up --only");
});

test("cli errors: a --server that is neither a URL nor host:port is refused at once with exit 2", { timeout: 60_000 }, async () => {
  const startedMs = performance.now();
  assertOneLineUsageError(await runMutexd(["status", "--server", "ftp://127.0.0.1:1"]), /--server: "ftp:\/\/127\.0\.0\.1:1" is not an http or https URL/, "status --server ftp://");
  assertOneLineUsageError(await runMutexd(["lock", "L", "--server", "127.0.0.1:1:2:3", "--", "true"]), /--server: .* is neither a URL nor host:port/, "lock --server junk");
  assertOneLineUsageError(await runMutexd(["ring", "get", "k"], { MUTEXD_RING_SERVER: "gopher://x" }), /MUTEXD_RING_SERVER: .* is not an http or https URL/, "MUTEXD_RING_SERVER");
  // Refused before any request: not after the client's failover window (5 s) ran out. A bound
  // far above three process starts, far below three failover windows.
  assert.ok(performance.now() - startedMs < 14_000, "refused without trying the servers");
});

test("cli errors: `mutexd help CMD` prints that command's help; `--help` lists every ring subcommand; an unknown command names the closest", { timeout: 60_000 }, async () => {
  for (const [args, usage] of [[["help", "lock"], "Usage: mutexd lock NAME"], [["help", "status"], "Usage: mutexd status"], [["help", "ring", "lock"], "Usage: mutexd ring lock"], [["help", "ring"], "Usage: mutexd ring <"]] as const) {
    const result = await runMutexd([...args]);
    assert.equal(result.code, 0, `mutexd ${args.join(" ")}: ${result.stderr}`);
    assert.ok(result.stdout.startsWith(usage), `mutexd ${args.join(" ")} printed:\n${result.stdout}`);
  }
  const general = await runMutexd(["--help"]);
  assert.equal(general.code, 0);
  const ringLine = general.stdout.split("\n").find((line) => line.trimStart().startsWith("ring "));
  for (const sub of ["lock", "put", "get", "delete", "keys", "status"]) assert.match(ringLine ?? "", new RegExp(`\\b${sub}\\b`), `--help's ring line names ${sub}`);
  assertOneLineUsageError(await runMutexd(["stauts"]), /^mutexd: unknown command "stauts" \(did you mean status\?\)/, "mutexd stauts");
  assertOneLineUsageError(await runMutexd(["help", "nosuch"]), /^mutexd: unknown command "nosuch";/, "mutexd help nosuch");
  assertOneLineUsageError(await runMutexd(["ring", "pt", "k", "v"]), /^mutexd: unknown ring subcommand "pt" \(did you mean put\?\); `mutexd ring --help`/, "mutexd ring pt");
});
