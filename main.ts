/**
 * mutexd: the command line. Parses the subcommand and hands its arguments to the module that
 * runs it; no protocol logic lives here. Exit codes are listed in `mutexd --help`.
 */
import process from "node:process";
import { didYouMean, EXIT } from "./cluster/commands/common.ts";
import { COMMANDS, TOP_FLAGS } from "./cluster/commands/table.ts";
import { VERSION } from "./cluster/version.ts";

const USAGE = `mutexd: fault-tolerant distributed mutual exclusion

Usage: mutexd <command> [options]   (mutexd <command> --help or mutexd help <command> for details)
       mutexd --version

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`).join("\n")}

Exit codes (mutexd's own; \`lock\` passes its command's status through):
  0  success            2  usage or cluster-file error    3  lock not acquired (taken, --wait ran out)
  4  lock lost while the command ran (the command was stopped), or released by another party
  5  server unreachable or answered an error
  70 \`node\`: fail-stop (a decision could not be written to disk, or a bug such as a core's assertion;
     a restart starts from the disk or a fresh copy)
`;

async function main(argv: string[]): Promise<number> {
  let [name, ...rest] = argv;
  if (name === "help" && rest.length > 0) {
    // `mutexd help lock` (or `help ring lock`): that command's own help.
    [name, rest] = [rest[0], [...rest.slice(1), "--help"]];
  } else if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(USAGE);
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === "--version" || name === "-V") {
    process.stdout.write(`mutexd ${VERSION}\n`);
    return EXIT.ok;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`mutexd: unknown command ${JSON.stringify(name)}${didYouMean(name, [...Object.keys(COMMANDS), ...TOP_FLAGS])}; \`mutexd --help\` lists the commands\n`);
    return EXIT.usage;
  }
  const module = await command.load();
  return await module.run(rest);
}

const code = await main(process.argv.slice(2));
// `node` and `up` keep running until a signal; they exit themselves.
if (code !== EXIT.keepRunning) process.exit(code);
