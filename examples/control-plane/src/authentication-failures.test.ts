// What a caller that fails authentication at the CA or at xDS learns: a fixed gRPC status, the same
// whatever its token's fault, while the reason goes to the control plane's log with the caller's address.
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { generateKeyPair as generateSvidKeys, SpiffeError } from "@ambient/spiffe";
import {
  AUTHENTICATION_FAILURE as CA_AUTHENTICATION_FAILURE,
  IMPERSONATION_FAILURE as CA_IMPERSONATION_FAILURE,
  createCertificateServiceClient,
  createCsr,
} from "@ambient/spiffe/ca";
import { createXdsClient, TypeUrl, XdsError } from "@ambient/xds";
import { status } from "@grpc/grpc-js";
import { KubeConfig } from "@kubernetes/client-node";
import { generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { createFakeApiServer, type FakeApiServer } from "../test/fake-apiserver/fake-apiserver.js";
import {
  type ControlPlane,
  type ControlPlaneOptions,
  startControlPlane,
  XDS_AUTHENTICATION_FAILURE,
} from "./control-plane.js";
import { controlPlaneChannel } from "./control-plane-credentials.js";
import { TOKEN_ISSUER } from "./mesh-state.js";
import { createTokenReviewAuthenticator } from "./sources/token-review-authenticator.js";
import type { Logger } from "./telemetry.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");
const ECHO = "spiffe://cluster.local/ns/demo/sa/echo";
type SigningKey = Parameters<SignJWT["sign"]>[0];
/** What the xDS server puts before the refusal it is given. */
const XDS_REFUSED = `xds stream refused: ${XDS_AUTHENTICATION_FAILURE}`;

interface LogEntry {
  level: "debug" | "info" | "warn" | "error";
  obj: Record<string, unknown>;
  msg: string | undefined;
}

function capturingLogger(entries: LogEntry[]): Logger {
  const at =
    (level: LogEntry["level"]) =>
    (obj: object, msg?: string): void => {
      entries.push({ level, obj: obj as Record<string, unknown>, msg });
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** The gRPC status a client error carries (its cause is the grpc-js status error). */
function wireStatus(err: unknown): { code: unknown; details: unknown } {
  const cause = (err as { cause?: { code?: unknown; details?: unknown } }).cause;
  return { code: cause?.code, details: cause?.details };
}

/** A control plane with a capturing logger, and calls of its CA and its xDS. */
async function startWithLog(
  extra: Partial<ControlPlaneOptions> = {},
): Promise<{ controlPlane: ControlPlane; dir: string; logs: LogEntry[] }> {
  const dir = await mkdtemp(join(tmpdir(), "control-plane-authn-"));
  const logs: LogEntry[] = [];
  const controlPlane = await startControlPlane({
    meshDir: DEMO_MESH,
    stateDir: join(dir, "state"),
    listen: "127.0.0.1:0",
    watch: false,
    xdsDebounceMs: 5,
    logger: capturingLogger(logs),
    ...extra,
  });
  return { controlPlane, dir, logs };
}

async function createCertificate(
  controlPlane: ControlPlane,
  token: string,
  options: { clusterId?: string; impersonate?: string; csr?: string } = {},
): Promise<unknown> {
  const client = createCertificateServiceClient({
    address: controlPlane.address,
    ...controlPlaneChannel(controlPlane.rootCertPem),
    token,
    ...(options.clusterId === undefined ? {} : { clusterId: options.clusterId }),
  });
  try {
    const keys = await generateSvidKeys();
    const csr = options.csr ?? (await createCsr({ spiffeId: ECHO, privateKeyPem: keys.privateKeyPem }));
    await client.createCertificate(csr, { impersonatedIdentity: options.impersonate ?? ECHO });
    return undefined;
  } catch (err) {
    return err;
  } finally {
    client.close();
  }
}

/** Opens a Delta ADS stream with `token` and resolves with the error that closed it. */
async function adsRefusal(
  controlPlane: ControlPlane,
  token: string,
  headers: Record<string, string> = {},
): Promise<XdsError> {
  const client = createXdsClient({
    address: controlPlane.address,
    ...controlPlaneChannel(controlPlane.rootCertPem),
    node: {
      id: "ztunnel~127.20.0.1~ztunnel-node-b.istio-system~istio-system.svc.cluster.local",
      metadata: { NODE_NAME: "node-b" },
    },
    headers: { authorization: `Bearer ${token}`, ...headers },
    initialBackoffMs: 5_000,
    maxBackoffMs: 5_000,
  });
  try {
    client.watch(TypeUrl.address);
    return await new Promise<XdsError>((resolvePromise) => {
      client.onConnection((connected, err) => {
        if (!connected && err) resolvePromise(err);
      });
    });
  } finally {
    client.close();
  }
}

/** Asserts `err` came back as exactly `code` and `message`, naming none of `details`. */
function assertOpaque(err: unknown, code: status, message: string, details: readonly RegExp[]): void {
  assert.ok(err instanceof SpiffeError || err instanceof XdsError, `not refused: ${String(err)}`);
  const wire = wireStatus(err);
  assert.equal(wire.code, code);
  assert.equal(wire.details, message);
  for (const detail of details) {
    assert.doesNotMatch(String(wire.details), detail);
    assert.doesNotMatch(err.message, detail);
  }
}

/** The log entries at `level` whose fields or message match `detail`. */
function logged(logs: readonly LogEntry[], level: LogEntry["level"], detail: RegExp): LogEntry[] {
  return logs.filter(
    (e) => e.level === level && [e.msg, ...Object.values(e.obj)].some((v) => detail.test(String(v))),
  );
}

describe("authentication failures with the control plane's own node tokens", { timeout: 60_000 }, () => {
  let controlPlane: ControlPlane;
  let dir: string;
  let logs: LogEntry[];
  let sign: (claims: { aud?: string; exp?: number }, key?: SigningKey) => Promise<string>;

  before(async () => {
    ({ controlPlane, dir, logs } = await startWithLog());
    const jwk = JSON.parse(await readFile(join(dir, "state", "token-key.jwk"), "utf8")) as JWK;
    const ownKey = await importJWK(jwk, "ES256");
    sign = (claims, key = ownKey) =>
      new SignJWT({
        "kubernetes.io": {
          namespace: "istio-system",
          serviceaccount: { name: "ztunnel" },
          node: { name: "node-b" },
        },
      })
        .setProtectedHeader({ alg: "ES256", kid: jwk.kid ?? "" })
        .setIssuer(TOKEN_ISSUER)
        .setAudience([claims.aud ?? "istio-ca"])
        .setSubject("system:serviceaccount:istio-system:ztunnel")
        .setIssuedAt(Math.floor(Date.now() / 1000) - 7200)
        .setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 3600)
        .sign(key);
  });

  after(async () => {
    await controlPlane.close();
    await rm(dir, { recursive: true, force: true });
  });

  // Each bad token, and the words of its reason the caller must not see (the log gets them).
  const cases: { name: string; token: () => Promise<string>; reason: RegExp }[] = [
    { name: "a token that is not a JWT", token: async () => "not-a-jwt", reason: /Invalid Compact JWS/ },
    {
      name: "a token signed by another key",
      token: async () => sign({}, (await generateKeyPair("ES256")).privateKey),
      reason: /signature verification failed/,
    },
    {
      name: "an expired token",
      token: () => sign({ exp: Math.floor(Date.now() / 1000) - 3600 }),
      reason: /"exp" claim timestamp check failed/,
    },
    {
      name: "a token for another audience",
      token: () => sign({ aud: "kubernetes.default.svc" }),
      reason: /"aud" claim/,
    },
  ];
  const hidden = [/token/i, /claim/, /signature/, /JWS/, /expired|exp\b/, /aud/, /jwt/i, /\(/];

  for (const { name, token, reason } of cases) {
    it(`answers CreateCertificate with ${name} with a fixed UNAUTHENTICATED and logs why`, async () => {
      const before = logs.length;
      const err = await createCertificate(controlPlane, await token());
      assertOpaque(err, status.UNAUTHENTICATED, CA_AUTHENTICATION_FAILURE, [...hidden, reason]);
      const entries = logged(logs.slice(before), "error", reason);
      assert.equal(entries.length, 1, JSON.stringify(logs.slice(before)));
      assert.match(String(entries[0]?.obj.peer), /127\.0\.0\.1/);
    });

    it(`closes an ADS stream with ${name} with a fixed UNAUTHENTICATED and logs why`, async () => {
      const before = logs.length;
      const err = await adsRefusal(controlPlane, await token());
      assertOpaque(err, status.UNAUTHENTICATED, XDS_REFUSED, [...hidden, reason]);
      const entries = logged(logs.slice(before), "error", reason);
      assert.equal(entries.length, 1, JSON.stringify(logs.slice(before)));
      assert.match(String(entries[0]?.obj.peer), /127\.0\.0\.1/);
    });
  }

  it("does not tell a caller of another cluster which cluster this one is", async () => {
    const before = logs.length;
    const token = await controlPlane.tokenFor("node-b");
    const err = await createCertificate(controlPlane, token, { clusterId: "cluster-east" });
    assertOpaque(err, status.UNAUTHENTICATED, CA_AUTHENTICATION_FAILURE, [/cluster/, /Kubernetes/]);
    assert.equal(logged(logs.slice(before), "error", /cluster-east/).length, 1);
    const refused = await adsRefusal(controlPlane, token, { clusterid: "cluster-east" });
    assertOpaque(refused, status.UNAUTHENTICATED, XDS_REFUSED, [/cluster/, /Kubernetes/]);
  });

  it("refuses impersonation of a pod not on the caller's node with a fixed message, logged as a warning", async () => {
    const before = logs.length;
    const err = await createCertificate(controlPlane, await controlPlane.tokenFor("node-a"), {
      impersonate: ECHO,
    });
    assertOpaque(err, status.UNAUTHENTICATED, CA_IMPERSONATION_FAILURE, [/echo/, /ztunnel/, /may not/]);
    const entries = logged(logs.slice(before), "warn", /sa\/echo/);
    assert.ok(
      entries.some((e) => /127\.0\.0\.1/.test(String(e.obj.peer))),
      JSON.stringify(entries),
    );
  });

  it("still tells an authenticated caller what is wrong with its CSR", async () => {
    const err = await createCertificate(controlPlane, await controlPlane.tokenFor("node-b"), {
      csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    });
    assert.ok(err instanceof SpiffeError);
    const wire = wireStatus(err);
    assert.equal(wire.code, status.INVALID_ARGUMENT);
    assert.notEqual(wire.details, CA_AUTHENTICATION_FAILURE);
  });
});

describe("authentication failures with the Kubernetes TokenReview", { timeout: 60_000 }, () => {
  let apiServer: FakeApiServer;
  let controlPlane: ControlPlane;
  let dir: string;
  let logs: LogEntry[];

  before(async () => {
    apiServer = await createFakeApiServer({
      tokens: {
        "wrong-audience": {
          username: "system:serviceaccount:istio-system:ztunnel",
          audiences: ["kubernetes.default.svc"],
        },
      },
    });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromString(apiServer.kubeconfig());
    ({ controlPlane, dir, logs } = await startWithLog({
      authenticator: createTokenReviewAuthenticator({ kubeConfig, pod: () => undefined }),
    }));
  });

  after(async () => {
    await controlPlane.close();
    await apiServer.close();
    await rm(dir, { recursive: true, force: true });
  });

  const cases: [string, string, RegExp][] = [
    ["an unknown token", "forged", /invalid bearer token/],
    ["a token for another audience", "wrong-audience", /token audiences are invalid/],
  ];
  const hidden = [/token/i, /review/i, /bearer/i, /audience/i, /not authenticated/];
  for (const [name, token, reason] of cases) {
    it(`does not pass the API server's answer on for ${name}`, async () => {
      const before = logs.length;
      const err = await createCertificate(controlPlane, token);
      assertOpaque(err, status.UNAUTHENTICATED, CA_AUTHENTICATION_FAILURE, [...hidden, reason]);
      assert.equal(logged(logs.slice(before), "error", reason).length, 1);
      const refused = await adsRefusal(controlPlane, token);
      assertOpaque(refused, status.UNAUTHENTICATED, XDS_REFUSED, [...hidden, reason]);
      assert.equal(logged(logs.slice(before), "error", reason).length, 2);
    });
  }
});
