import { resolve } from "node:path";
import { parseArgs } from "node:util";
import type { MemoryRelease } from "./memory-release.js";
import { DEFAULT_POD_CIDRS } from "./pod-address.js";
import type { Logger } from "./telemetry.js";

const usage = `usage: pnpm start [-- options]

Serves the mesh manifests of a folder to ztunnels over Delta xDS (TLS, node tokens), as Envoy
LDS/RDS/CDS/EDS to proxyless gRPC clients (SotW or Delta), and runs the mesh CA.

options:
  --mesh-dir DIR        manifests to serve, watched for edits (default: <repo>/mesh)
  --state-dir DIR       CA, token key, root-cert.pem, tokens/<node>.jwt (default: <repo>/.mesh-state)
  --listen HOST:PORT    gRPC TLS address for xDS and the CA (default 127.0.0.1:15012)
  --admin HOST:PORT     admin HTTP address: /metrics, /debug/config, /ready (default 127.0.0.1:15014)
  --plaintext HOST:PORT also serve xDS without TLS or authentication, e.g. 127.0.0.1:15010
                        (debugging only; default off)
  --serving-host NAME   DNS name or IP for the serving certificate besides istiod.istio-system.svc;
                        repeat it or separate names with commas (default none)
  --pod-cidr CIDR       IPv4 range pod IPs must be in; repeat it or separate ranges with commas
                        (default ${DEFAULT_POD_CIDRS.join(",")}; with --kubernetes every address, as
                        istiod); pods outside are reported, not served
  --xds-debounce-ms MS  delay that coalesces changes into one push (default 100; istiod
                        PILOT_DEBOUNCE_AFTER). A change reaches clients after it plus the translation
  --xds-push-buffer-mib N  response MiB the xDS ports hold for all clients together before
                        further responses wait their turn (default 16; istiod PILOT_PUSH_THROTTLE).
                        A full push goes to about N MiB / state size clients at a time
  --no-root-rotation    do not re-issue the control plane's own CA root (state directory, or the
                        leader's istio-ca-secret) when less than 20% of its life is left (checked
                        hourly, as istiod; the new root keeps the old one's key)
  --kubernetes          read a cluster instead of --mesh-dir: informers, TokenReview, the CA from the
                        istio-system Secret cacerts or istio-ca-secret, a Lease leader (see
                        deploy/kubernetes/README.md); --state-dir is not used
  --kubeconfig PATH     with --kubernetes: the kubeconfig (default: $KUBECONFIG, ~/.kube/config, or
                        the in-cluster service account)
  --pod-name NAME       with --kubernetes: this replica's name in the Lease (default: $POD_NAME, else
                        the host name)
  --trusted-node-accounts LIST  node agents that may get certificates for the pods on their node,
                        as namespace/serviceaccount, comma-separated (default: $CA_TRUSTED_NODE_ACCOUNTS,
                        else istio-system/ztunnel; with --kubernetes, ztunnel in istio-system)
  --trust-domain TD     the mesh's SPIFFE trust domain (meshConfig trustDomain): workload identities
                        spiffe://TD/ns/<namespace>/sa/<account>, and this control plane's own,
                        spiffe://TD/ns/istio-system/sa/istiod; tell the proxies too (TRUST_DOMAIN)
                        (default: $TRUST_DOMAIN, else cluster.local)
  --domain DOMAIN       the cluster's DNS domain (istiod --domain): Service hosts are
                        <name>.<namespace>.svc.DOMAIN; tell the proxies too (CLUSTER_DOMAIN)
                        (default cluster.local)
  --cluster-id ID       this cluster's id: in workload uids, and the only cluster whose callers are
                        served (a request whose clusterid names another is refused) (default:
                        $CLUSTER_ID, else Kubernetes)
  --capture-signal S    what makes a pod HBONE: dataplane-mode (its istio.io/dataplane-mode label or
                        its namespace's; the default with --mesh-dir) or redirection (the
                        ambient.istio.io/redirection annotation istio-cni sets; the default with
                        --kubernetes)
  --log-level LEVEL     pino level: fatal, error, warn, info, debug, trace (default info)
  -h, --help            print this help and exit`;

const repoRoot = resolve(import.meta.dirname, "../../..");

function parseCommandLine(args: string[]) {
  return parseArgs({
    args,
    options: {
      "mesh-dir": { type: "string", default: resolve(repoRoot, "mesh") },
      "state-dir": { type: "string", default: resolve(repoRoot, ".mesh-state") },
      listen: { type: "string", default: "127.0.0.1:15012" },
      admin: { type: "string", default: "127.0.0.1:15014" },
      plaintext: { type: "string" },
      "pod-cidr": { type: "string", multiple: true },
      "serving-host": { type: "string", multiple: true },
      "xds-debounce-ms": { type: "string" },
      "xds-push-buffer-mib": { type: "string" },
      "no-root-rotation": { type: "boolean", default: false },
      kubernetes: { type: "boolean", default: false },
      kubeconfig: { type: "string" },
      "pod-name": { type: "string" },
      "capture-signal": { type: "string" },
      "trusted-node-accounts": { type: "string", multiple: true },
      "cluster-id": { type: "string" },
      "trust-domain": { type: "string" },
      domain: { type: "string" },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", short: "h", default: false },
    },
  }).values;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  // pnpm passes its "--" separator through to the script.
  if (argv[0] === "--") argv.shift();
  let values: ReturnType<typeof parseCommandLine>;
  try {
    values = parseCommandLine(argv);
  } catch (err) {
    console.error(`control-plane: ${(err as Error).message}\n\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    return;
  }
  const podCidrs = values["pod-cidr"]
    ?.flatMap((list) => list.split(","))
    .map((c) => c.trim())
    .filter((c) => c !== "");
  const servingHosts = values["serving-host"]
    ?.flatMap((list) => list.split(","))
    .map((h) => h.trim())
    .filter((h) => h !== "");
  const xdsDebounceMs = integerFlag(values, "xds-debounce-ms", 0, "a non-negative");
  const pushBufferMiB = integerFlag(values, "xds-push-buffer-mib", 1, "a positive");
  // The xDS tuning, capture signal, cluster id and trusted node accounts both modes pass on as given.
  const signal = values["capture-signal"];
  if (signal !== undefined && signal !== "dataplane-mode" && signal !== "redirection") {
    console.error(`control-plane: --capture-signal must be dataplane-mode or redirection\n\n${usage}`);
    process.exit(2);
  }
  const captureSignal = signal as "dataplane-mode" | "redirection" | undefined;
  const accountsText = values["trusted-node-accounts"] ?? process.env.CA_TRUSTED_NODE_ACCOUNTS?.split(",");
  const trustedNodeAccounts = accountsText
    ?.flatMap((list) => list.split(","))
    .map((a) => a.trim())
    .filter((a) => a !== "");
  const clusterId = values["cluster-id"] || process.env.CLUSTER_ID || undefined;
  // Checked by the control plane as it starts, as every option is.
  const trustDomain = values["trust-domain"] ?? process.env.TRUST_DOMAIN ?? "cluster.local";
  const domainSuffix = values.domain ?? "cluster.local";
  const xdsTuning = {
    ...(clusterId === undefined ? {} : { clusterId }),
    trustDomain,
    domainSuffix,
    ...(trustedNodeAccounts === undefined ? {} : { trustedNodeAccounts }),
    ...(xdsDebounceMs === undefined ? {} : { xdsDebounceMs }),
    ...(pushBufferMiB === undefined ? {} : { xdsMaxTotalBufferedBytes: pushBufferMiB * 2 ** 20 }),
    ...(captureSignal === undefined ? {} : { captureSignal }),
  };
  if (values.kubernetes) {
    await mainKubernetes(values, { podCidrs, servingHosts, xdsTuning });
    return;
  }
  // Loaded after the arguments are read, so --help and a bad flag answer without loading the servers.
  const [{ createPromClientSink }, { pino }, prom, { startControlPlane }] = await Promise.all([
    import("@ambient/telemetry"),
    import("pino"),
    import("prom-client"),
    import("./control-plane.js"),
  ]);
  const logger = pino({ name: "control-plane", level: values["log-level"] });
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry });
  const cp = await startControlPlane({
    meshDir: resolve(values["mesh-dir"]),
    stateDir: resolve(values["state-dir"]),
    listen: values.listen,
    admin: values.admin,
    ...(values.plaintext === undefined ? {} : { plaintextListen: values.plaintext }),
    ...(podCidrs === undefined ? {} : { podCidrs }),
    ...(servingHosts === undefined ? {} : { servingHosts }),
    ...xdsTuning,
    ...(values["no-root-rotation"] ? { rootRotation: false as const } : {}),
    logger,
    metrics: createPromClientSink(prom, registry),
    metricsText: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
  });
  logger.info(
    { stateDir: resolve(values["state-dir"]), rootCert: resolve(values["state-dir"], "root-cert.pem") },
    "node tokens written to <state-dir>/tokens/<node>.jwt",
  );
  const release = await releaseMemoryAfterPushes(() => cp.xdsBufferedBytes(), logger);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    release?.stop();
    cp.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

/** `--kubernetes`: one replica against the cluster of the kubeconfig or the in-cluster account. */
async function mainKubernetes(
  values: ReturnType<typeof parseCommandLine>,
  parsed: {
    podCidrs: string[] | undefined;
    servingHosts: string[] | undefined;
    xdsTuning: {
      clusterId?: string;
      trustDomain: string;
      domainSuffix: string;
      trustedNodeAccounts?: string[];
      xdsDebounceMs?: number;
      xdsMaxTotalBufferedBytes?: number;
      captureSignal?: "dataplane-mode" | "redirection";
    };
  },
): Promise<void> {
  const [
    { hostname },
    { createPromClientSink },
    { pino },
    prom,
    { KubeConfig },
    { startKubernetesControlPlane },
  ] = await Promise.all([
    import("node:os"),
    import("@ambient/telemetry"),
    import("pino"),
    import("prom-client"),
    import("@kubernetes/client-node"),
    import("./sources/kubernetes-control-plane.js"),
  ]);
  const logger = pino({ name: "control-plane", level: values["log-level"] });
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry });
  const kubeConfig = new KubeConfig();
  if (values.kubeconfig !== undefined) kubeConfig.loadFromFile(resolve(values.kubeconfig));
  else kubeConfig.loadFromDefault();
  const replica = await startKubernetesControlPlane({
    kubeConfig,
    identity: values["pod-name"] ?? process.env.POD_NAME ?? hostname(),
    listen: values.listen,
    admin: values.admin,
    ...(values.plaintext === undefined ? {} : { plaintextListen: values.plaintext }),
    ...(parsed.podCidrs === undefined ? {} : { podCidrs: parsed.podCidrs }),
    ...(parsed.servingHosts === undefined ? {} : { servingHosts: parsed.servingHosts }),
    ...parsed.xdsTuning,
    ...(values["no-root-rotation"] ? { rootRotation: false as const } : {}),
    logger,
    metrics: createPromClientSink(prom, registry),
    metricsText: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
  });
  const release = await releaseMemoryAfterPushes(() => replica.controlPlane.xdsBufferedBytes(), logger);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    release?.stop();
    replica.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

/** An integer flag of at least `min`, or undefined when absent; anything else exits with the usage. */
function integerFlag(
  values: ReturnType<typeof parseCommandLine>,
  name: "xds-debounce-ms" | "xds-push-buffer-mib",
  min: number,
  what: string,
): number | undefined {
  const text = values[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    console.error(`control-plane: --${name} must be ${what} integer\n\n${usage}`);
    process.exit(2);
  }
  return value;
}

/**
 * Collects the response copies a push leaves behind once they are dead (`src/memory-release.ts`), when
 * Node runs with `--expose-gc` as `pnpm start` and the Deployment start it; without the flag, nothing.
 */
async function releaseMemoryAfterPushes(
  inFlight: () => number,
  logger: Logger,
): Promise<MemoryRelease | undefined> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== "function") return undefined;
  const { startMemoryRelease } = await import("./memory-release.js");
  return startMemoryRelease({
    collect: () => gc(),
    arrayBuffers: () => process.memoryUsage().arrayBuffers,
    inFlight,
    logger,
  });
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
