import { SpiffeError } from "./errors.js";

/**
 * A BEGIN or END line's marker. A label's characters exclude `-`, so attempts at two markers never
 * scan the same characters: one pass over the text, whatever it holds.
 */
const MARKER = /-----(BEGIN|END) ([A-Z0-9 ]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/=\s]*$/;

/** One decoded PEM block. */
export interface PemBlock {
  label: string;
  der: Buffer;
}

/**
 * Decodes every PEM block in `text`: each BEGIN line with the first END line of its label after it,
 * text outside blocks ignored; throws ERR_PEM_INVALID on a malformed body. Linear in the text's
 * length: BEGIN lines that no END line closes cost no rescan of the rest.
 */
export function decodePem(text: string): PemBlock[] {
  if (typeof text !== "string") throw new SpiffeError("ERR_PEM_INVALID", "PEM input must be a string");
  const begins: { label: string; start: number; end: number }[] = [];
  // Label -> where its END lines start and end, in order, and how many of them are behind us.
  const ends = new Map<string, { starts: number[]; stops: number[]; next: number }>();
  for (const m of text.matchAll(MARKER)) {
    const label = m[2] as string;
    const start = m.index;
    const end = start + m[0].length;
    if (m[1] === "BEGIN") begins.push({ label, start, end });
    else {
      let list = ends.get(label);
      if (list === undefined) {
        list = { starts: [], stops: [], next: 0 };
        ends.set(label, list);
      }
      list.starts.push(start);
      list.stops.push(end);
    }
  }
  const blocks: PemBlock[] = [];
  let consumed = 0;
  for (const begin of begins) {
    // A BEGIN line inside the block before it is that block's body.
    if (begin.start < consumed) continue;
    const list = ends.get(begin.label);
    if (list === undefined) continue;
    while (list.next < list.starts.length && (list.starts[list.next] as number) < begin.end) list.next++;
    if (list.next === list.starts.length) continue;
    const label = begin.label;
    const body = text.slice(begin.end, list.starts[list.next]);
    consumed = list.stops[list.next] as number;
    list.next++;
    if (!BASE64_BODY.test(body)) {
      throw new SpiffeError("ERR_PEM_INVALID", `PEM block "${label}" has a body that is not base64`);
    }
    // Node's base64 decoder skips whitespace, and BASE64_BODY let nothing else through.
    const der = Buffer.from(body, "base64");
    if (der.length === 0) throw new SpiffeError("ERR_PEM_INVALID", `PEM block "${label}" is empty`);
    blocks.push({ label, der });
  }
  return blocks;
}

/** Decodes the CERTIFICATE blocks of `text` (at least one) into DER. */
export function decodeCertificatesPem(text: string): Buffer[] {
  const certs = decodePem(text).filter((b) => b.label === "CERTIFICATE");
  if (certs.length === 0) throw new SpiffeError("ERR_PEM_INVALID", "no CERTIFICATE block found in PEM input");
  return certs.map((b) => b.der);
}

/** PEM-encodes DER with 64-column lines and a trailing newline. */
export function encodePem(label: string, der: Uint8Array | ArrayBuffer): string {
  const b64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString("base64");
  let body = "";
  for (let i = 0; i < b64.length; i += 64) body += `${b64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}
