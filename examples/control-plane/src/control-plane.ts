import { X509Certificate } from "node:crypto";
import { createServer, type Server as HttpServer } from "node:http";
import { type AddressInfo, isIP } from "node:net";
import { parseTrustDomain } from "@ambient/spiffe";
import {
  type Authenticator,
  type CaCertsPem,
  callerFromKubernetesClaims,
  createCertificateService,
  createJwtAuthenticator,
  createNodeAuthorizer,
  startRootRotator,
} from "@ambient/spiffe/ca";
import {
  createXdsPushThrottle,
  createXdsServer,
  DEFAULT_XDS_SERVER_OPTIONS,
  TypeUrl,
  XdsError,
  type XdsServer,
} from "@ambient/xds";
import { experimental, Metadata, Server, type ServerCredentials, type ServerOptions } from "@grpc/grpc-js";
import { forOwnCluster } from "./caller-cluster.js";
import {
  DASHBOARD_PATH,
  type DashboardOptions,
  type MeshCollector,
  type RunningDashboard,
  startDashboard,
} from "./dashboard/index.js";
import { ControlPlaneError } from "./errors.js";
import { IncrementalTranslation, type PodChanges } from "./incremental-translation.js";
import type { ManifestError } from "./last-good.js";
import { isLocalAuthority } from "./local-authority.js";
import type { ManifestLimits, MeshIssue } from "./manifests.js";
import { loadMeshState, TOKEN_ISSUER, writeNodeTokens } from "./mesh-state.js";
import { carryOnDemandIndex, relatedAddressesHook } from "./on-demand.js";
import { addressText } from "./pod-address.js";
import { issueServingCertificate, RenewingServingCertificate, servingHosts } from "./serving-certificate.js";
import type { ConfigSnapshot, ConfigSource } from "./sources/config-source.js";
import { createFolderSource } from "./sources/folder-source.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { type EnvoyConfig, translateEnvoy } from "./translate-envoy.js";
import { createTranslationMemo } from "./translate-memo.js";
import {
  type MeshConfig,
  type MeshWorkload,
  parsePodCidrs,
  type TranslateOptions,
  translateMesh,
} from "./translate-mesh.js";
import { translateWaypoint, type WaypointConfig } from "./translate-waypoint.js";

/** SPIFFE ID of the control plane's serving certificate. */
/** {@link ControlPlaneOptions.trustedNodeAccounts} by default: the ztunnels' account. */
export const DEFAULT_TRUSTED_NODE_ACCOUNTS: readonly string[] = ["istio-system/ztunnel"];

/** A Kubernetes namespace or service account name: a DNS-1123 label or subdomain. */
const ACCOUNT_PART = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

const DNS_LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?";
/** A cluster DNS domain: lower-case DNS-1123 labels joined by dots, no trailing dot. */
const DNS_DOMAIN = new RegExp(`^(?=.{1,253}$)${DNS_LABEL}(\\.${DNS_LABEL})*$`);

/**
 * Checks the mesh's trust domain and the cluster's DNS domain: a mistyped one would give every workload
 * an identity or every Service a host no proxy expects.
 * @throws ControlPlaneError `ERR_CONTROL_PLANE_CONFIG` naming the option.
 */
export function validateMeshDomains(options: Pick<TranslateOptions, "trustDomain" | "domainSuffix">): void {
  if (options.trustDomain !== undefined) {
    try {
      parseTrustDomain(options.trustDomain);
    } catch (err) {
      throw new ControlPlaneError(
        "ERR_CONTROL_PLANE_CONFIG",
        `trustDomain: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }
  const domain = options.domainSuffix;
  if (domain !== undefined && (typeof domain !== "string" || !DNS_DOMAIN.test(domain))) {
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_CONFIG",
      `domainSuffix: ${JSON.stringify(domain)} is not a DNS domain (lower-case labels of a-z, 0-9 and -, joined by dots)`,
    );
  }
}

/** Checks `namespace/serviceAccount` entries; a mistyped one would leave the ztunnels without certificates. */
function validTrustedNodeAccounts(accounts: readonly string[]): readonly string[] {
  for (const account of accounts) {
    const parts = typeof account === "string" ? account.split("/") : [];
    if (parts.length !== 2 || !parts.every((p) => ACCOUNT_PART.test(p))) {
      throw new ControlPlaneError(
        "ERR_CONTROL_PLANE_CONFIG",
        `trustedNodeAccounts: ${JSON.stringify(account)} is not <namespace>/<serviceAccount>`,
      );
    }
  }
  return accounts;
}

export const CONTROL_PLANE_IDENTITY = "spiffe://cluster.local/ns/istio-system/sa/istiod";
const DEFAULT_NODES = ["node-a", "node-b", "node-c"];
const SERVING_CERT_TTL_SECONDS = 30 * 24 * 60 * 60;
// Tokens live 24 h; the files are rewritten well before they expire.
const TOKEN_REFRESH_MS = 12 * 60 * 60 * 1000;

/**
 * The gRPC servers' options, as istiod's with its chart's defaults: a PING after 30 s without one and
 * the connection closed 10 s after an unanswered one (a client that vanished without a word frees its
 * stream), and each connection ended after 30 min, with 10 s to finish, so that clients spread again
 * over the replicas (`keepaliveMaxServerConnectionAge`).
 */
export const DEFAULT_GRPC_SERVER_OPTIONS: Readonly<ServerOptions> = Object.freeze({
  ...DEFAULT_XDS_SERVER_OPTIONS,
  "grpc.max_connection_age_ms": 30 * 60_000,
  "grpc.max_connection_age_grace_ms": 10_000,
});

/** Options of {@link startControlPlane}. */
export interface ControlPlaneOptions extends TranslateOptions {
  /**
   * Directory of `*.yaml` / `*.yml` / `*.json` manifests (not recursive), read by the folder source.
   * Exactly one of `meshDir` and `source` is required.
   */
  meshDir?: string;
  /**
   * Where the objects come from instead of `meshDir`, e.g. the Kubernetes source. The control plane
   * owns it: it is closed by `close()`, and when `startControlPlane` rejects.
   */
  source?: ConfigSource;
  /**
   * With `meshDir`: give ServiceEntry hosts without addresses one each from 240.240.0.0/16, kept while
   * the entry lasts (istiod's IP auto-allocation; the Kubernetes source reads the addresses its leader
   * writes to the entries' status). Opt one entry out with the label
   * `networking.istio.io/enable-autoallocate-ip: "false"`. Default true.
   */
  allocateServiceEntryAddresses?: boolean;
  /**
   * Where the CA, the token key, `root-cert.pem` and `tokens/<node>.jwt` are kept. Default: none,
   * everything stays in memory (a new CA on every start).
   */
  stateDir?: string;
  /** gRPC TLS listen address (xDS + CA). Default `127.0.0.1:15012`; istiod's secure port. Use port 0 for ephemeral. */
  listen?: string;
  /** Admin HTTP address (`/metrics`, `/debug/config`, `/ready`). Default: not started; istiod monitoring port 15014. */
  admin?: string;
  /**
   * Plaintext xDS address without authentication, for local debugging only (no CA on it).
   * Default: not started; istiod's plaintext port 15010.
   */
  plaintextListen?: string;
  /**
   * grpc-js options of the gRPC servers (xDS and CA), over {@link DEFAULT_GRPC_SERVER_OPTIONS}: e.g.
   * `grpc.max_connection_age_ms` (istiod's `keepaliveMaxServerConnectionAge`).
   */
  grpcServerOptions?: ServerOptions;
  /**
   * The live mesh page on the admin port (`/dashboard`): the proxies it reads (more with
   * `dashboard.addProxy`) and how often. Served whenever `admin` is set.
   */
  dashboard?: DashboardOptions;
  /** Body of `/metrics` (prom-client `registry.metrics()`). Default: `/metrics` answers 404. */
  metricsText?: () => Promise<{ contentType: string; body: string }>;
  /**
   * Size, token, document, nesting and alias limits of one manifest file; a file over them is refused
   * and its last good objects are kept. Default 3 MiB, 50 000 tokens, 1000 documents, flow depth 64,
   * 100 aliases ({@link DEFAULT_MANIFEST_LIMITS}).
   */
  manifestLimits?: ManifestLimits;
  /** Re-read the mesh directory when it changes. Default true. */
  watch?: boolean;
  /** Quiet time after the last file event before a reload. Default 100 ms. */
  watchDebounceMs?: number;
  /**
   * Translate a reload from the source's change set when it has one and every change is a Pod:
   * O(change) instead of O(objects). Default true; false translates every object on every reload
   * (the same resources, for comparison).
   */
  incrementalReload?: boolean;
  /** Push debounce of the xDS server. Default 100 ms; istiod `PILOT_DEBOUNCE_AFTER`. */
  xdsDebounceMs?: number;
  /**
   * Leading-edge push debounce: a change after a quiet `xdsDebounceMs` is pushed at once, and only the
   * changes that follow within the window wait for its end (a rollout still makes one push per window).
   * Default true; false waits `xdsDebounceMs` before every push.
   */
  xdsDebounceLeadingEdge?: boolean;
  /**
   * Response bytes the xDS servers may hold for all their streams together (the TLS port and the
   * plaintext one share the bound) before further responses wait their turn (`@ambient/xds`
   * `maxTotalBufferedBytes`; istiod `PILOT_PUSH_THROTTLE`). Default 16 MiB: a full push then goes to
   * about 16 MiB / state size clients at a time.
   */
  xdsMaxTotalBufferedBytes?: number;
  /** Require a valid node token on xDS streams. Default true (istiod authenticates every xDS client). */
  requireXdsToken?: boolean;
  /**
   * DNS names and IP addresses in the serving certificate besides `istiod.istio-system.svc` (always
   * there, the name ztunnel verifies by default) and the `listen` host when it is an IP. Default none;
   * istiod `ISTIOD_CUSTOM_HOST`.
   */
  servingHosts?: readonly string[];
  /**
   * Lifetime of the serving certificate, in seconds: a new one is issued at half of it and served to
   * new connections (open ones keep theirs). Default 30 days.
   */
  servingCertTtlSeconds?: number;
  /** Nodes that get a token even when no manifest names them. Default `node-a`, `node-b`, `node-c`. */
  extraNodes?: readonly string[];
  /**
   * Authenticates xDS clients and CA callers instead of the minted node tokens, e.g. TokenReview on
   * Kubernetes (`createTokenReviewAuthenticator`). Default: the control plane's own node tokens.
   * Either way, a request whose `clusterid` metadata names a cluster other than `clusterId` is refused
   * before it is asked.
   */
  authenticator?: Authenticator;
  /**
   * The identities of the pods on a node, for the CA's impersonation check. Default: from the served
   * configuration. On Kubernetes: the informer cache (`identitiesOfPods(source.podsOnNode(node))`).
   */
  identitiesOnNode?: (node: string) => Iterable<string | { toString(): string }>;
  /**
   * The node agents whose callers may ask the CA for the identities of the pods on their node, as
   * `<namespace>/<serviceAccount>` (istiod `CA_TRUSTED_NODE_ACCOUNTS`). Default
   * {@link DEFAULT_TRUSTED_NODE_ACCOUNTS}; on Kubernetes, `ztunnel` in the system namespace.
   */
  trustedNodeAccounts?: readonly string[];
  /**
   * The CA's certificates and key (e.g. from the `cacerts` or `istio-ca-secret` Secret), so every
   * replica signs with the same root. Default: kept in `stateDir`, or created in memory.
   */
  cacerts?: CaCertsPem;
  /**
   * The given `cacerts` are the mesh's own self-signed root (istiod's `istio-ca-secret`, not an
   * operator's `cacerts`): it is rotated like a generated one, and `persistRoot` keeps each rotation.
   */
  cacertsSelfSigned?: boolean;
  /** Where a rotated root is written when `cacerts` were given (the Secret they came from). */
  persistRoot?: (cacerts: Required<CaCertsPem>) => Promise<void>;
  /**
   * Rotation of the control plane's own self-signed root (the one it generated, kept in `stateDir` or
   * in memory), as istiod rotates its self-signed root: checked every `checkIntervalSeconds` (default
   * 3600), re-issued for the same key and subject when less than `gracePercent` (default 20) of its
   * life is left, so certificates under the old and the new root verify against either. The new root
   * signs from then on, is written to `stateDir` and sent in every CA answer beside the old one (which
   * ztunnels add to what they trust), and signs the next serving certificate, issued at once; the old
   * root leaves the bundle after `retireAfterSeconds` (default 48 h). `false` turns it off. Given
   * `cacerts` are rotated only with `cacertsSelfSigned`; a plugged-in CA (an operator's `cacerts`, or
   * one in `stateDir` whose signing certificate is not itself the root) never is.
   */
  rootRotation?: false | RootRotationOptions;
  /** Lifetime of a root generated here, and of each re-issued one. Default 10 years; istiod `CITADEL_SELF_SIGNED_CA_CERT_TTL`. */
  caRootTtlSeconds?: number;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** Options of {@link ControlPlaneOptions.rootRotation}. */
export interface RootRotationOptions {
  /** Default 3600; istiod `CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL`. */
  checkIntervalSeconds?: number;
  /** Default 20; istiod `CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE`. */
  gracePercent?: number;
  /** Default 172800 (48 h: two default workload certificate lifetimes). */
  retireAfterSeconds?: number;
  /**
   * Asked before a due rotation: only when it returns true does this control plane rotate (the leader
   * of several replicas; the others take the new root with `ControlPlane.adoptRoot`). Default: always.
   */
  shouldRotate?: () => boolean;
}

/** What one reload did. */
export interface ReloadResult {
  /**
   * `changes`: only the objects the source reported changed were translated (Pod changes); `all`:
   * every object was (the first reload, other kinds of change, a source that does not track changes).
   */
  translated: "all" | "changes";
  workloads: number;
  services: number;
  authorizations: number;
  /** Resources added or changed (pushed to clients). */
  changed: number;
  /** Resources removed. */
  removed: number;
  /** Resources encoded for the xDS cache: new or re-translated ones only, not every resource. */
  encoded: number;
  /**
   * Translation notes: objects skipped or partly used (bad pod IP, taken VIP, unknown waypoint, route
   * parts not translated to Envoy).
   */
  issues: MeshIssue[];
  /** Manifest edits not applied (unreadable, invalid, over a limit), and what is served instead. */
  errors: ManifestError[];
}

/** A running control plane. */
export interface ControlPlane {
  /** `host:port` of the gRPC TLS server (xDS and CA). */
  readonly address: string;
  /** `host:port` of the admin server, when started. */
  readonly adminAddress: string | undefined;
  /** `host:port` of the plaintext xDS server, when started. */
  readonly plaintextAddress: string | undefined;
  /** The live mesh page's reader of proxies (`/dashboard` on the admin port), when `admin` is set. */
  readonly dashboard: MeshCollector | undefined;
  /**
   * The mesh trust bundle now: the CA root that signs SVIDs and the control plane's own certificate,
   * and while a rotated root's predecessor is still trusted, that one too.
   */
  readonly rootCertPem: string;
  /**
   * Re-issues the control plane's self-signed root now, as the rotation does when it is due: the new
   * root signs from now on, both are in the trust bundle and in CA answers, and `stateDir` (or
   * `persistRoot`) is updated. The previous root stays in the bundle until a due rotation's
   * retirement removes it (it verifies the same certificates, being the same key).
   * @throws ControlPlaneError `ERR_CONTROL_PLANE_STATE` when the CA is plugged in (not its own root).
   */
  rotateRoot(): Promise<void>;
  /**
   * Takes a root another replica re-issued for the shared key (read back from the Secret): it signs
   * from now on, joins the trust bundle, and the serving certificate is re-issued under it. Resolves
   * to false when it was already the signer.
   * @throws ControlPlaneError `ERR_CONTROL_PLANE_STATE` for a root of another key or subject.
   */
  adoptRoot(rootPem: string): Promise<boolean>;
  /**
   * The serving certificate chain (leaf first): URI SAN `spiffe://<td>/ns/istio-system/sa/istiod`,
   * DNS SAN `istiod.istio-system.svc` and the `servingHosts`. The one new connections get now: it is
   * renewed at half its lifetime (`servingCertTtlSeconds`).
   */
  readonly servingCertPem: string;
  /** A node token (bound service-account token stand-in) for the ztunnel of `node`. */
  tokenFor(node: string): Promise<string>;
  /** Re-reads the mesh directory now and pushes what changed. */
  reload(): Promise<ReloadResult>;
  /** The configuration currently served. */
  config(): MeshConfig;
  /** The Envoy resources (LDS/RDS/CDS/EDS) currently served, for proxyless gRPC and Envoy clients. */
  envoyConfig(): EnvoyConfig;
  /** Manifest edits not applied at the last reload (also in `/debug/config` under `errors`). */
  errors(): ManifestError[];
  /** Bytes of xDS responses (TLS and plaintext servers) not yet let out to their clients. */
  xdsBufferedBytes(): number;
  /** Stops watching, ends every stream and closes the servers. */
  close(): Promise<void>;
}

function ipText(bytes: Uint8Array | undefined): string {
  return bytes === undefined ? "" : addressText(bytes);
}

/**
 * The served configuration as JSON (addresses as text), for `/debug/config`; `errors` lists the
 * manifest edits not applied.
 */
export function configToJson(config: MeshConfig, errors: readonly ManifestError[] = []): unknown {
  return {
    workloads: config.workloads.map((w) => ({
      ...w.workload,
      addresses: (w.workload.addresses ?? []).map((a) => ipText(a)),
    })),
    services: config.services.map((s) => ({
      ...s.service,
      addresses: (s.service.addresses ?? []).map((a) => ({
        network: a.network ?? "",
        address: ipText(a.address),
        // A ServiceEntry range: the address is its network address.
        ...(a.length === undefined ? {} : { length: a.length }),
      })),
    })),
    authorizations: [...config.authorizations.values()],
    nodes: Object.fromEntries(config.nodes),
    issues: config.issues,
    errors,
  };
}

function listenHttp(server: HttpServer, address: string): Promise<string> {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve(`${host}:${(server.address() as AddressInfo).port}`);
    });
  });
}

function bindGrpc(server: Server, address: string, credentials: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (err, port) => (err ? reject(err) : resolve(port)));
  });
}

function validAddress(address: string, what: string): void {
  const colon = address.lastIndexOf(":");
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_CONFIG",
      `${what} must be host:port, got ${JSON.stringify(address)}`,
    );
  }
}

/**
 * Reports what is in `items` and was not in `last` (`appeared`) and what was in `last` and is not in
 * `items` any more (`resolved`), each by its `key`; returns the record for the next call.
 */
function logTransitions<T>(
  last: ReadonlyMap<string, T>,
  items: readonly T[],
  key: (item: T) => string,
  log: { appeared: (item: T) => void; resolved: (item: T) => void },
): Map<string, T> {
  const now = new Map<string, T>();
  for (const item of items) now.set(key(item), item);
  for (const [k, item] of now) if (!last.has(k)) log.appeared(item);
  for (const [k, item] of last) if (!now.has(k)) log.resolved(item);
  return now;
}

/** The refusal an xDS stream gets when its caller is not authenticated, whatever the reason (as istiod). */
export const XDS_AUTHENTICATION_FAILURE = "authentication failure";

/**
 * Starts the control plane: loads (or creates) the CA and token key, reads the manifests, and serves
 * Delta/SotW xDS (`istio.workload.Address`, `istio.security.Authorization`) and the Istio certificate
 * service on one TLS gRPC port.
 */
export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const logger = options.logger ?? noopLogger;
  const metrics = options.metrics ?? noopMetrics;
  validateMeshDomains(options);
  const trustDomain = options.trustDomain ?? "cluster.local";
  const listen = options.listen ?? "127.0.0.1:15012";
  validAddress(listen, "listen");
  if (options.admin !== undefined) validAddress(options.admin, "admin");
  if (options.plaintextListen !== undefined) validAddress(options.plaintextListen, "plaintextListen");
  const rotation = rootRotationSettings(options.rootRotation);
  const servingTtl = options.servingCertTtlSeconds ?? SERVING_CERT_TTL_SECONDS;
  if (typeof servingTtl !== "number" || !(servingTtl >= 1) || !Number.isFinite(servingTtl)) {
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_CONFIG",
      `servingCertTtlSeconds must be a finite number of seconds, at least 1; got ${String(servingTtl)}`,
    );
  }
  const trustedNodeAccounts = validTrustedNodeAccounts(
    options.trustedNodeAccounts ?? DEFAULT_TRUSTED_NODE_ACCOUNTS,
  );
  if ((options.meshDir === undefined) === (options.source === undefined)) {
    throw new ControlPlaneError("ERR_CONTROL_PLANE_CONFIG", "exactly one of meshDir and source is required");
  }
  const translateOptions: TranslateOptions = {
    ...(options.clusterId === undefined ? {} : { clusterId: options.clusterId }),
    trustDomain,
    ...(options.rootNamespace === undefined ? {} : { rootNamespace: options.rootNamespace }),
    ...(options.domainSuffix === undefined ? {} : { domainSuffix: options.domainSuffix }),
    ...(options.network === undefined ? {} : { network: options.network }),
    ...(options.podCidrs === undefined ? {} : { podCidrs: options.podCidrs }),
    ...(options.captureSignal === undefined ? {} : { captureSignal: options.captureSignal }),
  };
  if (
    options.captureSignal !== undefined &&
    options.captureSignal !== "dataplane-mode" &&
    options.captureSignal !== "redirection"
  ) {
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_CONFIG",
      `captureSignal must be "dataplane-mode" or "redirection"; got ${JSON.stringify(options.captureSignal)}`,
    );
  }
  parsePodCidrs(options.podCidrs);
  const source =
    options.source ??
    createFolderSource({
      dir: options.meshDir ?? "",
      ...(options.manifestLimits === undefined ? {} : { limits: options.manifestLimits }),
      ...(options.watch === undefined ? {} : { watch: options.watch }),
      ...(options.watchDebounceMs === undefined ? {} : { debounceMs: options.watchDebounceMs }),
      ...(options.allocateServiceEntryAddresses === undefined
        ? {}
        : { allocateServiceEntryAddresses: options.allocateServiceEntryAddresses }),
      logger,
    });

  const reloads = metrics.counter("ambient_control_plane_reloads_total", "Mesh directory reloads", [
    "result",
  ]);
  const resources = metrics.gauge("ambient_control_plane_resources", "Resources served, by type", ["type"]);
  const issuesGauge = metrics.gauge(
    "ambient_control_plane_manifest_issues",
    "Manifest objects skipped or partly used",
  );
  const errorsGauge = metrics.gauge(
    "ambient_control_plane_manifest_errors",
    "Manifest edits not applied (last good version kept or nothing served)",
  );

  const closeSourceAndThrow = async (err: unknown): Promise<never> => {
    await source.close();
    throw err;
  };
  const state = await loadMeshState(options.stateDir, trustDomain, {
    ...(options.cacerts === undefined ? {} : { given: options.cacerts }),
    ...(options.cacertsSelfSigned === true ? { givenSelfSigned: true } : {}),
    ...(options.persistRoot === undefined ? {} : { persistGiven: options.persistRoot }),
    ...(options.caRootTtlSeconds === undefined ? {} : { rootTtlSeconds: options.caRootTtlSeconds }),
  }).catch(closeSourceAndThrow);
  const rootExpiry = metrics.gauge(
    "citadel_server_root_cert_expiry_timestamp",
    "When the CA root that signs now expires (Unix time)",
  );
  const setRootExpiry = (): void => {
    rootExpiry.set({}, Date.parse(new X509Certificate(state.ca.rootCertPem()).validTo) / 1000);
  };
  setRootExpiry();
  const servingExpiry = metrics.gauge(
    "ambient_control_plane_serving_cert_expiry_timestamp_seconds",
    "When the serving certificate new connections get expires (Unix time); it is renewed at half its lifetime",
  );
  const listenHost = listen.slice(0, listen.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1");
  const specificIp = isIP(listenHost) !== 0 && listenHost !== "0.0.0.0" && listenHost !== "::";
  const hosts = servingHosts([...(specificIp ? [listenHost] : []), ...(options.servingHosts ?? [])]);
  const serving = await RenewingServingCertificate.start({
    issue: () =>
      issueServingCertificate(state.cacerts(), {
        spiffeId: `spiffe://${trustDomain}/ns/istio-system/sa/istiod`,
        hosts,
        ttlSeconds: servingTtl,
      }),
    ttlSeconds: servingTtl,
    renewed: (notAfter) => {
      servingExpiry.set({}, notAfter.getTime() / 1000);
      logger.info({ notAfter: notAfter.toISOString() }, "serving certificate renewed");
    },
    failed: (err, retryInMs) =>
      logger.error(
        { err: err instanceof Error ? err.message : String(err), retryInMs },
        "serving certificate renewal failed: the current one stays served",
      ),
  }).catch(closeSourceAndThrow);
  servingExpiry.set({}, serving.notAfter.getTime() / 1000);
  // Callers are checked against the one cluster this control plane reads; one naming another cluster
  // (its `clusterid`) is refused rather than checked against pods it does not run among.
  const authenticator = forOwnCluster(
    options.authenticator ??
      createJwtAuthenticator({
        keys: state.jwks,
        issuer: TOKEN_ISSUER,
        trustDomain,
        algorithms: ["ES256"],
        callerFromClaims: callerFromKubernetesClaims,
      }),
    options.clusterId ?? "Kubernetes",
  );

  let current: MeshConfig = {
    workloads: [],
    services: [],
    authorizations: new Map(),
    nodes: new Map(),
    issues: [],
  };
  let currentEnvoy: EnvoyConfig = {
    listeners: new Map(),
    routeConfigurations: new Map(),
    clusters: new Map(),
    clusterLoadAssignments: new Map(),
    issues: [],
  };
  let currentErrors: ManifestError[] = [];
  // The issues and manifest errors logged so far (see the end of a reload), by their text.
  let loggedIssues = new Map<string, MeshIssue>();
  let loggedErrors = new Map<string, ManifestError>();
  const tokenNodes = new Set<string>();

  // One bound for both xDS ports: they serve one cache, so a push to both is one push's memory.
  const pushThrottle = createXdsPushThrottle(
    options.xdsMaxTotalBufferedBytes === undefined
      ? {}
      : { maxTotalBufferedBytes: options.xdsMaxTotalBufferedBytes },
  );
  const xds = createXdsServer({
    debounceMs: options.xdsDebounceMs ?? 100,
    debounceLeadingEdge: options.xdsDebounceLeadingEdge ?? true,
    pushThrottle,
    // On-demand ztunnels (XDS_ON_DEMAND): a Service VIP brings its workloads, and a node its pods.
    related: relatedAddressesHook(() => current),
    logger,
    metrics,
    authenticate: async ({ headers, node, peer }) => {
      if (options.requireXdsToken === false) return undefined;
      const metadata = new Metadata();
      for (const [key, values] of Object.entries(headers)) {
        if (key.endsWith("-bin")) continue;
        for (const v of values) metadata.add(key, v);
      }
      try {
        const caller = await authenticator.authenticate({ metadata });
        if (caller === undefined) throw new Error("no bearer token");
        const claimedNode = node?.metadata.NODE_NAME;
        if (typeof claimedNode === "string" && caller.node !== undefined && claimedNode !== caller.node) {
          // Every ztunnel receives every address, so a mismatch reveals nothing; it is worth a warning.
          logger.warn(
            { tokenNode: caller.node, nodeName: claimedNode },
            "xds client NODE_NAME differs from its token",
          );
        }
        logger.debug(
          { caller: caller.identity.toString(), node: caller.node, xdsNode: node?.id },
          "xds client authenticated",
        );
        return caller;
      } catch (cause) {
        // The caller learns that it is refused, not why: the reason is for the operator's log.
        const reason = cause instanceof Error ? cause.message : String(cause);
        logger.error({ peer, node: node?.id, reason }, "xds client not authenticated");
        throw new XdsError("ERR_XDS_UNAUTHENTICATED", XDS_AUTHENTICATION_FAILURE);
      }
    },
  });
  // The CA answers a caller it refuses with a fixed message and logs the reason, as the xDS hook above.
  const certificateService = createCertificateService({
    ca: state.ca,
    authenticators: [authenticator],
    nodeAuthorizer: createNodeAuthorizer({
      trustedNodeAccounts,
      identitiesOnNode: (node) =>
        options.identitiesOnNode === undefined
          ? (current.nodes.get(node) ?? [])
          : [...options.identitiesOnNode(node)].map(String),
    }),
    logger,
    metrics,
  });

  // Unchanged objects keep their translated resource objects across reloads (the memo), and a
  // resource object already in the cache is not encoded again: one pod change costs O(change).
  const memo = createTranslationMemo();
  // A reload whose source names the changed objects applies them alone when they are Pods.
  const incremental = new IncrementalTranslation();
  let currentWaypoint: WaypointConfig = { routeConfigurations: new Map(), policies: new Map(), issues: [] };
  let served = new Map<string, Map<string, unknown>>();
  async function apply(): Promise<ReloadResult> {
    // The source decides what is in force (last good state, informer caches); apply only translates.
    let merged: ConfigSnapshot;
    try {
      merged = await source.snapshot();
    } catch (cause) {
      reloads.inc({ result: "error" });
      if (cause instanceof ControlPlaneError) throw cause;
      throw new ControlPlaneError("ERR_CONTROL_PLANE_CONFIG", `cannot read ${source.description}`, { cause });
    }
    const cache = xds.cache;
    let changed = 0;
    let removed = 0;
    let encoded = 0;
    /** Writes a resource unless the same translated object is already in the cache. */
    const put = (
      target: Map<string, Map<string, unknown>>,
      typeUrl: string,
      key: string,
      from: unknown,
      write: () => void,
    ): void => {
      const last = served.get(typeUrl)?.get(key);
      let now = target.get(typeUrl);
      if (now === undefined) {
        now = new Map();
        target.set(typeUrl, now);
      }
      now.set(key, from);
      if (last === from && cache.entry(typeUrl, key) !== undefined) return;
      encode(typeUrl, key, write);
    };
    /** Runs `write` (one resource into the cache) and counts it as encoded, and as changed if it did. */
    const encode = (typeUrl: string, key: string, write: () => void): void => {
      encoded++;
      const before = cache.entry(typeUrl, key)?.version;
      write();
      if (cache.entry(typeUrl, key)?.version !== before) changed++;
    };
    /**
     * Writes a workload unless it is one the last reload served and it is still in the cache. The
     * workloads are not in `served`: the last config lists them, so a full translation looks them up
     * in a set of its own for as long as it runs, not in a map kept per pod.
     */
    const putWorkload = (w: MeshWorkload, lastServed: ReadonlySet<MeshWorkload> | undefined): void => {
      if (lastServed?.has(w) && cache.entry(TypeUrl.address, w.key) !== undefined) return;
      encode(TypeUrl.address, w.key, () =>
        cache.set(TypeUrl.address, w.key, { workload: w.workload }, { aliases: w.aliases }),
      );
    };

    let applied: PodChanges | undefined;
    if (merged.changes !== undefined && options.incrementalReload !== false) {
      try {
        applied = incremental.applyPodChanges(merged.changes);
      } catch (err) {
        logger.warn({ err }, "applying the changed objects alone failed: translating every object");
      }
    }
    let next: MeshConfig;
    let envoy: EnvoyConfig;
    let waypoint: WaypointConfig;
    if (applied !== undefined) {
      // Only the changed pods' workloads and their Services' endpoints are written.
      const changes = applied;
      ({ mesh: next, envoy } = changes);
      waypoint = currentWaypoint;
      cache.batch(() => {
        for (const w of changes.written) putWorkload(w, undefined);
        for (const [name, assignment] of changes.loadAssignments) {
          put(served, TypeUrl.clusterLoadAssignment, name, assignment, () =>
            cache.set(TypeUrl.clusterLoadAssignment, name, assignment),
          );
        }
        for (const key of changes.removed) if (cache.delete(TypeUrl.address, key)) removed++;
      });
    } else {
      const { objects } = merged;
      next = translateMesh(objects, translateOptions, memo);
      envoy = translateEnvoy(objects, next, translateOptions, memo);
      // Waypoints: RDS per bound Service port, and their L7 policies (ambient.waypoint.v1.WaypointPolicy).
      waypoint = translateWaypoint(objects, next, envoy, translateOptions);
      const nowServed = new Map<string, Map<string, unknown>>();
      cache.batch(() => {
        const keep = new Set<string>();
        const lastWorkloads = new Set(current.workloads);
        for (const w of next.workloads) {
          keep.add(w.key);
          putWorkload(w, lastWorkloads);
        }
        for (const s of next.services) {
          keep.add(s.key);
          put(nowServed, TypeUrl.address, s.key, s, () =>
            cache.set(TypeUrl.address, s.key, { service: s.service }, { aliases: s.aliases }),
          );
        }
        for (const name of cache.names(TypeUrl.address)) {
          if (!keep.has(name) && cache.delete(TypeUrl.address, name)) removed++;
        }
        for (const [key, authorization] of next.authorizations) {
          put(nowServed, TypeUrl.authorization, key, authorization, () =>
            cache.set(TypeUrl.authorization, key, authorization),
          );
        }
        for (const name of cache.names(TypeUrl.authorization)) {
          if (!next.authorizations.has(name) && cache.delete(TypeUrl.authorization, name)) removed++;
        }
        // Clusters and their endpoints before the listeners and routes that name them (make before break).
        const envoyTypes = [
          [TypeUrl.cluster, envoy.clusters],
          [TypeUrl.clusterLoadAssignment, envoy.clusterLoadAssignments],
          [TypeUrl.listener, envoy.listeners],
          [
            TypeUrl.routeConfiguration,
            new Map([...envoy.routeConfigurations, ...waypoint.routeConfigurations]),
          ],
          [TypeUrl.waypointPolicy, waypoint.policies],
        ] as const;
        for (const [typeUrl, resources] of envoyTypes) {
          for (const [name, resource] of resources) {
            put(nowServed, typeUrl, name, resource, () => cache.set(typeUrl, name, resource as never));
          }
        }
        for (const [typeUrl, resources] of [...envoyTypes].reverse()) {
          for (const name of cache.names(typeUrl)) {
            if (!resources.has(name) && cache.delete(typeUrl, name)) removed++;
          }
        }
      });
      served = nowServed;
      if (options.incrementalReload !== false) incremental.reset(objects, next, envoy, memo);
    }
    currentWaypoint = waypoint;
    const issues = [...next.issues, ...envoy.issues, ...waypoint.issues];
    // Route problems are listed with the rest (`config().issues`, `/debug/config`).
    const last = current;
    current = { ...next, issues };
    // On-demand lookups read an index of the served workloads: a change set updates the last one.
    if (applied !== undefined) carryOnDemandIndex(last, current, applied.replaced, applied.written);
    currentEnvoy = envoy;
    merged.accept();
    currentErrors = merged.errors;
    resources.set({ type: "workload" }, next.workloads.length);
    resources.set({ type: "service" }, next.services.length);
    resources.set({ type: "authorization" }, next.authorizations.size);
    resources.set({ type: "listener" }, envoy.listeners.size);
    resources.set({ type: "cluster" }, envoy.clusters.size);
    issuesGauge.set({}, issues.length);
    errorsGauge.set({}, merged.errors.length);
    // Each issue and manifest error is logged when it appears and when it is gone, not at every
    // reload: with a reload per pod change, every standing one would be logged again each time.
    loggedIssues = logTransitions(loggedIssues, issues, (i) => `${i.source}\u0000${i.message}`, {
      appeared: (i) => logger.warn({ source: i.source }, i.message),
      resolved: (i) => logger.info({ source: i.source }, `resolved: ${i.message}`),
    });
    loggedErrors = logTransitions(loggedErrors, merged.errors, (e) => JSON.stringify(e), {
      appeared: ({ message, ...where }) => logger.error(where, `manifest not applied: ${message}`),
      resolved: ({ message, ...where }) => logger.info(where, `resolved: manifest not applied: ${message}`),
    });
    if (options.stateDir !== undefined) {
      const fresh = [...next.nodes.keys()].filter((n) => !tokenNodes.has(n));
      await writeNodeTokens(options.stateDir, state, fresh);
      for (const n of fresh) tokenNodes.add(n);
    }
    reloads.inc({ result: "ok" });
    const result: ReloadResult = {
      translated: applied === undefined ? "all" : "changes",
      workloads: next.workloads.length,
      services: next.services.length,
      authorizations: next.authorizations.size,
      changed,
      removed,
      encoded,
      issues,
      errors: merged.errors,
    };
    logger.info(
      { ...result, issues: result.issues.length, errors: result.errors.length },
      "mesh configuration loaded",
    );
    return result;
  }

  // Reloads run one at a time, in order.
  let chain: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<ReloadResult> => {
    const run = chain.then(apply, apply);
    chain = run.catch(() => undefined);
    return run;
  };

  if (options.stateDir !== undefined) {
    const extra = options.extraNodes ?? DEFAULT_NODES;
    await writeNodeTokens(options.stateDir, state, extra);
    for (const n of extra) tokenNodes.add(n);
  }
  try {
    await reload();
  } catch (err) {
    serving.close();
    await Promise.all([xds.close(), source.close()]);
    throw err;
  }

  const grpcServerOptions = { ...DEFAULT_GRPC_SERVER_OPTIONS, ...options.grpcServerOptions };
  const grpcServer = new Server(grpcServerOptions);
  xds.addTo(grpcServer);
  grpcServer.addService(certificateService.definition, certificateService.implementation);
  // The certificate comes from the renewing provider (the first argument is the server's own
  // certificate; no CA: clients are not asked for one): new connections get each renewed one.
  const credentials: ServerCredentials = experimental.createCertificateProviderServerCredentials(
    serving,
    null,
    false,
  );
  let port: number;
  try {
    port = await bindGrpc(grpcServer, listen, credentials);
  } catch (cause) {
    serving.close();
    await Promise.all([xds.close(), source.close()]);
    grpcServer.forceShutdown();
    throw new ControlPlaneError("ERR_CONTROL_PLANE_LISTEN", `cannot listen on ${listen}`, { cause });
  }
  const address = `${listen.slice(0, listen.lastIndexOf(":"))}:${port}`;

  let admin: HttpServer | undefined;
  let adminAddress: string | undefined;
  let dashboard: RunningDashboard | undefined;
  if (options.admin !== undefined) {
    const live = startDashboard(() => current, {
      ...options.dashboard,
      rootNamespace: options.rootNamespace,
      logger,
    });
    dashboard = live;
    admin = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      if (isDebugPath(path) && !isLoopbackPeer(req.socket.remoteAddress)) {
        res.writeHead(403, { "content-type": "text/plain" });
        res.end("debug endpoints answer callers on this host only (kubectl port-forward)\n");
        return;
      }
      // A web page whose name was rebound to 127.0.0.1 arrives from loopback with its name as Host.
      if (isDebugPath(path) && !isLocalAuthority(req.headers.host)) {
        res.writeHead(403, { "content-type": "text/plain" });
        res.end("debug endpoints answer requests addressed to an IP address or localhost only\n");
        return;
      }
      if (live.handle(req, res)) return;
      if (path === "/debug/config") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(`${JSON.stringify(configToJson(current, currentErrors), null, 2)}\n`);
      } else if (path === "/ready") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
      } else if (path === "/metrics" && options.metricsText !== undefined) {
        options.metricsText().then(
          ({ contentType, body }) => {
            res.writeHead(200, { "content-type": contentType });
            res.end(body);
          },
          (err: unknown) => {
            logger.error({ err }, "metrics collection failed");
            res.writeHead(500);
            res.end();
          },
        );
      } else {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("not found\n");
      }
    });
    try {
      adminAddress = await listenHttp(admin, options.admin);
    } catch (cause) {
      dashboard?.close();
      serving.close();
      await Promise.all([xds.close(), source.close()]);
      grpcServer.forceShutdown();
      throw new ControlPlaneError("ERR_CONTROL_PLANE_LISTEN", `cannot listen on ${options.admin}`, { cause });
    }
  }

  // Shares the cache, so it serves exactly what the TLS port serves, to anyone.
  let plaintext: XdsServer | undefined;
  let plaintextAddress: string | undefined;
  if (options.plaintextListen !== undefined) {
    plaintext = createXdsServer({
      cache: xds.cache,
      debounceMs: options.xdsDebounceMs ?? 100,
      debounceLeadingEdge: options.xdsDebounceLeadingEdge ?? true,
      pushThrottle,
      related: relatedAddressesHook(() => current),
      logger,
      metrics,
    });
    try {
      const p = await plaintext.listen(options.plaintextListen, undefined, grpcServerOptions);
      plaintextAddress = `${options.plaintextListen.slice(0, options.plaintextListen.lastIndexOf(":"))}:${p}`;
    } catch (cause) {
      serving.close();
      await Promise.all([xds.close(), plaintext.close(), source.close()]);
      grpcServer.forceShutdown();
      dashboard?.close();
      admin?.close();
      throw new ControlPlaneError("ERR_CONTROL_PLANE_LISTEN", `cannot listen on ${options.plaintextListen}`, {
        cause,
      });
    }
  }

  let tokenRefresh: NodeJS.Timeout | undefined;
  if (options.stateDir !== undefined) {
    const stateDir = options.stateDir;
    tokenRefresh = setInterval(() => {
      writeNodeTokens(stateDir, state, tokenNodes).catch((err: unknown) =>
        logger.error({ err }, "node token refresh failed"),
      );
    }, TOKEN_REFRESH_MS);
    tokenRefresh.unref();
  }

  source.start(() => {
    reload().catch((err: unknown) => logger.error({ err }, "mesh reload failed"));
  });

  // After the root changes: on disk first (a restart must not go back to the old root), then a serving
  // certificate under the new root.
  const publishRoot = async (): Promise<void> => {
    setRootExpiry();
    await state.persistCa();
    await serving.renew();
  };
  const rotator =
    rotation !== undefined && state.ca.selfSigned
      ? startRootRotator(state.ca, {
          checkIntervalMs: rotation.checkIntervalSeconds * 1000,
          gracePercent: rotation.gracePercent,
          retireAfterMs: rotation.retireAfterSeconds * 1000,
          reuseKey: true,
          ...(rotation.shouldRotate === undefined ? {} : { shouldRotate: rotation.shouldRotate }),
          onRotated: publishRoot,
          onRetired: () => state.persistCa(),
          logger,
        })
      : undefined;

  logger.info(
    { address, admin: adminAddress, plaintext: plaintextAddress, source: source.description },
    "control plane listening",
  );

  let closing: Promise<void> | undefined;
  return {
    address,
    adminAddress,
    plaintextAddress,
    dashboard: dashboard?.collector,
    get rootCertPem() {
      return state.rootCertPem();
    },
    async rotateRoot() {
      if (!state.ca.selfSigned) {
        throw new ControlPlaneError(
          "ERR_CONTROL_PLANE_STATE",
          "the CA is plugged in (cacerts): only the control plane's own root can be rotated",
        );
      }
      await state.ca.rotateRoot({ reuseKey: true });
      logger.info({ notAfter: new X509Certificate(state.ca.rootCertPem()).validTo }, "CA root re-issued");
      await publishRoot();
    },
    async adoptRoot(rootPem) {
      const before = state.ca.rootCertPem();
      try {
        state.ca.adoptRoot(rootPem);
      } catch (cause) {
        throw new ControlPlaneError("ERR_CONTROL_PLANE_STATE", "cannot take the given CA root", { cause });
      }
      if (state.ca.rootCertPem() === before) return false;
      logger.info({ notAfter: new X509Certificate(state.ca.rootCertPem()).validTo }, "CA root adopted");
      setRootExpiry();
      await serving.renew();
      return true;
    },
    get servingCertPem() {
      return serving.current.certChainPem;
    },
    tokenFor: (node) => state.tokenFor(node),
    reload,
    config: () => current,
    envoyConfig: () => currentEnvoy,
    errors: () => currentErrors,
    xdsBufferedBytes: () => xds.bufferedBytes() + (plaintext?.bufferedBytes() ?? 0),
    close() {
      closing ??= (async () => {
        clearInterval(tokenRefresh);
        rotator?.stop();
        serving.close();
        await source.close();
        await chain;
        await Promise.all([xds.close(), plaintext?.close()]);
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => grpcServer.forceShutdown(), 2000);
          grpcServer.tryShutdown(() => {
            clearTimeout(force);
            resolve();
          });
        });
        dashboard?.close();
        if (admin !== undefined) {
          const server = admin;
          server.closeAllConnections();
          await new Promise<void>((resolve) => server.close(() => resolve()));
        }
      })();
      return closing;
    },
  };
}

/** The root rotation's settings, checked; undefined when it is off. */
function rootRotationSettings(
  option: false | RootRotationOptions | undefined,
):
  | (Required<Omit<RootRotationOptions, "shouldRotate">> & Pick<RootRotationOptions, "shouldRotate">)
  | undefined {
  if (option === false) return undefined;
  const given = option ?? {};
  const positive = (
    name: Exclude<keyof RootRotationOptions, "shouldRotate">,
    value: number | undefined,
    fallback: number,
  ): number => {
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      throw new ControlPlaneError(
        "ERR_CONTROL_PLANE_CONFIG",
        `rootRotation.${name} must be a positive number, got ${String(value)}`,
      );
    }
    return value;
  };
  const gracePercent = positive("gracePercent", given.gracePercent, 20);
  if (gracePercent >= 100) {
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_CONFIG",
      `rootRotation.gracePercent must be below 100, got ${gracePercent}`,
    );
  }
  return {
    checkIntervalSeconds: positive("checkIntervalSeconds", given.checkIntervalSeconds, 3600),
    gracePercent,
    retireAfterSeconds: positive("retireAfterSeconds", given.retireAfterSeconds, 2 * 24 * 3600),
    ...(given.shouldRotate === undefined ? {} : { shouldRotate: given.shouldRotate }),
  };
}

/**
 * The admin port's paths that show the mesh's whole translated configuration and its live page
 * (`/debug/...`, `/dashboard`): answered to callers on this host only. In a cluster the port listens
 * on the pod's address for its probe and metrics, and any pod could read them there; an operator
 * reaches them through `kubectl port-forward`, which arrives from loopback.
 */
function isDebugPath(path: string): boolean {
  return path.startsWith("/debug/") || path === DASHBOARD_PATH || path.startsWith(`${DASHBOARD_PATH}/`);
}

/** A peer address of this host's loopback: 127.0.0.0/8 (also IPv4-mapped) or ::1. */
function isLoopbackPeer(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice(7) : address;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4) || address === "::1";
}
