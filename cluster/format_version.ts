/**
 * Format versions at the node's edges (lib/wire/version.ts has the rules): the middleware that
 * refuses a peer request of another major wire format, and the check of a dataDir's disk format
 * at start. docs/deploy.md, "Upgrades and format versions".
 */
import type { MiddlewareHandler } from "hono";
import { join } from "node:path";
import { apiError, ERROR_STATUS } from "../lib/wire/errors.ts";
import { DISK_FORMAT, FORMAT_HEADER, type FormatVersion, formatRefusal, formatText, UNVERSIONED, WIRE_FORMAT } from "../lib/wire/version.ts";
import { readIfExists, writeDurably } from "./durable_file.ts";
import { authenticatedSender } from "./peer_auth.ts";
import { PEER_HEADER } from "./peer_head.ts";
import type { SecurityLog } from "./security_log.ts";

/** The longest sender id put in a refusal's log line (an unauthenticated one is the sender's to choose). */
const SENDER_LOGGED_MAX = 64;

/**
 * Hono middleware for the peer routes, after the peer authentication (so the refusal is signed
 * and the sender trusts it): a request of another major wire format is answered 400
 * `version_mismatch` naming both versions, counted in `security` (logged once per sender) and
 * changes nothing. A request without FORMAT_HEADER comes from a build before versions: 1.0.
 */
export function peerFormatMiddleware(security: SecurityLog, ours: FormatVersion = WIRE_FORMAT): MiddlewareHandler {
  return async (c, next) => {
    const theirs = c.req.header(FORMAT_HEADER) ?? formatText(UNVERSIONED);
    const refusal = formatRefusal("the peer request", theirs, ours);
    if (refusal === null) return await next();
    const sender = authenticatedSender(c)?.id ?? (c.req.header(PEER_HEADER.from) ?? "peer").slice(0, SENDER_LOGGED_MAX);
    security.refused("versionMismatch", sender, { theirs: theirs.slice(0, 32), ours: formatText(ours) });
    return c.json(apiError("version_mismatch", refusal), ERROR_STATUS.version_mismatch);
  };
}

/**
 * Hono middleware, the first of every app (lock server, arbiter, ring node): every answer, errors
 * and 404s included, names this build's wire format in FORMAT_HEADER, so a client refuses an
 * answer of another major (lib/client/http.ts, answerFormatError) instead of misreading it. Set
 * after the routes ran; the peer MAC covers the status and body, not this header.
 */
export function answerFormatMiddleware(ours: FormatVersion = WIRE_FORMAT): MiddlewareHandler {
  const text = formatText(ours);
  return async (c, next) => {
    await next();
    c.res.headers.set(FORMAT_HEADER, text);
  };
}

/** The file in every dataDir that names the format of the files in it. */
export const DISK_FORMAT_FILE = "format.json";

/** This build's disk format as each file carries it: a "format" field in its JSON or in each record's. */
export const FILE_FORMAT = formatText(DISK_FORMAT);

/**
 * Throws a DiskFormatError naming `where` (a file, or a file's line) and both versions when
 * `found` (the "format" it carries; undefined: none, written before files carried one, 1.0) is
 * not of our major. A file copied in from another build's dataDir is caught by this, where the
 * dataDir's marker (checkDiskFormat) would not see it.
 */
export function checkFileFormat(where: string, found: unknown, ours: FormatVersion = DISK_FORMAT): void {
  const text = found === undefined ? formatText(UNVERSIONED) : typeof found === "string" ? found : JSON.stringify(found) ?? "";
  const refusal = formatRefusal(where, text, ours);
  if (refusal !== null) throw new DiskFormatError(refusal);
}

/** A dataDir this build cannot read: the node does not start (exit 2), naming the file and both versions. */
export class DiskFormatError extends Error {
  override name = "DiskFormatError";
}

/**
 * Checks the format of the files in `dataDir` before a node reads any of them: the marker's
 * major must be ours. A dataDir without a marker (new, or written before versions: 1.0) gets
 * ours. A marker of an older minor is rewritten to ours: this build may add optional fields an
 * older one of the same major ignores. Returns the version found (UNVERSIONED without a marker).
 */
export function checkDiskFormat(dataDir: string, ours: FormatVersion = DISK_FORMAT): string {
  const file = join(dataDir, DISK_FORMAT_FILE);
  const text = readIfExists(file);
  let found = formatText(UNVERSIONED);
  if (text !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new DiskFormatError(`${file} is not JSON: it should name the format of the files in ${dataDir} ({"format":"${formatText(ours)}"})`);
    }
    const format = (parsed as { format?: unknown } | null)?.format;
    if (typeof format !== "string") throw new DiskFormatError(`${file} has no "format" string: it should name the format of the files in ${dataDir}`);
    found = format;
  }
  const refusal = formatRefusal(file, found, ours);
  if (refusal !== null) throw new DiskFormatError(refusal);
  // The marker is written before any other file, so a node never writes ours under an older one.
  if (found !== formatText(ours) || text === undefined) writeDurably(file, JSON.stringify({ format: formatText(ours) }) + "\n");
  return found;
}
