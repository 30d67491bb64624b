// The reply a forwarder hands its client, made from the upstream's answer to the same question. Two
// things change on the way: the question (and answer owner names equal to it) go back in the client's
// exact spelling, since resolvers that randomize case (DNS 0x20) compare it byte for byte; and answer
// records about names the client did not ask for, nor reached through a CNAME, are dropped, as
// resolvers do before they believe or cache anything (a defence against cache poisoning).
import type { DnsMessage, DnsQuestion, DnsRecord } from "./message.js";
import { encodeMessage, HEADER_BYTES } from "./message.js";
import { type Labels, labelsWire, labelText, parseName, readName } from "./name.js";
import { recordTarget } from "./records.js";

const CNAME = 5;
const DNAME = 39;
const RRSIG = 46;

/** A name's labels as lowercase text, for comparing names the way DNS does. */
function labelKeys(name: string): string[] {
  return parseName(name.toLowerCase()).map(labelText);
}

/** Whether `name` is `ancestor` or below it (both as {@link labelKeys}). */
function isAtOrBelow(name: readonly string[], ancestor: readonly string[]): boolean {
  if (ancestor.length > name.length) return false;
  const offset = name.length - ancestor.length;
  return ancestor.every((label, i) => name[offset + i] === label);
}

/** The names (lowercase) the question's name leads to through the CNAME records of `answers`, itself included. */
export function cnameChain(qname: string, answers: readonly DnsRecord[]): Set<string> {
  const chain = new Set([qname.toLowerCase()]);
  // Order-free: a pass that adds nothing ends it, and each pass adds a name or stops.
  for (let grew = true; grew; ) {
    grew = false;
    for (const record of answers) {
      if (record.type !== CNAME || !chain.has(record.name.toLowerCase())) continue;
      const target = recordTarget(record)?.toLowerCase();
      if (target !== undefined && !chain.has(target)) {
        chain.add(target);
        grew = true;
      }
    }
  }
  return chain;
}

/**
 * Whether an answer record is about the question: its owner is on the CNAME chain, or it is a DNAME
 * (or a signature over one) owned by an ancestor of a name on the chain, which is how a DNAME answers.
 */
export function isAboutQuestion(record: DnsRecord, chain: ReadonlySet<string>): boolean {
  const owner = record.name.toLowerCase();
  if (chain.has(owner)) return true;
  if (record.type !== DNAME && record.type !== RRSIG) return false;
  const ancestor = labelKeys(owner);
  for (const name of chain) if (isAtOrBelow(labelKeys(name), ancestor)) return true;
  return false;
}

/**
 * Offsets of the label bytes of the name at `offset` (following pointers), if its labels have exactly
 * the lengths of `labels`; undefined otherwise.
 */
function labelPositions(bytes: Uint8Array, offset: number, labels: Labels): number[] | undefined {
  const positions: number[] = [];
  let position = offset;
  for (let hops = 0; hops <= 127; ) {
    const length = bytes[position];
    if (length === undefined) return undefined;
    if (length === 0) return positions.length === labels.length ? positions : undefined;
    if ((length & 0xc0) === 0xc0) {
      position = ((length & 0x3f) << 8) | (bytes[position + 1] as number);
      hops += 1;
      continue;
    }
    if (labels[positions.length]?.length !== length) return undefined;
    positions.push(position + 1);
    position += length + 1;
  }
  return undefined;
}

/** Writes `labels` over the name at `offset`, which has their lengths; false (nothing written) if not. */
function respell(bytes: Uint8Array, offset: number, labels: Labels): boolean {
  const positions = labelPositions(bytes, offset, labels);
  if (positions === undefined) return false;
  positions.forEach((position, i) => {
    bytes.set(labels[i] as Uint8Array, position);
  });
  return true;
}

/**
 * `bytes` with the question and the answer owner names equal to it spelled as `question.name`, case
 * being all that differs (the caller checked the names match). Names written once and pointed at
 * change everywhere they are used, which changes no name but its case. Undefined when the bytes are
 * not laid out as expected (then the caller encodes the message afresh).
 */
function respelled(bytes: Uint8Array, answers: number, question: DnsQuestion): Uint8Array | undefined {
  const labels = parseName(question.name);
  const wire = labelsWire(labels);
  const out = Uint8Array.from(bytes);
  try {
    if (readName(out, HEADER_BYTES).end !== HEADER_BYTES + wire.length) return undefined;
    out.set(wire, HEADER_BYTES);
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    let offset = HEADER_BYTES + wire.length + 4;
    const asked = question.name.toLowerCase();
    for (let i = 0; i < answers; i += 1) {
      const owner = readName(out, offset);
      const text = owner.labels.map(labelText).join(".");
      if (text !== question.name && text.toLowerCase() === asked && !respell(out, offset, labels)) {
        return undefined;
      }
      offset = owner.end + 10 + view.getUint16(owner.end + 8);
    }
  } catch {
    return undefined;
  }
  return out;
}

/** What {@link answerForClient} made of an upstream answer. */
export interface ClientAnswer {
  readonly bytes: Uint8Array;
  /** Answer records dropped as not about the question. */
  readonly dropped: number;
}

/**
 * The reply for the client from the upstream's `bytes` (decoded as `message`, already checked to have
 * the one question `question` asks, names compared without case): the question and the answer owner
 * names equal to it in the client's spelling, and only the answer records {@link isAboutQuestion}.
 * When every record stays, the upstream's bytes are kept and only re-spelled; else the message is
 * encoded afresh (the decoder expanded the names in RDATA, so no compression pointer dangles).
 */
export function answerForClient(bytes: Uint8Array, message: DnsMessage, question: DnsQuestion): ClientAnswer {
  const chain = cnameChain(question.name, message.answers);
  const kept = message.answers.filter((record) => isAboutQuestion(record, chain));
  const asked = question.name.toLowerCase();
  const otherCase = (name: string): boolean => name !== question.name && name.toLowerCase() === asked;
  if (kept.length === message.answers.length) {
    const spelled =
      message.questions[0]?.name === question.name && !message.answers.some((r) => otherCase(r.name));
    if (spelled) return { bytes, dropped: 0 };
    const out = respelled(bytes, message.answers.length, question);
    if (out !== undefined) return { bytes: out, dropped: 0 };
  }
  const answers = kept.map((record) =>
    otherCase(record.name) ? { ...record, name: question.name } : record,
  );
  return {
    bytes: encodeMessage({ ...message, questions: [question], answers }),
    dropped: message.answers.length - kept.length,
  };
}
