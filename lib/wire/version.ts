/**
 * The format versions of what mutexd puts on the wire and on disk, from this one place
 * (docs/deploy.md, "Upgrades and format versions"). A version is `major.minor`:
 * - the same major: compatible, so nodes of two minors run as one cluster during a rolling
 *   upgrade. A newer minor may add optional fields, but the schemas refuse a field they do not
 *   know, so a node sends a new field only to a node that reads it (docs/deploy.md);
 * - another major: incompatible. The message or file is refused with an error naming both
 *   versions (HTTP 400 `version_mismatch` on the wire; on disk the node does not start, exit 2).
 * What was written or sent before versions existed (no header, no marker file) reads as 1.0.
 *
 * Pure: no I/O, so the drivers (cluster/format_version.ts) and the tests share the rules.
 */

export interface FormatVersion {
  readonly major: number;
  readonly minor: number;
}

/**
 * Peer requests (lock replication, arbiter, ring hops and catch-up) carry it in FORMAT_HEADER, and
 * every answer too. 1.1 added the ring's section bound (SECTION_BOUND_FORMAT), 1.2 the ring's
 * section announcement (SECTION_ANNOUNCE_FORMAT).
 */
export const WIRE_FORMAT: FormatVersion = { major: 1, minor: 2 };
/**
 * The first wire format whose schemas take the ring's optional section-bound fields (`renew`'s
 * `sectionMaxMs`, a promise's `facts.holdSectionMaxMs`): a ring node sends them only to a peer whose
 * answers name this or newer (cluster/ring/http_peers.ts); builds of 1.0 refuse them.
 */
export const SECTION_BOUND_FORMAT: FormatVersion = { major: 1, minor: 1 };
/**
 * The first wire format whose view-message schema takes the ring's `section` and `sectionEnd`
 * messages (a holder announces a section, so the others' token-loss probe waits for its lease, and
 * ends the announcement when it probes itself): a ring node sends them only to a peer whose answers
 * name this or newer; builds of 1.1 and before refuse them. Best effort anyway: a peer left out
 * probes as before, and asks the others, who heard it.
 */
export const SECTION_ANNOUNCE_FORMAT: FormatVersion = { major: 1, minor: 2 };
/** Every node's dataDir carries it in its format marker (cluster/format_version.ts). */
export const DISK_FORMAT: FormatVersion = { major: 1, minor: 0 };
/** What a message or file without a version is: it was made before versions existed. */
export const UNVERSIONED: FormatVersion = { major: 1, minor: 0 };

/** The header of a peer request that names its wire format (`1.0`); covered by the peer MAC. */
export const FORMAT_HEADER = "x-mutexd-format";

/** Up to 6 digits each: a longer number is not a version of ours. */
const VERSION_PATTERN = /^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$/;

/** `1.0`. */
export function formatText(version: FormatVersion): string {
  return `${version.major}.${version.minor}`;
}

/** What `/v1/health` and status show as `formats`, so a half-done upgrade shows which node runs which. */
export const FORMATS = { wire: formatText(WIRE_FORMAT), disk: formatText(DISK_FORMAT) } as const;

/** The version `text` names, or null when it is no `major.minor`. */
export function parseFormat(text: string): FormatVersion | null {
  const match = VERSION_PATTERN.exec(text);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : null;
}

/**
 * Why `theirs` (what `what` carries) cannot be read by a build of format `ours`, or null when it
 * can (the same major, whatever the minors). A malformed version is refused too: it names none.
 */
export function formatRefusal(what: string, theirs: string, ours: FormatVersion): string | null {
  const parsed = parseFormat(theirs);
  if (parsed === null) return `${what} names format version ${JSON.stringify(theirs.slice(0, 32))}, which is no major.minor; this build reads ${formatText(ours)}`;
  if (parsed.major === ours.major) return null;
  const newer = parsed.major > ours.major;
  return `${what} has format version ${formatText(parsed)}, this build reads ${formatText(ours)} (major ${ours.major} only): ` +
    (newer ? `upgrade this node to a build of format ${parsed.major}.x first` : `the other side is older, upgrade it to a build of format ${ours.major}.x`);
}

/**
 * Whether a peer of format `theirs` reads what format `since` added: the same major, and its
 * minor at least `since`'s. Null (not heard from yet) reads nothing new: an optional field left
 * out is always understood, one too many is refused by a strict schema.
 */
export function formatReads(theirs: FormatVersion | null, since: FormatVersion): boolean {
  return theirs !== null && theirs.major === since.major && theirs.minor >= since.minor;
}
