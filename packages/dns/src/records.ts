// Building and reading the records a DNS proxy deals with, and the reply that goes with a query.
import { CLASS_IN, RecordType, ResponseCode } from "./constants.js";
import { DnsError } from "./errors.js";
import { formatIpv6, ipBytes } from "./ip.js";
import type { DnsMessage, DnsRecord } from "./message.js";
import { holdsOneName } from "./message.js";
import { labelsText, labelsWire, parseName, readName } from "./name.js";

const MIN_UDP_PAYLOAD = 512; // RFC 1035 4.2.1
const MAX_UDP_PAYLOAD = 4096; // larger datagrams fragment too often to be worth offering
/** The payload size this package advertises in the OPT record of its replies (the DNS Flag Day 2020 value). */
export const ADVERTISED_UDP_PAYLOAD = 1232;

function checkTtl(ttl: number): number {
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > 0xffffffff) {
    throw new DnsError("ERR_DNS_INVALID_ARGUMENT", `TTL ${ttl} is not an integer in 0..4294967295`);
  }
  return ttl;
}

/**
 * An A record for an IPv4 literal or an AAAA record for an IPv6 one, class IN. Throws
 * {@link DnsError} `ERR_DNS_INVALID_ARGUMENT` for anything else (names, zone ids, bad TTLs).
 */
export function addressRecord(name: string, ip: string, ttl: number): DnsRecord {
  const data = ipBytes(ip);
  if (data === undefined) {
    throw new DnsError("ERR_DNS_INVALID_ARGUMENT", `${JSON.stringify(ip)} is not an IPv4 or IPv6 address`, {
      ip,
    });
  }
  parseName(name);
  return {
    name,
    type: data.length === 4 ? RecordType.A : RecordType.AAAA,
    class: CLASS_IN,
    ttl: checkTtl(ttl),
    data,
  };
}

/** A CNAME record, class IN: `name` is an alias of `target`. */
export function cnameRecord(name: string, target: string, ttl: number): DnsRecord {
  parseName(name);
  return {
    name,
    type: RecordType.CNAME,
    class: CLASS_IN,
    ttl: checkTtl(ttl),
    data: labelsWire(parseName(target)),
  };
}

/** The address in an A or AAAA record as text (IPv6 in RFC 5952 form); undefined for other records. */
export function recordAddress(record: DnsRecord): string | undefined {
  if (record.type === RecordType.A && record.data.length === 4) return Array.from(record.data).join(".");
  if (record.type === RecordType.AAAA && record.data.length === 16) return formatIpv6(record.data);
  return undefined;
}

/** The name a CNAME, NS or PTR record points to (presentation text); undefined for other records. */
export function recordTarget(record: DnsRecord): string | undefined {
  if (!holdsOneName(record.type)) return undefined;
  try {
    const target = readName(record.data, 0);
    return target.end === record.data.length ? labelsText(target.labels) : undefined;
  } catch {
    return undefined;
  }
}

/** The OPT record (EDNS, RFC 6891) of a message, if it has one. */
function optRecord(message: DnsMessage): DnsRecord | undefined {
  return message.additionals.find((record) => record.type === RecordType.OPT);
}

/** What {@link replyTo} puts in the reply besides what it copies from the query. */
export interface ReplyInit {
  /** Default NOERROR. */
  rcode?: number;
  /** AA; default false. */
  authoritative?: boolean;
  answers?: readonly DnsRecord[];
  authorities?: readonly DnsRecord[];
  /** When the query has an OPT record and these have none, an OPT record is added (RFC 6891 6.1.1). */
  additionals?: readonly DnsRecord[];
}

/**
 * A query for `name` and `type` (default A) in class IN, RD set and no other flag, id 0 (the server
 * and the forwarder set their own ids); `init` overrides any field (`id`, or `additionals` with an OPT
 * record).
 */
export function queryMessage(
  name: string,
  type: number = RecordType.A,
  init: Partial<DnsMessage> = {},
): DnsMessage {
  if (typeof name !== "string") {
    throw new DnsError("ERR_DNS_INVALID_ARGUMENT", `a query name must be a string, not ${String(name)}`);
  }
  if (!Number.isInteger(type) || type < 0 || type > 0xffff) {
    throw new DnsError(
      "ERR_DNS_INVALID_ARGUMENT",
      `record type ${String(type)} is not an integer in 0..65535`,
    );
  }
  if (init === null || typeof init !== "object") {
    throw new DnsError("ERR_DNS_INVALID_ARGUMENT", "the fields of a query must be an object");
  }
  return {
    id: 0,
    response: false,
    opcode: 0,
    authoritative: false,
    truncated: false,
    recursionDesired: true,
    recursionAvailable: false,
    authenticData: false,
    checkingDisabled: false,
    rcode: ResponseCode.NOERROR,
    questions: [{ name, type, class: CLASS_IN }],
    answers: [],
    authorities: [],
    additionals: [],
    ...init,
  };
}

/**
 * The reply to `query`: QR and RA set, id, opcode, RD, CD and the questions copied, the sections from
 * `init`. A query with EDNS gets an OPT record back (payload size 1232, no options) unless `init.additionals`
 * already holds one, as RFC 6891 asks of responders.
 */
export function replyTo(query: DnsMessage, init: ReplyInit = {}): DnsMessage {
  let additionals = init.additionals ?? [];
  if (optRecord(query) !== undefined && !additionals.some((record) => record.type === RecordType.OPT)) {
    additionals = [
      ...additionals,
      { name: "", type: RecordType.OPT, class: ADVERTISED_UDP_PAYLOAD, ttl: 0, data: new Uint8Array(0) },
    ];
  }
  return {
    id: query.id,
    response: true,
    opcode: query.opcode,
    authoritative: init.authoritative ?? false,
    truncated: false,
    recursionDesired: query.recursionDesired,
    recursionAvailable: true,
    authenticData: false,
    checkingDisabled: query.checkingDisabled,
    rcode: init.rcode ?? ResponseCode.NOERROR,
    questions: query.questions,
    answers: init.answers ?? [],
    authorities: init.authorities ?? [],
    additionals,
  };
}

/**
 * The largest UDP response `query`'s sender accepts: 512 bytes without EDNS; with an OPT record, its
 * CLASS (the advertised payload size) clamped to 512..4096.
 */
export function udpPayloadLimit(query: DnsMessage): number {
  const opt = optRecord(query);
  if (opt === undefined) return MIN_UDP_PAYLOAD;
  return Math.min(MAX_UDP_PAYLOAD, Math.max(MIN_UDP_PAYLOAD, opt.class));
}
