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

const UUID_LENGTH = 36;
const PACKED_LENGTH = 16;
/** Above 255, so an escaped id never looks packed, whatever its length. */
const ESCAPE = "\u0100";
/** Where a UUID's dashes are. */
const DASH_AT = [8, 13, 18, 23];
const DASH = 45;
/** Where the UUID's 32 hex digits start, pair by pair (around the dashes). */
const HEX_PAIR_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
/** `packedUuid`'s bytes while it decodes one UUID (read back before it returns: no state between calls). */
const PACKING = new Array<number>(PACKED_LENGTH).fill(0);
/** Each byte as two lowercase hex digits (unpacking is then 16 lookups, no formatting). */
const HEX_OF_BYTE = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

/** The value of a lowercase hex digit's code, or -1 (an uppercase UUID is another id, kept as sent). */
function hexDigit(code: number): number {
  if (code >= 48 && code <= 57) return code - 48; // 0-9
  if (code >= 97 && code <= 102) return code - 87; // a-f
  return -1;
}

/** The byte of the hex pair at `at`, or -1. */
function hexByte(text: string, at: number): number {
  const high = hexDigit(text.charCodeAt(at));
  const low = hexDigit(text.charCodeAt(at + 1));
  return high < 0 || low < 0 ? -1 : high * 16 + low;
}

/**
 * A canonical UUID as mutexd's client makes its call ids (lowercase hex, dashes at 8, 13, 18, 23)
 * as 16 characters, or undefined for any other text. Checked while decoding (no regex: this runs
 * for every enter that carries a call id).
 */
function packedUuid(text: string): string | undefined {
  if (text.length !== UUID_LENGTH) return undefined;
  for (let i = 0; i < DASH_AT.length; i++) if (text.charCodeAt(DASH_AT[i]) !== DASH) return undefined;
  const bytes = PACKING;
  for (let i = 0; i < PACKED_LENGTH; i++) {
    const byte = hexByte(text, HEX_PAIR_AT[i]);
    if (byte < 0) return undefined;
    bytes[i] = byte;
  }
  // One flat string (concatenation would leave a rope of 16 pieces, larger than the UUID), from
  // 16 arguments rather than a spread: about half the time (60 against 120 ns, docs/bench.md "fifth pass").
  return String.fromCharCode(
    bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
  );
}

/** Whether `text` has the form of a packed UUID: 16 characters, each below 256. */
function looksPacked(text: string): boolean {
  if (text.length !== PACKED_LENGTH) return false;
  for (let i = 0; i < PACKED_LENGTH; i++) if (text.charCodeAt(i) > 0xff) return false;
  return true;
}

/** The form the table keeps of a call id (one-to-one; see above). */
export function packCallId(callId: string): string {
  const packed = packedUuid(callId);
  if (packed !== undefined) return packed;
  return looksPacked(callId) || callId.endsWith(ESCAPE) ? callId + ESCAPE : callId;
}

/** The client's call id back from the table's form (`unpackCallId(packCallId(x)) === x`). */
export function unpackCallId(kept: string): string {
  if (looksPacked(kept)) {
    const hex = (i: number) => HEX_OF_BYTE[kept.charCodeAt(i)];
    return hex(0) + hex(1) + hex(2) + hex(3) + "-" + hex(4) + hex(5) + "-" + hex(6) + hex(7) + "-" + hex(8) + hex(9) + "-" +
      hex(10) + hex(11) + hex(12) + hex(13) + hex(14) + hex(15);
  }
  return kept.endsWith(ESCAPE) ? kept.slice(0, -1) : kept;
}

/** `packCallId` of an optional id. */
export function packedOrNone(callId: string | undefined): string | undefined {
  return callId === undefined ? undefined : packCallId(callId);
}
