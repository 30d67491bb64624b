import { Socket } from "node:net";
import type { Duplex } from "node:stream";

const PATCHED = Symbol.for("@ambient/router.bufferWrites");

type WriteFn = (chunk: unknown, encoding?: unknown, callback?: unknown) => boolean;

/**
 * Makes a tunnel stream receive Buffers only. Node's HTTP/1 client and server write message heads as
 * latin1 strings; an HTTP/2 stream (an HBONE tunnel) that gets those through writev can send corrupted
 * bytes, so strings are turned into Buffers before they reach it. TCP sockets are left alone.
 */
export function ensureBufferWrites(stream: Duplex): Duplex {
  if (stream instanceof Socket) return stream;
  const marked = stream as Duplex & { [PATCHED]?: boolean };
  if (marked[PATCHED] === true) return stream;
  marked[PATCHED] = true;
  const original = stream.write.bind(stream) as WriteFn;
  const write: WriteFn = (chunk, encoding, callback) => {
    if (typeof chunk !== "string") return original(chunk, encoding, callback);
    const enc = typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8";
    return original(Buffer.from(chunk, enc), typeof encoding === "function" ? encoding : callback);
  };
  (stream as unknown as { write: WriteFn }).write = write;
  return stream;
}
