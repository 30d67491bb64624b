import { randomFillSync } from "node:crypto";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

let pool = Buffer.alloc(0);
let offset = 0;

function randomHex(bytes: number): string {
  if (offset + bytes > pool.length) {
    pool = randomFillSync(Buffer.alloc(4096));
    offset = 0;
  }
  const hex = pool.toString("hex", offset, offset + bytes);
  offset += bytes;
  return hex;
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
  const spanId = randomHex(8);
  if (
    m !== null &&
    m[1] !== "ff" &&
    m[2] !== ZERO_TRACE &&
    m[3] !== ZERO_SPAN &&
    (m[1] !== "00" || value?.length === 55)
  ) {
    const traceId = m[2] as string;
    const flags = m[4] as string;
    return { traceId, spanId, parentSpanId: m[3], flags, traceparent: `00-${traceId}-${spanId}-${flags}` };
  }
  const traceId = randomHex(16);
  const flags = sampleNew ? "01" : "00";
  return { traceId, spanId, parentSpanId: undefined, flags, traceparent: `00-${traceId}-${spanId}-${flags}` };
}
