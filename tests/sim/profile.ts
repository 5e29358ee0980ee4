/**
 * The run's "weather" (swarm testing): from the seed, draw which faults are on and how hard,
 * the network's behaviour, the clock skew, and each node kind's workload. Two seeds thus explore
 * different corners instead of one average mix; the header line of every trace prints it all.
 */
import { Prng } from "../../lib/core/prng.ts";
import { type FaultType, GENERIC_FAULTS, LATER_GENERIC_FAULTS } from "./faults.ts";
import type { NetworkProfile } from "./network.ts";
import type { KindParams, NodeKind } from "./node_kind.ts";

export interface Profile {
  seed: number;
  kinds: string[];
  safetyMs: number;
  healMs: number;
  network: NetworkProfile;
  /** Each node's clock drifts by at most this (0: perfect clocks). Kept ≤ 100 (see docs). */
  clockDriftPpmMax: number;
  /** Each node's monotonic clock starts at an offset up to this. */
  clockOffsetMsMax: number;
  /** Enabled faults and their rate per simulated second. */
  faults: Record<string, number>;
  params: Record<string, KindParams>;
}

export interface ProfileOptions {
  safetyMs: number;
  healMs: number;
  /**
   * Adjustments after the seed's draw: "+name" switches a fault on (needed for opt-in faults),
   * "+name=R" on at R events per simulated second instead of the seed's rate (a targeted hunt's
   * scenario made likely), "-name" off, "none" switches every fault off. Applied in order.
   */
  faultOverrides: readonly string[];
  /** Workload parameters forced after the draw, "kind.param" → value, e.g. "ring.nodes" → 5. */
  paramOverrides?: Readonly<Record<string, number | string | boolean>>;
}

/** Every fault a run with `kinds` may have, in the order the profile draws them. */
export function allFaults(kinds: readonly NodeKind[]): FaultType[] {
  return [...GENERIC_FAULTS, ...kinds.flatMap((k) => k.faults), ...LATER_GENERIC_FAULTS];
}

export function drawProfile(seed: number, kinds: readonly NodeKind[], options: ProfileOptions): Profile {
  const prng = new Prng(seed).fork("profile");
  const delayMaxMs = prng.pick([5, 20, 100, 300]);
  const network: NetworkProfile = {
    dropRate: prng.chance(0.5) ? round3(prng.float() * 0.2) : 0,
    duplicateRate: prng.chance(0.5) ? round3(prng.float() * 0.1) : 0,
    reorderRate: prng.chance(0.5) ? round3(prng.float() * 0.3) : 0,
    delayMinMs: 2,
    delayMaxMs,
    reorderDelayMaxMs: delayMaxMs * 4,
  };
  const skewed = prng.chance(0.5);
  const faults: Record<string, number> = {};
  const drawnRates: Record<string, number> = {};
  const available = allFaults(kinds);
  for (const fault of available) {
    // Draw for every fault, also opt-in ones, so switching one on ("+name") runs it at the rate
    // this seed drew for it and shifts nothing else: the run is the one the seed would give if
    // the fault were on by default.
    const on = prng.chance(0.5);
    const [low, high] = fault.ratePerSecond;
    drawnRates[fault.name] = round3(low + prng.float() * (high - low));
    if (on && !fault.optInReason) faults[fault.name] = drawnRates[fault.name];
  }
  for (const override of options.faultOverrides) applyOverride(faults, drawnRates, override);
  const params: Record<string, KindParams> = {};
  for (const kind of kinds) params[kind.name] = kind.drawParams(new Prng(seed).fork(`params:${kind.name}`), network);
  for (const [key, value] of Object.entries(options.paramOverrides ?? {})) {
    const [kind, param] = key.split(".");
    if (!params[kind] || !(param in params[kind])) throw new Error(`unknown parameter ${key}`);
    params[kind][param] = value;
  }
  return {
    seed,
    kinds: kinds.map((k) => k.name),
    safetyMs: options.safetyMs,
    healMs: options.healMs,
    network,
    clockDriftPpmMax: skewed ? 100 : 0,
    clockOffsetMsMax: skewed ? 10_000 : 0,
    faults,
    params,
  };
}

function applyOverride(faults: Record<string, number>, drawnRates: Record<string, number>, override: string): void {
  if (override === "none") {
    for (const name of Object.keys(faults)) delete faults[name];
    return;
  }
  const [name, rateText] = override.slice(1).split("=");
  const rate = rateText === undefined ? drawnRates[name] : Number(rateText);
  const badRate = rateText !== undefined && (override[0] !== "+" || !(rate > 0 && rate <= 100));
  if (drawnRates[name] === undefined || (override[0] !== "+" && override[0] !== "-") || badRate) {
    throw new Error(`bad fault override ${override} (+name, +name=rate with 0 < rate ≤ 100 per second, -name or none; known faults: ${Object.keys(drawnRates).join(", ")})`);
  }
  if (override[0] === "-") delete faults[name];
  else faults[name] = rate;
}

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/** The header line: seed and profile, compact and stable. */
export function describeProfile(profile: Profile): string {
  const n = profile.network;
  const faults = Object.entries(profile.faults).map(([name, rate]) => `${name}:${rate}/s`).join(",") || "none";
  const kinds = Object.entries(profile.params)
    .map(([kind, params]) => ` ${kind}=` + Object.entries(params).map(([k, v]) => `${k}:${v}`).join(","))
    .join("");
  return `seed=${profile.seed} kinds=${profile.kinds.join(",")} safety=${profile.safetyMs}ms heal=${profile.healMs}ms` +
    ` net=drop:${n.dropRate},dup:${n.duplicateRate},reorder:${n.reorderRate},delay:${n.delayMinMs}..${n.delayMaxMs}ms` +
    ` clock=drift:±${profile.clockDriftPpmMax}ppm,offset:±${profile.clockOffsetMsMax}ms faults=${faults}${kinds}`;
}
