// Domain names between their presentation text ("web.shop.svc", escapes as dig prints them) and the
// wire's length-prefixed labels. Decoding follows compression pointers strictly backwards, so a
// crafted message cannot loop or make a name read bytes that come after it.
import { DnsError } from "./errors.js";

const MAX_LABEL_BYTES = 63;
const MAX_NAME_BYTES = 255; // on the wire, length bytes and the root's zero included
const MAX_POINTER_HOPS = 127;

/** The labels of a name, each as its raw bytes. The root name has none. */
export type Labels = readonly Uint8Array[];

const BACKSLASH = 0x5c;
const DOT = 0x2e;

function invalid(name: string, why: string): DnsError {
  return new DnsError("ERR_DNS_INVALID_ARGUMENT", `invalid DNS name ${JSON.stringify(name)}: ${why}`, {
    name,
  });
}

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/**
 * Parses presentation text into labels. `\.`, `\\` and any `\X` stand for X; `\DDD` for the byte
 * DDD (decimal, at most 255). Characters outside printable ASCII must be escaped. A trailing dot is
 * accepted; empty labels, labels over 63 bytes and names over 255 wire bytes are refused.
 */
export function parseName(name: string): Labels {
  const labels: Uint8Array[] = [];
  let current: number[] = [];
  let wireBytes = 1;
  const endLabel = (): void => {
    if (current.length === 0) throw invalid(name, "empty label");
    if (current.length > MAX_LABEL_BYTES) throw invalid(name, `a label is over ${MAX_LABEL_BYTES} bytes`);
    wireBytes += current.length + 1;
    labels.push(Uint8Array.from(current));
    current = [];
  };
  if (name === "" || name === ".") return labels;
  for (let i = 0; i < name.length; i += 1) {
    const code = name.charCodeAt(i);
    if (code < 0x21 || code > 0x7e) throw invalid(name, `character ${code} must be written as \\DDD`);
    if (code === DOT) {
      endLabel();
      if (i === name.length - 1) break; // the trailing dot of an absolute name
      continue;
    }
    if (code !== BACKSLASH) {
      current.push(code);
      continue;
    }
    const next = name.charCodeAt(i + 1);
    if (Number.isNaN(next)) throw invalid(name, "a lone backslash at the end");
    if (isDigit(next)) {
      const digits = name.slice(i + 1, i + 4);
      if (!/^[0-9]{3}$/.test(digits)) throw invalid(name, "\\DDD needs three decimal digits");
      const value = Number(digits);
      if (value > 255) throw invalid(name, `\\${digits} is over 255`);
      current.push(value);
      i += 3;
    } else {
      if (next < 0x21 || next > 0x7e) throw invalid(name, `character ${next} must be written as \\DDD`);
      current.push(next);
      i += 1;
    }
  }
  if (current.length > 0) endLabel();
  else if (name.charCodeAt(name.length - 1) !== DOT) throw invalid(name, "empty label");
  if (wireBytes > MAX_NAME_BYTES) throw invalid(name, `over ${MAX_NAME_BYTES} bytes on the wire`);
  return labels;
}

/** Presentation text of one label: printable ASCII as is, `.` and `\` escaped, other bytes as `\DDD`. */
export function labelText(label: Uint8Array): string {
  let text = "";
  for (const byte of label) {
    if (byte === DOT || byte === BACKSLASH) text += `\\${String.fromCharCode(byte)}`;
    else if (byte >= 0x21 && byte <= 0x7e) text += String.fromCharCode(byte);
    else text += `\\${byte.toString().padStart(3, "0")}`;
  }
  return text;
}

/** Presentation text of labels, without a trailing dot ("" for the root). */
export function labelsText(labels: Labels): string {
  return labels.map(labelText).join(".");
}

/** The uncompressed wire form of labels. */
export function labelsWire(labels: Labels): Uint8Array {
  let length = 1;
  for (const label of labels) length += label.length + 1;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const label of labels) {
    out[offset] = label.length;
    out.set(label, offset + 1);
    offset += label.length + 1;
  }
  out[offset] = 0;
  return out;
}

/** A name read from a message: its labels and the offset just after it where it started. */
export interface ReadName {
  readonly labels: Labels;
  /** Offset of the first byte after the name at the place it was read (after a pointer, not its target). */
  readonly end: number;
}

function malformed(why: string, offset: number): DnsError {
  return new DnsError("ERR_DNS_MALFORMED", `malformed DNS name at byte ${offset}: ${why}`, { offset });
}

/**
 * Reads a possibly compressed name at `offset` of `message`. Each pointer must point before the start
 * of the labels that contain it (so hops strictly decrease and cannot loop), at most 127 hops; label
 * types 0x40 and 0x80 are reserved and refused.
 */
export function readName(message: Uint8Array, offset: number): ReadName {
  const labels: Uint8Array[] = [];
  let wireBytes = 1;
  let position = offset;
  let segmentStart = offset;
  let end = -1;
  let hops = 0;
  for (;;) {
    if (position >= message.length) throw malformed("runs past the end of the message", position);
    const length = message[position] as number;
    if (length === 0) {
      if (end < 0) end = position + 1;
      return { labels, end };
    }
    const kind = length & 0xc0;
    if (kind === 0xc0) {
      if (position + 1 >= message.length) throw malformed("pointer cut short", position);
      const target = ((length & 0x3f) << 8) | (message[position + 1] as number);
      if (target >= segmentStart) throw malformed("compression pointer does not point backwards", position);
      hops += 1;
      if (hops > MAX_POINTER_HOPS) throw malformed("too many compression pointers", position);
      if (end < 0) end = position + 2;
      position = target;
      segmentStart = target;
      continue;
    }
    if (kind !== 0) throw malformed(`reserved label type 0x${kind.toString(16)}`, position);
    if (position + 1 + length > message.length)
      throw malformed("label runs past the end of the message", position);
    wireBytes += length + 1;
    if (wireBytes > MAX_NAME_BYTES) throw malformed(`name over ${MAX_NAME_BYTES} bytes`, offset);
    labels.push(message.slice(position + 1, position + 1 + length));
    position += length + 1;
  }
}

/** Case-insensitive (ASCII only, as DNS compares names) equality of two presentation names. */
export function sameName(a: string, b: string): boolean {
  return a.length === b.length && a.toLowerCase() === b.toLowerCase();
}
