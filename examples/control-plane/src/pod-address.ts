// Which addresses a manifest may give a pod. A pod IP becomes an identity in every ztunnel (a connection
// from that address is that pod), so a typo or a hostile manifest must not claim 0.0.0.0, a multicast
// group, 127.0.0.1 or a node's address: only canonical IPv4 inside the configured pod ranges is served.
import { isIPv6 } from "node:net";

/** The demo's pod range (`mesh/` uses 127.10.0.x; nodes are 127.20.0.x, Service VIPs 127.30.0.x). */
export const DEFAULT_POD_CIDRS: readonly string[] = ["127.10.0.0/16"];

/**
 * The pod ranges of a control plane fed by a cluster, unless told others: every IPv4 address, as
 * istiod checks none. A pod's IP there is what its kubelet reported, from whatever ranges the CNI
 * hands out (node `podCIDR`s, IP pools, the VPC's subnets), not what a manifest claims. Unspecified,
 * multicast and reserved addresses are still refused ({@link podIpProblem}).
 */
export const CLUSTER_POD_CIDRS: readonly string[] = ["0.0.0.0/0"];

/** An IPv4 range as a network number and a mask. */
export interface Ipv4Cidr {
  /** The text it was read from, normalized (`a.b.c.d/len`). */
  readonly text: string;
  readonly network: number;
  readonly mask: number;
}

/** The 4 bytes of a canonical dotted IPv4 address (no leading zeros, no shorthand), or undefined. */
export function ipv4Bytes(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] as string;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    bytes[i] = n;
  }
  return bytes;
}

/**
 * The 16 bytes of an IPv6 address in any RFC 4291 text form (`::` shorthand, leading zeros, a dotted
 * IPv4 tail), or undefined; a zone (`%eth0`) is no address of a Service. Service VIPs only: pods are
 * served by their IPv4 address.
 */
export function ipv6Bytes(text: string): Uint8Array | undefined {
  if (!isIPv6(text) || text.includes("%")) return undefined;
  // A dotted IPv4 tail (`::ffff:10.0.0.1`) is the last two groups.
  const lastColon = text.lastIndexOf(":");
  let hexText = text;
  if (text.includes(".", lastColon)) {
    const v4 = ipv4Bytes(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    const group = (i: number) => (((v4[i] as number) << 8) | (v4[i + 1] as number)).toString(16);
    hexText = `${text.slice(0, lastColon + 1)}${group(0)}:${group(2)}`;
  }
  const [head = "", tail] = hexText.split("::");
  const groupsOf = (part: string) => (part === "" ? [] : part.split(":").map((g) => Number.parseInt(g, 16)));
  const before = groupsOf(head);
  const after = groupsOf(tail ?? "");
  const groups =
    tail === undefined
      ? before
      : [...before, ...new Array(8 - before.length - after.length).fill(0), ...after];
  if (groups.length !== 8) return undefined;
  return new Uint8Array(groups.flatMap((g) => [g >> 8, g & 255]));
}

/**
 * The text of 4 or 16 address bytes: dotted IPv4, or IPv6 as RFC 5952 prints it (lower case, no
 * leading zeros, the first longest run of two or more zero groups as `::`, an IPv4-mapped address as
 * `::ffff:a.b.c.d`), which is how istiod and ztunnel print an address in a `network/IP` alias.
 */
export function addressText(bytes: Uint8Array): string {
  if (bytes.length !== 16) return [...bytes].join(".");
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${[...bytes.subarray(12)].join(".")}`;
  }
  const groups = Array.from(
    { length: 8 },
    (_, i) => ((bytes[2 * i] as number) << 8) | (bytes[2 * i + 1] as number),
  );
  let runStart = -1;
  let runLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > runLength) [runStart, runLength] = [i, j - i];
    i = j;
  }
  const hex = (list: number[]) => list.map((g) => g.toString(16)).join(":");
  if (runLength < 2) return hex(groups);
  return `${hex(groups.slice(0, runStart))}::${hex(groups.slice(runStart + runLength))}`;
}

function toNumber(bytes: Uint8Array): number {
  return (
    (((bytes[0] as number) << 24) |
      ((bytes[1] as number) << 16) |
      ((bytes[2] as number) << 8) |
      (bytes[3] as number)) >>>
    0
  );
}

function maskOf(length: number): number {
  return length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
}

/**
 * Reads `a.b.c.d/len` (IPv4 only, host bits zero, as Kubernetes `--cluster-cidr` requires), or returns
 * the reason it is not one.
 */
export function parseIpv4Cidr(text: string): Ipv4Cidr | string {
  const slash = text.indexOf("/");
  const ip = slash < 0 ? undefined : ipv4Bytes(text.slice(0, slash));
  const lengthText = slash < 0 ? "" : text.slice(slash + 1);
  if (ip === undefined || !/^(0|[1-9][0-9]?)$/.test(lengthText) || Number(lengthText) > 32) {
    return `pod CIDR ${JSON.stringify(text)} is not an IPv4 range such as 127.10.0.0/16`;
  }
  const length = Number(lengthText);
  const mask = maskOf(length);
  const network = toNumber(ip);
  if ((network & mask) >>> 0 !== network) {
    return `pod CIDR ${JSON.stringify(text)} has host bits set (did you mean ${rangeText((network & mask) >>> 0, length)}?)`;
  }
  return { text: rangeText(network, length), network, mask };
}

function rangeText(network: number, length: number): string {
  return `${[network >>> 24, (network >>> 16) & 255, (network >>> 8) & 255, network & 255].join(".")}/${length}`;
}

function inRange(ip: number, cidr: { network: number; mask: number }): boolean {
  return (ip & cidr.mask) >>> 0 === cidr.network;
}

// Never a pod's address, whatever the configured ranges say.
const NEVER: readonly { network: number; mask: number; why: string }[] = [
  { network: 0x00000000, mask: maskOf(8), why: "is unspecified (0.0.0.0/8)" },
  { network: 0xe0000000, mask: maskOf(4), why: "is multicast (224.0.0.0/4)" },
  { network: 0xf0000000, mask: maskOf(4), why: "is reserved or broadcast (240.0.0.0/4)" },
];

/**
 * Why `text` cannot be a pod IP, or undefined when it can: it must be canonical IPv4, not unspecified,
 * multicast, reserved or broadcast, and inside one of `podCidrs` (so loopback addresses such as
 * 127.0.0.1 are refused unless a configured range holds them).
 */
export function podIpProblem(text: string, podCidrs: readonly Ipv4Cidr[]): string | undefined {
  const problem = hostIpProblem(text);
  if (problem !== undefined) return problem;
  const ip = toNumber(ipv4Bytes(text) as Uint8Array);
  if (!podCidrs.some((c) => inRange(ip, c))) {
    return `pod IP ${text} is outside the pod ranges (${podCidrs.map((c) => c.text).join(", ") || "none"})`;
  }
  return undefined;
}

/**
 * Why `text` cannot be the address of a host-network pod (its node's), or undefined when it can: the
 * checks of {@link podIpProblem} but the pod ranges. Such an address is never an identity: ztunnel
 * does not look a host-network workload up by it, since every such pod on a node shares it.
 */
export function hostIpProblem(text: string): string | undefined {
  const bytes = ipv4Bytes(text);
  if (bytes === undefined) {
    if (text === "::" || (isIPv6(text) && /^[0:]+$/.test(text))) return `pod IP ${text} is unspecified`;
    if (isIPv6(text)) return `pod IP ${text} is IPv6, which this control plane does not serve`;
    return `pod IP ${JSON.stringify(text)} is not an IPv4 address`;
  }
  const ip = toNumber(bytes);
  for (const range of NEVER) if (inRange(ip, range)) return `pod IP ${text} ${range.why}`;
  return undefined;
}
