// A scripted upstream nameserver on 127.0.0.1: UDP and TCP on one port, each query handed to a
// function that decides what (if anything) to send back.
import dgram from "node:dgram";
import net from "node:net";
import { type DnsMessage, decodeMessage } from "../src/index.js";
import { frame } from "./sockets.js";

/** Decides the replies to one query: zero or more byte strings, sent in order. */
export type FakeAnswer = (query: DnsMessage, protocol: "udp" | "tcp") => Uint8Array[];

/** A running fake upstream. */
export interface FakeUpstream {
  readonly port: number;
  /** Queries received, in order. */
  readonly queries: { readonly message: DnsMessage; readonly protocol: "udp" | "tcp" }[];
  close(): Promise<void>;
}

/** Starts a fake upstream; `answer` returning [] makes it silent. */
export async function startFakeUpstream(answer: FakeAnswer): Promise<FakeUpstream> {
  for (;;) {
    const udp = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", resolve));
    const port = udp.address().port;
    const connections = new Set<net.Socket>();
    const queries: FakeUpstream["queries"] = [];
    const tcp = net.createServer((socket) => {
      connections.add(socket);
      socket.on("close", () => connections.delete(socket));
      socket.on("error", () => {});
      let pending: Buffer = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
          const message = decodeMessage(pending.subarray(2, 2 + pending.readUInt16BE(0)));
          pending = pending.subarray(2 + pending.readUInt16BE(0));
          queries.push({ message, protocol: "tcp" });
          for (const reply of answer(message, "tcp")) socket.write(frame(reply));
        }
      });
    });
    const listening = await new Promise<boolean>((resolve) => {
      tcp.once("error", () => resolve(false));
      tcp.listen(port, "127.0.0.1", () => resolve(true));
    });
    if (!listening) {
      udp.close();
      continue;
    }
    udp.on("message", (bytes, rinfo) => {
      const message = decodeMessage(bytes);
      queries.push({ message, protocol: "udp" });
      for (const reply of answer(message, "udp")) udp.send(reply, rinfo.port, rinfo.address);
    });
    return {
      port,
      queries,
      async close() {
        for (const socket of connections) socket.destroy();
        await Promise.all([
          new Promise<void>((resolve) => udp.close(() => resolve())),
          new Promise<void>((resolve) => tcp.close(() => resolve())),
        ]);
      },
    };
  }
}
