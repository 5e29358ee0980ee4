/**
 * CRC-32 (IEEE 802.3, the polynomial of zip, gzip and PNG), table-driven, in plain TypeScript:
 * no dependency, synchronous (the ring's disk writes are synchronous, so Web Crypto's async
 * digests would not do). It detects a changed record on disk, not a forged one: a bit flip, a
 * torn or edited byte. The one place the ring's storage takes its checksums from.
 */

/** crcTable[n]: the CRC of the byte n, one reflected bit at a time (0xEDB88320 is 0x04C11DB7 reflected). */
const crcTable = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

const encoder = new TextEncoder();

/**
 * CRC-32 of `data` (a string is taken as its UTF-8 bytes), as an unsigned 32-bit integer.
 * `previous`: the CRC of what came before, to continue over data given in parts
 * (crc32(b, crc32(a)) is crc32 of a then b, as zlib's crc32 does).
 */
export function crc32(data: Uint8Array | string, previous = 0): number {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  let crc = (previous ^ 0xFFFFFFFF) >>> 0;
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]) & 0xFF] ^ (crc >>> 8);
  return (crc ^ 0xFFFFFFFF) >>> 0;
}
