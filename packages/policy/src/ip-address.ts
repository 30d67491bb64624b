import type { WireAddress } from "./wire.js";

/** A parsed IP address: IPv4 as one 32-bit word, IPv6 as four. */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly words: readonly number[];
}

/** A parsed CIDR block; `words` are already masked to `prefix` bits. */
export interface IpCidr {
  readonly family: 4 | 6;
  readonly words: readonly number[];
  readonly prefix: number;
}

function parseIpv4Words(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    // Leading zeros are refused, as Go's netip does: "010" is ambiguous (octal or decimal).
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value >>> 0;
}

function parseIpv6Words(text: string): number[] | undefined {
  if (text.length === 0 || text.length > 45) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const toGroups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const groups: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i] as string;
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4Words(piece);
        if (v4 === undefined) return undefined;
        groups.push(v4 >>> 16, v4 & 0xffff);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
      groups.push(Number.parseInt(piece, 16));
    }
    return groups;
  };
  const head = toGroups(halves[0] as string);
  if (head === undefined) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const tail = toGroups(halves[1] as string);
    if (tail === undefined) return undefined;
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  const words: number[] = [];
  for (let i = 0; i < 8; i += 2)
    words.push((((groups[i] as number) << 16) | (groups[i + 1] as number)) >>> 0);
  return words;
}

/**
 * Parses an IPv4 or IPv6 address strictly (no leading zeros in IPv4, no zone in policies).
 * Returns undefined for anything else.
 */
export function parseIpAddress(text: string): IpAddress | undefined {
  if (text.includes(":")) {
    const words = parseIpv6Words(text);
    return words === undefined ? undefined : { family: 6, words };
  }
  const v4 = parseIpv4Words(text);
  return v4 === undefined ? undefined : { family: 4, words: [v4] };
}

/**
 * Parses the address of a connection: an IPv6 zone is dropped and an IPv4-mapped IPv6 address
 * (`::ffff:10.0.0.1`, as dual-stack Node sockets report IPv4 peers) becomes the IPv4 address.
 */
export function parseConnectionAddress(text: string): IpAddress | undefined {
  const zone = text.indexOf("%");
  const parsed = parseIpAddress(zone >= 0 ? text.slice(0, zone) : text);
  if (parsed === undefined || parsed.family === 4) return parsed;
  const [a, b, c, d] = parsed.words as [number, number, number, number];
  if (a === 0 && b === 0 && c === 0xffff) return { family: 4, words: [d] };
  return parsed;
}

function maskWords(words: readonly number[], prefix: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < words.length; i++) {
    const bits = Math.min(32, Math.max(0, prefix - i * 32));
    const mask = bits === 0 ? 0 : bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    out.push(((words[i] as number) & mask) >>> 0);
  }
  return out;
}

/** Builds a CIDR from an address and prefix length; undefined if the length is out of range. */
export function makeCidr(address: IpAddress, prefix: number): IpCidr | undefined {
  const max = address.family === 4 ? 32 : 128;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return undefined;
  return { family: address.family, words: maskWords(address.words, prefix), prefix };
}

/**
 * Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a full-length block), the forms
 * AuthorizationPolicy `ipBlocks` accept. Host bits may be set (`10.0.0.1/24`), as Go's netip allows.
 */
export function parseCidr(text: string): IpCidr | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) {
    const address = parseIpAddress(text);
    return address === undefined ? undefined : makeCidr(address, address.family === 4 ? 32 : 128);
  }
  const address = parseIpAddress(text.slice(0, slash));
  const bits = text.slice(slash + 1);
  if (address === undefined || !/^(0|[1-9][0-9]{0,2})$/.test(bits)) return undefined;
  return makeCidr(address, Number(bits));
}

/** True when `address` lies inside `cidr` (families must agree). */
export function cidrContains(cidr: IpCidr, address: IpAddress): boolean {
  if (cidr.family !== address.family) return false;
  const prefix = cidr.prefix;
  const cw = cidr.words;
  const aw = address.words;
  for (let i = 0; i < cw.length; i++) {
    const bits = prefix - i * 32;
    if (bits <= 0) return true;
    const mask = bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    if (((aw[i] as number) & mask) >>> 0 !== cw[i]) return false;
  }
  return true;
}

/** The wire form of a CIDR or address text: the address bytes as written plus the prefix length. */
export function cidrTextToWire(text: string): WireAddress | undefined {
  const slash = text.indexOf("/");
  const address = parseIpAddress(slash < 0 ? text : text.slice(0, slash));
  const cidr = parseCidr(text);
  if (address === undefined || cidr === undefined) return undefined;
  return { address: addressToBytes(address), length: cidr.prefix };
}

/**
 * Reads a wire address; undefined when the byte length is not 4 or 16 or the prefix is too long.
 * The prefix length is a uint32 on the wire that ztunnel reads as a byte (`length & 0xff`: 264 is
 * /8), so a policy means here what it means there; see {@link wirePrefixLength}.
 */
export function cidrFromWire(wire: WireAddress): IpCidr | undefined {
  const bytes = wire.address;
  if (bytes.length !== 4 && bytes.length !== 16) return undefined;
  const words: number[] = [];
  for (let i = 0; i < bytes.length; i += 4) {
    words.push(
      (((bytes[i] as number) << 24) |
        ((bytes[i + 1] as number) << 16) |
        ((bytes[i + 2] as number) << 8) |
        (bytes[i + 3] as number)) >>>
        0,
    );
  }
  return makeCidr({ family: bytes.length === 4 ? 4 : 6, words }, wirePrefixLength(wire.length));
}

/** The prefix length ztunnel reads from a wire length: its low byte. A non-integer stays unreadable. */
function wirePrefixLength(length: number): number {
  return Number.isInteger(length) ? length & 0xff : length;
}

/** The 4 or 16 network-order bytes of an address. */
export function addressToBytes(address: IpAddress): Uint8Array {
  const out = new Uint8Array(address.words.length * 4);
  address.words.forEach((w, i) => {
    out[i * 4] = (w >>> 24) & 0xff;
    out[i * 4 + 1] = (w >>> 16) & 0xff;
    out[i * 4 + 2] = (w >>> 8) & 0xff;
    out[i * 4 + 3] = w & 0xff;
  });
  return out;
}

/** Formats a CIDR for explanations (`10.0.0.0/8`, `2001:db8::/32`). */
export function formatCidr(cidr: IpCidr): string {
  if (cidr.family === 4) {
    const w = cidr.words[0] as number;
    return `${w >>> 24}.${(w >>> 16) & 0xff}.${(w >>> 8) & 0xff}.${w & 0xff}/${cidr.prefix}`;
  }
  const groups: string[] = [];
  for (const w of cidr.words) groups.push((w >>> 16).toString(16), (w & 0xffff).toString(16));
  return `${groups.join(":")}/${cidr.prefix}`;
}
