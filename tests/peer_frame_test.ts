/**
 * A replication-stream frame's head is read character by character (cluster/peer_frame.ts
 * `parseFrame`, docs/bench.md "Replication cost", ninth pass) instead of by the regular expression
 * it replaced. This proves the two give the same verdict and the same fields on every input: a corpus
 * of valid and invalid heads at each field's bounds and each character class's edges, and 20,000 seeded mutations of valid frames
 * (characters replaced, inserted, deleted; each field's length moved past its bound).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { FRAME_HEAD_BYTES_MAX, parseFrame } from "../cluster/peer_frame.ts";
import { Prng } from "../lib/core/prng.ts";

/** The parser before (the expression the wire format is defined by), kept as the reference. */
const FRAME_HEAD = /^(0|[1-9][0-9]{0,14}) (0|[1-9][0-9]{0,14}) ([0-9]{1,3}) ([0-9a-f]{64}|-)$/;
function referenceParse(text: string) {
  const newline = text.indexOf("\n");
  if (newline < 0 || newline > FRAME_HEAD_BYTES_MAX) return null;
  const head = FRAME_HEAD.exec(text.slice(0, newline));
  if (!head) return null;
  return { seq: Number(head[1]), re: Number(head[2]), status: Number(head[3]), mac: head[4], body: text.slice(newline + 1) };
}

const MAC = "0123456789abcdef".repeat(4);
const BODY = '{"type":"append","from":"p1","epoch":3,"syncGen":1,"entries":[]}';

function corpus(): string[] {
  const heads = [
    `1 0 0 ${MAC}`, `0 0 0 -`, `7 3 200 ${MAC}`, `${"9".repeat(15)} ${"9".repeat(15)} 999 -`, `1 0 007 -`, `1 0 0 -`,
    // Invalid: leading zeros, 16 digits, 4-digit status, empty fields, signs, spaces, case, length.
    `01 0 0 -`, `1 00 0 -`, `1${"0".repeat(15)} 0 0 -`, `1 0 1000 -`, `1 0  -`, ` 1 0 0 -`, `1 0 0 - `, `1  0 0 -`,
    `-1 0 0 -`, `+1 0 0 -`, `1 0 0 ${MAC.toUpperCase()}`, `1 0 0 ${MAC.slice(1)}`, `1 0 0 ${MAC}0`, `1 0 0 --`, `1 0 0`,
    `1 0 0 -\r`, `1\t0 0 -`, `1 0 0 g${MAC.slice(1)}`, `1.5 0 0 -`, `1e3 0 0 -`, `0x1 0 0 -`, `１ 0 0 -`, ``, ` `,
    // The characters just outside each class: '/' and ':' beside the digits, '`' and 'g' beside a–f, '@' and 'G'.
    `1: 0 0 -`, `1/ 0 0 -`, `1 :0 0 -`, `1 0/ 0 -`, `1 0 9: -`, `1 0 /9 -`, `1 0 0 :${MAC.slice(1)}`, `1 0 0 ${MAC.slice(1)}/`,
    `1 0 0 \`${MAC.slice(1)}`, `1 0 0 @${MAC.slice(1)}`, `1 0 0 G${MAC.slice(1)}`, `1 0 0 ${MAC.slice(0, 63)}g`,
  ];
  const texts = heads.flatMap((head) => [`${head}\n${BODY}`, `${head}\n`, head, `${head}\n${BODY}\n2 0 0 -`]);
  // The newline's bound, from both sides (a valid head is 100 characters at most, so all are refused).
  for (const length of [FRAME_HEAD_BYTES_MAX - 1, FRAME_HEAD_BYTES_MAX, FRAME_HEAD_BYTES_MAX + 1]) texts.push(`${"1 0 0 -".padEnd(length)}\n${BODY}`);
  texts.push(`${"1".repeat(FRAME_HEAD_BYTES_MAX + 5)}\n`, `\n${BODY}`, BODY);
  return texts;
}

function mutate(prng: Prng, text: string): string {
  const alphabet = "0123456789abcdefABF- \n\r\t+-.x/:`@gG";
  const at = prng.below(Math.max(1, text.length));
  const char = alphabet[prng.below(alphabet.length)];
  switch (prng.below(5)) {
    case 0:
      return text.slice(0, at) + char + text.slice(at + 1);
    case 1:
      return text.slice(0, at) + char + text.slice(at);
    case 2:
      return text.slice(0, at) + text.slice(at + 1);
    case 3:
      return text.slice(0, at) + char.repeat(1 + prng.below(20)) + text.slice(at);
    default:
      return `${prng.below(2) ? "0" : ""}${text}`;
  }
}

test("peer frame: the head read character by character gives the regular expression's verdict and fields on a corpus at every field's bounds", () => {
  for (const text of corpus()) assert.deepEqual(parseFrame(text), referenceParse(text), JSON.stringify(text));
  // The corpus has frames of each kind: not a test that only ever sees refusals.
  assert.ok(corpus().filter((text) => referenceParse(text) !== null).length >= 12);
});

test("peer frame: the same verdict and fields on 20,000 seeded mutations of valid frames (one to three edits each)", () => {
  const prng = new Prng(14_018);
  const seeds = [`1 0 0 ${MAC}\n${BODY}`, `123456789012345 98 200 -\n${BODY}`, `0 0 0 ${MAC}\nnonce`, `42 41 400 -\n{}`];
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    let text = seeds[i % seeds.length];
    for (let edits = 1 + prng.below(3); edits > 0; edits--) text = mutate(prng, text);
    const expected = referenceParse(text);
    if (expected !== null) accepted += 1;
    assert.deepEqual(parseFrame(text), expected, JSON.stringify(text));
  }
  // Edits in the body leave a frame valid: both verdicts are exercised.
  assert.ok(accepted > 1_000 && accepted < 19_000, `${accepted} accepted`);
});
