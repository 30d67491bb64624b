import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SpiffeError, SpiffeId } from "@ambient/spiffe";
import type { Authenticator } from "@ambient/spiffe/ca";
import { Metadata } from "@grpc/grpc-js";
import { forOwnCluster, requestedClusterId } from "./caller-cluster.js";

const ZTUNNEL = SpiffeId.parse("spiffe://cluster.local/ns/istio-system/sa/ztunnel");

function metadataWith(clusterIds: string[]): Metadata {
  const metadata = new Metadata();
  metadata.set("authorization", "Bearer t");
  for (const id of clusterIds) metadata.add("clusterid", id);
  return metadata;
}

describe("forOwnCluster", () => {
  let checked = 0;
  const inner: Authenticator = {
    name: "token",
    async authenticate() {
      checked++;
      return { identity: ZTUNNEL, authenticator: "token", node: "node-a" };
    },
  };

  it("refuses a request naming another cluster before its credential is checked", async () => {
    const authenticator = forOwnCluster(inner, "Kubernetes");
    const before = checked;
    await assert.rejects(
      authenticator.authenticate({ metadata: metadataWith(["cluster-east"]) }),
      (err: unknown) => {
        assert.ok(err instanceof SpiffeError, String(err));
        assert.equal(err.code, "ERR_UNAUTHENTICATED");
        assert.match(err.message, /cluster-east/);
        return true;
      },
    );
    assert.equal(checked, before);
  });

  it("checks a request naming its own cluster, or none, as before", async () => {
    const authenticator = forOwnCluster(inner, "cluster-west");
    assert.equal(authenticator.name, "token");
    for (const ids of [["cluster-west"], [], [""]]) {
      const caller = await authenticator.authenticate({ metadata: metadataWith(ids) });
      assert.equal(caller?.identity.toString(), ZTUNNEL.toString(), JSON.stringify(ids));
    }
  });

  it("reads one clusterid value; several name no cluster", () => {
    assert.equal(requestedClusterId(metadataWith(["a"])), "a");
    assert.equal(requestedClusterId(metadataWith([])), "");
    assert.equal(requestedClusterId(metadataWith(["a", "b"])), "");
  });
});
