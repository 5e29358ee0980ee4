/**
 * Every timeout and limit of mutexd, with its default, in one place. Names carry their unit last
 * (`sessionTtlMs`). A cluster file may override any of them in its `[settings]` table; the loader
 * rejects unknown keys and checks the relations in `validateSettings`.
 */
export const DEFAULT_SETTINGS = {
  // Sessions (the failure detector for clients).
  sessionTtlMs: 10_000, // TTL a client gets when it asks for none; it keeps alive every TTL/3
  sessionTtlMinMs: 1_500, // a session must outlive a takeover (≈ one primary lease + retries)
  sessionTtlMaxMs: 3_600_000, // a dead client holds its locks at most this long
  sessionsMax: 10_000, // open sessions per server

  // Locks.
  locksMax: 100_000, // lock entries (held, waited for or delayed) per server
  waitersPerLockMax: 1_000, // queued requests per lock
  lockNameLengthMax: 256, // bytes of a lock name ([A-Za-z0-9._:/-])
  lockDelayMaxMs: 60_000, // upper bound of a lock's delay after its holder died (Chubby: 1 min)
  waitMaxMs: 3_600_000, // longest `waitMs` an enter may ask for
  leftCallsPerSessionMax: 32, // call ids of left enters a session remembers, so a late duplicate of one grants nothing

  // HTTP.
  longPollMaxMs: 5_000, // a waiting enter is answered after at most this; the client asks again
  bodyBytesMax: 65_536, // request bodies above this get 413
  tickMs: 20, // how often a server's driver feeds the clock to its core

  // Client.
  requestTimeoutMs: 3_000, // a client gives up one HTTP request after this (plus long-poll time; a keepalive after TTL/3 if shorter), a paused server too
  failoverTimeoutMs: 5_000, // a lock client retries over the servers this long, each at least once (a takeover takes < 1 s) before "unavailable"
  killGraceMs: 3_000, // `mutexd lock`: SIGTERM, then SIGKILL after this when the lock is lost
  ringWriteWaitMs: 30_000, // `mutexd ring put/delete` outside a section wait this long for one of their own

  // `mutexd up` (a local cluster) and the node's log.
  upStartTimeoutMs: 20_000, // a node that answers no HTTP this long after its start failed (a cold start under load takes seconds)
  upStopTimeoutMs: 5_000, // nodes still running this long after SIGTERM get SIGKILL (a clean stop takes 2-12 ms; stopGraceMs bounds it)
  stopGraceMs: 150, // a node still stopping this long after SIGTERM/SIGINT exits anyway, as after a crash
  upPollMs: 50, // how often `mutexd up` looks whether a node answers or has exited (cheap; keeps start-up quick)
  logPendingLinesMax: 1_000, // log lines gathered before a write even within one event-loop turn (bounds the buffer)

  // Ring.
  ringLeaseMs: 5_000, // a ring critical section ends after this unless the client asks for less
  ringLeaseMaxMs: 10_000, // longest lease an enter may ask for; a token lost with its holder is regenerated, then waits up to this long (the longest section its last token leases stated) before its first grant
  tokenIdlePaceMs: 200, // an idle token rests this long at each node (CPU near zero); a wake cuts it short
  tokenHoldMs: 2, // under contention (a wake in force) a visit serves clients that arrived during it only while it is younger than this
  tokenHopTimeoutMs: 1_000, // one HTTP attempt to hand the token or writes to the successor
  tokenRetryMs: 100, // first retry after a failed hop; doubles up to tokenHopTimeoutMs, forever
  tokenLossMs: 2_000, // a member that has not seen the token this long asks the others; lost when a majority saw none either: a view change makes a new one (a section its holder announced counts as a sighting until its lease ends)
  ringPollGraceMs: 2_000, // a waiter whose client stopped polling this long is dropped
  ringWaitersMax: 1_000, // queued enters per ring node
  ringSectionWritesMax: 1_000, // writes of one section in flight around the ring at once
  ringKeysMax: 100_000, // keys in the ring's replicated map
  ringKeyLengthMax: 256, // characters of a key
  ringValueBytesMax: 16_384, // UTF-8 bytes of a value
  ringBatchWritesMax: 256, // writes per peer request (hand-off and catch-up)
  ringGapBufferMax: 1_024, // out-of-order writes a node keeps while it fetches the gap
  ringSnapshotEveryWrites: 1_000, // committed writes between two snapshots of the replica
  ringLogRetainMax: 10_000, // committed log entries kept in memory for neighbours' catch-up
  ringRepairRetries: 3, // failed hand-offs in a row (timed out or cut) before a node suspects its successor (one refused at connect suspects at once); confirmation needs tokenHopTimeoutMs × this of silence at the suspect's successor
  ringDatagramBytesMax: 1_024, // a repair datagram (UDP) above this is dropped unread; ours are ~90 bytes, ~170 sealed with the cluster secret's MAC
  ringDatagramsRememberedMax: 1_024, // (sender, sequence) pairs a node remembers to drop the second copy (broadcast + unicast)
  // Ring view changes (docs/ring-view.md).
  tokenLeaseMs: 500, // a holder grants only inside a lease renewed by a majority; each renewer promises no newer view this long
  tokenLeaseSafetyMs: 100, // the holder's lease ends this long before the renewers' promise holds run out (drift, delays)
  viewPromiseWaitMs: 100, // with a majority of promises, wait this long for the rest (else they are left out of the view)
  viewChangeTimeoutMs: 2_000, // a view change (or a lease renewal) without a majority by then gives up: minority
  viewChangeRetryMs: 200, // pause before the next attempt, times (1 + place in the file): attempts do not collide forever

  // Primary/backup replication and the arbiter's lease (takeover after kill -9 ≈ primaryLeaseMs).
  // 500 ms: issue 14 tried 400 (F1 387 ms against ZooKeeper's 405 in one run), but in 2 of 4 CI
  // runs a fresh node under Deno's parallel test runner stalled ~400 ms and the backup took over
  // with no fault injected; docs/failover.md "Takeover timing". 400 is a setting for quiet hosts.
  primaryLeaseMs: 500, // the arbiter's lease on serving; a backup takes over only after it lapsed
  backupLeaseMs: 500, // the backup's promise with each ack not to take over for this long; the primary serves on it too
  leaseRenewMs: 100, // the primary renews this often, so a few lost renewals do not lapse it
  leaseSafetyMs: 100, // the primary stops serving this long before its lease ends (clock drift, delays)
  primarySilenceMs: 200, // a backup that hears nothing from the primary this long asks to take over
  claimRetryMs: 50, // pause between two claims to the arbiter (start-up and takeover)
  heartbeatMs: 50, // an idle primary tells its backup it is alive this often
  replicationTimeoutMs: 300, // a change the backup has not acked this long: the backup is out of sync
  peerTimeoutMs: 1_000, // one HTTP request between servers or to the arbiter gives up after this
  securityLogIntervalMs: 10_000, // a refused request or datagram is logged at most once per sender and reason this often (the rest are counted)
  replicationBatchMax: 512, // log entries per replication message
  replicationPipelineMax: 4, // replication messages in flight at once
  replicationLogMax: 100_000, // unacked entries kept for the backup; beyond, it is declared out of sync and gets a new streamed copy
  answeredMax: 10_000, // answers remembered for idempotent retries (oldest forgotten first)
  answeredBytesMax: 4_194_304, // the remembered answers' estimated bytes at most (lib/core/lock/answered.ts; 10,000 answers with UUID ids take ~1.7 MB)
  tokenCeilingStep: 1_000_000, // the arbiter's record caps fencing tokens; a primary has the cap raised by this much at a time (a fresh table starts above it)
  durableCompactEntries: 100_000, // with durable = true: log records after the snapshot before a new snapshot replaces them
  peerBodyBytesMax: 16_777_216, // one replication message between servers
  syncChunkItemsMax: 1_000, // sessions, locks or answers per chunk of a returning backup's copy (each chunk costs the primary ~1-2 ms)
  syncChunkBytesMax: 262_144, // JSON bytes per copy chunk (one item beyond it goes alone)
  syncProgressTimeoutMs: 3_000, // a copy to the backup that advanced no chunk this long is dropped (the backup asks again)
  bootstrapWaitMs: 3_000, // with an empty arbiter record (a first start, a lost disk) no epoch before this unless both servers claim without state; after it either may start epoch 1
};

export type Settings = typeof DEFAULT_SETTINGS;
export type SettingName = keyof Settings;

/** One problem found in a settings object: the key and what is wrong with it. */
export interface SettingsProblem {
  key: string;
  message: string;
}

/**
 * Checks every value is a positive safe integer and the relations between values hold.
 * Returns the problems (empty when valid) rather than throwing, so the loader can name the file.
 */
export function validateSettings(settings: Settings): SettingsProblem[] {
  const problems: SettingsProblem[] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      problems.push({ key, message: `must be a positive integer, got ${JSON.stringify(value)}` });
    }
  }
  if (problems.length > 0) return problems;
  const s = settings;
  const relation = (ok: boolean, key: string, message: string) => {
    if (!ok) problems.push({ key, message });
  };
  relation(
    s.sessionTtlMinMs <= s.sessionTtlMs && s.sessionTtlMs <= s.sessionTtlMaxMs,
    "sessionTtlMs",
    `must lie within sessionTtlMinMs (${s.sessionTtlMinMs}) and sessionTtlMaxMs (${s.sessionTtlMaxMs})`,
  );
  relation(
    s.tickMs * 5 <= s.sessionTtlMinMs,
    "tickMs",
    `must be at most sessionTtlMinMs / 5 (${s.sessionTtlMinMs / 5}) so expiry is timely`,
  );
  relation(
    s.longPollMaxMs <= 60_000,
    "longPollMaxMs",
    "must be at most 60000 (HTTP idle timeouts of proxies and runtimes)",
  );
  relation(s.waitMaxMs >= 60_000, "waitMaxMs", "must be at least 60000 (clients ask for waits in 60 s chunks)");
  relation(s.ringLeaseMs <= s.ringLeaseMaxMs, "ringLeaseMs", `must be at most ringLeaseMaxMs (${s.ringLeaseMaxMs})`);
  relation(
    s.tokenRetryMs <= s.tokenHopTimeoutMs,
    "tokenRetryMs",
    `must be at most tokenHopTimeoutMs (${s.tokenHopTimeoutMs}), the retry backoff's cap`,
  );
  relation(
    s.tokenLossMs >= 2 * s.tokenHopTimeoutMs,
    "tokenLossMs",
    `must be at least 2 × tokenHopTimeoutMs (${2 * s.tokenHopTimeoutMs}): a hand-off still being retried is not taken for a lost token`,
  );
  relation(
    s.ringDatagramBytesMax >= 256 && s.ringDatagramBytesMax <= 65_507,
    "ringDatagramBytesMax",
    "must lie within 256 (a repair datagram) and 65507 (the largest UDP payload over IPv4)",
  );
  relation(s.tickMs <= s.tokenIdlePaceMs, "tickMs", `must be at most tokenIdlePaceMs (${s.tokenIdlePaceMs})`);
  relation(s.tokenHoldMs <= s.tokenIdlePaceMs, "tokenHoldMs", `must be at most tokenIdlePaceMs (${s.tokenIdlePaceMs})`);
  relation(
    s.tokenLeaseSafetyMs < s.tokenLeaseMs,
    "tokenLeaseSafetyMs",
    `must be below tokenLeaseMs (${s.tokenLeaseMs}): the holder's lease is tokenLeaseMs − tokenLeaseSafetyMs from its request`,
  );
  relation(
    s.viewChangeTimeoutMs > s.tokenLeaseMs,
    "viewChangeTimeoutMs",
    `must be above tokenLeaseMs (${s.tokenLeaseMs}): a promise deferred by a lease hold must arrive before its coordinator gives up`,
  );
  relation(
    s.ringKeyLengthMax + s.ringValueBytesMax + 1_024 <= s.bodyBytesMax,
    "ringValueBytesMax",
    "ringKeyLengthMax + ringValueBytesMax + 1024 must fit in bodyBytesMax (one put is one request)",
  );
  relation(
    s.ringSnapshotEveryWrites <= s.ringLogRetainMax,
    "ringSnapshotEveryWrites",
    `must be at most ringLogRetainMax (${s.ringLogRetainMax})`,
  );
  relation(
    s.sessionTtlMinMs >= 3 * s.primaryLeaseMs,
    "sessionTtlMinMs",
    `must be at least 3 × primaryLeaseMs (${3 * s.primaryLeaseMs}): a shorter session is lost by its client during a takeover`,
  );
  relation(
    s.leaseRenewMs * 3 <= s.primaryLeaseMs,
    "leaseRenewMs",
    `must be at most primaryLeaseMs / 3 (${Math.floor(s.primaryLeaseMs / 3)}) so one lost renewal does not lapse the lease`,
  );
  relation(s.leaseSafetyMs < s.primaryLeaseMs - s.leaseRenewMs, "leaseSafetyMs", "must leave room for renewals");
  relation(
    s.heartbeatMs * 3 <= s.backupLeaseMs && s.leaseSafetyMs < s.backupLeaseMs - s.heartbeatMs,
    "backupLeaseMs",
    `must be at least 3 × heartbeatMs (${3 * s.heartbeatMs}) and leave leaseSafetyMs of room, so one lost ack does not lapse it`,
  );
  relation(
    s.heartbeatMs * 2 <= s.primarySilenceMs,
    "heartbeatMs",
    `must be at most primarySilenceMs / 2 (${s.primarySilenceMs / 2})`,
  );
  relation(s.stopGraceMs < s.upStopTimeoutMs, "stopGraceMs", `must be below upStopTimeoutMs (${s.upStopTimeoutMs}): a node exits by itself before \`mutexd up\` kills it`);
  relation(
    s.answeredBytesMax >= 65_536,
    "answeredBytesMax",
    "must be at least 65536: below it, a few closes of sessions holding many locks would evict every other remembered answer",
  );
  relation(s.tickMs <= s.heartbeatMs, "tickMs", `must be at most heartbeatMs (${s.heartbeatMs})`);
  relation(
    s.syncChunkBytesMax * 4 <= s.peerBodyBytesMax,
    "syncChunkBytesMax",
    `must be at most peerBodyBytesMax / 4 (${Math.floor(s.peerBodyBytesMax / 4)}): a chunk's JSON, escaped once more in its message, with room for one large item`,
  );
  relation(
    s.syncProgressTimeoutMs >= 2 * s.peerTimeoutMs,
    "syncProgressTimeoutMs",
    `must be at least 2 × peerTimeoutMs (${2 * s.peerTimeoutMs}): a lost chunk is asked for again after peerTimeoutMs and must not end the copy`,
  );
  return problems;
}

/** Applies overrides on top of the defaults; unknown keys are reported, not ignored. */
export function mergeSettings(
  overrides: Record<string, unknown>,
): { settings: Settings; problems: SettingsProblem[] } {
  const settings: Record<string, unknown> = { ...DEFAULT_SETTINGS };
  const problems: SettingsProblem[] = [];
  for (const [key, value] of Object.entries(overrides)) {
    if (!(key in DEFAULT_SETTINGS)) {
      problems.push({ key, message: `unknown setting (known: ${Object.keys(DEFAULT_SETTINGS).join(", ")})` });
      continue;
    }
    settings[key] = value;
  }
  const merged = settings as Settings;
  if (problems.length === 0) problems.push(...validateSettings(merged));
  return { settings: merged, problems };
}
