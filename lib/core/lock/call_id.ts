/**
 * Call ids as the lock table keeps them (W4, docs/bench.md "Memory per held lock"). Every held
 * lock keeps its grant's call id, and every session its last left calls. mutexd's client sends a
 * UUID, 36 characters: 52 bytes of heap in Bun and 56–68 in Deno. The same 128 bits as 16
 * characters of 0–255 take 32 bytes in both. The wire, the log, snapshots and streamed copies
 * carry the client's text: `packCallId` on the way into the table, `unpackCallId` on the way out
 * (copyOfLock, copyOfSession), so no format changes.
 *
 * The packing is one-to-one over all strings, so two calls never become one: a packed UUID is
 * exactly 16 characters, all of them below 256. Any other id that could be mistaken for one (16
 * such characters), or that ends with the escape character (U+0100, above 256, so no escaped id
 * looks packed), is kept with one more escape character at its end; `unpackCallId` removes it.
 * Ids that are neither stay as they are.
 */

/** A canonical UUID as `crypto.randomUUID()` makes it (lowercase). An uppercase one is kept as sent. */
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PACKED_LENGTH = 16;
/** Above 255, so an escaped id never looks packed, whatever its length. */
const ESCAPE = "\u0100";
/** Where the UUID's 32 hex digits start, pair by pair (dashes at 8, 13, 18, 23). */
const HEX_PAIR_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
/** Where the dashes go when a packed id is spelled out again (after these byte counts). */
const DASH_AFTER_BYTES = new Set([4, 6, 8, 10]);

function hexDigit(code: number): number {
  return code <= 57 ? code - 48 : code - 87; // '0'..'9', 'a'..'f' (the pattern admits no other)
}

/** Whether `text` has the form of a packed UUID: 16 characters, each below 256. */
function looksPacked(text: string): boolean {
  if (text.length !== PACKED_LENGTH) return false;
  for (let i = 0; i < PACKED_LENGTH; i++) if (text.charCodeAt(i) > 0xff) return false;
  return true;
}

/** The form the table keeps of a call id (one-to-one; see above). */
export function packCallId(callId: string): string {
  if (UUID_PATTERN.test(callId)) {
    const codes = new Array<number>(PACKED_LENGTH);
    for (let i = 0; i < PACKED_LENGTH; i++) {
      const at = HEX_PAIR_AT[i];
      codes[i] = hexDigit(callId.charCodeAt(at)) * 16 + hexDigit(callId.charCodeAt(at + 1));
    }
    // One flat string (concatenation would leave a rope of 16 pieces, larger than the UUID).
    return String.fromCharCode(...codes);
  }
  return looksPacked(callId) || callId.endsWith(ESCAPE) ? callId + ESCAPE : callId;
}

/** The client's call id back from the table's form (`unpackCallId(packCallId(x)) === x`). */
export function unpackCallId(kept: string): string {
  if (looksPacked(kept)) {
    let text = "";
    for (let i = 0; i < PACKED_LENGTH; i++) {
      if (DASH_AFTER_BYTES.has(i)) text += "-";
      text += kept.charCodeAt(i).toString(16).padStart(2, "0");
    }
    return text;
  }
  return kept.endsWith(ESCAPE) ? kept.slice(0, -1) : kept;
}

/** `packCallId` of an optional id. */
export function packedOrNone(callId: string | undefined): string | undefined {
  return callId === undefined ? undefined : packCallId(callId);
}
