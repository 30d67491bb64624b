import { connect as connectTcp, isIP } from "node:net";
import {
  closeOnce,
  clusterDomainProblem,
  clusterIdProblem,
  controlPlaneChannel,
  controlPlaneIdentityOf,
  createHostnameResolver,
  DEFAULT_CLUSTER_DOMAIN,
  DEFAULT_CLUSTER_ID,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_TRUST_DOMAIN,
  deniedBy,
  followRoots,
  type HostnameResolverOptions,
  identityOf,
  type Logger,
  noopLogger,
  trustDomainProblem,
  usesHbone,
  withConnectDeadline,
  withKeepAlive,
} from "@ambient/example-ztunnel";
import {
  createHboneClient,
  createHboneServer,
  HBONE_STATUS,
  type HboneClient,
  type HboneServer,
  type InboundTunnel,
} from "@ambient/hbone";
import { createAuthorizationEngine, type PathNormalization } from "@ambient/policy";
import {
  createWaypointHandler,
  type DestinationService,
  type Endpoint,
  type WaypointHandler,
  type WorkloadInfo,
} from "@ambient/router";
import { trustedRootsOf, type X509Svid } from "@ambient/spiffe";
import { createCertificateServiceClient, SecretManager } from "@ambient/spiffe/ca";
import { createPromClientSink } from "@ambient/telemetry";
import { createXdsClient, type Workload } from "@ambient/xds";
import { decodeJwt } from "jose";
import * as prom from "prom-client";
import {
  createBackendResolver,
  declaredProtocol,
  declaredWorkloadProtocol,
  destinationServiceOf,
  otherClusterDomainOf,
  resolveServiceBackend,
  VersionedWorkloadStore,
  workloadEndpoint,
  workloadLabels,
} from "./backends.js";
import { WaypointError } from "./errors.js";
import { createLabelSetSink } from "./label-set-metrics.js";
import {
  DEFAULT_OPERATOR_PORTS,
  isLoopback,
  type OperatorAddresses,
  type OperatorPorts,
  startOperatorEndpoints,
} from "./operator-endpoints.js";
import { DEFAULT_ROOT_NAMESPACE, withWaypointClassTarget } from "./policy-targets.js";
import { createRequestHistory, withDecidingPolicy } from "./recent-requests.js";
import { RequestAuthenticationStore } from "./request-authentication.js";
import { type WaypointSelf, WaypointXdsConfig, waypointXdsChecks } from "./xds-config.js";

/** One frozen label source per workload: the router keeps its label sets per source object. */
const sourceInfos = new WeakMap<Workload, WorkloadInfo>();

/** What the metric labels say of a source workload (Istio's waypoints know no app or version of it). */
function sourceInfoOf(w: Workload): WorkloadInfo {
  let info = sourceInfos.get(w);
  if (info === undefined) {
    info = Object.freeze(workloadLabels(w));
    sourceInfos.set(w, info);
  }
  return info;
}

/** Options of {@link startWaypoint}. */
export interface WaypointOptions {
  /** The waypoint Gateway this proxy serves; routes and policies attach to it. */
  gateway: { name: string; namespace: string };
  /** The waypoint pod's IP (the Gateway's `status.addresses`); inbound HBONE listens here. */
  ip: string;
  /** Service account of the waypoint pod. Default: the Gateway's name (istiod names it so). */
  serviceAccount?: string;
  /** Node the waypoint pod runs on; its token obtains the waypoint's certificate. */
  nodeName: string;
  /**
   * Bearer token sent on CA and xDS calls: the waypoint's own service account token (as istio-proxy
   * sends, Kubernetes' projected token with audience `istio-ca`), or its node's, with which it asks
   * for its certificate by impersonation as a node agent does. A function is called for each CA call
   * and xDS stream, so a projected token the kubelet rotates is picked up (see the ztunnel's
   * `tokenFileReader`, which `--token-file` uses).
   */
  token: string | (() => string);
  /** Mesh roots (PEM): verify the control plane and every peer. */
  rootCertPem: string;
  /** Control plane (xDS and CA). Default `127.0.0.1:15012`; istio-proxy `XDS_ADDRESS`/`CA_ADDRESS`. */
  controlPlaneAddress?: string;
  /**
   * URI SAN of the control plane. Default istiod's identity in `trustDomain`,
   * `spiffe://<trustDomain>/ns/istio-system/sa/istiod`.
   */
  controlPlaneIdentity?: string;
  /** Inbound HBONE port, also dialled on endpoints. Default 15008. */
  hbonePort?: number;
  /**
   * The mesh's SPIFFE trust domain: the waypoint's own identity and the control plane's. Default
   * `cluster.local`; meshConfig `trustDomain`, istio-proxy `TRUST_DOMAIN` (CLI `--trust-domain`).
   */
  trustDomain?: string;
  /**
   * Earlier trust domains of the mesh (meshConfig `trustDomainAliases`): a principal of L7 policy in any
   * of them, in `trustDomain` or in `cluster.local` matches the same account in all of them, as Istio's
   * proxies read principals. Default none (CLI `--trust-domain-aliases`).
   */
  trustDomainAliases?: readonly string[];
  /**
   * The cluster's DNS domain: Service hosts are `<name>.<namespace>.svc.<clusterDomain>`, which is how
   * the control plane names the Services bound to this waypoint and its routes' backends. Default
   * `cluster.local` (CLI `--cluster-domain`, else `CLUSTER_DOMAIN`, as the ztunnel).
   */
  clusterDomain?: string;
  /**
   * The cluster the waypoint runs in: `clusterid` metadata on its xDS stream and CA calls, `CLUSTER_ID`
   * in its xDS node metadata. A control plane serves callers of its own cluster only. Non-empty
   * printable ASCII without whitespace. Default `Kubernetes`; istio-proxy `ISTIO_META_CLUSTER_ID` (CLI
   * `--cluster-id`).
   */
  clusterId?: string;
  /**
   * The network this waypoint's pod is on (istio-proxy `ISTIO_META_NETWORK`, CLI `--network`):
   * workloads are looked up on it, and endpoints of other networks are never chosen (no network
   * gateway here). Default `""`, a mesh that names no networks.
   */
  network?: string;
  /**
   * Mesh root namespace: its policies that target the `istio-waypoint` GatewayClass apply at every
   * waypoint. Default `istio-system`; meshConfig `rootNamespace`.
   */
  rootNamespace?: string;
  /**
   * How request paths are normalized, once, for L7 policy, routing and the upstream request alike.
   * Default `BASE`; meshConfig `pathNormalization`.
   */
  pathNormalization?: PathNormalization;
  /**
   * Serve HTTP/1.0 requests; without it they are answered 426. Default false, as Istio's waypoints
   * unless istiod has `PILOT_HTTP10=1` or the proxy `ISTIO_META_HTTP10=1`.
   */
  acceptHttp10?: boolean;
  /** Time a downstream connection may go without a request in flight. Default 60000 (the router's). */
  headersTimeoutMs?: number;
  /**
   * How long a plaintext TCP connect to a backend may take (a workload outside the mesh, a host-network
   * endpoint, an endpoint known by hostname once resolved) before it fails with `ETIMEDOUT`.
   * Default 10000 ms, meshConfig `connectTimeout`. HBONE backends have the HBONE client's deadlines.
   */
  connectTimeoutMs?: number;
  /**
   * The resolvers that endpoints known by hostname are looked up with (A records, kept for their TTL,
   * 2 s per try, two tries; `localhost` is 127.0.0.1). Default: this process's /etc/resolv.conf.
   */
  nameservers?: HostnameResolverOptions["nameservers"];
  /**
   * Operator listener ports (admin 15000, metrics 15020, readiness 15021, as istio-proxy); 0 picks an
   * ephemeral port.
   */
  ports?: Partial<OperatorPorts>;
  /**
   * Address of the admin listener (`/config_dump`, `/recent_requests`); only a loopback address is accepted. Default: `ip`
   * when it is a loopback address (every pod address of the local mesh is), else `127.0.0.1`.
   */
  adminIp?: string;
  /**
   * One access log line per request at info level, with Istio's fields and `authorization` (the policy
   * that decided it). Default true. The admin endpoint `/recent_requests` keeps the same entries either way.
   */
  accessLog?: boolean;
  /** Default: no-op. */
  logger?: Logger;
  /** prom-client registry. Default: a new one. */
  registry?: prom.Registry;
  /**
   * How long {@link RunningWaypoint.shutdown} lets requests in flight finish. Default 5000 ms,
   * istio-proxy's `terminationDrainDuration`.
   */
  terminationDrainMs?: number;
}

/** A running waypoint. */
export interface RunningWaypoint {
  /** `ip:port` of the inbound HBONE listener. */
  readonly address: string;
  /** SPIFFE ID the waypoint presents. */
  readonly identity: string;
  /** Where the admin, metrics and readiness listeners are (`ip:port`). */
  readonly operatorAddresses: OperatorAddresses;
  /** Resolves once the certificate and the first xDS state are in and the listener is up. */
  readonly ready: Promise<void>;
  /**
   * Counts the configuration changes put in force (routes, policies); it moves when an accepted xDS
   * update reaches the router or the policy engine.
   */
  configGeneration(): number;
  metricsText(): Promise<string>;
  /**
   * Shuts down gracefully, as istio-proxy drains on SIGTERM: the readiness probe answers 503, the
   * HBONE listener stops accepting and sends GOAWAY (ztunnels open new tunnels to another instance),
   * requests in flight are answered (an HTTP/1.1 connection closes after its response, which says
   * `connection: close` when it can; an HTTP/2 one gets GOAWAY) and TCP tunnels run on, until all
   * have ended or `deadlineMs` (default `terminationDrainMs`) has passed; then it closes as
   * {@link close} does. Resolves once closed; every call returns the first call's promise, and a
   * call after close() ends on that close. A bad deadline throws `ERR_WAYPOINT_INVALID_OPTION`.
   */
  shutdown(options?: { deadlineMs?: number }): Promise<void>;
  /**
   * Closes every listener, connection and control-plane stream at once (a shutdown under way too).
   * Every call returns the first call's promise, and a shutdown ends on it: the waypoint closes once.
   */
  close(): Promise<void>;
  /**
   * Resolves once the waypoint has closed, whatever closed it (close(), shutdown, SIGTERM or SIGINT in
   * the program); rejects as close() does when closing failed.
   */
  readonly closed: Promise<void>;
}

/** Default of {@link WaypointOptions.terminationDrainMs}: istio-proxy's `terminationDrainDuration`. */
export const DEFAULT_TERMINATION_DRAIN_MS = 5000;

function checkDrainMs(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0)) {
    throw new WaypointError(
      "ERR_WAYPOINT_INVALID_OPTION",
      `${name} must be a whole number of ms, got ${value}`,
    );
  }
}

function svidSummary(svid: X509Svid | undefined) {
  return svid === undefined
    ? undefined
    : {
        identity: svid.spiffeId.toString(),
        notBefore: svid.notBefore.toISOString(),
        notAfter: svid.notAfter.toISOString(),
      };
}

/**
 * Starts a waypoint: gets its certificate from the mesh CA with its own or its node's token, takes all of
 * its configuration from the control plane over one Delta xDS stream (Address resources for the Services
 * bound to it and their endpoints, an Envoy RouteConfiguration per bound Service port, and the
 * AuthorizationPolicies and RequestAuthentications attached to it), and serves HBONE on `ip:15008`.
 * Every accepted tunnel goes through L7 policy and routing; upstream requests travel HBONE to the
 * endpoint pod's 15008. Reads no files.
 */
export async function startWaypoint(options: WaypointOptions): Promise<RunningWaypoint> {
  if (isIP(options.ip) !== 4) {
    throw new WaypointError("ERR_WAYPOINT_INVALID_OPTION", `ip ${JSON.stringify(options.ip)} is not IPv4`);
  }
  const { token } = options;
  if (token === "" || (typeof token !== "string" && typeof token !== "function")) {
    throw new WaypointError(
      "ERR_WAYPOINT_INVALID_OPTION",
      "token is empty: a non-empty string or a function",
    );
  }
  checkDrainMs("terminationDrainMs", options.terminationDrainMs);
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (!(Number.isFinite(connectTimeoutMs) && connectTimeoutMs > 0)) {
    throw new WaypointError(
      "ERR_WAYPOINT_INVALID_OPTION",
      `connectTimeoutMs must be a positive number of ms, got ${options.connectTimeoutMs}`,
    );
  }
  const clusterProblem = options.clusterId === undefined ? undefined : clusterIdProblem(options.clusterId);
  if (clusterProblem !== undefined) {
    throw new WaypointError("ERR_WAYPOINT_INVALID_OPTION", `clusterId ${clusterProblem}`);
  }
  const tokenNow = typeof token === "function" ? token : () => token;
  const logger = options.logger ?? noopLogger;
  const registry = options.registry ?? new prom.Registry();
  const metrics = createPromClientSink(prom, registry);
  // Metrics with samples on every request (the router's four, the policy engine's decisions): counted
  // per label set without prom-client's per-sample label checks and hashing, served from the same registry.
  const perRequestMetrics = createLabelSetSink(registry, metrics);
  const hbonePort = options.hbonePort ?? 15008;
  const gateway = options.gateway;
  const trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const clusterDomain = options.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
  const trustDomainAliases = options.trustDomainAliases ?? [];
  for (const [name, problem] of [
    ["trustDomain", trustDomainProblem(trustDomain)],
    ["clusterDomain", clusterDomainProblem(clusterDomain)],
    ...trustDomainAliases.map((alias) => ["trustDomainAliases", trustDomainProblem(alias)] as const),
  ] as const) {
    if (problem !== undefined) throw new WaypointError("ERR_WAYPOINT_INVALID_OPTION", `${name} ${problem}`);
  }
  const serviceAccount = options.serviceAccount ?? gateway.name;
  const identity = identityOf({ trustDomain, namespace: gateway.namespace, serviceAccount });
  const address = options.controlPlaneAddress ?? "127.0.0.1:15012";
  const channel = controlPlaneChannel(
    options.rootCertPem,
    options.controlPlaneIdentity ?? controlPlaneIdentityOf(trustDomain),
  );
  // The roots each certificate of the waypoint's trusts: the configured ones and those the CA sent.
  const trustOf = trustedRootsOf(options.rootCertPem);
  const clusterId = options.clusterId ?? DEFAULT_CLUSTER_ID;

  const adminIp = options.adminIp ?? (isLoopback(options.ip) ? options.ip : "127.0.0.1");
  if (!isLoopback(adminIp)) {
    throw new WaypointError(
      "ERR_WAYPOINT_INVALID_OPTION",
      `adminIp ${JSON.stringify(adminIp)} is not loopback`,
    );
  }
  const store = new VersionedWorkloadStore({ network: options.network ?? "" });
  const rootNamespace = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const requestAuthentications = new RequestAuthenticationStore(gateway, rootNamespace);
  const pathNormalization = options.pathNormalization ?? "BASE";
  // The router normalizes each path once and hands policy that result: both must use the same mode.
  const policy = createAuthorizationEngine({
    l7Attachment: "waypoint",
    // Principals as Istio's proxies read them: cluster.local and the aliases stand for this mesh.
    trustDomains: [trustDomain, ...trustDomainAliases],
    rootNamespace,
    pathNormalization,
    logger,
    metrics: perRequestMetrics,
  });
  const caClient = createCertificateServiceClient({ address, ...channel, token: tokenNow, clusterId });
  // With its own token the waypoint asks for its own certificate as any workload does: istiod refuses
  // an impersonated identity from anyone but a node agent, even the caller's own. With a node's token
  // it impersonates the waypoint's identity, as the node's ztunnel does for its pods.
  const ownToken =
    tokenSubject(tokenNow()) === `system:serviceaccount:${gateway.namespace}:${serviceAccount}`;
  const secrets = new SecretManager({ client: caClient, impersonate: !ownToken, logger, metrics });
  const self: WaypointSelf = { gateway, ip: options.ip, clusterDomain, rootNamespace };
  const xds = createXdsClient({
    address,
    ...channel,
    node: {
      id: `waypoint~${options.ip}~${gateway.name}.${gateway.namespace}~${gateway.namespace}.svc.${clusterDomain}`,
      metadata: { NODE_NAME: options.nodeName, CLUSTER_ID: clusterId },
    },
    // With the token, the cluster to check it in, as pilot-agent's xDS proxy sends it (`ClusterID`).
    headers: () => ({ authorization: `Bearer ${tokenNow()}`, clusterid: clusterId }),
    // A resource the waypoint cannot use is NACKed by name; the rest of the response applies.
    ...waypointXdsChecks(self),
    logger,
    metrics,
  });
  xds.onNack((typeUrl, message) => logger.warn({ typeUrl, message }, "xds update refused; last good kept"));

  let client: HboneClient | undefined;
  let server: HboneServer | undefined;
  let closed = false;
  // The certificate held while it is valid; one that expired (renewals failed) is fetched again, not
  // presented: a peer would refuse it.
  const svid = (): Promise<X509Svid> => secrets.fetch(identity);

  /**
   * A plaintext connect from the waypoint's address, with the connect deadline (the kernel's SYN
   * retries would hold it for over two minutes) and TCP keepalive (a backend that vanished without a
   * word is found).
   */
  const dialPlain = (host: string, port: number) =>
    withKeepAlive(
      withConnectDeadline(
        // Half-open: a backend that is done speaking may still be reading what the client sends.
        connectTcp({ host, port, localAddress: options.ip, family: 4, allowHalfOpen: true }),
        connectTimeoutMs,
        `${host}:${port}`,
      ),
    );

  // Looked up on this thread (c-ares) and kept for the answer's TTL: the thread pool's getaddrinfo, which
  // a connect by name would use, is held for the system's timeouts by a resolver that does not answer.
  const resolveHostname = createHostnameResolver(
    options.nameservers === undefined ? {} : { nameservers: options.nameservers },
  );
  const resolveEndpoint = async (hostname: string): Promise<string> => {
    try {
      return await resolveHostname(hostname);
    } catch (cause) {
      throw new WaypointError("ERR_WAYPOINT_RESOLVE", `cannot resolve endpoint ${hostname}`, { cause });
    }
  };

  const connect = async (endpoint: Endpoint) => {
    // An endpoint known by hostname (a DNS ServiceEntry's) is outside the mesh: plaintext to an address
    // of that name, of the waypoint's own family.
    if (isIP(endpoint.address) === 0)
      return dialPlain(await resolveEndpoint(endpoint.address), endpoint.port);
    const workload = store.findByAddress(endpoint.address);
    // A workload outside the mesh (tunnel protocol NONE: nothing terminates HBONE for it) is reached
    // in plaintext, from the waypoint's address, as Istio's waypoints reach it; so is a host-network
    // one (a pod on its node's network, a Service's EndpointSlice endpoint), never found by address.
    if (workload === undefined && store.hasHostNetworkAddress(endpoint.address)) {
      return dialPlain(endpoint.address, endpoint.port);
    }
    if (workload === undefined) {
      throw new WaypointError("ERR_WAYPOINT_UNKNOWN_ENDPOINT", `${endpoint.address} is not a known workload`);
    }
    if (!usesHbone(workload)) return dialPlain(endpoint.address, endpoint.port);
    const own = await svid();
    const creds = { key: own.privateKeyPem, certChain: own.certChainPem, trustBundle: trustOf(own) };
    client ??= createHboneClient({ ...creds, logger, metrics });
    const stream = await client.connect({
      address: `${endpoint.address}:${hbonePort}`,
      authority: `${endpoint.address}:${endpoint.port}`,
      expectedIdentities: [identityOf(workload)],
      sourceAddress: options.ip,
      credentials: creds,
    });
    return stream;
  };

  // Every finished request, for the admin endpoint /recent_requests (also when the access log is off).
  const history = createRequestHistory();
  const handler: WaypointHandler = createWaypointHandler({
    routes: [],
    // What is not HTTP is carried as TCP under L4 policy, as Istio's waypoints detect the protocol.
    opaqueTcp: true,
    connect,
    resolveBackend: createBackendResolver(store, clusterDomain),
    clusterDomain,
    policy: {
      evaluate: (routed) => {
        // The router names the Gateway and the Service; a policy on the waypoint GatewayClass needs the
        // class too. Only then is the request copied.
        const request = config.classTargeted ? withWaypointClassTarget(routed, rootNamespace) : routed;
        // Named here so the access log and /recent_requests say which policy refused the request.
        const evaluated = policy.evaluate(request);
        // The common answer goes back as it is, with no closure made for the explanation it does not need.
        if (evaluated.allowed) return evaluated;
        const decision = withDecidingPolicy(evaluated, () => policy.explain(request));
        if (!decision.allowed) {
          logger.info(
            { peer: request.source.identity, method: request.http?.method, reason: decision.reason },
            `denied by ${deniedBy(decision, () => [])}`,
          );
        }
        return decision;
      },
    },
    waypoint: gateway,
    pathNormalization,
    ...(options.acceptHttp10 === undefined ? {} : { acceptHttp10: options.acceptHttp10 }),
    identity,
    authenticate: requestAuthentications.authenticate,
    ...(options.accessLog === false ? {} : { accessLog: (entry) => logger.info(entry, "access") }),
    onRequestFinished: history.record,
    ...(options.headersTimeoutMs === undefined ? {} : { headersTimeoutMs: options.headersTimeoutMs }),
    logger,
    metrics: perRequestMetrics,
  });

  const config = new WaypointXdsConfig(xds, self, { store, handler, policy, requestAuthentications, logger });

  const onTunnel = (tunnel: InboundTunnel): void => {
    const authority = tunnel.authority;
    const match = authority.kind === "ip" ? store.findService(authority.host, authority.port) : undefined;
    // A workload bound to this waypoint itself (istio.io/use-waypoint on the workload), addressed
    // directly: its requests go on to it unless a route says otherwise.
    const workload =
      match === undefined && authority.kind === "ip" ? store.findByAddress(authority.host) : undefined;
    let target: ({ service: DestinationService } | { endpoint: Endpoint }) & {
      httpOnly: boolean;
      tcpOnly: boolean;
    };
    if (match !== undefined && config.serves(match.service)) {
      // A Service of the cluster named in another DNS domain than the one this waypoint was told: the
      // policies that target it as a Service would be missed, so nothing is served (fails closed).
      if (otherClusterDomainOf(match.service, clusterDomain) !== undefined) {
        logger.debug(
          { authority: `${authority.host}:${authority.port}`, hostname: match.service.hostname },
          "tunnel refused: a Service of another cluster DNS domain",
        );
        tunnel.refuse(HBONE_STATUS.noUpstream, "a Service of another cluster DNS domain");
        return;
      }
      const declared = declaredProtocol(match.service, match.servicePort);
      target = {
        service: destinationServiceOf(match.service, clusterDomain),
        httpOnly: declared === "http",
        tcpOnly: declared === "tcp",
      };
    } else if (workload !== undefined && config.serves(workload)) {
      // The workload's port as the Services it backs declare it, so a server that speaks first on a
      // port declared TCP is heard here too.
      const declared = declaredWorkloadProtocol(store, workload, authority.port);
      target = {
        endpoint: workloadEndpoint(workload, authority.host, authority.port),
        httpOnly: declared === "http",
        tcpOnly: declared === "tcp",
      };
    } else {
      // Only the Services and workloads bound to this waypoint (istio.io/use-waypoint), as ztunnel's
      // waypoint checks.
      logger.debug(
        { authority: `${authority.host}:${authority.port}` },
        "tunnel refused: not a service of this waypoint",
      );
      tunnel.refuse(HBONE_STATUS.badRequest, "not a service of this waypoint");
      return;
    }
    const remote = tunnel.remoteAddress?.replace(/^::ffff:/, "");
    // The source workload, by the address the tunnel came from (its ztunnel dials from the pod's own
    // address): the source_* labels of the request and TCP metrics name it, as Istio's waypoints do
    // from their workload discovery data, so dashboards and Kiali show who called. Its identity in the
    // labels stays the one mutual TLS proved.
    const sourceWorkload = remote === undefined ? undefined : store.findByAddress(remote);
    handler.handle(tunnel.accept(), {
      peerIdentity: tunnel.peerIdentity.toString(),
      ...(remote === undefined ? {} : { remoteAddress: remote }),
      ...(sourceWorkload === undefined ? {} : { source: sourceInfoOf(sourceWorkload) }),
      destination: { address: authority.host, port: authority.port, ...target },
    });
  };

  let readyFlag = false;
  /** A graceful shutdown began. */
  let draining = false;
  const configDump = () => ({
    gateway,
    identity,
    ready: readyFlag,
    certificates: [svidSummary(secrets.get(identity))].flatMap((c) => (c === undefined ? [] : [c])),
    routes: config.inForce().routes,
    authorizationPolicies: config.inForce().policies,
    requestAuthentications: requestAuthentications.summary(),
    backends: [...store.services().values()].map((service) => ({
      service: `${service.namespace}/${service.name}`,
      hostname: service.hostname,
      addresses: service.addresses,
      ports: service.ports,
      endpoints:
        resolveServiceBackend(
          store,
          {
            kind: "Service",
            group: "",
            name: service.name,
            namespace: service.namespace,
            port: undefined,
          },
          clusterDomain,
        ) ?? [],
    })),
  });
  let operator: Awaited<ReturnType<typeof startOperatorEndpoints>> | undefined;

  const { close, closed: closedPromise } = closeOnce(() => teardown());
  /** Ends the wait of a drain under way: close() does not wait for the drain's deadline. */
  let endDrain = () => {};
  const teardown = async (): Promise<void> => {
    closed = true;
    readyFlag = false;
    endDrain();
    // Every step runs even when one before it failed, so one stuck part does not keep the rest open;
    // close() reports the first failure.
    const failures: unknown[] = [];
    const step = async (run: () => unknown): Promise<void> => {
      try {
        await run();
      } catch (err) {
        failures.push(err);
      }
    };
    await step(() => operator?.close());
    await step(() => xds.close());
    await server?.close({ timeoutMs: 500 }).catch(() => {});
    await step(() => handler.close());
    await step(() => client?.destroy());
    await step(() => secrets.close());
    await step(() => caClient.close());
    if (failures.length > 0) throw failures[0];
    logger.info({}, "waypoint closed");
  };

  let shuttingDown: Promise<void> | undefined;
  const drainThenClose = async (deadlineMs: number): Promise<void> => {
    if (closed) return close();
    draining = true;
    readyFlag = false;
    logger.info({ deadlineMs }, "shutting down: no new tunnels, requests in flight have until the deadline");
    const deadline = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, deadlineMs);
      endDrain = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    // The listener closes and says GOAWAY; it waits for its tunnels, which end as the router drains
    // the connections inside them, and cuts what is left at the deadline.
    await Promise.all([
      server?.close({ timeoutMs: deadlineMs }).catch(() => {}),
      Promise.race([handler.drain(), deadline]),
    ]);
    endDrain();
    // The same close as everyone else's: when close() came first, the drain ends on its teardown.
    await close();
  };
  const shutdown = (shutdownOptions: { deadlineMs?: number } = {}): Promise<void> => {
    checkDrainMs("deadlineMs", shutdownOptions.deadlineMs);
    shuttingDown ??= drainThenClose(
      shutdownOptions.deadlineMs ?? options.terminationDrainMs ?? DEFAULT_TERMINATION_DRAIN_MS,
    );
    return shuttingDown;
  };

  const ready = (async () => {
    const own = await svid();
    await config.ready();
    if (closed) throw new WaypointError("ERR_WAYPOINT_CLOSED", "closed before it was ready");
    const s = createHboneServer({
      key: own.privateKeyPem,
      certChain: own.certChainPem,
      trustBundle: trustOf(own),
      // Peers of the mesh's trust domain and of its aliases, as Istio's waypoint validates them.
      allowedTrustDomains: [trustDomain, ...trustDomainAliases],
      onTunnel,
      logger,
      metrics,
    });
    try {
      await s.listen({ host: options.ip, port: hbonePort });
    } catch (cause) {
      await s.close({ timeoutMs: 0 }).catch(() => {});
      throw new WaypointError("ERR_WAYPOINT_LISTEN", `cannot listen on ${options.ip}:${hbonePort}`, {
        cause,
      });
    }
    server = s;
    if (closed || draining) await s.close({ timeoutMs: 0 });
    else readyFlag = true;
    logger.info({ ip: options.ip, identity }, "waypoint ready");
  })();
  ready.catch(() => {});
  secrets.on("rotated", (event: { svid: X509Svid }) => {
    server?.setCredentials({
      key: event.svid.privateKeyPem,
      certChain: event.svid.certChainPem,
      trustBundle: trustOf(event.svid),
    });
    followRoots(channel, trustOf(event.svid), logger);
  });

  try {
    operator = await startOperatorEndpoints({
      ip: options.ip,
      adminIp,
      ports: { ...DEFAULT_OPERATOR_PORTS, ...options.ports },
      isReady: () => readyFlag,
      registry,
      configDump,
      recentRequests: history.recent,
    });
  } catch (err) {
    await close();
    throw err;
  }
  const operatorAddresses = operator.addresses;
  logger.info({ ...operatorAddresses }, "waypoint operator endpoints listening");

  return {
    address: `${options.ip}:${hbonePort}`,
    identity,
    operatorAddresses,
    ready,
    configGeneration: () => config.generation,
    metricsText: () => registry.metrics(),
    shutdown,
    close,
    closed: closedPromise,
  };
}

/** The `sub` of a JWT, read without verifying it (the CA verifies); undefined for anything else. */
function tokenSubject(token: string): string | undefined {
  try {
    const sub = decodeJwt(token).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}
