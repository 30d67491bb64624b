// Minimal DER reader and writer for the certificate fields this package needs on hot paths
// (signing and validation), where a general ASN.1 library is far slower.
import { SpiffeError } from "./errors.js";

/** One DER element: `tag`, and offsets of its header start, value start and end in `buf`. */
export interface Tlv {
  tag: number;
  start: number;
  valueStart: number;
  end: number;
}

function malformed(what: string): SpiffeError {
  return new SpiffeError("ERR_PEM_INVALID", `malformed DER: ${what}`);
}

/** Reads the element starting at `pos`, bounded by `limit`. */
export function readTlv(buf: Uint8Array, pos: number, limit = buf.length): Tlv {
  if (pos + 2 > limit) throw malformed("truncated header");
  const tag = buf[pos] as number;
  if ((tag & 0x1f) === 0x1f) throw malformed("multi-byte tags are not supported");
  let len = buf[pos + 1] as number;
  let valueStart = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw malformed("unsupported length encoding");
    if (valueStart + n > limit) throw malformed("truncated length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[valueStart + i] as number);
    valueStart += n;
  }
  const end = valueStart + len;
  if (end > limit) throw malformed("element longer than its container");
  return { tag, start: pos, valueStart, end };
}

/** The child elements of a constructed element. */
export function childrenOf(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let pos = parent.valueStart;
  while (pos < parent.end) {
    const child = readTlv(buf, pos, parent.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

export function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag) throw malformed(`expected ${what}`);
  return t;
}

export function contentOf(buf: Uint8Array, t: Tlv): Uint8Array {
  return buf.subarray(t.valueStart, t.end);
}

export function bytesOf(buf: Uint8Array, t: Tlv): Uint8Array {
  return buf.subarray(t.start, t.end);
}

/**
 * True when element `t` of `buf` is the OBJECT IDENTIFIER whose content bytes are `value` (from
 * {@link oidValue}): a byte comparison, for hot paths that only ask "is it this one?".
 */
export function isOid(buf: Uint8Array, t: Tlv | undefined, value: Uint8Array): boolean {
  if (!t || t.tag !== 0x06 || t.end - t.valueStart !== value.length) return false;
  for (let i = 0; i < value.length; i++) if (buf[t.valueStart + i] !== value[i]) return false;
  return true;
}

/** The content bytes of an OBJECT IDENTIFIER, to compare with {@link isOid}. */
export function oidValue(dotted: string): Buffer {
  const der = encodeOid(dotted);
  return der.subarray(readTlv(der, 0).valueStart);
}

/** Dotted form of an OBJECT IDENTIFIER value. */
export function decodeOid(v: Uint8Array): string {
  if (v.length === 0) throw malformed("empty OID");
  const first = v[0] as number;
  const parts: number[] = [first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80];
  let acc = 0;
  for (let i = 1; i < v.length; i++) {
    const b = v[i] as number;
    acc = acc * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      parts.push(acc);
      acc = 0;
    }
  }
  return parts.join(".");
}

/** Decodes a UTCTime (0x17) or GeneralizedTime (0x18) element. */
export function decodeTime(buf: Uint8Array, t: Tlv): Date {
  const s = Buffer.from(contentOf(buf, t)).toString("latin1");
  let m: RegExpExecArray | null;
  let year: number;
  if (t.tag === 0x17) {
    m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
    if (!m) throw malformed("bad UTCTime");
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (t.tag === 0x18) {
    m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
    if (!m) throw malformed("bad GeneralizedTime");
    year = Number(m[1]);
  } else {
    throw malformed("expected a time");
  }
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

// ---- writer ----

/** Bytes of the DER length field for `len`. */
function lengthSize(len: number): number {
  if (len < 0x80) return 1;
  let n = 1;
  for (let v = len; v > 0xff; v = Math.floor(v / 256)) n++;
  return 1 + n;
}

/** Writes the DER length field of `len` at `pos`; returns the position after it. */
function writeLength(out: Buffer, pos: number, len: number): number {
  const size = lengthSize(len);
  if (size === 1) {
    out[pos] = len;
    return pos + 1;
  }
  out[pos] = 0x80 | (size - 1);
  for (let i = size - 1, v = len; i >= 1; i--, v = Math.floor(v / 256)) out[pos + i] = v & 0xff;
  return pos + size;
}

/** Encodes one element from its tag and value parts, in one allocation (a hot path when signing). */
export function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(1 + lengthSize(len) + len);
  out[0] = tag;
  let pos = writeLength(out, 1, len);
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export const seq = (...parts: Uint8Array[]): Buffer => tlv(0x30, ...parts);

export function encodeOid(dotted: string): Buffer {
  const nums = dotted.split(".").map(Number);
  const out: number[] = [(nums[0] as number) * 40 + (nums[1] as number)];
  for (const n of nums.slice(2)) {
    const chunk: number[] = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5). */
export function encodeTime(d: Date): Buffer {
  const year = d.getUTCFullYear();
  const utc = year >= 1950 && year < 2050;
  const digits = utc ? 12 : 14;
  const out = Buffer.allocUnsafe(2 + digits + 1);
  out[0] = utc ? 0x17 : 0x18;
  out[1] = digits + 1;
  let pos = utc ? putDigits(out, 2, year % 100, 2) : putDigits(out, 2, year, 4);
  pos = putDigits(out, pos, d.getUTCMonth() + 1, 2);
  pos = putDigits(out, pos, d.getUTCDate(), 2);
  pos = putDigits(out, pos, d.getUTCHours(), 2);
  pos = putDigits(out, pos, d.getUTCMinutes(), 2);
  pos = putDigits(out, pos, d.getUTCSeconds(), 2);
  out[pos] = 0x5a; // "Z"
  return out;
}

/** Writes `n` as `width` ASCII digits at `pos`; returns the position after them. */
function putDigits(out: Buffer, pos: number, n: number, width: number): number {
  for (let i = width - 1, v = n; i >= 0; i--, v = Math.floor(v / 10)) out[pos + i] = 0x30 + (v % 10);
  return pos + width;
}

/** A positive INTEGER from big-endian magnitude bytes. */
export function encodeUnsignedInteger(bytes: Uint8Array): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const trimmed = bytes.subarray(i);
  return (trimmed[0] as number) & 0x80 ? tlv(0x02, Buffer.from([0]), trimmed) : tlv(0x02, trimmed);
}

/** One certificate extension. */
export function extension(oid: string, critical: boolean, value: Uint8Array): Buffer {
  return seq(encodeOid(oid), ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), tlv(0x04, value));
}
