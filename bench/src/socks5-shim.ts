/**
 * A plaintext-to-SOCKS5 forwarder for programs that cannot speak SOCKS5 (iperf3): every connection
 * accepted on `listen` is opened through the ztunnel's SOCKS5 port from the client pod's IP to the
 * fixed target, then the bytes are relayed. It runs in its own process, so its CPU time is measured
 * apart from the ztunnels'.
 * Usage: node --import tsx socks5-shim.ts <listenHost> <listenPort> <proxyHost> <proxyPort> <sourceIp> <targetIp> <targetPort>
 */
import { createServer, type Socket } from "node:net";
import { socks5Connect } from "./socks5-client.js";

const [
  listenHost = "",
  listenPort = "",
  proxyHost = "",
  proxyPort = "",
  sourceIp = "",
  targetIp = "",
  targetPort = "",
] = process.argv.slice(2);

function relay(a: Socket, b: Socket): void {
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", close).on("close", close);
  b.on("error", close).on("close", close);
  a.pipe(b);
  b.pipe(a);
}

const server = createServer({ pauseOnConnect: true }, (client) => {
  client.setNoDelay(true);
  client.on("error", () => client.destroy());
  socks5Connect({
    proxyHost,
    proxyPort: Number(proxyPort),
    localAddress: sourceIp,
    targetIp,
    targetPort: Number(targetPort),
  }).then(
    (upstream) => {
      relay(client, upstream);
      client.resume();
      upstream.resume();
    },
    (err: Error) => {
      console.error(`shim: ${err.message}`);
      client.destroy();
    },
  );
});
server.listen(Number(listenPort), listenHost, () => console.log("ready"));
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
