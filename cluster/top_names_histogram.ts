/** The `lock` label of the per-lock wait and hold histograms, bounded to the busiest names (TopNamesHistogram). */
import type { LabelledHistogram } from "./scraped_metrics.ts";

/**
 * The per-lock wait and hold histograms keep their own series for the top LOCK_NAMES_TRACKED_MAX
 * names by total time (wait time for the wait histogram, hold time for the hold one), re-ranked
 * every LOCK_RANK_INTERVAL_MS; every other name is counted under `other` (TopNamesHistogram;
 * docs/http-api.md says what Prometheus sees when a name enters or leaves). 20 names + `other`
 * × 2 histograms × 15 series ≈ 630 series: a scrape stays small for a table of any size.
 */
export const LOCK_NAMES_TRACKED_MAX = 20;
export const LOCK_RANK_INTERVAL_MS = 60_000;
/** Most names scored between two rankings: a name first seen past it waits for the next interval. */
export const LOCK_NAMES_SCORED_MAX = 10_000;
export const OTHER_LOCK_NAME = "other";

export interface TopNamesLimits {
  namesMax: number;
  rankIntervalMs: number;
  scoredMax: number;
}

export const TOP_NAMES_LIMITS: TopNamesLimits = { namesMax: LOCK_NAMES_TRACKED_MAX, rankIntervalMs: LOCK_RANK_INTERVAL_MS, scoredMax: LOCK_NAMES_SCORED_MAX };

/**
 * A histogram with a `lock` label bounded to the top `namesMax` names by total observed time, and
 * `other` for the rest: at most namesMax + 1 label values at any time.
 *
 * Between two rankings a name is scored (its seconds added up, at most `scoredMax` names) and a new
 * name takes a free place if there is one (so a quiet cluster names its locks from the start). The
 * first observation after `rankIntervalMs` (scored first) re-ranks: the names with the highest scores become the
 * tracked set (ties keep a tracked name, then go by name); a name that drops out has its series
 * removed (Prometheus sees it end) and counts under `other` from then on. The scores are then
 * halved and only the top 2 × namesMax kept, so a hot lock of the last interval outranks one that
 * was hot long ago, and the scores stay bounded.
 */
export class TopNamesHistogram {
  private readonly tracked = new Set<string>();
  private scores = new Map<string, number>();
  private rankedAtMs: number;

  constructor(private readonly histogram: LabelledHistogram, nowMs: number, private readonly limits: TopNamesLimits = TOP_NAMES_LIMITS) {
    this.rankedAtMs = nowMs;
  }

  observe(name: string, seconds: number, nowMs: number): void {
    const score = this.scores.get(name);
    if (score !== undefined) this.scores.set(name, score + seconds);
    else if (this.scores.size < this.limits.scoredMax) this.scores.set(name, seconds);
    // After scoring: the observation that makes the ranking due counts in it.
    if (nowMs - this.rankedAtMs >= this.limits.rankIntervalMs) this.rank(nowMs);
    if (!this.tracked.has(name) && this.tracked.size < this.limits.namesMax) this.tracked.add(name);
    this.histogram.observe(this.tracked.has(name) ? name : OTHER_LOCK_NAME, seconds);
  }

  /** The names with their own series now (tests, docs). */
  names(): string[] {
    return [...this.tracked].sort();
  }

  private rank(nowMs: number): void {
    const ranked = [...this.scores].sort(([a, scoreA], [b, scoreB]) =>
      scoreB - scoreA || Number(this.tracked.has(b)) - Number(this.tracked.has(a)) || (a < b ? -1 : a > b ? 1 : 0)
    );
    const top = new Set(ranked.slice(0, this.limits.namesMax).map(([name]) => name));
    for (const name of [...this.tracked]) {
      if (top.has(name)) continue;
      this.tracked.delete(name);
      this.histogram.remove(name);
    }
    for (const name of top) this.tracked.add(name);
    this.scores = new Map(ranked.slice(0, 2 * this.limits.namesMax).map(([name, score]) => [name, score / 2]));
    this.rankedAtMs = nowMs;
  }
}
