import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { answerForClient, cnameChain, isAboutQuestion } from "./client-answer.js";
import {
  addressRecord,
  cnameRecord,
  type DnsRecord,
  decodeMessage,
  encodeMessage,
  queryMessage,
  RecordType,
  replyTo,
} from "./index.js";
import { labelsWire, parseName } from "./name.js";

function record(name: string, type: number): DnsRecord {
  return { name, type, class: 1, ttl: 5, data: new Uint8Array(4) };
}

describe("the client's answer", () => {
  it("follows CNAME records from the question's name in any order and case", () => {
    const answers = [
      cnameRecord("B.test", "c.test", 5),
      cnameRecord("a.test", "b.test", 5),
      cnameRecord("elsewhere.test", "a.test", 5),
      cnameRecord("C.TEST", "a.test", 5), // a loop ends the chain
    ];
    assert.deepEqual([...cnameChain("A.Test", answers)].sort(), ["a.test", "b.test", "c.test"]);
  });

  it("keeps records on the chain and DNAMEs above it, nothing else", () => {
    const chain = cnameChain("www.a.test", [cnameRecord("www.a.test", "www.b.test", 5)]);
    const table: [DnsRecord, boolean][] = [
      [record("WWW.A.test", RecordType.A), true],
      [record("www.b.test", RecordType.AAAA), true],
      [record("b.test", 39), true], // DNAME owned by an ancestor
      [record("b.test", 46), true], // its signature
      [record("", 39), true], // at the root, above everything
      [record("b.test", RecordType.A), false], // an ancestor's address is not asked for
      [record("x.www.b.test", 39), false], // below the chain, not above
      [record("bank.test", RecordType.A), false],
      [record("www.b.test.evil", RecordType.A), false],
    ];
    for (const [r, kept] of table) assert.equal(isAboutQuestion(r, chain), kept, `${r.name} type ${r.type}`);
  });

  it("keeps the upstream's bytes when nothing changes", () => {
    const query = queryMessage("a.test", RecordType.A, { id: 1 });
    const bytes = encodeMessage(replyTo(query, { answers: [addressRecord("a.test", "192.0.2.1", 5)] }));
    const made = answerForClient(bytes, decodeMessage(bytes), query.questions[0]!);
    assert.equal(made.bytes, bytes);
    assert.equal(made.dropped, 0);
  });

  it("re-spells names in place, owners written out or pointed at, keeping compression", () => {
    const query = queryMessage("wWw.ExAmple.TEST", RecordType.A, { id: 1 });
    const lowered = queryMessage("www.example.test", RecordType.A, { id: 1 });
    const bytes = encodeMessage(
      replyTo(lowered, {
        answers: [
          addressRecord("www.example.test", "192.0.2.1", 5),
          addressRecord("WWW.EXAMPLE.TEST", "192.0.2.2", 5),
        ],
      }),
    );
    const made = answerForClient(bytes, decodeMessage(bytes), query.questions[0]!);
    assert.equal(made.bytes.length, bytes.length);
    const reply = decodeMessage(made.bytes);
    assert.deepEqual(
      [reply.questions[0]?.name, ...reply.answers.map((r) => r.name)],
      ["wWw.ExAmple.TEST", "wWw.ExAmple.TEST", "wWw.ExAmple.TEST"],
    );
    // The question's wire bytes are exactly the client's.
    assert.deepEqual(made.bytes.subarray(12, 12 + 18), labelsWire(parseName("wWw.ExAmple.TEST")));
  });
});
