import { huffmanDecode } from "./huffman.js";

// HPACK (RFC 7541) for HBONE's header blocks. The encoder never adds to the peer's dynamic table (a
// tunnel sends one small header block), so it needs no table state; the decoder implements all of it.

/** The static table (RFC 7541, Appendix A); index 1 is the first entry. */
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/** First static index of each name, for the encoder's "indexed name" form. */
const STATIC_NAME_INDEX = new Map<string, number>();
STATIC_TABLE.forEach(([name], i) => {
  if (!STATIC_NAME_INDEX.has(name)) STATIC_NAME_INDEX.set(name, i + 1);
});

/** Per-entry overhead HPACK adds to name and value lengths, for table and header list sizes. */
const ENTRY_OVERHEAD = 32;

/** A header block that cannot be decoded: a connection error (COMPRESSION_ERROR). */
export class HpackError extends Error {
  override name = "HpackError";
}

/** A decoded header block, in wire order. `listSize` is its size as HTTP/2 counts it. */
export interface DecodedHeaders {
  fields: [string, string][];
  listSize: number;
}

/** HPACK decoder with its dynamic table. One per connection direction. */
export class HpackDecoder {
  /**
   * The dynamic table as a ring: the newest entry at `#newest`, older ones after it (wrapping), so
   * an insertion or an eviction moves no other entry. Grows by doubling; holds at most one entry per
   * {@link ENTRY_OVERHEAD} octets of the table size.
   */
  #ring: ([string, string] | undefined)[] = new Array(16);
  #newest = 0;
  #count = 0;
  #size = 0;
  #maxSize: number;
  #limit: number;

  /** `maxTableSize` is the SETTINGS_HEADER_TABLE_SIZE this side advertised (default 4096). */
  constructor(maxTableSize = 4096) {
    this.#maxSize = maxTableSize;
    this.#limit = maxTableSize;
  }

  /**
   * Decodes one complete header block. Field values are kept as Latin-1 strings (HTTP/2 fields are
   * octets). Fields beyond `maxListSize` are still decoded (the table must stay in step) but not
   * returned; `listSize` then tells the caller the list was too large.
   */
  decode(block: Uint8Array, maxListSize = Number.POSITIVE_INFINITY): DecodedHeaders {
    const fields: [string, string][] = [];
    let listSize = 0;
    let pos = 0;
    let sawField = false;
    const emit = (name: string, value: string) => {
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize <= maxListSize) fields.push([name, value]);
    };
    const integer = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let value = (block[pos++] as number) & mask;
      if (value < mask) return value;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError("truncated integer");
        const b = block[pos++] as number;
        value += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if ((b & 0x80) === 0) break;
        if (shift > 28) throw new HpackError("integer too large");
      }
      return value;
    };
    const string = (): string => {
      if (pos >= block.length) throw new HpackError("truncated string");
      const huffman = ((block[pos] as number) & 0x80) !== 0;
      const length = integer(7);
      if (pos + length > block.length) throw new HpackError("string longer than the header block");
      const raw = block.subarray(pos, pos + length);
      pos += length;
      if (!huffman) return Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString("latin1");
      const text = huffmanDecode(raw);
      if (text === undefined) throw new HpackError("invalid Huffman code");
      return text;
    };
    const nameAt = (index: number): string => this.#entry(index)[0];
    while (pos < block.length) {
      const b = block[pos] as number;
      if (b & 0x80) {
        // Indexed field.
        const index = integer(7);
        if (index === 0) throw new HpackError("index 0");
        const [name, value] = this.#entry(index);
        emit(name, value);
        sawField = true;
      } else if (b & 0x40) {
        // Literal with incremental indexing.
        const index = integer(6);
        const name = index === 0 ? string() : nameAt(index);
        const value = string();
        this.#insert(name, value);
        emit(name, value);
        sawField = true;
      } else if (b & 0x20) {
        // Dynamic table size update: only at the start of a block, within the advertised limit.
        if (sawField) throw new HpackError("table size update after a header field");
        const size = integer(5);
        if (size > this.#limit) throw new HpackError(`table size ${size} above the limit ${this.#limit}`);
        this.#maxSize = size;
        this.#evict(0);
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const index = integer(4);
        const name = index === 0 ? string() : nameAt(index);
        emit(name, string());
        sawField = true;
      }
    }
    return { fields, listSize };
  }

  #entry(index: number): readonly [string, string] {
    if (index >= 1 && index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1] as [string, string];
    // Dynamic index 62 is the newest entry (RFC 7541, 2.3.3).
    const age = index - STATIC_TABLE.length - 1;
    if (age < 0 || age >= this.#count) throw new HpackError(`index ${index} is not in the table`);
    const ring = this.#ring;
    return ring[(this.#newest + age) % ring.length] as [string, string];
  }

  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    this.#evict(size);
    if (size > this.#maxSize) return; // too large: the table is now empty (RFC 7541, 4.4)
    if (this.#count === this.#ring.length) this.#grow();
    const ring = this.#ring;
    this.#newest = (this.#newest + ring.length - 1) % ring.length;
    ring[this.#newest] = [name, value];
    this.#count++;
    this.#size += size;
  }

  /** Doubles the ring, the newest entry first. */
  #grow(): void {
    const old = this.#ring;
    const ring: ([string, string] | undefined)[] = new Array(old.length * 2);
    for (let age = 0; age < this.#count; age++) ring[age] = old[(this.#newest + age) % old.length];
    this.#ring = ring;
    this.#newest = 0;
  }

  #evict(room: number): void {
    const ring = this.#ring;
    while (this.#size + room > this.#maxSize && this.#count > 0) {
      const oldest = (this.#newest + this.#count - 1) % ring.length;
      const [name, value] = ring[oldest] as [string, string];
      ring[oldest] = undefined;
      this.#count--;
      this.#size -= name.length + value.length + ENTRY_OVERHEAD;
    }
  }
}

function pushInteger(out: number[], value: number, prefixBits: number, firstByte: number): void {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) {
    out.push(firstByte | value);
    return;
  }
  out.push(firstByte | mask);
  let rest = value - mask;
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
}

function pushString(out: number[], text: string): void {
  pushInteger(out, text.length, 7, 0);
  for (let i = 0; i < text.length; i++) out.push(text.charCodeAt(i) & 0xff);
}

/**
 * Encodes a header list. Fields that exactly match a static entry are indexed; the others are
 * "literal without indexing" (with the static name index when there is one), plain (not Huffman)
 * strings. `sensitive` names are sent "never indexed", so no intermediary may compress them.
 */
export function encodeHeaders(
  fields: readonly (readonly [string, string])[],
  sensitive: ReadonlySet<string> = new Set(),
): Buffer {
  const out: number[] = [];
  for (const [name, value] of fields) {
    const nameIndex = STATIC_NAME_INDEX.get(name) ?? 0;
    if (nameIndex !== 0 && !sensitive.has(name)) {
      const exact = STATIC_TABLE.findIndex(([n, v], i) => i + 1 >= nameIndex && n === name && v === value);
      if (exact >= 0) {
        pushInteger(out, exact + 1, 7, 0x80);
        continue;
      }
    }
    pushInteger(out, nameIndex, 4, sensitive.has(name) ? 0x10 : 0x00);
    if (nameIndex === 0) pushString(out, name);
    pushString(out, value);
  }
  return Buffer.from(out);
}
