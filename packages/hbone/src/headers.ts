import { randomBytes } from "node:crypto";
import { HboneError } from "./errors.js";

/** Header names HBONE peers exchange besides the HTTP/2 pseudo-headers. */
export const HBONE_HEADER_NAMES = Object.freeze({
  /** W3C baggage describing the source (request) or destination (200 response) workload. */
  baggage: "baggage",
  /** RFC 7239 `for="<client ip:port>"`, optionally `;host=<service hostname>`. */
  forwarded: "forwarded",
  /** W3C trace context, random per outbound connection. */
  traceparent: "traceparent",
  /** Origin network; only on the inner CONNECT of double HBONE. */
  forwardedNetwork: "x-forwarded-network",
});

function bad(header: string, why: string): HboneError {
  return new HboneError("ERR_HBONE_INVALID_HEADER", `invalid ${header} header: ${why}`);
}

function invalidArgument(what: string): HboneError {
  return new HboneError("ERR_HBONE_INVALID_ARGUMENT", what);
}

/** A header value handed to a parser must be a string. */
function headerText(value: unknown, fn: string): string {
  if (typeof value !== "string") throw invalidArgument(`${fn}: the header value must be a string`);
  return value;
}

function isRecord(value: unknown): value is object {
  return typeof value === "object" && value !== null;
}

// ---- Forwarded (RFC 7239) ----

/** One element of a `forwarded` header. */
export interface ForwardedElement {
  for?: string;
  by?: string;
  host?: string;
  proto?: string;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FORWARDED_KEYS = ["for", "by", "host", "proto"] as const;

function hasControlChar(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function quoteIfNeeded(value: string): string {
  if (TOKEN.test(value)) return value;
  return `"${value.replace(/[\\"]/g, (c: string) => `\\${c}`)}"`;
}

/**
 * Formats a `forwarded` header. `for` is always quoted, as ztunnel writes it (`for="10.0.0.1:3456"`).
 */
export function formatForwarded(elements: ForwardedElement | readonly ForwardedElement[]): string {
  const list = Array.isArray(elements) ? elements : [elements as ForwardedElement];
  if (list.length === 0) throw bad("forwarded", "no elements");
  return list
    .map((el) => {
      if (typeof el !== "object" || el === null) {
        throw invalidArgument("formatForwarded: each element must be an object");
      }
      const pairs: string[] = [];
      for (const key of FORWARDED_KEYS) {
        const value = el[key];
        if (value === undefined) continue;
        if (typeof value !== "string") throw invalidArgument(`formatForwarded: ${key} must be a string`);
        if (hasControlChar(value)) throw bad("forwarded", `control character in ${key}`);
        pairs.push(
          `${key}=${key === "for" ? `"${value.replace(/[\\"]/g, (c: string) => `\\${c}`)}"` : quoteIfNeeded(value)}`,
        );
      }
      if (pairs.length === 0) throw bad("forwarded", "empty element");
      return pairs.join(";");
    })
    .join(", ");
}

/** Parses a `forwarded` header into its elements; unknown parameters are skipped. */
export function parseForwarded(value: string): ForwardedElement[] {
  headerText(value, "parseForwarded");
  if (value.length > 8192) throw bad("forwarded", "longer than 8192 characters");
  const out: ForwardedElement[] = [];
  let i = 0;
  let current: ForwardedElement = {};
  let pairsInElement = 0;
  const skipSpace = () => {
    while (value[i] === " " || value[i] === "\t") i++;
  };
  for (;;) {
    skipSpace();
    const keyStart = i;
    while (i < value.length && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(value[i] as string)) i++;
    const key = value.slice(keyStart, i).toLowerCase();
    if (key.length === 0 || value[i] !== "=")
      throw bad("forwarded", `expected name=value at offset ${keyStart}`);
    i++;
    let v: string;
    if (value[i] === '"') {
      i++;
      v = "";
      for (;;) {
        const c = value[i];
        if (c === undefined) throw bad("forwarded", "unterminated quoted string");
        i++;
        if (c === '"') break;
        if (c === "\\") {
          const next = value[i];
          if (next === undefined) throw bad("forwarded", "unterminated quoted string");
          v += next;
          i++;
        } else v += c;
      }
    } else {
      const start = i;
      while (i < value.length && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(value[i] as string)) i++;
      v = value.slice(start, i);
      if (v.length === 0) throw bad("forwarded", `empty value for ${key}`);
    }
    if ((FORWARDED_KEYS as readonly string[]).includes(key)) current[key as keyof ForwardedElement] = v;
    pairsInElement++;
    skipSpace();
    const sep = value[i];
    if (sep === undefined) break;
    i++;
    if (sep === ",") {
      out.push(current);
      current = {};
      pairsInElement = 0;
    } else if (sep !== ";") throw bad("forwarded", `unexpected ${JSON.stringify(sep)} at offset ${i - 1}`);
  }
  if (pairsInElement > 0) out.push(current);
  return out;
}

// ---- Baggage (W3C) ----

/** W3C limit on a baggage header. */
const BAGGAGE_MAX_BYTES = 8192;
const BAGGAGE_MAX_MEMBERS = 180;

function encodeBaggageValue(value: string): string {
  // Percent-encode everything outside baggage-octet, plus '%' itself.
  return Array.from(Buffer.from(value, "utf8"))
    .map((b) =>
      b >= 0x21 && b <= 0x7e && b !== 0x22 && b !== 0x2c && b !== 0x3b && b !== 0x5c && b !== 0x25
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, "0")}`,
    )
    .join("");
}

/** Formats a W3C `baggage` header from key/value pairs (values are percent-encoded as needed). */
export function formatBaggage(
  entries: Readonly<Record<string, string>> | Iterable<readonly [string, string]>,
): string {
  if (!isRecord(entries)) {
    throw invalidArgument("formatBaggage: entries must be an object or an iterable of [key, value] pairs");
  }
  const pairs: Iterable<readonly [string, string]> =
    Symbol.iterator in entries
      ? (entries as Iterable<readonly [string, string]>)
      : Object.entries(entries as Record<string, string>);
  const parts: string[] = [];
  for (const pair of pairs) {
    if (!Array.isArray(pair)) throw invalidArgument("formatBaggage: each entry must be a [key, value] pair");
    const [key, value] = pair as [unknown, unknown];
    if (typeof key !== "string" || typeof value !== "string") {
      throw invalidArgument("formatBaggage: keys and values must be strings");
    }
    if (!TOKEN.test(key)) throw bad("baggage", `key ${JSON.stringify(key)} is not a token`);
    parts.push(`${key}=${encodeBaggageValue(value)}`);
  }
  const text = parts.join(",");
  if (parts.length > BAGGAGE_MAX_MEMBERS) throw bad("baggage", `more than ${BAGGAGE_MAX_MEMBERS} members`);
  if (Buffer.byteLength(text) > BAGGAGE_MAX_BYTES)
    throw bad("baggage", `longer than ${BAGGAGE_MAX_BYTES} bytes`);
  return text;
}

/** Parses a W3C `baggage` header into a map; member properties (after `;`) are dropped. */
export function parseBaggage(value: string): Map<string, string> {
  headerText(value, "parseBaggage");
  if (Buffer.byteLength(value) > BAGGAGE_MAX_BYTES)
    throw bad("baggage", `longer than ${BAGGAGE_MAX_BYTES} bytes`);
  const out = new Map<string, string>();
  if (value.trim() === "") return out;
  const members = value.split(",");
  if (members.length > BAGGAGE_MAX_MEMBERS) throw bad("baggage", `more than ${BAGGAGE_MAX_MEMBERS} members`);
  for (const member of members) {
    const [kv = ""] = member.split(";");
    const eq = kv.indexOf("=");
    if (eq < 0) throw bad("baggage", `member ${JSON.stringify(member.trim())} has no '='`);
    const key = kv.slice(0, eq).trim();
    const raw = kv.slice(eq + 1).trim();
    if (!TOKEN.test(key)) throw bad("baggage", `key ${JSON.stringify(key)} is not a token`);
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      throw bad("baggage", `value of ${key} has invalid percent-encoding`);
    }
    out.set(key, decoded);
  }
  return out;
}

/** A workload description turned into the baggage keys ztunnel sends. */
export interface WorkloadBaggage {
  clusterId?: string;
  namespace?: string;
  /** Workload name, sent as `k8s.<workloadType>.name`. */
  workloadName?: string;
  /** `deployment` (default), `cronjob`, `pod` or `job`. */
  workloadType?: "deployment" | "cronjob" | "pod" | "job";
  /** Canonical service name. */
  service?: string;
  /** Canonical revision. */
  revision?: string;
  region?: string;
  zone?: string;
}

/** Builds the `baggage` value ztunnel attaches to a CONNECT (or to its 200 response). */
export function formatWorkloadBaggage(workload: WorkloadBaggage): string {
  if (!isRecord(workload)) throw invalidArgument("formatWorkloadBaggage: workload must be an object");
  const entries: [string, string][] = [];
  const add = (key: string, value: string | undefined) => {
    if (value !== undefined && value !== "") entries.push([key, value]);
  };
  add("k8s.cluster.name", workload.clusterId);
  add("k8s.namespace.name", workload.namespace);
  add(`k8s.${workload.workloadType ?? "deployment"}.name`, workload.workloadName);
  add("service.name", workload.service);
  add("service.version", workload.revision);
  add("cloud.region", workload.region);
  add("cloud.availability_zone", workload.zone);
  return formatBaggage(entries);
}

/** Reads the ztunnel baggage keys back into a {@link WorkloadBaggage}. */
export function parseWorkloadBaggage(value: string): WorkloadBaggage {
  const map = parseBaggage(headerText(value, "parseWorkloadBaggage"));
  const out: WorkloadBaggage = {};
  const set = (key: keyof Omit<WorkloadBaggage, "workloadType">, name: string) => {
    const v = map.get(name);
    if (v !== undefined) out[key] = v;
  };
  set("clusterId", "k8s.cluster.name");
  set("namespace", "k8s.namespace.name");
  for (const type of ["deployment", "cronjob", "pod", "job"] as const) {
    const v = map.get(`k8s.${type}.name`);
    if (v !== undefined) {
      out.workloadName = v;
      out.workloadType = type;
      break;
    }
  }
  set("service", "service.name");
  set("revision", "service.version");
  set("region", "cloud.region");
  set("zone", "cloud.availability_zone");
  return out;
}

// ---- traceparent (W3C trace context) ----

/** A parsed W3C `traceparent`. */
export interface TraceParent {
  /** Two lower-case hex digits; `00` today. */
  version: string;
  /** 32 lower-case hex digits, not all zero. */
  traceId: string;
  /** 16 lower-case hex digits, not all zero. */
  parentId: string;
  /** Trace flags; bit 0 = sampled. */
  flags: number;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const OWS_AROUND = /^[ \t]+|[ \t]+$/g;
const TRACEPARENT_FIELDS = {
  version: /^[0-9a-f]{2}$/,
  traceId: /^[0-9a-f]{32}$/,
  parentId: /^[0-9a-f]{16}$/,
} as const;

/** Parses a `traceparent` header (version 00 is exactly 55 characters). */
export function parseTraceparent(value: string): TraceParent {
  headerText(value, "parseTraceparent");
  // HTTP allows spaces and tabs around a field value (RFC 9110, 5.5), nothing else.
  const m = TRACEPARENT.exec(value.replace(OWS_AROUND, ""));
  if (!m) throw bad("traceparent", "expected 00-<32 hex>-<16 hex>-<2 hex>");
  const [, version = "", traceId = "", parentId = "", flags = "", rest] = m;
  if (version === "ff") throw bad("traceparent", "version ff is invalid");
  if (version === "00" && rest !== undefined) throw bad("traceparent", "version 00 must be 55 characters");
  if (/^0+$/.test(traceId)) throw bad("traceparent", "trace id is all zeros");
  if (/^0+$/.test(parentId)) throw bad("traceparent", "parent id is all zeros");
  return { version, traceId, parentId, flags: Number.parseInt(flags, 16) };
}

/** Formats a `traceparent` header; `flags` must be an integer from 0 to 255. */
export function formatTraceparent(tp: TraceParent): string {
  if (!isRecord(tp))
    throw invalidArgument("formatTraceparent: expected { version, traceId, parentId, flags }");
  const { flags } = tp;
  if (typeof flags !== "number" || !Number.isInteger(flags) || flags < 0 || flags > 0xff) {
    throw invalidArgument(`formatTraceparent: flags must be an integer from 0 to 255, got ${String(flags)}`);
  }
  // Each field on its own: a field holding a dash could otherwise carry the next one's text (a parentId
  // of "<16 hex>-00" with flags 1 wrote a header that reads back with flags 00).
  for (const field of ["version", "traceId", "parentId"] as const) {
    const v: unknown = tp[field];
    if (typeof v !== "string") throw invalidArgument(`formatTraceparent: ${field} must be a string`);
    if (!TRACEPARENT_FIELDS[field].test(v)) {
      throw bad(
        "traceparent",
        `${field} must be ${TRACEPARENT_FIELDS[field].source.slice(1, -1)}, got ${JSON.stringify(v)}`,
      );
    }
  }
  const text = `${tp.version}-${tp.traceId}-${tp.parentId}-${flags.toString(16).padStart(2, "0")}`;
  parseTraceparent(text);
  return text;
}

/** A fresh random trace context (flags 00, as ztunnel sends per outbound connection). */
export function createTraceparent(options: { sampled?: boolean } = {}): TraceParent {
  if (!isRecord(options) || Array.isArray(options)) {
    throw invalidArgument("createTraceparent: options must be an object such as { sampled: true }");
  }
  const { sampled } = options;
  if (sampled !== undefined && typeof sampled !== "boolean") {
    throw invalidArgument(`createTraceparent: sampled must be true or false, got ${typeof sampled}`);
  }
  // One draw for both ids (an all-zero id is invalid: that half is drawn again, which never happens).
  const bytes = randomBytes(24);
  let traceId = bytes.toString("hex", 0, 16);
  let parentId = bytes.toString("hex", 16, 24);
  while (/^0+$/.test(traceId)) traceId = randomBytes(16).toString("hex");
  while (/^0+$/.test(parentId)) parentId = randomBytes(8).toString("hex");
  return { version: "00", traceId, parentId, flags: sampled === true ? 1 : 0 };
}
