/**
 * Canonical IP text. An address given as text is accepted only in one unambiguous spelling, so that
 * what the proxy checks is exactly what it dials: `0x7f000001`, `2130706433`, `0177.0.0.1`, `127.1`
 * and `::1%eth0` are not addresses here (the C resolver would read several of them as 127.0.0.1).
 */

/** An address in its one canonical text form. */
export interface CanonicalIp {
  family: 4 | 6;
  /** Dotted quad, or RFC 5952 IPv6 text (lower case, longest zero run compressed). */
  text: string;
}

const DECIMAL_OCTET = /^(0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** The four bytes of a canonical dotted quad (exactly four decimal parts 0-255, no leading zeros). */
export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i] ?? "";
    if (!DECIMAL_OCTET.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseGroups(text: string, allowTrailingIpv4: boolean): number[] | undefined {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? "";
    if (allowTrailingIpv4 && i === parts.length - 1 && part.includes(".")) {
      const v4 = parseIpv4(part);
      if (v4 === undefined) return undefined;
      groups.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
    } else {
      if (!HEX_GROUP.test(part)) return undefined;
      groups.push(Number.parseInt(part, 16));
    }
  }
  return groups;
}

/**
 * The sixteen bytes of an IPv6 literal: hex groups of 1-4 digits, at most one `::`, optionally a
 * canonical dotted quad at the end; no zone, no brackets, no surrounding space.
 */
export function parseIpv6(text: string): Uint8Array | undefined {
  if (text.length === 0 || text.length > 45) return undefined;
  const gap = text.indexOf("::");
  let groups: number[] | undefined;
  if (gap < 0) {
    groups = parseGroups(text, true);
    if (groups === undefined || groups.length !== 8) return undefined;
  } else {
    if (text.indexOf("::", gap + 1) >= 0) return undefined;
    const head = parseGroups(text.slice(0, gap), false);
    const tail = parseGroups(text.slice(gap + 2), true);
    if (head === undefined || tail === undefined) return undefined;
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** RFC 5952 text of sixteen address bytes. */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // The longest run of two or more zero groups (the first one on a tie) becomes "::".
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (list: number[]) => list.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

/** Whether sixteen bytes are an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`). */
function isIpv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/**
 * Canonical text of 4 or 16 address bytes; an IPv4-mapped IPv6 address becomes its IPv4 address
 * (a socket to `::ffff:a.b.c.d` reaches `a.b.c.d`). Undefined for any other length.
 */
export function canonicalFromBytes(bytes: Uint8Array): CanonicalIp | undefined {
  if (bytes.length === 4) return { family: 4, text: Array.from(bytes).join(".") };
  if (bytes.length !== 16) return undefined;
  if (isIpv4Mapped(bytes)) return { family: 4, text: Array.from(bytes.subarray(12)).join(".") };
  return { family: 6, text: formatIpv6(bytes) };
}

/**
 * The canonical form of an address given as text, or undefined when the text is not a canonical
 * dotted quad or an IPv6 literal. IPv6 text is normalized (RFC 5952, IPv4-mapped to IPv4).
 */
export function canonicalIp(text: string): CanonicalIp | undefined {
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return { family: 4, text };
  if (!text.includes(":")) return undefined;
  const v6 = parseIpv6(text);
  return v6 === undefined ? undefined : canonicalFromBytes(v6);
}

/** True for a loopback address in canonical text: 127.0.0.0/8 or `::1`. */
export function isLoopbackIp(address: string): boolean {
  return address.startsWith("127.") || address === "::1";
}
