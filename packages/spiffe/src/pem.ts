import { SpiffeError } from "./errors.js";

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/=\s]*$/;

/** One decoded PEM block. */
export interface PemBlock {
  label: string;
  der: Buffer;
}

/** Decodes every PEM block in `text`; throws ERR_PEM_INVALID on a malformed body. */
export function decodePem(text: string): PemBlock[] {
  if (typeof text !== "string") throw new SpiffeError("ERR_PEM_INVALID", "PEM input must be a string");
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    const label = m[1] as string;
    const body = m[2] as string;
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
