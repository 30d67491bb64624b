import { isIPv4 } from "node:net";
import { ZtunnelError } from "./errors.js";

/** RFC 1928 reply codes. */
export const SOCKS5_REPLY = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** Authentication methods: only "no authentication" is served. */
export const SOCKS5_METHOD = { noAuth: 0x00, noAcceptable: 0xff } as const;

/** CONNECT, BIND, UDP ASSOCIATE. */
export const SOCKS5_COMMAND = { connect: 0x01, bind: 0x02, udpAssociate: 0x03 } as const;

export type Socks5AddressType = "ipv4" | "domain" | "ipv6";

/** A parsed client greeting (version 5, offered methods). */
export interface Socks5Greeting {
  methods: number[];
  /** Bytes the greeting took from the buffer. */
  length: number;
}

/** A parsed client request. */
export interface Socks5Request {
  command: number;
  addressType: Socks5AddressType;
  /** Dotted quad, IPv6 text or the domain name. */
  host: string;
  port: number;
  /** Bytes the request took from the buffer. */
  length: number;
}

/** A parsed server reply (for clients). */
export interface Socks5Reply {
  reply: number;
  host: string;
  port: number;
  length: number;
}

const VERSION = 0x05;

function protocolError(message: string): ZtunnelError {
  return new ZtunnelError("ERR_SOCKS5_PROTOCOL", `SOCKS5: ${message}`);
}

/** Reads the greeting; undefined while more bytes are needed. Throws on a non-SOCKS5 greeting. */
export function parseGreeting(buf: Uint8Array): Socks5Greeting | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== VERSION) throw protocolError(`version ${buf[0]} is not 5`);
  if (buf.length < 2) return undefined;
  const count = buf[1] ?? 0;
  if (count === 0) throw protocolError("the greeting offers no authentication method");
  if (buf.length < 2 + count) return undefined;
  return { methods: Array.from(buf.subarray(2, 2 + count)), length: 2 + count };
}

function readAddress(
  buf: Uint8Array,
  offset: number,
): { addressType: Socks5AddressType; host: string; end: number } | undefined {
  const atyp = buf[offset];
  if (atyp === undefined) return undefined;
  if (atyp === 0x01) {
    if (buf.length < offset + 5) return undefined;
    return {
      addressType: "ipv4",
      host: Array.from(buf.subarray(offset + 1, offset + 5)).join("."),
      end: offset + 5,
    };
  }
  if (atyp === 0x03) {
    const len = buf[offset + 1];
    if (len === undefined) return undefined;
    if (len === 0) throw protocolError("empty domain name");
    if (buf.length < offset + 2 + len) return undefined;
    const host = Buffer.from(buf.subarray(offset + 2, offset + 2 + len)).toString("latin1");
    return { addressType: "domain", host, end: offset + 2 + len };
  }
  if (atyp === 0x04) {
    if (buf.length < offset + 17) return undefined;
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) {
      groups.push((((buf[offset + 1 + i] ?? 0) << 8) | (buf[offset + 2 + i] ?? 0)).toString(16));
    }
    return { addressType: "ipv6", host: groups.join(":"), end: offset + 17 };
  }
  throw new ZtunnelError("ERR_SOCKS5_UNSUPPORTED", `SOCKS5: address type ${atyp} is not supported`, {
    reply: SOCKS5_REPLY.addressTypeNotSupported,
  });
}

function readPort(buf: Uint8Array, offset: number): number | undefined {
  if (buf.length < offset + 2) return undefined;
  return ((buf[offset] ?? 0) << 8) | (buf[offset + 1] ?? 0);
}

/** Reads a request (`VER CMD RSV ATYP ADDR PORT`); undefined while more bytes are needed. */
export function parseRequest(buf: Uint8Array): Socks5Request | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== VERSION) throw protocolError(`version ${buf[0]} is not 5`);
  if (buf.length < 4) return undefined;
  if (buf[2] !== 0x00) throw protocolError(`reserved byte is ${buf[2]}, not 0`);
  const address = readAddress(buf, 3);
  if (address === undefined) return undefined;
  const port = readPort(buf, address.end);
  if (port === undefined) return undefined;
  return {
    command: buf[1] ?? 0,
    addressType: address.addressType,
    host: address.host,
    port,
    length: address.end + 2,
  };
}

/** Reads a server reply; undefined while more bytes are needed. */
export function parseReply(buf: Uint8Array): Socks5Reply | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== VERSION) throw protocolError(`version ${buf[0]} is not 5`);
  if (buf.length < 4) return undefined;
  const address = readAddress(buf, 3);
  if (address === undefined) return undefined;
  const port = readPort(buf, address.end);
  if (port === undefined) return undefined;
  return { reply: buf[1] ?? 0, host: address.host, port, length: address.end + 2 };
}

function encodeAddress(host: string, port: number): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ZtunnelError("ERR_SOCKS5_PROTOCOL", `SOCKS5: port ${port} is out of range`);
  }
  const portBytes = Buffer.from([port >> 8, port & 0xff]);
  if (isIPv4(host)) return Buffer.concat([Buffer.from([0x01, ...host.split(".").map(Number)]), portBytes]);
  const name = Buffer.from(host, "latin1");
  if (name.length === 0 || name.length > 255) {
    throw new ZtunnelError("ERR_SOCKS5_PROTOCOL", `SOCKS5: domain name of ${name.length} bytes (1-255)`);
  }
  return Buffer.concat([Buffer.from([0x03, name.length]), name, portBytes]);
}

/** The client greeting offering `methods` (default: no authentication). */
export function encodeGreeting(methods: readonly number[] = [SOCKS5_METHOD.noAuth]): Buffer {
  return Buffer.from([VERSION, methods.length, ...methods]);
}

/** The server's method choice. */
export function encodeMethodSelection(method: number): Buffer {
  return Buffer.from([VERSION, method]);
}

/** A client request for `host:port` (IPv4 literal or domain name). */
export function encodeRequest(host: string, port: number, command: number = SOCKS5_COMMAND.connect): Buffer {
  return Buffer.concat([Buffer.from([VERSION, command, 0x00]), encodeAddress(host, port)]);
}

/** A server reply; the bound address defaults to `0.0.0.0:0`. */
export function encodeReply(reply: number, bindHost = "0.0.0.0", bindPort = 0): Buffer {
  return Buffer.concat([Buffer.from([VERSION, reply, 0x00]), encodeAddress(bindHost, bindPort)]);
}
