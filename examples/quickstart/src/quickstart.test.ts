import assert from "node:assert/strict";
import { it } from "node:test";
import { runQuickstart } from "./quickstart.js";

it("tunnels bytes between two SVIDs and refuses an identity the server does not allow", async () => {
  const report = await runQuickstart();
  assert.equal(report.reply, "hello through HBONE");
  assert.equal(report.peerIdentity, "spiffe://cluster.local/ns/default/sa/sleep");
  assert.equal(report.refusedStatus, 401);
});
