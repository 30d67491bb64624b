// RFC 1035 messages to and from bytes. Names are presentation text in the case they came in; RDATA is
// kept as bytes, except that the names in records whose data senders may compress (CNAME, NS, PTR,
// MX, SOA, SRV and the like) are expanded, so their `data` stands on its own once the message it came
// from is gone, and the record can be written into another message.
import { RecordType } from "./constants.js";
import { DnsError } from "./errors.js";
import { type Labels, labelsText, labelsWire, parseName, readName } from "./name.js";

/** One entry of the question section. */
export interface DnsQuestion {
  /** Presentation text without a trailing dot ("" is the root). */
  readonly name: string;
  /** Record type, see {@link RecordType}. */
  readonly type: number;
  /** Class, 1 (IN) nearly always. */
  readonly class: number;
}

/** One resource record of the answer, authority or additional section. */
export interface DnsRecord {
  /** Owner name, presentation text without a trailing dot. */
  readonly name: string;
  /** Record type, see {@link RecordType}. */
  readonly type: number;
  /** Class; for OPT records the EDNS UDP payload size. */
  readonly class: number;
  /** Time to live in seconds (0 to 2^32-1); for OPT records the extended rcode, version and flags. */
  readonly ttl: number;
  /** RDATA as bytes; names in CNAME, NS, PTR, MX, SOA, SRV and like records are uncompressed. */
  readonly data: Uint8Array;
}

/** A whole DNS message: header fields and the four sections. */
export interface DnsMessage {
  /** Query id, 0 to 65535. */
  readonly id: number;
  /** QR: true in a response. */
  readonly response: boolean;
  /** Opcode, 0 (QUERY) for every ordinary query. */
  readonly opcode: number;
  /** AA: the answer comes from the zone's own server. */
  readonly authoritative: boolean;
  /** TC: the message was cut to fit a UDP datagram; ask again over TCP. */
  readonly truncated: boolean;
  /** RD: the client wants recursion. */
  readonly recursionDesired: boolean;
  /** RA: the server offers recursion. */
  readonly recursionAvailable: boolean;
  /** AD (RFC 4035). */
  readonly authenticData: boolean;
  /** CD (RFC 4035). */
  readonly checkingDisabled: boolean;
  /** Response code, the header's 4 bits; see {@link ResponseCode}. */
  readonly rcode: number;
  readonly questions: readonly DnsQuestion[];
  readonly answers: readonly DnsRecord[];
  readonly authorities: readonly DnsRecord[];
  readonly additionals: readonly DnsRecord[];
}

/** Bytes in a message header. */
export const HEADER_BYTES = 12;

// Smallest question: root name (1) + type + class; smallest record: root name + 10 fixed bytes.
const MIN_QUESTION_BYTES = 5;
const MIN_RECORD_BYTES = 11;

/** Record types whose RDATA is exactly one domain name, which senders may compress. */
export function holdsOneName(type: number): boolean {
  return type === RecordType.CNAME || type === RecordType.NS || type === RecordType.PTR;
}

/**
 * Where the domain names sit in the RDATA of the other types whose names may be compressed: RFC 1035's
 * MX, SOA, MINFO, MB, MD, MF, MG, MR, and those RFC 3597 section 4 asks receivers to expand (SRV,
 * AFSDB, RT, PX, RP). `before` fixed bytes, `names` names, then `after` fixed bytes and no more.
 */
const NAME_LAYOUTS = new Map<number, { before: number; names: number; after: number }>([
  [3, { before: 0, names: 1, after: 0 }], // MD
  [4, { before: 0, names: 1, after: 0 }], // MF
  [RecordType.SOA, { before: 0, names: 2, after: 20 }],
  [7, { before: 0, names: 1, after: 0 }], // MB
  [8, { before: 0, names: 1, after: 0 }], // MG
  [9, { before: 0, names: 1, after: 0 }], // MR
  [14, { before: 0, names: 2, after: 0 }], // MINFO
  [RecordType.MX, { before: 2, names: 1, after: 0 }],
  [17, { before: 0, names: 2, after: 0 }], // RP
  [18, { before: 2, names: 1, after: 0 }], // AFSDB
  [21, { before: 2, names: 1, after: 0 }], // RT
  [26, { before: 2, names: 2, after: 0 }], // PX
  [RecordType.SRV, { before: 6, names: 1, after: 0 }],
]);

/**
 * The RDATA of a record of a type in {@link NAME_LAYOUTS} with its names expanded, or undefined when
 * the bytes are not laid out as the type says (then they are kept as they came).
 */
function expandedData(bytes: Uint8Array, type: number, start: number, end: number): Uint8Array | undefined {
  const layout = NAME_LAYOUTS.get(type);
  if (layout === undefined || start + layout.before > end) return undefined;
  const parts: Uint8Array[] = [bytes.subarray(start, start + layout.before)];
  let offset = start + layout.before;
  try {
    for (let i = 0; i < layout.names; i += 1) {
      if (offset >= end) return undefined;
      const name = readName(bytes, offset);
      if (name.end > end) return undefined;
      parts.push(labelsWire(name.labels));
      offset = name.end;
    }
  } catch {
    return undefined;
  }
  if (offset + layout.after !== end) return undefined;
  parts.push(bytes.subarray(offset, end));
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function malformed(why: string, details: Record<string, unknown> = {}): DnsError {
  return new DnsError("ERR_DNS_MALFORMED", `malformed DNS message: ${why}`, details);
}

/**
 * Decodes a DNS message, expanding compressed names in RDATA (see the file's opening comment). Throws
 * {@link DnsError} `ERR_DNS_MALFORMED` on anything wrong: cut short,
 * counts the bytes cannot hold, compression pointers that loop or point forwards, reserved label
 * types, a CNAME/NS/PTR whose name does not fill its RDATA. Bytes after the last record are ignored.
 * Throws `ERR_DNS_INVALID_ARGUMENT` when `bytes` is not a `Uint8Array`.
 */
export function decodeMessage(bytes: Uint8Array): DnsMessage {
  if (!(bytes instanceof Uint8Array)) {
    throw new DnsError("ERR_DNS_INVALID_ARGUMENT", "a DNS message is decoded from a Uint8Array");
  }
  if (bytes.length < HEADER_BYTES) throw malformed(`${bytes.length} bytes is shorter than a header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const flags = view.getUint16(2);
  const qdcount = view.getUint16(4);
  const ancount = view.getUint16(6);
  const nscount = view.getUint16(8);
  const arcount = view.getUint16(10);
  const needed = qdcount * MIN_QUESTION_BYTES + (ancount + nscount + arcount) * MIN_RECORD_BYTES;
  if (needed > bytes.length - HEADER_BYTES) {
    throw malformed(
      `the counts claim at least ${needed} bytes, ${bytes.length - HEADER_BYTES} follow the header`,
    );
  }
  let offset = HEADER_BYTES;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < qdcount; i += 1) {
    const name = readName(bytes, offset);
    if (name.end + 4 > bytes.length) throw malformed("question cut short", { offset: name.end });
    questions.push({
      name: labelsText(name.labels),
      type: view.getUint16(name.end),
      class: view.getUint16(name.end + 2),
    });
    offset = name.end + 4;
  }
  const readRecords = (count: number): DnsRecord[] => {
    const records: DnsRecord[] = [];
    for (let i = 0; i < count; i += 1) {
      const name = readName(bytes, offset);
      const fixed = name.end;
      if (fixed + 10 > bytes.length) throw malformed("record header cut short", { offset: fixed });
      const type = view.getUint16(fixed);
      const rdlength = view.getUint16(fixed + 8);
      const rdataStart = fixed + 10;
      const rdataEnd = rdataStart + rdlength;
      if (rdataEnd > bytes.length) throw malformed("RDATA cut short", { offset: rdataStart });
      let data: Uint8Array;
      if (holdsOneName(type)) {
        const target = readName(bytes, rdataStart);
        if (target.end !== rdataEnd)
          throw malformed("the name does not fill the RDATA", { offset: rdataStart });
        data = labelsWire(target.labels);
      } else {
        data = expandedData(bytes, type, rdataStart, rdataEnd) ?? bytes.slice(rdataStart, rdataEnd);
      }
      records.push({
        name: labelsText(name.labels),
        type,
        class: view.getUint16(fixed + 2),
        ttl: view.getUint32(fixed + 4),
        data,
      });
      offset = rdataEnd;
    }
    return records;
  };
  const answers = readRecords(ancount);
  const authorities = readRecords(nscount);
  const additionals = readRecords(arcount);
  return {
    id: view.getUint16(0),
    response: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    authoritative: (flags & 0x0400) !== 0,
    truncated: (flags & 0x0200) !== 0,
    recursionDesired: (flags & 0x0100) !== 0,
    recursionAvailable: (flags & 0x0080) !== 0,
    authenticData: (flags & 0x0020) !== 0,
    checkingDisabled: (flags & 0x0010) !== 0,
    rcode: flags & 0xf,
    questions,
    answers,
    authorities,
    additionals,
  };
}

function invalid(why: string): DnsError {
  return new DnsError("ERR_DNS_INVALID_ARGUMENT", `cannot encode DNS message: ${why}`);
}

function checkUint(value: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max)
    throw invalid(`${what} ${value} is not an integer in 0..${max}`);
  return value;
}

/** A growing byte buffer with name compression against what it already holds. */
class Writer {
  private bytes = new Uint8Array(512);
  length = 0;
  // Suffixes already written, by their uncompressed wire bytes (exact case: "Web" and "web" stay apart,
  // so a decoded name keeps the case it was given).
  private readonly suffixes = new Map<string, number>();

  private reserve(extra: number): void {
    if (this.length + extra <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  u8(value: number): void {
    this.reserve(1);
    this.bytes[this.length] = value;
    this.length += 1;
  }

  u16(value: number): void {
    this.reserve(2);
    this.bytes[this.length] = value >>> 8;
    this.bytes[this.length + 1] = value & 0xff;
    this.length += 2;
  }

  u32(value: number): void {
    this.u16(Math.floor(value / 0x10000));
    this.u16(value % 0x10000);
  }

  raw(data: Uint8Array): void {
    this.reserve(data.length);
    this.bytes.set(data, this.length);
    this.length += data.length;
  }

  name(labels: Labels): void {
    const keys: string[] = [];
    let key = "";
    for (let i = labels.length - 1; i >= 0; i -= 1) {
      const label = labels[i] as Uint8Array;
      key = String.fromCharCode(label.length, ...label) + key;
      keys[i] = key;
    }
    for (let i = 0; i < labels.length; i += 1) {
      const known = this.suffixes.get(keys[i] as string);
      if (known !== undefined) {
        this.u16(0xc000 | known);
        return;
      }
      // Pointers hold 14 bits: later suffixes cannot be pointed at.
      if (this.length < 0x4000) this.suffixes.set(keys[i] as string, this.length);
      const label = labels[i] as Uint8Array;
      this.u8(label.length);
      this.raw(label);
    }
    this.u8(0);
  }

  result(): Uint8Array {
    return this.bytes.slice(0, this.length);
  }
}

function checkRecordData(record: DnsRecord): void {
  if (!(record.data instanceof Uint8Array)) throw invalid(`the data of ${record.name} is not bytes`);
  checkUint(record.data.length, 0xffff, "RDATA length");
  if (!holdsOneName(record.type)) return;
  // One uncompressed name filling the RDATA: a pointer could not point anywhere valid from here.
  let end = -1;
  try {
    end = readName(record.data, 0).end;
  } catch {
    // reported below
  }
  if (end !== record.data.length)
    throw invalid(`the data of a type ${record.type} record must be one uncompressed name`);
}

/**
 * Encodes a DNS message. Owner and question names are compressed against names already written;
 * RDATA is written as is. Throws {@link DnsError} `ERR_DNS_INVALID_ARGUMENT` on a name that cannot be
 * encoded, a value out of range, more than 65535 entries in a section, or a CNAME/NS/PTR record whose
 * data is not one uncompressed name.
 */
export function encodeMessage(message: DnsMessage): Uint8Array {
  const w = new Writer();
  w.u16(checkUint(message.id, 0xffff, "id"));
  const flags =
    (message.response ? 0x8000 : 0) |
    (checkUint(message.opcode, 15, "opcode") << 11) |
    (message.authoritative ? 0x0400 : 0) |
    (message.truncated ? 0x0200 : 0) |
    (message.recursionDesired ? 0x0100 : 0) |
    (message.recursionAvailable ? 0x0080 : 0) |
    (message.authenticData ? 0x0020 : 0) |
    (message.checkingDisabled ? 0x0010 : 0) |
    checkUint(message.rcode, 15, "rcode");
  w.u16(flags);
  const sections = [message.questions, message.answers, message.authorities, message.additionals];
  for (const section of sections) w.u16(checkUint(section.length, 0xffff, "section count"));
  for (const question of message.questions) {
    w.name(parseName(question.name));
    w.u16(checkUint(question.type, 0xffff, "type"));
    w.u16(checkUint(question.class, 0xffff, "class"));
  }
  for (const records of sections.slice(1) as (readonly DnsRecord[])[]) {
    for (const record of records) {
      checkRecordData(record);
      w.name(parseName(record.name));
      w.u16(checkUint(record.type, 0xffff, "type"));
      w.u16(checkUint(record.class, 0xffff, "class"));
      w.u32(checkUint(record.ttl, 0xffffffff, "ttl"));
      w.u16(record.data.length);
      w.raw(record.data);
    }
  }
  return w.result();
}

/** Encodes just one question the way it would follow a header (uncompressed: it is the first name). */
export function encodeQuestion(question: DnsQuestion): Uint8Array {
  const w = new Writer();
  w.name(parseName(question.name));
  w.u16(checkUint(question.type, 0xffff, "type"));
  w.u16(checkUint(question.class, 0xffff, "class"));
  return w.result();
}
