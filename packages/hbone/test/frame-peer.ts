// A hand-driven HTTP/2 peer for protocol tests: writes raw frames to a plain TCP connection and
// collects the frames the other side sends back.
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import {
  type H2Headers,
  type H2Stream,
  Http2Connection,
  type Http2ConnectionOptions,
} from "../src/h2/connection.js";
import { CLIENT_PREFACE, defaultSettings, encodeSettings, frame, type H2Settings } from "../src/h2/frames.js";
import { encodeHeaders } from "../src/h2/hpack.js";

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export class FramePeer {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  #pending = Buffer.alloc(0);
  #skip: number;
  #waiters: (() => void)[] = [];
  closed = false;

  constructor(socket: Socket, options: { expectPreface?: boolean } = {}) {
    this.socket = socket;
    this.#skip = options.expectPreface ? CLIENT_PREFACE.length : 0;
    socket.on("data", (chunk: Buffer) => {
      this.#pending = Buffer.concat([this.#pending, chunk]);
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, this.#pending.length);
        this.#pending = this.#pending.subarray(n);
        this.#skip -= n;
      }
      while (this.#pending.length >= 9) {
        const length = this.#pending.readUIntBE(0, 3);
        if (this.#pending.length < 9 + length) break;
        this.frames.push({
          type: this.#pending[3] as number,
          flags: this.#pending[4] as number,
          streamId: this.#pending.readUInt32BE(5) & 0x7fffffff,
          payload: Buffer.from(this.#pending.subarray(9, 9 + length)),
        });
        this.#pending = this.#pending.subarray(9 + length);
      }
      this.#wake();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      this.#wake();
    });
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  send(type: number, flags: number, streamId: number, payload?: Uint8Array): void {
    this.socket.write(frame(type, flags, streamId, payload));
  }

  sendRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Client preface and SETTINGS (defaults unless overridden). */
  greet(settings: Partial<H2Settings> = {}, preface = true): void {
    if (preface) this.sendRaw(CLIENT_PREFACE);
    this.send(0x4, 0, 0, encodeSettings({ ...defaultSettings(), enablePush: false, ...settings }));
  }

  headers(streamId: number, fields: [string, string][], flags = 0x4): void {
    this.send(0x1, flags, streamId, encodeHeaders(fields));
  }

  /** Waits for the first frame matching `match` that was not yet taken, and takes it. */
  async take(match: (f: Frame) => boolean, what: string, timeoutMs = 3000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(i, 1)[0] as Frame;
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The GOAWAY error code the other side sent before closing. */
  async goawayCode(): Promise<number> {
    const f = await this.take((f) => f.type === 0x7, "GOAWAY");
    return f.payload.readUInt32BE(4);
  }

  async rstCode(streamId: number): Promise<number> {
    const f = await this.take((f) => f.type === 0x3 && f.streamId === streamId, `RST_STREAM on ${streamId}`);
    return f.payload.readUInt32BE(0);
  }

  async waitClosed(timeoutMs = 3000): Promise<void> {
    if (this.closed) return;
    await Promise.race([
      once(this.socket, "close"),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error("socket did not close")), timeoutMs).unref(),
      ),
    ]);
  }
}

/** A plain-TCP HTTP/2 server made of an {@link Http2Connection} per socket, for protocol tests. */
export interface H2TestServer {
  server: Server;
  port: number;
  connections: Http2Connection[];
  streams: { stream: H2Stream; headers: H2Headers; tooLarge: boolean }[];
  close(): Promise<void>;
}

export async function startH2Server(
  options: Partial<Http2ConnectionOptions> = {},
  onStream?: (stream: H2Stream, headers: H2Headers, tooLarge: boolean) => void,
): Promise<H2TestServer> {
  const connections: Http2Connection[] = [];
  const streams: H2TestServer["streams"] = [];
  const server = createServer((socket) => {
    const conn = new Http2Connection(socket, {
      role: "server",
      streamWindow: 65_535,
      connectionWindow: 65_535,
      maxFrameSize: 16_384,
      maxHeaderListSize: 16_384,
      maxConcurrentStreams: 100,
      ...options,
    });
    connections.push(conn);
    conn.on("stream", (stream: H2Stream, headers: H2Headers, tooLarge: boolean) => {
      streams.push({ stream, headers, tooLarge });
      onStream?.(stream, headers, tooLarge);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    connections,
    streams,
    close: async () => {
      for (const c of connections) c.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Opens a raw peer to `port` that has already sent its preface and SETTINGS. */
export async function rawClient(port: number, settings: Partial<H2Settings> = {}): Promise<FramePeer> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  const peer = new FramePeer(socket);
  peer.greet(settings);
  return peer;
}
