// HTTP/2 wire constants (RFC 9113) used by the HBONE connection.

export const FRAME_DATA = 0x0;
export const FRAME_HEADERS = 0x1;
export const FRAME_PRIORITY = 0x2;
export const FRAME_RST_STREAM = 0x3;
export const FRAME_SETTINGS = 0x4;
export const FRAME_PUSH_PROMISE = 0x5;
export const FRAME_PING = 0x6;
export const FRAME_GOAWAY = 0x7;
export const FRAME_WINDOW_UPDATE = 0x8;
export const FRAME_CONTINUATION = 0x9;

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

/** HTTP/2 error codes (RFC 9113, section 7). */
export const H2_ERROR = Object.freeze({
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
});

export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
export const SETTINGS_ENABLE_PUSH = 0x2;
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

/** The client connection preface. */
export const CLIENT_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export const FRAME_HEADER_BYTES = 9;
/** Flow-control windows may not exceed 2^31 - 1. */
export const MAX_WINDOW = 0x7fffffff;
/** Window every stream and the connection start with, before SETTINGS say otherwise. */
export const DEFAULT_WINDOW = 65_535;
/** Smallest and largest SETTINGS_MAX_FRAME_SIZE. */
export const MIN_MAX_FRAME = 16_384;
export const MAX_MAX_FRAME = 0xffffff;

/** Writes a frame header into `target` at `offset`. */
export function writeFrameHeader(
  target: Buffer,
  offset: number,
  length: number,
  type: number,
  flags: number,
  streamId: number,
): void {
  target[offset] = length >>> 16;
  target[offset + 1] = (length >>> 8) & 0xff;
  target[offset + 2] = length & 0xff;
  target[offset + 3] = type;
  target[offset + 4] = flags;
  target.writeUInt32BE(streamId, offset + 5);
}

/** A whole frame (header and payload) in one buffer. */
export function frame(type: number, flags: number, streamId: number, payload?: Uint8Array): Buffer {
  const length = payload?.length ?? 0;
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
  writeFrameHeader(out, 0, length, type, flags, streamId);
  if (payload !== undefined) out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** The peer's or our SETTINGS, with RFC 9113 defaults. */
export interface H2Settings {
  headerTableSize: number;
  enablePush: boolean;
  /** `undefined`: no limit announced. */
  maxConcurrentStreams: number | undefined;
  initialWindowSize: number;
  maxFrameSize: number;
  /** `undefined`: no limit announced. */
  maxHeaderListSize: number | undefined;
}

export function defaultSettings(): H2Settings {
  return {
    headerTableSize: 4096,
    enablePush: true,
    maxConcurrentStreams: undefined,
    initialWindowSize: DEFAULT_WINDOW,
    maxFrameSize: MIN_MAX_FRAME,
    maxHeaderListSize: undefined,
  };
}

/** SETTINGS payload announcing `settings` (every field, so the peer never relies on defaults). */
export function encodeSettings(settings: H2Settings): Buffer {
  const entries: [number, number][] = [
    [SETTINGS_HEADER_TABLE_SIZE, settings.headerTableSize],
    [SETTINGS_ENABLE_PUSH, settings.enablePush ? 1 : 0],
    [SETTINGS_INITIAL_WINDOW_SIZE, settings.initialWindowSize],
    [SETTINGS_MAX_FRAME_SIZE, settings.maxFrameSize],
  ];
  if (settings.maxConcurrentStreams !== undefined)
    entries.push([SETTINGS_MAX_CONCURRENT_STREAMS, settings.maxConcurrentStreams]);
  if (settings.maxHeaderListSize !== undefined)
    entries.push([SETTINGS_MAX_HEADER_LIST_SIZE, settings.maxHeaderListSize]);
  const out = Buffer.allocUnsafe(entries.length * 6);
  entries.forEach(([id, value], i) => {
    out.writeUInt16BE(id, i * 6);
    out.writeUInt32BE(value, i * 6 + 2);
  });
  return out;
}
