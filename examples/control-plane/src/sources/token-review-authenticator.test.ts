// Who the TokenReview authenticator accepts, against the fake API server's TokenReview: a reviewed
// token is a caller only when the API server says it is a service account's.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { SpiffeError } from "@ambient/spiffe";
import { Metadata } from "@grpc/grpc-js";
import { KubeConfig } from "@kubernetes/client-node";
import { createFakeApiServer, type FakeApiServer } from "../../test/fake-apiserver/fake-apiserver.js";
import type { RawKubeObject } from "./kube-client.js";
import { createTokenReviewAuthenticator } from "./token-review-authenticator.js";

const ZTUNNEL_UID = "0b6c1b1e-0000-4000-8000-00000000000a";
const ZTUNNEL_EXTRA = {
  "authentication.kubernetes.io/pod-name": ["ztunnel-a"],
  "authentication.kubernetes.io/pod-uid": [ZTUNNEL_UID],
};

describe("createTokenReviewAuthenticator", () => {
  let server: FakeApiServer;
  const pods: Record<string, RawKubeObject> = {
    "istio-system/ztunnel-a": {
      metadata: { name: "ztunnel-a", namespace: "istio-system", uid: ZTUNNEL_UID },
      spec: { nodeName: "node-a", serviceAccountName: "ztunnel" },
    },
  };

  before(async () => {
    server = await createFakeApiServer({
      tokens: {
        ztunnel: {
          username: "system:serviceaccount:istio-system:ztunnel",
          audiences: ["istio-ca"],
          extra: ZTUNNEL_EXTRA,
        },
        // A user of another authenticator (a webhook, OIDC) whose name reads like a service account's.
        "look-alike": {
          username: "system:serviceaccount:istio-system:ztunnel",
          groups: ["system:authenticated", "oidc:mesh-admins"],
          audiences: ["istio-ca"],
          extra: ZTUNNEL_EXTRA,
        },
      },
    });
  });

  after(async () => {
    await server.close();
  });

  const authenticate = (token: string) => {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromString(server.kubeconfig());
    const authenticator = createTokenReviewAuthenticator({
      kubeConfig,
      pod: (namespace, name) => pods[`${namespace}/${name}`],
    });
    const metadata = new Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    return authenticator.authenticate({ metadata });
  };

  it("accepts a service account's bound token, with the node of its pod", async () => {
    const caller = await authenticate("ztunnel");
    assert.equal(caller?.identity.toString(), "spiffe://cluster.local/ns/istio-system/sa/ztunnel");
    assert.equal(caller?.node, "node-a");
  });

  it("refuses a reviewed user that is not in the system:serviceaccounts group", async () => {
    await assert.rejects(authenticate("look-alike"), (err: unknown) => {
      assert.ok(err instanceof SpiffeError, String(err));
      assert.equal(err.code, "ERR_UNAUTHENTICATED");
      assert.match(err.message, /system:serviceaccounts group/);
      return true;
    });
  });
});
