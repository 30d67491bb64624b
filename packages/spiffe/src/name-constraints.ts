// X.509 name constraints (RFC 5280 4.2.1.10) for the names an X.509-SVID path carries: the SPIFFE
// ID (a URI whose host is the trust domain), dNSName and iPAddress SANs, and distinguished names.
// A CA that constrains any other name type is refused by the verifier rather than half-checked.
import { childrenOf, contentOf, decodeOid, expectTag, readTlv, type Tlv } from "./der.js";
import { SpiffeError } from "./errors.js";

/** An iPAddress subtree: address and mask of the same length (4 bytes for IPv4, 16 for IPv6). */
export interface IpSubtree {
  readonly address: Buffer;
  readonly mask: Buffer;
}

/** One distinguished name as a list of canonical RDNs (see {@link canonicalName}). */
export type CanonicalName = readonly string[];

/** The subtrees of one kind (permitted or excluded), by the name types this package enforces. */
export interface Subtrees {
  /** uniformResourceIdentifier: a host, or `.domain` for any host below it. Lower case. */
  readonly uri: string[];
  /** dNSName: a domain (itself and names below it), `.domain` (names below only), or empty (all). Lower case. */
  readonly dns: string[];
  readonly ip: IpSubtree[];
  readonly directoryName: CanonicalName[];
}

/** A decoded nameConstraints extension. */
export interface NameConstraints {
  readonly permitted: Subtrees;
  readonly excluded: Subtrees;
  /**
   * Why the extension cannot be enforced as written (an unsupported name type, minimum or maximum,
   * a malformed constraint); a CA with a problem is refused. Undefined when it can be.
   */
  readonly problem: string | undefined;
}

/** The names of one certificate that name constraints apply to. */
export interface CertificateNames {
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly ips: readonly Buffer[];
  /** The subject (when not empty) and any directoryName SANs, each as the DER of a Name. */
  readonly directoryNames: readonly Buffer[];
}

const GENERAL_NAME_TYPES: Readonly<Record<number, string>> = {
  160: "otherName",
  129: "rfc822Name",
  130: "dNSName",
  163: "x400Address",
  164: "directoryName",
  165: "ediPartyName",
  134: "uniformResourceIdentifier",
  135: "iPAddress",
  136: "registeredID",
};

// Labels of letters, digits, "-" and "_" separated by single dots: what a constraint on a host or
// domain may be. Anything else (a port, a path, "@", a trailing dot) is refused as malformed.
const DOMAIN = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;

function emptySubtrees(): Subtrees {
  return { uri: [], dns: [], ip: [], directoryName: [] };
}

/** True when `mask` is a run of one bits followed by zero bits. */
function isContiguousMask(mask: Buffer): boolean {
  let zeroSeen = false;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      const one = ((byte >> bit) & 1) === 1;
      if (one && zeroSeen) return false;
      if (!one) zeroSeen = true;
    }
  }
  return true;
}

/**
 * Decodes the value of a nameConstraints extension (`inner`, the SEQUENCE inside its OCTET STRING).
 * Malformed DER throws (`ERR_PEM_INVALID`, as for other extensions); what decodes but cannot be
 * enforced is reported in `problem`.
 */
export function parseNameConstraints(der: Buffer, inner: Tlv): NameConstraints {
  const permitted = emptySubtrees();
  const excluded = emptySubtrees();
  const problems: string[] = [];
  const parts = childrenOf(der, expectTag(inner, 0x30, "nameConstraints"));
  let seenSubtrees = 0;
  for (const part of parts) {
    if (part.tag !== 0xa0 && part.tag !== 0xa1) {
      problems.push(`unexpected field [${part.tag & 0x1f}]`);
      continue;
    }
    seenSubtrees++;
    const into = part.tag === 0xa0 ? permitted : excluded;
    const subtrees = childrenOf(der, part);
    // GeneralSubtrees is SIZE (1..MAX).
    if (subtrees.length === 0) problems.push(`empty ${part.tag === 0xa0 ? "permitted" : "excluded"}Subtrees`);
    for (const subtree of subtrees) {
      const [base, ...rest] = childrenOf(der, expectTag(subtree, 0x30, "GeneralSubtree"));
      if (base === undefined)
        throw new SpiffeError("ERR_PEM_INVALID", "malformed DER: GeneralSubtree without a base");
      for (const field of rest) {
        // RFC 5280: minimum MUST be zero and maximum MUST be absent.
        const zeroMinimum =
          field.tag === 0x80 && contentOf(der, field).every((b) => b === 0) && field.end > field.valueStart;
        if (!zeroMinimum) problems.push("a GeneralSubtree with a minimum other than 0 or a maximum");
      }
      addSubtree(der, base, into, problems);
    }
  }
  // RFC 5280: the extension MUST NOT be an empty sequence.
  if (seenSubtrees === 0) problems.push("neither permittedSubtrees nor excludedSubtrees");
  return {
    permitted,
    excluded,
    problem: problems.length === 0 ? undefined : [...new Set(problems)].join("; "),
  };
}

function addSubtree(der: Buffer, base: Tlv, into: Subtrees, problems: string[]): void {
  const type = GENERAL_NAME_TYPES[base.tag] ?? `GeneralName tag 0x${base.tag.toString(16)}`;
  const value = contentOf(der, base);
  switch (base.tag) {
    case 0x86: {
      const host = Buffer.from(value).toString("latin1").toLowerCase();
      const domain = host.startsWith(".") ? host.slice(1) : host;
      if (!DOMAIN.test(domain))
        problems.push(`uniformResourceIdentifier constraint "${host}" is not a host or domain`);
      else into.uri.push(host);
      break;
    }
    case 0x82: {
      const name = Buffer.from(value).toString("latin1").toLowerCase();
      const domain = name.startsWith(".") ? name.slice(1) : name;
      if (name !== "" && !DOMAIN.test(domain)) problems.push(`dNSName constraint "${name}" is not a domain`);
      else into.dns.push(name);
      break;
    }
    case 0x87: {
      const bytes = Buffer.from(value);
      const half = bytes.length / 2;
      const mask = bytes.subarray(half);
      if ((bytes.length !== 8 && bytes.length !== 32) || !isContiguousMask(mask)) {
        problems.push("iPAddress constraint is not an address and contiguous mask of 4 or 16 bytes each");
      } else {
        into.ip.push({ address: bytes.subarray(0, half), mask });
      }
      break;
    }
    case 0xa4: {
      const name = childrenOf(der, base)[0];
      const canonical = name === undefined ? undefined : canonicalName(der.subarray(name.start, name.end));
      if (canonical === undefined) problems.push("directoryName constraint is not a readable Name");
      else into.directoryName.push(canonical);
      break;
    }
    default:
      problems.push(`${type} constraints, which this package does not enforce`);
  }
}

const WHITESPACE = /[ \t\n\v\f\r]+/g;

/** The text of a string-typed attribute value; undefined for a value of another type. */
function attributeText(tag: number, value: Buffer): string | undefined {
  switch (tag) {
    case 0x0c: // UTF8String
      return value.toString("utf8");
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x1a: // VisibleString
    case 0x14: // T61String, read as Latin-1
      return value.toString("latin1");
    case 0x1e: {
      // BMPString: UTF-16 big-endian.
      if (value.length % 2 !== 0) return undefined;
      const swapped = Buffer.from(value);
      swapped.swap16();
      return swapped.toString("utf16le");
    }
    case 0x1c: {
      // UniversalString: UTF-32 big-endian.
      if (value.length % 4 !== 0) return undefined;
      let text = "";
      for (let i = 0; i < value.length; i += 4) {
        const code = value.readUInt32BE(i);
        if (code > 0x10ffff) return undefined;
        text += String.fromCodePoint(code);
      }
      return text;
    }
    default:
      return undefined;
  }
}

/**
 * A distinguished name in the form directoryName constraints are compared in: one string per RDN,
 * each the sorted list of its attributes. String values are compared without regard to ASCII case,
 * leading and trailing white space or runs of white space (RFC 5280 7.1, as OpenSSL canonicalizes
 * names); values of other types byte for byte. Undefined when `nameDer` is not a Name.
 */
export function canonicalName(nameDer: Buffer): CanonicalName | undefined {
  try {
    const name = expectTag(readTlv(nameDer, 0), 0x30, "Name");
    if (name.end !== nameDer.length) return undefined;
    return childrenOf(nameDer, name).map((rdn) => {
      const attributes = childrenOf(nameDer, expectTag(rdn, 0x31, "RDN")).map((atv) => {
        const [type, value] = childrenOf(nameDer, expectTag(atv, 0x30, "AttributeTypeAndValue"));
        const oid = decodeOid(contentOf(nameDer, expectTag(type, 0x06, "attribute type")));
        if (value === undefined) throw new Error("attribute without a value");
        const text = attributeText(value.tag, Buffer.from(contentOf(nameDer, value)));
        if (text === undefined)
          return `${oid}#${Buffer.from(nameDer.subarray(value.start, value.end)).toString("hex")}`;
        const folded = text
          .replace(WHITESPACE, " ")
          .trim()
          .replace(/[A-Z]/g, (c) => c.toLowerCase());
        return `${oid}=${JSON.stringify(folded)}`;
      });
      return attributes.sort().join("+");
    });
  } catch {
    return undefined;
  }
}

/**
 * The host of a URI name for URI constraints: the authority's host, lower case. Undefined when the
 * URI has no authority, userinfo, an IP literal or an empty host: RFC 5280 asks a verifier to refuse
 * such a URI wherever URI constraints apply.
 */
export function uriHost(uri: string): string | undefined {
  const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (!m) return undefined;
  const authority = m[1] as string;
  if (authority.includes("@") || authority.startsWith("[")) return undefined;
  const host = authority.replace(/:\d*$/, "").toLowerCase();
  if (host === "" || /^\d+(\.\d+){3}$/.test(host)) return undefined;
  return host;
}

/** A URI constraint: `host` exactly, or with a leading dot any host below that domain. */
function uriHostMatches(host: string, constraint: string): boolean {
  if (constraint.startsWith(".")) return host.length > constraint.length && host.endsWith(constraint);
  return host === constraint;
}

/** A dNSName constraint: the domain and names below it; `.domain` names below it only; empty: all. */
function dnsNameMatches(name: string, constraint: string): boolean {
  if (constraint === "") return true;
  if (constraint.startsWith(".")) return name.length > constraint.length && name.endsWith(constraint);
  return name === constraint || name.endsWith(`.${constraint}`);
}

function ipMatches(ip: Buffer, subtree: IpSubtree): boolean {
  if (ip.length !== subtree.address.length) return false;
  for (let i = 0; i < ip.length; i++) {
    const mask = subtree.mask[i] as number;
    if (((ip[i] as number) & mask) !== ((subtree.address[i] as number) & mask)) return false;
  }
  return true;
}

function nameWithin(name: CanonicalName, subtree: CanonicalName): boolean {
  if (subtree.length > name.length) return false;
  return subtree.every((rdn, i) => rdn === name[i]);
}

function formatIp(ip: Buffer): string {
  if (ip.length === 4) return [...ip].join(".");
  if (ip.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(ip.readUInt16BE(i).toString(16));
    return groups.join(":");
  }
  return `0x${ip.toString("hex")}`;
}

/**
 * Checks one type of name against the permitted and excluded subtrees of that type: with permitted
 * subtrees every name must be within one, and no name may be within an excluded one. Returns why
 * a name fails, or undefined.
 */
function checkType<N, S>(
  names: readonly N[],
  permitted: readonly S[],
  excluded: readonly S[],
  matches: (name: N, subtree: S) => boolean,
  show: (name: N) => string,
): string | undefined {
  for (const name of names) {
    if (permitted.length > 0 && !permitted.some((s) => matches(name, s))) {
      return `${show(name)} is not within its permitted subtrees`;
    }
    if (excluded.some((s) => matches(name, s))) return `${show(name)} is within its excluded subtrees`;
  }
  return undefined;
}

/**
 * Why `names` break `constraints`, or undefined when they satisfy them. A name type without
 * subtrees is not constrained.
 */
export function nameConstraintViolation(
  names: CertificateNames,
  constraints: NameConstraints,
): string | undefined {
  const { permitted, excluded } = constraints;
  if (permitted.uri.length > 0 || excluded.uri.length > 0) {
    for (const uri of names.uris) {
      if (uriHost(uri) === undefined) return `URI ${uri} has no host name that URI constraints can apply to`;
    }
  }
  return (
    checkType(
      names.uris,
      permitted.uri,
      excluded.uri,
      (uri, c) => uriHostMatches(uriHost(uri) as string, c),
      (uri) => `URI ${uri}`,
    ) ??
    checkType(
      names.dnsNames.map((n) => n.toLowerCase()),
      permitted.dns,
      excluded.dns,
      dnsNameMatches,
      (n) => `DNS name ${n}`,
    ) ??
    checkType(names.ips, permitted.ip, excluded.ip, ipMatches, (ip) => `IP address ${formatIp(ip)}`) ??
    checkDirectoryNames(names.directoryNames, permitted.directoryName, excluded.directoryName)
  );
}

function checkDirectoryNames(
  names: readonly Buffer[],
  permitted: readonly CanonicalName[],
  excluded: readonly CanonicalName[],
): string | undefined {
  if (permitted.length === 0 && excluded.length === 0) return undefined;
  const canonical: CanonicalName[] = [];
  for (const der of names) {
    const name = canonicalName(der);
    if (name === undefined) return "a distinguished name could not be read for directoryName constraints";
    canonical.push(name);
  }
  return checkType(canonical, permitted, excluded, nameWithin, (n) => `distinguished name ${n.join(", ")}`);
}
