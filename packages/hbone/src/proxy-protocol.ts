import { isIPv4, isIPv6, SocketAddress } from "node:net";
import type { Readable } from "node:stream";
import { HboneError } from "./errors.js";

/** The 12-byte PROXY protocol v2 signature. */
const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const HEADER_BYTES = 16;

/** TLV types this package knows by name. */
export const PROXY_TLV = Object.freeze({
  /** Source workload SPIFFE identity, written by ztunnel toward sandwiched waypoints. */
  sourceIdentity: 0xd0,
  /** Target service FQDN (reserved by Istio, not written by ztunnel today). */
  targetService: 0xd1,
});

/** One type-length-value entry after the addresses. */
export interface ProxyTlv {
  type: number;
  value: Uint8Array;
}

/** An IP and port. */
export interface ProxyEndpoint {
  address: string;
  port: number;
}

/** A decoded or to-be-encoded PROXY v2 header. */
export interface ProxyHeader {
  /** `PROXY` carries addresses; `LOCAL` (health checks) carries none. */
  command: "PROXY" | "LOCAL";
  /**
   * Client address; absent for LOCAL or unspecified families. A PROXY header to encode without
   * `source` and `destination` is sent with the unspecified family (its TLVs still carried).
   */
  source?: ProxyEndpoint;
  /** Original destination (the HBONE target); given with `source`, or both left out. */
  destination?: ProxyEndpoint;
  /** Source SPIFFE identity (TLV 0xD0). */
  sourceIdentity?: string;
  /** Every TLV, including 0xD0, in wire order (decode) or extra ones to append (encode). */
  tlvs?: readonly ProxyTlv[];
}

function bad(why: string): HboneError {
  return new HboneError("ERR_HBONE_PROXY_PROTOCOL", `PROXY v2: ${why}`);
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw bad(`${what} port ${port} out of range`);
}

function ipBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split(".").map(Number));
  if (!isIPv6(address)) throw bad(`${JSON.stringify(address)} is not an IP address`);
  const groups = (part: string): number[] =>
    part === ""
      ? []
      : part.split(":").flatMap((g) => {
          if (!g.includes(".")) return [Number.parseInt(g, 16)];
          const [a = 0, b = 0, c = 0, d = 0] = g.split(".").map(Number);
          return [(a << 8) | b, (c << 8) | d];
        });
  const gap = address.indexOf("::");
  const head = groups(gap >= 0 ? address.slice(0, gap) : address);
  const tail = gap >= 0 ? groups(address.slice(gap + 2)) : [];
  const all =
    gap >= 0 ? [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail] : head;
  const out = Buffer.alloc(16);
  all.forEach((g, i) => {
    out.writeUInt16BE(g, i * 2);
  });
  return out;
}

function ipText(bytes: Buffer): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // Let Node canonicalise (zero compression).
  return new SocketAddress({ address: groups.join(":"), family: "ipv6" }).address;
}

/** Encodes a PROXY protocol v2 header (STREAM transport). */
export function encodeProxyHeader(header: ProxyHeader): Buffer {
  if (typeof header !== "object" || header === null) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", "encodeProxyHeader: header must be an object");
  }
  const tlvs: ProxyTlv[] = [];
  if (header.sourceIdentity !== undefined) {
    tlvs.push({ type: PROXY_TLV.sourceIdentity, value: Buffer.from(header.sourceIdentity, "utf8") });
  }
  tlvs.push(...(header.tlvs ?? []));
  let family = 0x00;
  let addresses = Buffer.alloc(0);
  if (header.command === "PROXY" && header.source === undefined && header.destination === undefined) {
    // Neither address (the two ends are of different families, say): the unspecified family over
    // STREAM, which a receiver reads as a proxied connection with addresses it cannot be told.
    family = 0x01;
  } else if (header.command === "PROXY") {
    const { source, destination } = header;
    if (source === undefined || destination === undefined)
      throw bad("PROXY command needs both source and destination, or neither");
    checkPort(source.port, "source");
    checkPort(destination.port, "destination");
    const src = ipBytes(source.address);
    const dst = ipBytes(destination.address);
    if (src.length !== dst.length) throw bad("source and destination must be the same IP family");
    family = src.length === 4 ? 0x11 : 0x21;
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(source.port, 0);
    ports.writeUInt16BE(destination.port, 2);
    addresses = Buffer.concat([src, dst, ports]);
  } else if (header.command !== "LOCAL") {
    throw bad(`unknown command ${String(header.command)}`);
  }
  const tlvBytes = tlvs.map((tlv) => {
    if (!Number.isInteger(tlv.type) || tlv.type < 0 || tlv.type > 0xff)
      throw bad(`TLV type ${tlv.type} invalid`);
    if (tlv.value.length > 0xffff) throw bad(`TLV 0x${tlv.type.toString(16)} longer than 65535 bytes`);
    const head = Buffer.alloc(3);
    head.writeUInt8(tlv.type, 0);
    head.writeUInt16BE(tlv.value.length, 1);
    return Buffer.concat([head, tlv.value]);
  });
  const body = Buffer.concat([addresses, ...tlvBytes]);
  if (body.length > 0xffff) throw bad("header longer than 65535 bytes");
  const fixed = Buffer.alloc(HEADER_BYTES);
  SIGNATURE.copy(fixed, 0);
  fixed.writeUInt8(header.command === "PROXY" ? 0x21 : 0x20, 12);
  fixed.writeUInt8(family, 13);
  fixed.writeUInt16BE(body.length, 14);
  return Buffer.concat([fixed, body]);
}

/** Result of {@link decodeProxyHeader}: the header and how many bytes it took. */
export interface DecodedProxyHeader {
  header: ProxyHeader;
  length: number;
}

/**
 * Decodes a PROXY v2 header at the start of `data`. Returns `undefined` when more bytes are needed;
 * throws `ERR_HBONE_PROXY_PROTOCOL` when the bytes are not a valid v2 header.
 */
export function decodeProxyHeader(data: Uint8Array): DecodedProxyHeader | undefined {
  if (!(data instanceof Uint8Array)) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      "decodeProxyHeader: data must be a Buffer or Uint8Array",
    );
  }
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const sigLen = Math.min(buf.length, SIGNATURE.length);
  if (!buf.subarray(0, sigLen).equals(SIGNATURE.subarray(0, sigLen))) throw bad("missing v2 signature");
  if (buf.length < HEADER_BYTES) return undefined;
  const verCmd = buf.readUInt8(12);
  if (verCmd >> 4 !== 2) throw bad(`version ${verCmd >> 4} is not 2`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) throw bad(`unknown command ${cmd}`);
  const famProto = buf.readUInt8(13);
  const bodyLength = buf.readUInt16BE(14);
  if (buf.length < HEADER_BYTES + bodyLength) return undefined;
  const body = buf.subarray(HEADER_BYTES, HEADER_BYTES + bodyLength);
  const header: ProxyHeader = { command: cmd === 1 ? "PROXY" : "LOCAL" };
  let offset = 0;
  const family = famProto >> 4;
  const transport = famProto & 0x0f;
  if (family === 1 || family === 2) {
    const size = family === 1 ? 4 : 16;
    if (transport !== 1 && transport !== 2) throw bad(`unknown transport ${transport}`);
    if (body.length < size * 2 + 4) throw bad("address block truncated");
    if (cmd === 1) {
      header.source = { address: ipText(body.subarray(0, size)), port: body.readUInt16BE(size * 2) };
      header.destination = {
        address: ipText(body.subarray(size, size * 2)),
        port: body.readUInt16BE(size * 2 + 2),
      };
    }
    offset = size * 2 + 4;
  } else if (family === 3) {
    if (body.length < 216) throw bad("unix address block truncated");
    offset = 216;
  } else if (family !== 0) throw bad(`unknown address family ${family}`);
  const tlvs: ProxyTlv[] = [];
  while (offset < body.length) {
    if (offset + 3 > body.length) throw bad("TLV header truncated");
    const type = body.readUInt8(offset);
    const len = body.readUInt16BE(offset + 1);
    if (offset + 3 + len > body.length) throw bad(`TLV 0x${type.toString(16)} truncated`);
    const value = Uint8Array.prototype.slice.call(body, offset + 3, offset + 3 + len);
    tlvs.push({ type, value });
    if (type === PROXY_TLV.sourceIdentity) header.sourceIdentity = Buffer.from(value).toString("utf8");
    offset += 3 + len;
  }
  if (tlvs.length > 0) header.tlvs = tlvs;
  return { header, length: HEADER_BYTES + bodyLength };
}

/**
 * Reads a PROXY v2 header from the start of `stream`, leaving every byte after it unread (unshifted).
 * Rejects with `ERR_HBONE_PROXY_PROTOCOL` on bad input or if the stream ends first.
 */
export function readProxyHeader(stream: Readable): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const cleanup = () => {
      stream.off("readable", onReadable);
      stream.off("end", onEnd);
      stream.off("error", onError);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => {
      cleanup();
      reject(bad("stream ended before a complete header"));
    };
    const onReadable = () => {
      for (;;) {
        const chunk: Buffer | null = stream.read();
        if (chunk === null) return;
        buffered = Buffer.concat([buffered, chunk]);
        let decoded: DecodedProxyHeader | undefined;
        try {
          decoded = decodeProxyHeader(buffered);
        } catch (err) {
          cleanup();
          reject(err);
          return;
        }
        if (decoded !== undefined) {
          cleanup();
          const rest = buffered.subarray(decoded.length);
          if (rest.length > 0) stream.unshift(rest);
          resolve(decoded.header);
          return;
        }
      }
    };
    stream.on("readable", onReadable);
    stream.once("end", onEnd);
    stream.once("error", onError);
  });
}
