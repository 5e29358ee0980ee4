/**
 * F2's holder process: takes a lock with mutexd's client (its own session, TTL from argv, kept
 * alive every TTL/3), prints `held <token>` and waits to be killed (exits by itself after 60 s).
 *   <runtime> tests/bench/holder.ts <server-url>[,<url>…] <lock-name> <ttl-ms>
 */
import process from "node:process";
import { connect } from "../../lib/client/lock_client.ts";

const [url, name, ttl] = process.argv.slice(2);
const handle = await connect({ servers: url.split(",") }).lock(name, { ttlMs: Number(ttl), waitMs: 5_000 });
process.stdout.write(`held ${handle.token}\n`);
setTimeout(() => process.exit(0), 60_000);
