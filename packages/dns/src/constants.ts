// The record types and response codes a node proxy deals with, by their RFC names.

/** DNS record types (RFC 1035 3.2.2, RFC 3596 for AAAA, RFC 2782 for SRV, RFC 6891 for OPT). */
export const RecordType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  ANY: 255,
} as const;

/** DNS response codes (RFC 1035 4.1.1), the 4 bits in the header. */
export const ResponseCode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

/** The class of nearly every record: Internet. */
export const CLASS_IN = 1;

const TYPE_NAMES = new Map<number, string>(Object.entries(RecordType).map(([name, value]) => [value, name]));

/**
 * The mnemonic of a record type (`"A"`, `"AAAA"`), or `"TYPE<n>"` (RFC 3597) for one without a name
 * here. Meant for logs and metric labels, where the set of values must stay small and readable.
 */
export function recordTypeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `TYPE${type}`;
}
