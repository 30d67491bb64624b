/**
 * What a SOCKS5 client asked for, decided without side effects: the greeting's method choice, and
 * whether a request names a destination the mesh may dial. Neither function throws; every malformed
 * input gets a reply code (or a plain close where SOCKS5 has no reply for it).
 */
import { canonicalFromBytes, canonicalIp } from "./ip-address.js";
import { SOCKS5_COMMAND, SOCKS5_METHOD, SOCKS5_REPLY } from "./socks5.js";

const VERSION = 0x05;
/** Longest possible request: header (4) + domain length byte + 255 name bytes + port (2). */
export const SOCKS5_MAX_REQUEST_BYTES = 4 + 1 + 255 + 2;
/** Longest possible greeting: version, count, 255 methods. */
export const SOCKS5_MAX_GREETING_BYTES = 2 + 255;

/** The server's answer to a client greeting. */
export type Socks5GreetingDecision =
  | { kind: "incomplete" }
  /** "No authentication" was offered: select it; the greeting took `length` bytes. */
  | { kind: "accept"; length: number }
  /** Answer `response` (if any) and close. */
  | { kind: "refuse"; response?: Uint8Array; reason: string };

/** The server's answer to a client request. */
export type Socks5RequestDecision =
  | { kind: "incomplete" }
  /** Reply `reply` and close. */
  | { kind: "refuse"; reply: number; reason: string }
  /**
   * Dial `ip:port`, a canonical address: given as one (IPv4/IPv6 bytes or canonical text in the
   * name field), or the VIP of the mesh Service named `hostname`. The request took `length` bytes.
   */
  | { kind: "connect"; ip: string; family: 4 | 6; port: number; length: number; hostname?: string };

/** The VIP (canonical text) of the mesh Service with this hostname; undefined when there is none. */
export type ServiceHostnameResolver = (hostname: string) => string | undefined;

/** Decides on a greeting (`VER NMETHODS METHODS`). */
export function decideGreeting(buf: Uint8Array): Socks5GreetingDecision {
  if (buf.length < 1) return { kind: "incomplete" };
  if (buf[0] !== VERSION) return { kind: "refuse", reason: `version ${buf[0]} is not 5` };
  if (buf.length < 2) return { kind: "incomplete" };
  const count = buf[1] ?? 0;
  const noAcceptable = Uint8Array.from([VERSION, SOCKS5_METHOD.noAcceptable]);
  if (count === 0) return { kind: "refuse", response: noAcceptable, reason: "no method offered" };
  if (buf.length < 2 + count) return { kind: "incomplete" };
  if (!buf.subarray(2, 2 + count).includes(SOCKS5_METHOD.noAuth)) {
    return { kind: "refuse", response: noAcceptable, reason: "no-authentication not offered" };
  }
  return { kind: "accept", length: 2 + count };
}

/** A name as the store spells Service hostnames: lower case, without one trailing dot. */
function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

const PRINTABLE_NAME = /^[\x21-\x7e]+$/;

/** Decides on a request (`VER CMD RSV ATYP DST.ADDR DST.PORT`). */
export function decideRequest(
  buf: Uint8Array,
  resolveHostname: ServiceHostnameResolver,
): Socks5RequestDecision {
  if (buf.length < 1) return { kind: "incomplete" };
  if (buf[0] !== VERSION) {
    return { kind: "refuse", reply: SOCKS5_REPLY.generalFailure, reason: `version ${buf[0]} is not 5` };
  }
  if (buf.length < 4) return { kind: "incomplete" };
  if (buf[2] !== 0x00) {
    return { kind: "refuse", reply: SOCKS5_REPLY.generalFailure, reason: `reserved byte is ${buf[2]}` };
  }
  const atyp = buf[3];
  let addressEnd: number;
  let ip: { family: 4 | 6; text: string } | undefined;
  let hostname: string | undefined;
  if (atyp === 0x01 || atyp === 0x04) {
    addressEnd = atyp === 0x01 ? 8 : 20;
    if (buf.length < addressEnd + 2) return { kind: "incomplete" };
    ip = canonicalFromBytes(buf.subarray(4, addressEnd));
  } else if (atyp === 0x03) {
    if (buf.length < 5) return { kind: "incomplete" };
    const nameLength = buf[4] ?? 0;
    if (nameLength === 0) {
      return { kind: "refuse", reply: SOCKS5_REPLY.generalFailure, reason: "empty domain name" };
    }
    addressEnd = 5 + nameLength;
    if (buf.length < addressEnd + 2) return { kind: "incomplete" };
    const name = Buffer.from(buf.subarray(5, addressEnd)).toString("latin1");
    if (!PRINTABLE_NAME.test(name)) {
      return { kind: "refuse", reply: SOCKS5_REPLY.hostUnreachable, reason: "domain name is not printable" };
    }
    // Canonical address text in the name field (`curl --socks5-hostname` sends IPs so) is an address;
    // any other name must be a mesh Service: it never reaches DNS or the C resolver.
    ip = canonicalIp(name);
    if (ip === undefined) {
      hostname = normalizeName(name);
      const vip = resolveHostname(hostname);
      // Only a string from the resolver is an answer, whatever a caller's lookup table returns.
      ip = typeof vip === "string" ? canonicalIp(vip) : undefined;
      if (ip === undefined) {
        return {
          kind: "refuse",
          reply: SOCKS5_REPLY.hostUnreachable,
          reason: `${JSON.stringify(name)} is not a mesh Service hostname or a canonical IP address`,
        };
      }
    }
  } else {
    return {
      kind: "refuse",
      reply: SOCKS5_REPLY.addressTypeNotSupported,
      reason: `address type ${atyp} is not supported`,
    };
  }
  if (ip === undefined) {
    return { kind: "refuse", reply: SOCKS5_REPLY.addressTypeNotSupported, reason: "bad address" };
  }
  const port = ((buf[addressEnd] ?? 0) << 8) | (buf[addressEnd + 1] ?? 0);
  if (buf[1] !== SOCKS5_COMMAND.connect) {
    return {
      kind: "refuse",
      reply: SOCKS5_REPLY.commandNotSupported,
      reason: `command ${buf[1]} is not CONNECT`,
    };
  }
  if (port === 0) return { kind: "refuse", reply: SOCKS5_REPLY.connectionRefused, reason: "port 0" };
  return {
    kind: "connect",
    ip: ip.text,
    family: ip.family,
    port,
    length: addressEnd + 2,
    ...(hostname === undefined ? {} : { hostname }),
  };
}
