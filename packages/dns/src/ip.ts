// IP address text to bytes and back, for A and AAAA records. Only what node:net's isIP accepts is
// parsed, so an address is never a name or a non-canonical form in disguise.
import { isIP } from "node:net";

/** The 4 or 16 bytes of an IPv4 or IPv6 literal, or undefined if `text` is neither (zone ids refused). */
export function ipBytes(text: string): Uint8Array | undefined {
  const family = isIP(text);
  if (family === 4) return Uint8Array.from(text.split(".").map(Number));
  if (family !== 6 || text.includes("%")) return undefined;
  const out = new Uint8Array(16);
  let hex = text;
  // A dotted IPv4 tail (::ffff:192.0.2.1) fills the last four bytes.
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  let groupsWanted = 8;
  if (tail.includes(".")) {
    out.set(tail.split(".").map(Number), 12);
    hex = text.slice(0, lastColon + 1);
    if (hex.endsWith(":") && !hex.endsWith("::")) hex = hex.slice(0, -1);
    groupsWanted = 6;
  }
  const [head = "", rest] = hex.split("::");
  const parse = (part: string): number[] =>
    part === "" ? [] : part.split(":").map((g) => Number.parseInt(g, 16));
  const front = parse(head);
  const back = rest === undefined ? [] : parse(rest);
  const groups = [...front, ...new Array<number>(groupsWanted - front.length - back.length).fill(0), ...back];
  groups.forEach((group, i) => {
    out[i * 2] = group >>> 8;
    out[i * 2 + 1] = group & 0xff;
  });
  return out;
}

/** RFC 5952 text of 16 address bytes: lowercase, no leading zeros, the longest run of 2+ zero groups as `::`. */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] as number) << 8) | (bytes[i + 1] as number));
  // RFC 5952 section 5: IPv4-mapped addresses keep the dotted quad.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${Array.from(bytes.subarray(12)).join(".")}`;
  }
  let runStart = -1;
  let runLength = 1; // a lone zero group stays "0"
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i += 1;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j += 1;
    if (j - i > runLength) {
      runStart = i;
      runLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (runStart < 0) return hex.join(":");
  return `${hex.slice(0, runStart).join(":")}::${hex.slice(runStart + runLength).join(":")}`;
}
