import { isIPv4, isIPv6 } from "node:net";
import { HboneError } from "./errors.js";

/** A parsed CONNECT target: an IP socket address, or a service hostname and port (double HBONE). */
export interface TunnelAuthority {
  /** `"ip"` for IPv4/IPv6 socket addresses, `"hostname"` for `host:port`. */
  readonly kind: "ip" | "hostname";
  /** IP address without brackets, or the hostname in lower case. */
  readonly host: string;
  readonly port: number;
  /** IP version for `kind: "ip"`, else 0. */
  readonly family: 4 | 6 | 0;
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;
const PORT = /^[0-9]{1,5}$/;

function invalid(text: string, why: string): HboneError {
  return new HboneError("ERR_HBONE_INVALID_AUTHORITY", `invalid authority ${JSON.stringify(text)}: ${why}`);
}

function parsePort(text: string, portText: string): number {
  if (!PORT.test(portText)) throw invalid(text, "port must be a decimal number");
  const port = Number(portText);
  if (port < 1 || port > 65535) throw invalid(text, "port must be in 1..65535");
  return port;
}

function isHostname(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  const labels = (host.endsWith(".") ? host.slice(0, -1) : host).split(".");
  // A name made only of digits and dots would be a malformed IPv4 address, not a hostname.
  if (labels.every((l) => /^[0-9]+$/.test(l))) return false;
  return labels.every((l) => LABEL.test(l));
}

/**
 * Parses a CONNECT `:authority`: `ip:port`, `[ipv6]:port` or `hostname:port`, in that order
 * (as ztunnel does). Throws `ERR_HBONE_INVALID_AUTHORITY` for anything else.
 */
export function parseAuthority(text: string): TunnelAuthority {
  if (typeof text !== "string" || text.length === 0) throw invalid(String(text), "empty");
  if (text.length > 261) throw invalid(text.slice(0, 64), "too long");
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") throw invalid(text, "expected [ipv6]:port");
    const host = text.slice(1, close);
    if (!isIPv6(host) || host.includes("%")) throw invalid(text, "not an IPv6 address");
    return { kind: "ip", host, port: parsePort(text, text.slice(close + 2)), family: 6 };
  }
  const colon = text.lastIndexOf(":");
  if (colon <= 0) throw invalid(text, "expected host:port");
  const host = text.slice(0, colon);
  const port = parsePort(text, text.slice(colon + 1));
  if (isIPv4(host)) return { kind: "ip", host, port, family: 4 };
  if (host.includes(":")) throw invalid(text, "IPv6 addresses must be bracketed");
  const lower = host.toLowerCase();
  if (!isHostname(lower)) throw invalid(text, "host is neither an IP address nor a DNS name");
  return { kind: "hostname", host: lower, port, family: 0 };
}

/**
 * Formats `host` and `port` as a CONNECT authority, bracketing IPv6 addresses. Throws
 * `ERR_HBONE_INVALID_ARGUMENT` when `host` is not a string or `port` not an integer.
 */
export function formatAuthority(host: string, port: number): string {
  if (typeof host !== "string" || typeof port !== "number" || !Number.isInteger(port)) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      "formatAuthority: host must be a string and port an integer",
    );
  }
  const text = isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  parseAuthority(text);
  return text;
}
