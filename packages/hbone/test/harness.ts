import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { createHboneServer, type HboneServer, type HboneServerOptions } from "../src/hbone-server.js";
import type { InboundTunnel } from "../src/inbound-tunnel.js";
import { SERVER_ID, type TestCredentials, type TestPki } from "./fixtures.js";

export interface TestServer {
  server: HboneServer;
  address: string;
  port: number;
  /** Resolves with the next tunnel the server receives. */
  nextTunnel(): Promise<InboundTunnel>;
}

/** Starts a server on 127.0.0.1:0; by default every tunnel goes to `nextTunnel()` waiters. */
export async function startServer(
  pki: TestPki,
  options: Partial<HboneServerOptions> & { credentials?: TestCredentials } = {},
): Promise<TestServer> {
  const queue: InboundTunnel[] = [];
  const waiters: ((t: InboundTunnel) => void)[] = [];
  const { credentials, ...rest } = options;
  const server = createHboneServer({
    ...(credentials ?? pki.issue(SERVER_ID)),
    onTunnel: (tunnel) => {
      const w = waiters.shift();
      if (w) w(tunnel);
      else queue.push(tunnel);
    },
    ...rest,
  });
  const info: AddressInfo = await server.listen({ port: 0, host: "127.0.0.1" });
  return {
    server,
    port: info.port,
    address: `127.0.0.1:${info.port}`,
    nextTunnel: () => {
      const t = queue.shift();
      if (t) return Promise.resolve(t);
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/** Reads a stream to its end. */
export function readAll(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.once("end", () => resolve(Buffer.concat(chunks)));
    stream.once("error", reject);
    stream.resume();
  });
}

/** Resolves with the error a stream emits (or rejects if it closes cleanly). */
export function errorOf(stream: Duplex): Promise<Error> {
  return new Promise((resolve, reject) => {
    stream.once("error", resolve);
    stream.once("close", () => setImmediate(() => reject(new Error("closed without error"))));
  });
}

/** Polls `predicate` every 10 ms until true (bounded by the test's own timeout). */
export async function until(predicate: () => boolean, what = "condition"): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (predicate()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Calls `onFrame(type, flags)` for every HTTP/2 frame a server-side socket receives after the
 * client preface, by reading the same decrypted bytes the server reads.
 */
export function watchFrames(socket: Duplex, onFrame: (type: number, flags: number) => void): void {
  let pending = Buffer.alloc(0);
  let skip = 24; // client connection preface
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      if (skip > 0) {
        const n = Math.min(skip, pending.length);
        pending = pending.subarray(n);
        skip -= n;
        if (skip > 0) return;
      }
      if (pending.length < 9) return;
      const length = pending.readUIntBE(0, 3);
      onFrame(pending[3] as number, pending[4] as number);
      skip = 9 + length;
    }
  });
}
