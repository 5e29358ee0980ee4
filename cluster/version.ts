/**
 * mutexd's version, from one place: package.json's `version` (read at build time by
 * `bun build --compile`, at start otherwise). `mutexd --version`, `/v1/health` and status show it.
 */
import packageJson from "../package.json" with { type: "json" };

export const VERSION: string = packageJson.version;
