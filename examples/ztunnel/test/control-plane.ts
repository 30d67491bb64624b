import { createAuthorizationEngine, type WireAuthorization } from "@ambient/policy";
import { SpiffeError } from "@ambient/spiffe";
import {
  type Authenticator,
  createCertificateAuthority,
  createCertificateService,
  createJwtAuthenticator,
  createNodeAuthorizer,
} from "@ambient/spiffe/ca";
import {
  createXdsServer,
  type ResourceCache,
  type Service,
  TypeUrl,
  type Workload,
  type XdsResolver,
} from "@ambient/xds";
import * as grpc from "@grpc/grpc-js";
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from "jose";
import { identityOf, ipFromBytes } from "../src/workload-store.js";
import { type RunningZtunnel, startZtunnel, type ZtunnelOptions } from "../src/ztunnel.js";

const ISSUER = "ambient-control-plane";
const AUDIENCE = "istio-ca";

/** The control plane of the local mesh contract, built from the packages for tests. */
export interface TestControlPlane {
  address: string;
  rootCertPem: string;
  /** A node token with the contract's claims. */
  tokenFor(node: string): Promise<string>;
  setWorkload(workload: Workload): void;
  removeWorkload(uid: string): void;
  setService(service: Service): void;
  /** Issues an SVID straight from the CA (for test servers that stand in for mesh proxies). */
  issue(spiffeId: string): Promise<{ privateKeyPem: string; certChainPem: string }>;
  /** Applies an AuthorizationPolicy (YAML) and serves its wire form. */
  applyPolicy(yaml: string): void;
  /** Serves a wire policy as is (e.g. the static STRICT one every STRICT workload references). */
  setAuthorization(wire: WireAuthorization): void;
  /**
   * The cluster ids callers sent, in order: the `clusterid` metadata of each xDS stream and CA call
   * (`""` when there was none) and the `CLUSTER_ID` of each xDS node's metadata.
   */
  readonly clusterIdsSeen: { xds: string[]; xdsNode: unknown[]; ca: string[] };
  /** The xDS node (id and metadata) of every stream, in order. */
  readonly xdsNodes: { id: string; metadata: Record<string, unknown> }[];
  /**
   * Holds every certificate request from now on (each counted in `clusterIdsSeen.ca` as it comes)
   * until the function returned is called.
   */
  holdCertificates(): () => void;
  close(): Promise<void>;
}

/** Options of {@link startTestControlPlane}. */
export interface TestControlPlaneOptions {
  /** The xDS server's on-demand resolver (e.g. one that never answers some names). */
  resolver?: XdsResolver;
  /** How long the server waits for it. Default 5000 ms. */
  resolveTimeoutMs?: number;
  /**
   * The one cluster whose callers are served, as examples/control-plane's `clusterId`: an xDS stream
   * or CA call whose `clusterid` metadata names another is refused (none at all is taken as this
   * cluster). Default: callers of any cluster.
   */
  clusterId?: string;
  /**
   * The mesh's trust domain: the CA's, the node tokens' and the control plane's own identity,
   * `spiffe://<trustDomain>/ns/istio-system/sa/istiod`. Default `cluster.local`.
   */
  trustDomain?: string;
}

/** The `clusterid` a call sent: its one value, else `""` (as examples/control-plane reads it). */
function onlyValue(values: readonly (string | Buffer)[] | undefined): string {
  const value = values?.length === 1 ? values[0] : undefined;
  return value === undefined ? "" : value.toString();
}

/**
 * On-demand answers as the control plane gives them (examples/control-plane `relatedAddresses`): a
 * Service's workloads with it, a workload behind a followed Service, the pods of the client's node.
 */
function relatedAddresses(
  cache: ResourceCache,
  resolveName: (name: string) => string | undefined,
  names: readonly string[],
  subscribed: ReadonlySet<string>,
  nodeName: unknown,
): string[] {
  const out: string[] = [];
  const asked = names.map((n) => resolveName(n) ?? n);
  for (const key of cache.names(TypeUrl.address)) {
    const w = cache.get(TypeUrl.address, key)?.workload;
    if (w === undefined) continue;
    const services = Object.keys(w.services);
    if (
      w.node === nodeName ||
      services.some((s) => asked.includes(s)) ||
      (asked.includes(key) && services.some((s) => subscribed.has(s)))
    )
      out.push(key);
  }
  return out;
}

function aliasesOf(addresses: { network: string; bytes: Uint8Array }[]): string[] {
  return addresses.flatMap(({ network, bytes }) => {
    const ip = ipFromBytes(bytes);
    return ip === undefined ? [] : [`${network}/${ip}`];
  });
}

export async function startTestControlPlane(
  options: TestControlPlaneOptions = {},
): Promise<TestControlPlane> {
  const trustDomain = options.trustDomain ?? "cluster.local";
  const ca = await createCertificateAuthority({ trustDomain });
  const istiod = await ca.issue({ spiffeId: `spiffe://${trustDomain}/ns/istio-system/sa/istiod` });
  const rootCertPem = ca.trustBundle().toPem();
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), alg: "ES256", kid: "test" }] };
  const localKeys = createLocalJWKSet(jwks);
  const clusterIdsSeen = { xds: [] as string[], xdsNode: [] as unknown[], ca: [] as string[] };
  const xdsNodes: { id: string; metadata: Record<string, unknown> }[] = [];
  const refuseOtherCluster = (requested: string): void => {
    if (options.clusterId !== undefined && requested !== "" && requested !== options.clusterId)
      throw new SpiffeError("ERR_UNAUTHENTICATED", `cluster ${JSON.stringify(requested)} is not known here`);
  };

  const xds = createXdsServer({
    debounceMs: 5,
    ...(options.resolver === undefined ? {} : { resolver: options.resolver }),
    ...(options.resolveTimeoutMs === undefined ? {} : { resolveTimeoutMs: options.resolveTimeoutMs }),
    related: ({ names, subscribed, context, cache }) =>
      relatedAddresses(
        cache,
        (name) => cache.resolveName(TypeUrl.address, name),
        names,
        subscribed,
        context.node?.metadata.NODE_NAME,
      ),
    authenticate: async ({ headers, node }) => {
      const requested = onlyValue(headers.clusterid);
      clusterIdsSeen.xds.push(requested);
      clusterIdsSeen.xdsNode.push(node?.metadata.CLUSTER_ID);
      if (node !== undefined) xdsNodes.push({ id: node.id, metadata: { ...node.metadata } });
      refuseOtherCluster(requested);
      const header = headers.authorization?.[0] ?? "";
      const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
      if (token === undefined) throw new Error("no bearer token");
      const { payload } = await jwtVerify(token, localKeys, { issuer: ISSUER, audience: AUDIENCE });
      return payload.sub;
    },
  });
  const identitiesOnNode = (node: string): string[] => {
    const out: string[] = [];
    for (const name of xds.cache.names(TypeUrl.address)) {
      const w = xds.cache.get(TypeUrl.address, name)?.workload as Workload | undefined;
      if (w !== undefined && w.node === node) out.push(identityOf(w));
    }
    return out;
  };
  const tokens = createJwtAuthenticator({ keys: jwks, issuer: ISSUER, audiences: [AUDIENCE], trustDomain });
  let held: Promise<void> | undefined;
  const ownClusterTokens: Authenticator = {
    name: tokens.name,
    authenticate: async (context) => {
      const requested = onlyValue(context.metadata.get("clusterid"));
      clusterIdsSeen.ca.push(requested);
      refuseOtherCluster(requested);
      if (held !== undefined) await held;
      return tokens.authenticate(context);
    },
  };
  const certificates = createCertificateService({
    ca,
    authenticators: [ownClusterTokens],
    nodeAuthorizer: createNodeAuthorizer({ trustedNodeAccounts: ["istio-system/ztunnel"], identitiesOnNode }),
  });
  const server = new grpc.Server();
  xds.addTo(server);
  server.addService(certificates.definition, certificates.implementation);
  const credentials = grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) }],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  const policies = createAuthorizationEngine();

  return {
    address: `127.0.0.1:${port}`,
    rootCertPem,
    tokenFor: (node) =>
      new SignJWT({
        "kubernetes.io": {
          namespace: "istio-system",
          serviceaccount: { name: "ztunnel" },
          node: { name: node },
        },
      })
        .setProtectedHeader({ alg: "ES256", kid: "test" })
        .setIssuer(ISSUER)
        .setAudience([AUDIENCE])
        .setSubject("system:serviceaccount:istio-system:ztunnel")
        .setIssuedAt()
        .setExpirationTime("24h")
        .sign(privateKey),
    issue: (spiffeId) => ca.issue({ spiffeId }),
    setWorkload: (workload) =>
      xds.cache.set(
        TypeUrl.address,
        workload.uid,
        { workload },
        { aliases: aliasesOf(workload.addresses.map((bytes) => ({ network: workload.network, bytes }))) },
      ),
    removeWorkload: (uid) => {
      xds.cache.delete(TypeUrl.address, uid);
    },
    setService: (service) =>
      xds.cache.set(
        TypeUrl.address,
        `${service.namespace}/${service.hostname}`,
        { service },
        { aliases: aliasesOf(service.addresses.map((a) => ({ network: a.network, bytes: a.address }))) },
      ),
    applyPolicy: (yaml) => {
      const { applied, errors } = policies.applyYaml(yaml);
      if (errors.length > 0) throw errors[0];
      for (const result of applied) {
        const wire: WireAuthorization | undefined = result.authorization;
        if (wire !== undefined) xds.cache.set(TypeUrl.authorization, `${wire.namespace}/${wire.name}`, wire);
      }
    },
    setAuthorization: (wire) => xds.cache.set(TypeUrl.authorization, `${wire.namespace}/${wire.name}`, wire),
    clusterIdsSeen,
    xdsNodes,
    holdCertificates() {
      let release = () => {};
      held = new Promise<void>((resolve) => {
        release = resolve;
      });
      return () => {
        held = undefined;
        release();
      };
    },
    close: async () => {
      xds.closeStreams();
      await xds.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      server.forceShutdown();
    },
  };
}

/**
 * A node-mode proxy for `nodeName` on `nodeIp`, served by `cp`, its node listeners on ephemeral ports
 * (`options` adds to or replaces any of that); resolves once it is ready.
 */
export async function startNodeZtunnel(
  cp: TestControlPlane,
  nodeIp: string,
  options: Partial<ZtunnelOptions> = {},
  nodeName = "node-a",
): Promise<RunningZtunnel> {
  const ztunnel = await startZtunnel({
    controlPlaneAddress: cp.address,
    rootCertPem: cp.rootCertPem,
    ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
    nodeName,
    nodeIp,
    token: await cp.tokenFor(nodeName),
    ...options,
  });
  try {
    await ztunnel.ready;
  } catch (err) {
    await ztunnel.close();
    throw err;
  }
  return ztunnel;
}
