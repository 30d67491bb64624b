// Properties of the codec over generated messages and arbitrary bytes (fast-check).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  DnsError,
  type DnsMessage,
  type DnsRecord,
  decodeMessage,
  encodeMessage,
  RecordType,
} from "./index.js";
import { labelsText, labelsWire, parseName } from "./name.js";

// Labels from a small alphabet (so names share suffixes and compression is used) or any bytes.
const label = fc.oneof(
  fc
    .constantFrom("a", "b", "Web", "svc", "cluster", "local")
    .map((text) => Uint8Array.from(Buffer.from(text))),
  fc.uint8Array({ minLength: 1, maxLength: 63 }),
);
const labels = fc
  .array(label, { maxLength: 6 })
  .filter((list) => list.reduce((sum, l) => sum + l.length + 1, 1) <= 255);
const name = labels.map(labelsText);
// Decoded objects have Object.prototype; generated ones must too for deepEqual.
const plain = { noNullPrototype: true } as const;
const u16 = fc.integer({ min: 0, max: 0xffff });
// MD, MF, SOA, MB, MG, MR, MINFO, MX, RP, AFSDB, RT, PX, SRV.
const MAY_HOLD_NAMES = new Set([3, 4, 6, 7, 8, 9, 14, 15, 17, 18, 21, 26, 33]);

const record: fc.Arbitrary<DnsRecord> = fc
  .record(
    {
      name,
      type: fc.oneof(fc.constantFrom(1, 2, 5, 6, 12, 15, 16, 28, 33, 41), u16),
      class: u16,
      ttl: fc.integer({ min: 0, max: 0xffffffff }),
      target: labels,
      bytes: fc.uint8Array({ maxLength: 40 }),
    },
    plain,
  )
  .map(({ target, bytes, ...rest }) => {
    const holdsName =
      rest.type === RecordType.CNAME || rest.type === RecordType.NS || rest.type === RecordType.PTR;
    if (holdsName) return { ...rest, data: labelsWire(target) };
    // The decoder expands compressed names in these types' data: keep random bytes free of pointers
    // (0xc0 and up), which it would rightly expand into other bytes.
    if (MAY_HOLD_NAMES.has(rest.type)) return { ...rest, data: bytes.map((b) => b & 0xbf) };
    return { ...rest, data: bytes };
  });

const message: fc.Arbitrary<DnsMessage> = fc.record(
  {
    id: u16,
    response: fc.boolean(),
    opcode: fc.integer({ min: 0, max: 15 }),
    authoritative: fc.boolean(),
    truncated: fc.boolean(),
    recursionDesired: fc.boolean(),
    recursionAvailable: fc.boolean(),
    authenticData: fc.boolean(),
    checkingDisabled: fc.boolean(),
    rcode: fc.integer({ min: 0, max: 15 }),
    questions: fc.array(fc.record({ name, type: u16, class: u16 }, plain), { maxLength: 3 }),
    answers: fc.array(record, { maxLength: 5 }),
    authorities: fc.array(record, { maxLength: 3 }),
    additionals: fc.array(record, { maxLength: 3 }),
  },
  plain,
);

/** Decodes, and fails the property on any error other than a DnsError. */
function decodeOrDnsError(bytes: Uint8Array): DnsMessage | undefined {
  try {
    return decodeMessage(bytes);
  } catch (err) {
    if (err instanceof DnsError && err.code === "ERR_DNS_MALFORMED") return undefined;
    throw err;
  }
}

describe("codec properties", () => {
  it("presentation text of labels parses back to the same labels", () => {
    fc.assert(
      fc.property(labels, (list) => {
        assert.deepEqual(parseName(labelsText(list)), list);
      }),
      { numRuns: 500 },
    );
  });

  it("decode(encode(m)) equals m", () => {
    fc.assert(
      fc.property(message, (m) => {
        assert.deepEqual(decodeMessage(encodeMessage(m)), m);
      }),
      { numRuns: 500 },
    );
  });

  it("decoding arbitrary bytes returns a message or throws ERR_DNS_MALFORMED, nothing else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        decodeOrDnsError(bytes);
      }),
      { numRuns: 2000 },
    );
  });

  it("a corrupted message decodes or fails cleanly, and whatever decodes encodes again to the same message", () => {
    const corrupted = fc
      .tuple(
        message,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
      )
      .map(([m, edits]) => {
        const bytes = encodeMessage(m);
        for (const [at, value] of edits) if (bytes.length > 0) bytes[at % bytes.length] = value;
        return bytes;
      });
    fc.assert(
      fc.property(fc.oneof(corrupted, fc.uint8Array({ minLength: 12, maxLength: 300 })), (bytes) => {
        const decoded = decodeOrDnsError(bytes);
        if (decoded !== undefined) assert.deepEqual(decodeMessage(encodeMessage(decoded)), decoded);
      }),
      { numRuns: 2000 },
    );
  });
});
