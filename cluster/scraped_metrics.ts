/**
 * The metric kinds counted in plain numbers on a request's path and handed to prom-client's registry
 * when it is scraped (ScrapedCounter, ScrapedHistogram), and the time buckets of every histogram.
 * The metrics themselves are in metrics.ts (every node's), lock/metrics.ts and ring/metrics.ts.
 */
import { Counter, type Histogram, type Registry } from "prom-client";

/** Wait, hold and rotation times, in seconds: 1 ms to 5 min. */
export const TIME_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 300];

/**
 * A counter bumped on a request's path: the counts are plain numbers (by label value, "" without a
 * label) handed to prom-client when it is scraped, so an increment is one Map update rather than
 * prom-client's label check and hashing per call (with the answers, grants and releases counted
 * that way, about a tenth of a lone primary's JavaScript per acquire+release: docs/bench.md). What
 * a scrape shows is unchanged. `label`'s values must come from a bounded set (status codes, reasons).
 */
export class ScrapedCounter {
  private readonly counts = new Map<string, number>();

  constructor(config: { name: string; help: string; registers: Registry[] }, label?: string) {
    const counts = this.counts;
    new Counter({
      ...config,
      labelNames: label === undefined ? [] : [label],
      collect() {
        this.reset();
        for (const [value, count] of counts) {
          if (label === undefined) this.inc(count);
          else this.inc({ [label]: value }, count);
        }
      },
    });
  }

  inc(labelValue = ""): void {
    this.counts.set(labelValue, (this.counts.get(labelValue) ?? 0) + 1);
  }
}

/** A histogram with one label, by that label's value (ScrapedHistogram; metrics_test feeds prom-client's alongside). */
export interface LabelledHistogram {
  observe(labelValue: string, value: number): void;
  remove(labelValue: string): void;
}

/**
 * A histogram with one label whose observations are kept in plain numbers and handed to prom-client's
 * registry when it is scraped, as ScrapedCounter does for counters: an observation is a Map lookup and
 * three additions, where prom-client's Histogram.observe checks and hashes its label object on every
 * call (the wait and hold histograms, a grant's and a release's: the largest part of a lone primary's
 * metrics per acquire+release, docs/bench.md). The scrape text is what prom-client's Histogram shows
 * for the same observations (metrics_test compares the two): the series in the order each was first
 * observed (a removed one starts again at zero), cumulative `_bucket` lines with `+Inf`, then `_sum`
 * (added up in the same order, so the same number) and `_count`.
 */
export class ScrapedHistogram implements LabelledHistogram {
  /** By label value: observations per bucket (not cumulative; the last one past every bound), their sum and count. */
  private readonly series = new Map<string, { buckets: number[]; sum: number; count: number }>();
  readonly name: string;
  readonly help: string;
  readonly type = "histogram";
  readonly aggregator = "sum";

  constructor(config: { name: string; help: string; registers: Registry[] }, private readonly label: string, private readonly bounds: readonly number[] = TIME_BUCKETS_SECONDS) {
    this.name = config.name;
    this.help = config.help;
    // The registry only reads what prom-client's own metrics offer it: name, help, type and the values below.
    for (const registry of config.registers) registry.registerMetric(this as unknown as Histogram);
  }

  observe(labelValue: string, value: number): void {
    // As prom-client refuses it (a NaN would poison the sum for good).
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    let series = this.series.get(labelValue);
    if (series === undefined) {
      series = { buckets: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 };
      this.series.set(labelValue, series);
    }
    // Bounded by the bucket count (12 for times).
    let bucket = 0;
    while (bucket < this.bounds.length && value > this.bounds[bucket]) bucket++;
    series.buckets[bucket]++;
    series.sum += value;
    series.count++;
  }

  /** Ends a series (Prometheus sees it go); observed again, it starts at zero. */
  remove(labelValue: string): void {
    this.series.delete(labelValue);
  }

  reset(): void {
    this.series.clear();
  }

  /** The values as prom-client's Histogram hands them to the registry's text format: the label as a shared one. */
  getForPromString() {
    // `exemplar`: none, as prom-client's Histogram without exemplars has (null on buckets, undefined on sum and count).
    type Value = { labels: Record<string, string | number>; sharedLabels: Record<string, string>; value: number; metricName: string; exemplar: null | undefined };
    const values: Value[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const [labelValue, series] of this.series) {
      const sharedLabels = { [this.label]: labelValue };
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += series.buckets[i];
        values.push({ labels: { le: this.bounds[i] }, sharedLabels, value: cumulative, metricName: bucketName, exemplar: null });
      }
      values.push({ labels: { le: "+Inf" }, sharedLabels, value: series.count, metricName: bucketName, exemplar: null });
      values.push({ labels: {}, sharedLabels, value: series.sum, metricName: `${this.name}_sum`, exemplar: undefined });
      values.push({ labels: {}, sharedLabels, value: series.count, metricName: `${this.name}_count`, exemplar: undefined });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  /** As prom-client's `get` (getMetricsAsJSON): the shared label merged into each value's labels. */
  async get() {
    const data = await this.getForPromString();
    return { ...data, values: data.values.map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } })) };
  }
}
