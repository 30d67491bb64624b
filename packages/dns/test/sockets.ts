// Raw DNS clients and probes for the tests: a UDP exchange, a TCP frame reader, free ports and a
// count of the process's open sockets.
import dgram from "node:dgram";
import net from "node:net";
import { type DnsMessage, queryMessage, RecordType } from "../src/index.js";

/** A query for `name` with the tests' id (0x4242). */
export function makeQuery(
  name: string,
  type: number = RecordType.A,
  extra: Partial<DnsMessage> = {},
): DnsMessage {
  return queryMessage(name, type, { id: 0x4242, ...extra });
}

/** Sends `bytes` over UDP from a fresh socket and resolves with the first reply, or undefined after `timeoutMs`. */
export function udpExchange(port: number, bytes: Uint8Array, timeoutMs = 1000): Promise<Buffer | undefined> {
  const socket = dgram.createSocket("udp4");
  return new Promise<Buffer | undefined>((resolve, reject) => {
    const timer = setTimeout(() => done(undefined), timeoutMs);
    const done = (reply: Buffer | undefined, err?: Error): void => {
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(reply);
    };
    socket.on("error", (err) => done(undefined, err));
    socket.on("message", (reply) => done(reply));
    socket.send(bytes, port, "127.0.0.1");
  });
}

/** `bytes` with a 2-byte length prefix. */
export function frame(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(2 + bytes.length);
  out.writeUInt16BE(bytes.length, 0);
  out.set(bytes, 2);
  return out;
}

/** A TCP client reading length-prefixed frames. */
export interface FrameClient {
  readonly socket: net.Socket;
  /** The next frame, or undefined if the connection ends first. */
  next(timeoutMs?: number): Promise<Buffer | undefined>;
  /** Resolves when the server closes its side (or the socket closes). */
  readonly ended: Promise<void>;
}

/** Connects to 127.0.0.1:`port` and reads DNS-over-TCP frames. */
export async function connectFrames(port: number): Promise<FrameClient> {
  const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.on("error", () => {});
  let pending: Buffer = Buffer.alloc(0);
  const frames: Buffer[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  const ended = new Promise<void>((resolve) => {
    const end = (): void => {
      finished = true;
      wake?.();
      resolve();
    };
    socket.once("end", end);
    socket.once("close", end);
  });
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
      const length = pending.readUInt16BE(0);
      frames.push(pending.subarray(2, 2 + length));
      pending = pending.subarray(2 + length);
    }
    wake?.();
  });
  return {
    socket,
    ended,
    async next(timeoutMs = 2000) {
      const deadline = Date.now() + timeoutMs;
      while (frames.length === 0 && !finished && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, Math.max(0, deadline - Date.now()));
        });
        wake = undefined;
      }
      return frames.shift();
    },
  };
}

/** A port free for both UDP and TCP on 127.0.0.1 right now (bound, then released). */
export async function freePort(): Promise<number> {
  for (;;) {
    const udp = dgram.createSocket("udp4");
    const port = await new Promise<number>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(0, "127.0.0.1", () => resolve(udp.address().port));
    });
    const tcp = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once("error", () => resolve(false));
      tcp.listen(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (ok) {
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      return port;
    }
  }
}

/** How many UDP sockets, TCP sockets and TCP servers the process has open. */
export function openSocketCount(): number {
  return process
    .getActiveResourcesInfo()
    .filter((kind) => kind === "UDPWrap" || kind === "TCPSocketWrap" || kind === "TCPServerWrap").length;
}

/** Waits until `check` holds, polling, for at most `timeoutMs`. */
export async function eventually(check: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}
