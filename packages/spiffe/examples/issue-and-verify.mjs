// Issue two SVIDs from a fresh mesh CA, verify one, and run an mTLS exchange that only the
// expected SPIFFE ID may join. Run after `pnpm build`: node examples/issue-and-verify.mjs
import tls from "node:tls";
import { tlsClientOptions, tlsServerOptions, verifySvid } from "@ambient/spiffe";
import { createCertificateAuthority } from "@ambient/spiffe/ca";

const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
const api = await ca.issue({ spiffeId: "spiffe://cluster.local/ns/shop/sa/api" });
const web = await ca.issue({ spiffeId: "spiffe://cluster.local/ns/shop/sa/web" });
console.log("verified:", verifySvid(web.certChainPem, ca.trustBundle()).toString());

const options = tlsServerOptions({ svid: api, bundle: ca.trustBundle(), authorize: [web.spiffeId] });
const server = tls.createServer(options, (socket) => {
  try {
    socket.end(`hello ${options.authorizePeer(socket)}\n`);
  } catch {
    socket.destroy();
  }
});
server.listen(0, "127.0.0.1", () => {
  const client = tlsClientOptions({ svid: web, bundle: ca.trustBundle(), expectedIds: [api.spiffeId] });
  const socket = tls.connect({ ...client, host: "127.0.0.1", port: server.address().port });
  socket.setEncoding("utf8");
  socket.on("data", (text) => process.stdout.write(text));
  socket.on("end", () => server.close());
});
