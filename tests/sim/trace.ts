/**
 * The run's event trace: one line per event in fixed columns,
 *
 *     12.345s c3   + granted L token 17 (s: p1-0-4)
 *
 * time, actor, glyph, text. Glyphs: `!` crash, `^` restart, `~` pause or resume, `x` partition,
 * `=` heal, `+` grant, `-` release, `?` request, `*` fault-free note, `#` checker, `>` message.
 * Every line feeds a running hash (FNV-1a), so two runs of one seed compare with one number;
 * the lines themselves are kept in full or only the last `tailLinesMax` (batches).
 */
import { hash32 } from "../../lib/core/prng.ts";

export interface TraceOptions {
  /** Keep every line (single runs, determinism tests) or only a tail (batches). */
  keepAll: boolean;
  tailLinesMax: number;
  /** Message sends, drops and deliveries too (large). */
  verbose: boolean;
  /** Print each line as it happens (the CLI). */
  echo?: (line: string) => void;
}

export class Trace {
  readonly lines: string[] = [];
  private hashValue = 0x811c9dc5;
  lineCount = 0;

  constructor(private readonly options: TraceOptions) {}

  get verbose(): boolean {
    return this.options.verbose;
  }

  get hash(): string {
    return this.hashValue.toString(16).padStart(8, "0");
  }

  write(nowMs: number, actor: string, glyph: string, text: string): void {
    const line = `${(nowMs / 1000).toFixed(3).padStart(9)}s ${actor.padEnd(4)} ${glyph} ${text}`;
    this.raw(line);
  }

  /** A line without the time columns (the header and the verdict). */
  raw(line: string): void {
    this.lineCount += 1;
    this.hashValue = hash32(line + "\n", this.hashValue);
    this.options.echo?.(line);
    this.lines.push(line);
    if (!this.options.keepAll && this.lines.length > this.options.tailLinesMax * 2) {
      this.lines.splice(0, this.lines.length - this.options.tailLinesMax);
    }
  }

  tail(count: number): string[] {
    return this.lines.slice(-count);
  }
}
