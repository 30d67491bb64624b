/**
 * Socket addresses as the kernel lays them out (sockaddr_in, sockaddr_in6, sockaddr_un), built from
 * and read back into canonical strings. Pure byte work, so it is tested on any platform.
 */
import { isIPv4, isIPv6 } from "node:net";
import { NetnsError } from "./errors.js";
import { AF_INET, AF_INET6, AF_UNIX } from "./libc.js";

/** An IP socket address. `address` is canonical: dotted quad, or RFC 5952 IPv6 text. */
export interface SocketAddress {
  address: string;
  port: number;
  family: 4 | 6;
}

const SOCKADDR_IN_BYTES = 16;
const SOCKADDR_IN6_BYTES = 28;
/** sun_path is 108 bytes, one of which is the terminating NUL. */
export const UNIX_PATH_MAX_BYTES = 107;

/** The address family (4 or 6) of a canonical address; anything else is refused. */
export function ipFamily(address: string, field = "host"): 4 | 6 {
  if (isIPv4(address)) return 4;
  if (isIPv6(address) && !address.includes("%")) return 6;
  throw new NetnsError(
    "ERR_NETNS_INVALID_ARGUMENT",
    `${field} must be an IPv4 or IPv6 address, got ${address}`,
    {
      field,
      value: address,
    },
  );
}

function checkPort(port: number, field = "port"): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new NetnsError(
      "ERR_NETNS_INVALID_ARGUMENT",
      `${field} must be an integer in 0..65535, got ${port}`,
      {
        field,
        value: port,
      },
    );
  }
}

/** The 4 or 16 bytes of an address (IPv6 with `::` and an embedded dotted quad accepted). */
export function ipBytes(address: string): Buffer {
  if (ipFamily(address) === 4) return Buffer.from(address.split(".").map(Number));
  const out = Buffer.alloc(16);
  let text = address;
  // A trailing dotted quad stands for the last two groups.
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  let tailBytes: Buffer | undefined;
  if (tail.includes(".")) {
    tailBytes = Buffer.from(tail.split(".").map(Number));
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head, rest] = text.split("::") as [string, string | undefined];
  const groups = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
  const front = groups(head);
  const back = rest === undefined ? [] : groups(rest);
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  all.forEach((group, i) => {
    out.writeUInt16BE(group, i * 2);
  });
  if (tailBytes) tailBytes.copy(out, 12);
  return out;
}

/** Canonical text of 4 or 16 address bytes (RFC 5952 for IPv6: lowercase, longest zero run as `::`). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) throw new RangeError(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] as number) << 8) | (bytes[i + 1] as number));
  // IPv4-mapped addresses keep their dotted tail, as Node prints them.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${Array.from(bytes.subarray(12)).join(".")}`;
  }
  let bestStart = -1;
  let bestLength = 1; // a single zero group is not shortened
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i += 1;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j += 1;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/** A sockaddr_in or sockaddr_in6 for `host:port`. */
export function encodeSockaddr(host: string, port: number, field = "host"): Buffer {
  const family = ipFamily(host, field);
  checkPort(port, field === "host" ? "port" : `${field} port`);
  const bytes = ipBytes(host);
  if (family === 4) {
    const buf = Buffer.alloc(SOCKADDR_IN_BYTES);
    buf.writeUInt16LE(AF_INET, 0);
    buf.writeUInt16BE(port, 2);
    bytes.copy(buf, 4);
    return buf;
  }
  const buf = Buffer.alloc(SOCKADDR_IN6_BYTES);
  buf.writeUInt16LE(AF_INET6, 0);
  buf.writeUInt16BE(port, 2);
  bytes.copy(buf, 8);
  return buf;
}

/** Reads a sockaddr_in or sockaddr_in6 back. */
export function decodeSockaddr(buf: Buffer): SocketAddress {
  const family = buf.readUInt16LE(0);
  const port = buf.readUInt16BE(2);
  if (family === AF_INET && buf.length >= SOCKADDR_IN_BYTES) {
    return { address: formatIp(buf.subarray(4, 8)), port, family: 4 };
  }
  if (family === AF_INET6 && buf.length >= SOCKADDR_IN6_BYTES) {
    return { address: formatIp(buf.subarray(8, 24)), port, family: 6 };
  }
  throw new NetnsError("ERR_NETNS_INVALID_ARGUMENT", `not an IP socket address (family ${family})`, {
    family,
  });
}

/** A sockaddr_un for a filesystem path, and the length to pass with it. */
export function encodeUnixSockaddr(path: string): { addr: Buffer; length: number } {
  const bytes = Buffer.from(path, "utf8");
  if (bytes.length === 0 || bytes.length > UNIX_PATH_MAX_BYTES || bytes.includes(0)) {
    throw new NetnsError(
      "ERR_NETNS_INVALID_ARGUMENT",
      `a Unix socket path must be 1..${UNIX_PATH_MAX_BYTES} bytes without NUL, got ${bytes.length} bytes`,
      { field: "path", value: path },
    );
  }
  const addr = Buffer.alloc(2 + UNIX_PATH_MAX_BYTES + 1);
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  return { addr, length: 2 + bytes.length + 1 };
}
