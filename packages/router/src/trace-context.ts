import { randomFillSync } from "node:crypto";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);
const HEX = Buffer.from("0123456789abcdef", "latin1");

let pool = Buffer.alloc(0);
let offset = 0;

/** `bytes` random bytes from a pooled buffer, refilled 16 KiB at a time. */
function randomBytesAt(bytes: number): number {
  if (offset + bytes > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(16384));
    offset = 0;
  }
  const at = offset;
  offset += bytes;
  return at;
}

// Identifiers are written as ASCII into this scratch buffer and read back as one flat string: joining
// many small strings would leave string ropes on every request for the garbage collector to copy.
const scratch = Buffer.alloc(64);

function writeHex(at: number, bytes: number, into: number): void {
  for (let i = 0; i < bytes; i++) {
    const b = pool[at + i] as number;
    scratch[into + 2 * i] = HEX[b >> 4] as number;
    scratch[into + 2 * i + 1] = HEX[b & 15] as number;
  }
}

/** A random UUID (version 4), as Envoy puts in `x-request-id`. */
export function requestId(): string {
  const at = randomBytesAt(16);
  pool[at + 6] = ((pool[at + 6] as number) & 0x0f) | 0x40;
  pool[at + 8] = ((pool[at + 8] as number) & 0x3f) | 0x80;
  writeHex(at, 4, 0);
  scratch[8] = 0x2d;
  writeHex(at + 4, 2, 9);
  scratch[13] = 0x2d;
  writeHex(at + 6, 2, 14);
  scratch[18] = 0x2d;
  writeHex(at + 8, 2, 19);
  scratch[23] = 0x2d;
  writeHex(at + 10, 6, 24);
  return scratch.toString("latin1", 0, 36);
}

/** W3C trace context of one proxied request. */
export interface TraceContext {
  traceId: string;
  /** The span id this proxy added; the upstream sees it as its parent. */
  spanId: string;
  /** The caller's span id, when the request carried a valid `traceparent`. */
  parentSpanId: string | undefined;
  flags: string;
  /** The `traceparent` value sent upstream. */
  traceparent: string;
}

/** Lays out `00-<trace id>-<span id>-<flags>` in the scratch buffer; the trace id is written by the caller. */
function traceparentWith(flags: string): TraceContext {
  scratch[0] = 0x30;
  scratch[1] = 0x30;
  scratch[2] = 0x2d;
  scratch[35] = 0x2d;
  writeHex(randomBytesAt(8), 8, 36);
  scratch[52] = 0x2d;
  scratch.write(flags, 53, 2, "latin1");
  const traceparent = scratch.toString("latin1", 0, 55);
  return {
    traceId: traceparent.slice(3, 35),
    spanId: traceparent.slice(36, 52),
    parentSpanId: undefined,
    flags,
    traceparent,
  };
}

/**
 * Continues the trace of an incoming `traceparent` (W3C Trace Context level 1) with a new span id,
 * or starts a new trace when the header is missing or invalid.
 */
export function continueTrace(
  incoming: string | readonly string[] | undefined,
  sampleNew: boolean,
): TraceContext {
  const value = typeof incoming === "string" ? incoming.trim().toLowerCase() : undefined;
  const m = value === undefined ? null : TRACEPARENT.exec(value);
  if (
    m !== null &&
    m[1] !== "ff" &&
    m[2] !== ZERO_TRACE &&
    m[3] !== ZERO_SPAN &&
    (m[1] !== "00" || value?.length === 55)
  ) {
    scratch.write(m[2] as string, 3, 32, "latin1");
    const trace = traceparentWith(m[4] as string);
    trace.parentSpanId = m[3];
    return trace;
  }
  writeHex(randomBytesAt(16), 16, 3);
  return traceparentWith(sampleNew ? "01" : "00");
}
