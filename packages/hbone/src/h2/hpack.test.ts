// HPACK checked against an independent implementation: the hpack package of Debian's python3-h2.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { encodeHeaders, HpackDecoder, HpackError } from "./hpack.js";
import { huffmanDecode } from "./huffman.js";

const PYTHON = "/usr/bin/python3";
const codec = join(fileURLToPath(new URL(".", import.meta.url)), "../../test/interop/hpack_codec.py");

function python(request: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = execFile(PYTHON, [codec], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`hpack_codec.py failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as Record<string, unknown>);
    });
    child.stdin?.end(JSON.stringify(request));
  });
}

type Fields = [string, string][];

const BLOCKS: Fields[] = [
  [
    [":method", "CONNECT"],
    [":authority", "10.0.0.1:15008"],
    ["forwarded", 'for="10.0.0.9:41234"'],
    ["baggage", "k8s.namespace.name=default,k8s.pod.name=curl-5f9"],
    ["traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
  ],
  // The same fields again: a second request comes out as table references.
  [
    [":method", "CONNECT"],
    [":authority", "10.0.0.1:15008"],
    ["forwarded", 'for="10.0.0.9:41234"'],
    ["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
  ],
  [
    [":status", "200"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
    ["x-empty", ""],
    ["x-latin1", "caf\u00e9 \u00ff"],
  ],
  // Enough distinct fields to push the first ones out of a 4 KiB table.
  Array.from({ length: 60 }, (_, i): [string, string] => [`x-field-${i}`, "v".repeat(60 + i)]),
  [
    [":method", "CONNECT"],
    [":authority", "[fd00::1]:15008"],
  ],
];

describe("HPACK", () => {
  it("decodes what python's hpack encodes, Huffman and plain, across a shared dynamic table", async () => {
    for (const huffman of [true, false]) {
      const { blocks } = (await python({ op: "encode", blocks: BLOCKS, huffman })) as { blocks: string[] };
      const decoder = new HpackDecoder();
      blocks.forEach((hex, i) => {
        assert.deepEqual(
          decoder.decode(Buffer.from(hex, "hex")).fields,
          BLOCKS[i],
          `block ${i}, huffman ${huffman}`,
        );
      });
    }
  });

  it("follows a dynamic table size update to a smaller table", async () => {
    const { blocks } = (await python({ op: "encode", blocks: BLOCKS, table_size: 256 })) as {
      blocks: string[];
    };
    const decoder = new HpackDecoder();
    blocks.forEach((hex, i) => {
      assert.deepEqual(decoder.decode(Buffer.from(hex, "hex")).fields, BLOCKS[i]);
    });
  });

  it("encodes blocks python's hpack decodes, with sensitive fields never indexed", async () => {
    const encoded = BLOCKS.map((b) => encodeHeaders(b, new Set(["forwarded"])).toString("hex"));
    const { blocks } = (await python({ op: "decode", blocks: encoded })) as { blocks: Fields[] };
    assert.deepEqual(blocks, BLOCKS);
    // ":status: 200" is static entry 8: one octet.
    assert.deepEqual([...encodeHeaders([[":status", "200"]])], [0x88]);
    // "forwarded" sent never-indexed (0001xxxx), with a literal name.
    assert.equal((encodeHeaders([["forwarded", "x"]], new Set(["forwarded"]))[0] as number) & 0xf0, 0x10);
  });

  it("decodes the Huffman code of every octet (canonical code built from the lengths)", async () => {
    const strings = [Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.from("www.example.com")];
    for (let i = 0; i < 64; i++) strings.push(Buffer.from([i * 4, 255 - i, i, (i * 7) & 0xff]));
    const { encoded } = (await python({ op: "huffman", strings: strings.map((s) => s.toString("hex")) })) as {
      encoded: string[];
    };
    encoded.forEach((hex, i) => {
      assert.equal(huffmanDecode(Buffer.from(hex, "hex")), (strings[i] as Buffer).toString("latin1"));
    });
  });

  it("rejects bad Huffman padding and the EOS symbol", () => {
    // "a" is 00011 (5 bits); padding must be all ones and at most 7 bits.
    assert.equal(huffmanDecode(Buffer.from([0b00011111])), "a");
    assert.equal(huffmanDecode(Buffer.from([0b00011000])), undefined, "zero padding");
    assert.equal(huffmanDecode(Buffer.from([0b00011111, 0xff])), undefined, "padding over 7 bits");
    assert.equal(huffmanDecode(Buffer.from([0xff, 0xff, 0xff, 0xff])), undefined, "EOS");
  });

  it("rejects malformed blocks with HpackError", () => {
    const bad: [string, number[]][] = [
      ["index 0", [0x80]],
      ["index beyond the tables", [0xbf]],
      ["truncated integer", [0x7f]],
      ["integer too large", [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]],
      ["string past the end", [0x00, 0x05, 0x61]],
      ["table size above the limit", [0x3f, 0xe2, 0x1f]],
      ["table size update after a field", [0x82, 0x20]],
      ["bad Huffman string", [0x00, 0x81, 0x00, 0x00]],
    ];
    for (const [what, bytes] of bad) {
      assert.throws(() => new HpackDecoder().decode(Buffer.from(bytes)), HpackError, what);
    }
  });

  it("keeps its dynamic table in step through insertions, evictions, size updates and references", () => {
    // A plain model of the table (newest first, RFC 7541 section 4) drives blocks that reference
    // every entry it holds; the decoder must see the same entries at the same indexes.
    const integer = (out: number[], value: number, prefixBits: number, first: number) => {
      const mask = (1 << prefixBits) - 1;
      if (value < mask) {
        out.push(first | value);
        return;
      }
      out.push(first | mask);
      let rest = value - mask;
      for (; rest >= 0x80; rest = Math.floor(rest / 0x80)) out.push((rest % 0x80) | 0x80);
      out.push(rest);
    };
    const literal = (out: number[], text: string) => {
      integer(out, text.length, 7, 0);
      for (let i = 0; i < text.length; i++) out.push(text.charCodeAt(i));
    };
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const model: [string, string][] = [];
    let maxSize = 4096;
    const sizeOf = ([n, v]: [string, string]) => n.length + v.length + 32;
    const used = () => model.reduce((sum, e) => sum + sizeOf(e), 0);
    const insert = (entry: [string, string]) => {
      while (model.length > 0 && used() + sizeOf(entry) > maxSize) model.pop();
      if (sizeOf(entry) <= maxSize) model.unshift(entry);
    };
    const decoder = new HpackDecoder();
    let inserted = 0;
    for (let blockNo = 0; blockNo < 400; blockNo++) {
      const out: number[] = [];
      const expected: [string, string][] = [];
      if (random(10) === 0) {
        // Shrink (to nothing, at times) or grow back, within the 4096 advertised.
        maxSize = random(3) === 0 ? 0 : random(4097);
        integer(out, maxSize, 5, 0x20);
        while (used() > maxSize) model.pop();
      }
      for (let f = 0; f < 8; f++) {
        const kind = random(model.length > 0 ? 5 : 2);
        if (kind === 0) {
          // New name, value of 0-120 octets; now and then one larger than the whole table.
          const entry: [string, string] = [
            `x-${inserted++}`,
            random(40) === 0 ? "v".repeat(maxSize) : "v".repeat(random(121)),
          ];
          out.push(0x40);
          literal(out, entry[0]);
          literal(out, entry[1]);
          expected.push(entry);
          insert(entry);
        } else if (kind === 1) {
          // A static name.
          const entry: [string, string] = [":authority", `10.0.0.${random(256)}:${inserted++}`];
          integer(out, 1, 6, 0x40);
          literal(out, entry[1]);
          expected.push(entry);
          insert(entry);
        } else if (kind === 2) {
          // The name of a dynamic entry, which the insertion may then evict.
          const age = random(model.length);
          const entry: [string, string] = [(model[age] as [string, string])[0], `n${inserted++}`];
          integer(out, 62 + age, 6, 0x40);
          literal(out, entry[1]);
          expected.push(entry);
          insert(entry);
        } else {
          // An indexed dynamic entry: newest, oldest or any.
          const age = kind === 3 ? random(model.length) : random(2) * (model.length - 1);
          integer(out, 62 + age, 7, 0x80);
          expected.push([...(model[age] as [string, string])]);
        }
      }
      assert.deepEqual(decoder.decode(Buffer.from(out)).fields, expected, `block ${blockNo}`);
      // One past the oldest entry is out of the table.
      const beyond: number[] = [];
      integer(beyond, 62 + model.length, 7, 0x80);
      assert.throws(() => decoder.decode(Buffer.from(beyond)), HpackError, `block ${blockNo}`);
    }
    assert.ok(inserted > 2000);
  });

  it("reports the header list size and drops fields beyond the limit", () => {
    const block = encodeHeaders([
      ["a", "1"],
      ["b", "x".repeat(100)],
    ]);
    const full = new HpackDecoder().decode(block);
    assert.equal(full.listSize, 1 + 1 + 32 + 1 + 100 + 32);
    const limited = new HpackDecoder().decode(block, 50);
    assert.deepEqual(limited.fields, [["a", "1"]]);
    assert.equal(limited.listSize, full.listSize);
  });
});
