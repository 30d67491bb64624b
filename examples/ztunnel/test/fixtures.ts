// What the ztunnel integration tests share: a pod's Workload as the control plane would send it, an
// echo server that proves half-close, and a SOCKS5 CONNECT through a ztunnel from a pod's address.
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { Workload } from "@ambient/xds";
import { encodeGreeting, encodeRequest, parseReply } from "../src/socks5.js";

/** An IPv4 address as the bytes of a workload address. */
export function ipBytes(address: string): Uint8Array {
  return Uint8Array.from(address.split(".").map(Number));
}

/**
 * A HEALTHY HBONE pod `name` on `node` at `address`, its service account named after it, in the
 * namespace of `extra.namespace` (default `default`); `extra` overrides any field.
 */
export function testWorkload(
  name: string,
  node: string,
  address: string,
  extra: Partial<Workload> = {},
): Workload {
  const namespace = extra.namespace ?? "default";
  return {
    uid: `Kubernetes//Pod/${namespace}/${name}`,
    name,
    namespace,
    addresses: [ipBytes(address)],
    hostname: "",
    network: "",
    tunnelProtocol: "HBONE",
    trustDomain: "",
    serviceAccount: name,
    node,
    canonicalName: name,
    canonicalRevision: "latest",
    workloadType: "POD",
    workloadName: name,
    nativeTunnel: false,
    services: {},
    authorizationPolicies: [],
    status: "HEALTHY",
    clusterId: "Kubernetes",
    networkMode: "STANDARD",
    extensions: [],
    ...extra,
  };
}

/** Echoes, and writes "." only after the client's FIN: a reply that proves half-close. */
export async function echoServer(host: string): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => {});
    socket.pipe(socket, { end: false });
    socket.once("end", () => socket.end("."));
  });
  server.listen(0, host);
  await once(server, "listening");
  return server;
}

/**
 * SOCKS5 CONNECT to `host:port` through the proxy at `proxy` ("ip:port") from the local address
 * `from`; resolves with the reply code and the socket, any bytes after the reply left unread.
 */
export async function socksConnect(
  proxy: string,
  from: string,
  host: string,
  port: number,
): Promise<{ socket: Socket; reply: number }> {
  const [proxyHost, proxyPort] = proxy.split(":");
  const socket = connect({
    host: proxyHost,
    port: Number(proxyPort),
    localAddress: from,
    allowHalfOpen: true,
  });
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(host, port));
  let buffered = Buffer.alloc(0);
  let methodSeen = false;
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!methodSeen) {
        if (buffered.length < 2) return;
        methodSeen = true;
        buffered = buffered.subarray(2);
      }
      const reply = parseReply(buffered);
      if (reply === undefined) return;
      socket.off("data", onData);
      socket.off("end", onEnd);
      const rest = buffered.subarray(reply.length);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ socket, reply: reply.reply });
    };
    const onEnd = () => reject(new Error("proxy closed before replying"));
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", reject);
  });
}
