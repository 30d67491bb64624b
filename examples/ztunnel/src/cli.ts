/**
 * The command line of `src/main.ts`, parsed without side effects: every flag with its description
 * (the help text is built from the same table), and pnpm's `--` separator accepted wherever it lands.
 */
import { parseArgs } from "node:util";
import { clusterIdFrom, ZTUNNEL_CLUSTER_ID_VARIABLES } from "./cluster-id.js";
import { canonicalIp, isLoopbackIp } from "./ip-address.js";
import { clusterDomainFrom, trustDomainFrom } from "./mesh-domains.js";

interface FlagSpec {
  type: "string" | "boolean";
  /** Value shown in the help, e.g. `node-a`. */
  value?: string;
  default?: string;
  description: string;
}

/** Every flag of the ztunnel CLI. */
export const ZTUNNEL_FLAGS = {
  node: {
    type: "string",
    value: "name",
    default: "node-a",
    description: "Kubernetes node this proxy serves; its pods are the workloads with this node name.",
  },
  "node-ip": {
    type: "string",
    value: "ip",
    description:
      "IP the metrics, readiness and SOCKS5 listeners bind to (default 127.20.0.N, N the node's letter: node-a -> 127.20.0.1).",
  },
  "admin-ip": {
    type: "string",
    value: "ip",
    description:
      "Loopback IP of the admin listener (/config_dump, /recent_connections, POST /quitquitquit, which shuts the proxy down): default --node-ip when it is a loopback address, as in the local mesh, else 127.0.0.1, so in a pod only the pod itself reaches it, as ztunnel's admin on localhost. Anything else is refused.",
  },
  "control-plane": {
    type: "string",
    value: "host:port",
    default: "127.0.0.1:15012",
    description: "Control plane (xDS and CA) gRPC address.",
  },
  "cluster-id": {
    type: "string",
    value: "id",
    description:
      "The cluster this proxy runs in, sent as clusterid on every xDS and CA call and as CLUSTER_ID in the xDS node metadata: a control plane serves the callers of its own cluster only (default: ISTIO_META_CLUSTER_ID, else CLUSTER_ID, as ztunnel reads them, else Kubernetes).",
  },
  "state-dir": {
    type: "string",
    value: "dir",
    description:
      "Where the control plane writes root-cert.pem and tokens/<node>.jwt (default <repo>/.mesh-state).",
  },
  "root-cert": {
    type: "string",
    value: "file",
    description:
      "Mesh root certificate (PEM) that verifies the control plane and every peer (default <state-dir>/root-cert.pem).",
  },
  "token-file": {
    type: "string",
    value: "file",
    description:
      "The node's service-account token for CA and xDS calls (default <state-dir>/tokens/<node>.jwt).",
  },
  "socks5-handshake-timeout-ms": {
    type: "string",
    value: "ms",
    default: "10000",
    description:
      "Time a SOCKS5 client has from connect to a complete request; slower ones are closed (the reply waits for the dial, bounded by its own deadlines).",
  },
  "socks5-max-handshakes": {
    type: "string",
    value: "n",
    default: "1024",
    description: "SOCKS5 connections in their handshake at once; more are closed on accept.",
  },
  "zds-socket": {
    type: "string",
    value: "path",
    description:
      "In-pod mode (Linux, root): connect to the node agent's ZDS socket (istio-cni's is /var/run/ztunnel/ztunnel.sock) and serve the pods it hands over inside their network namespaces.",
  },
  "no-original-source": {
    type: "boolean",
    description:
      "With --zds-socket: connect to each pod's app from the pod's own address instead of the client's (ztunnel ENABLE_ORIG_SRC=false), for a node agent that does not route the replies to the client's address back to this proxy.",
  },
  "no-dns-proxy": {
    type: "boolean",
    description:
      "In-pod and dedicated mode: open no DNS proxy (127.0.0.1:15053 in each pod); default on, as ztunnel with DNS capture.",
  },
  "dns-nameservers": {
    type: "string",
    value: "ip[:port],...",
    description:
      "Upstream resolvers for names the mesh does not have (default: the nameserver lines of /etc/resolv.conf).",
  },
  "cluster-domain": {
    type: "string",
    value: "domain",
    description:
      "The cluster's DNS domain: the DNS proxy expands short Service names with it (default: $CLUSTER_DOMAIN, else cluster.local).",
  },
  network: {
    type: "string",
    value: "name",
    description:
      "The network this node is on, as the control plane names its pods' network (default: $NETWORK, else none).",
  },
  "trust-domain": {
    type: "string",
    value: "domain",
    description:
      "The mesh's SPIFFE trust domain (meshConfig trustDomain); the control plane must be spiffe://<domain>/ns/istio-system/sa/istiod (default: $TRUST_DOMAIN, else cluster.local).",
  },
  "build-tag": {
    type: "string",
    value: "tag",
    default: "unknown",
    description: 'The tag of the istio_build{component="ztunnel"} metric (Istio: the build\'s version).',
  },
  dedicated: {
    type: "string",
    value: "namespace/name",
    description:
      "Dedicated mode (Linux, root): serve only this workload, with its listeners (15001, 15006, 15008) in this process's network namespace and no node agent.",
  },
  "dedicated-netns": {
    type: "string",
    value: "path",
    description:
      "With --dedicated: serve in the network namespace at this path instead of the process's own (for example /var/run/netns/<name>).",
  },
  "on-demand": {
    type: "boolean",
    description:
      "Take only this node's pods from the control plane and look up any other destination by network/IP when it is met, as ztunnel with XDS_ON_DEMAND=true; default: every address.",
  },
  "on-demand-timeout-ms": {
    type: "string",
    value: "ms",
    default: "5000",
    description:
      "With --on-demand: longest wait for the control plane's answer before an unknown destination is decided as today (passed through or refused).",
  },
  "termination-deadline-ms": {
    type: "string",
    value: "ms",
    description:
      "On SIGTERM, SIGINT or POST /quitquitquit: how long open connections may run before they are closed (default: CONNECTION_TERMINATION_DEADLINE, e.g. 10s; else TERMINATION_GRACE_PERIOD_SECONDS less 5 s, or less 1 s when 10 or under; else 5000). A second signal closes at once.",
  },
  "log-level": {
    type: "string",
    value: "level",
    default: "info",
    description: "pino log level: trace, debug, info, warn, error, fatal or silent.",
  },
  help: { type: "boolean", description: "Print this help and exit." },
} as const satisfies Record<string, FlagSpec>;

export type ZtunnelFlag = keyof typeof ZTUNNEL_FLAGS;

/** The help text: one entry per flag, with its value, default and description. */
export function ztunnelUsage(): string {
  const lines = [
    "usage: pnpm start -- [flags]   (or, after pnpm build: node dist/main.js [flags])",
    "",
    "flags:",
  ];
  for (const [name, spec] of Object.entries(ZTUNNEL_FLAGS) as [string, FlagSpec][]) {
    const head = `  --${name}${spec.value === undefined ? "" : ` <${spec.value}>`}`;
    const dflt = spec.default === undefined ? "" : ` Default: ${spec.default}.`;
    lines.push(head, `      ${spec.description}${dflt}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Parsed flags (strings as given; defaults applied). */
export type ZtunnelArgs = {
  [K in ZtunnelFlag]?: (typeof ZTUNNEL_FLAGS)[K]["type"] extends "boolean" ? boolean : string;
};

export type ZtunnelCli =
  | { kind: "help" }
  | { kind: "error"; message: string }
  | {
      kind: "run";
      args: ZtunnelArgs;
      /** `--node-ip`, else {@link defaultNodeIp} of `--node`. */
      nodeIp: string;
      /** `--admin-ip`, else {@link defaultAdminIp}: always a loopback address. */
      adminIp: string;
      /** `--cluster-id`, else `ISTIO_META_CLUSTER_ID`, else `CLUSTER_ID`, else `Kubernetes`. */
      clusterId: string;
      /** `--trust-domain`, else `TRUST_DOMAIN`, else `cluster.local`. */
      trustDomain: string;
      /** `--network`, else `NETWORK` (ztunnel's), else `""`. */
      network: string;
      /** The proxy's own pod from `POD_NAME` and `POD_NAMESPACE` (the downward API), when both are set. */
      pod?: { name: string; namespace: string };
      socks5: { handshakeTimeoutMs: number; maxHandshakes: number };
      /** `--on-demand` with its timeout; absent when off. */
      onDemand?: { timeoutMs: number };
      /** `--dedicated namespace/name` (and `--dedicated-netns`), parsed. */
      dedicated?: { workload: { namespace: string; name: string }; netnsPath?: string };
      /** In-pod and dedicated mode: the DNS proxy, false with `--no-dns-proxy`, else its settings. */
      dns?: false | { nameservers?: string[]; clusterDomain: string; ipv6?: boolean };
      /** How long a graceful shutdown lets open connections run (see {@link terminationDeadlineMs}). */
      terminationDeadlineMs: number;
    };

/**
 * Drops pnpm's `--` separator wherever it stands (`pnpm start -- --node b`, `pnpm start --node b --
 * --log-level debug`), except where it is the value of a string flag.
 */
export function withoutSeparators(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    const previous = out[out.length - 1];
    const name = previous?.startsWith("--") && !previous.includes("=") ? previous.slice(2) : undefined;
    const takesValue =
      name !== undefined && (ZTUNNEL_FLAGS as Record<string, FlagSpec>)[name]?.type === "string";
    if (arg === "--" && !takesValue) continue;
    out.push(arg);
  }
  return out;
}

/** The local mesh's node IP of a node name: node-a -> 127.20.0.1, node-b -> 127.20.0.2, else 127.20.0.1. */
export function defaultNodeIp(node: string): string {
  const letter = /^node-([a-z])$/.exec(node)?.[1];
  return letter ? `127.20.0.${letter.charCodeAt(0) - 96}` : "127.20.0.1";
}

/**
 * Where the admin listener goes when `--admin-ip` is not given: the node IP when it is a loopback
 * address (the local mesh, one per node), else 127.0.0.1. A pod IP never: the admin port shuts the
 * proxy down on a POST, and every pod of the cluster could reach it there.
 */
export function defaultAdminIp(nodeIp: string): string {
  const canonical = canonicalIp(nodeIp);
  return canonical !== undefined && isLoopbackIp(canonical.text) ? canonical.text : "127.0.0.1";
}

function positiveInteger(flag: string, text: string): number | string {
  if (!/^[1-9][0-9]{0,8}$/.test(text))
    return `--${flag} must be a positive integer, got ${JSON.stringify(text)}`;
  return Number(text);
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration as ztunnel reads `CONNECTION_TERMINATION_DEADLINE`: number-unit pairs (`ms`, `s`, `m`,
 * `h`; `1m 30s`), or a bare whole number of seconds. Undefined when it is none of these.
 */
export function parseDurationMs(text: string): number | undefined {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  if (!/^(\d+(\.\d+)?\s*(ms|s|m|h)\s*)+$/.test(trimmed)) return undefined;
  let ms = 0;
  for (const [, value, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)\s*(ms|s|m|h)/g)) {
    ms += Number(value) * (DURATION_UNITS_MS[unit as string] as number);
  }
  return Number.isSafeInteger(Math.round(ms)) ? Math.round(ms) : undefined;
}

/**
 * The graceful shutdown's deadline, as Istio's ztunnel derives it: `--termination-deadline-ms`;
 * else `CONNECTION_TERMINATION_DEADLINE`; else the pod's `TERMINATION_GRACE_PERIOD_SECONDS` less
 * 5 s (less 1 s when it is 10 or under, and at least 1 s), leaving time to close what is left before
 * the kubelet kills the process; else 5 s. A message when a value is not one.
 */
export function terminationDeadlineMs(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): number | string {
  if (flag !== undefined) return positiveInteger("termination-deadline-ms", flag);
  const explicit = env.CONNECTION_TERMINATION_DEADLINE;
  if (explicit !== undefined) {
    const ms = parseDurationMs(explicit);
    if (ms === undefined)
      return `CONNECTION_TERMINATION_DEADLINE is not a duration (such as 10s or 1m 30s): ${JSON.stringify(explicit)}`;
    return ms;
  }
  const grace = env.TERMINATION_GRACE_PERIOD_SECONDS;
  if (grace !== undefined) {
    if (!/^\d{1,9}$/.test(grace))
      return `TERMINATION_GRACE_PERIOD_SECONDS is not a whole number of seconds: ${JSON.stringify(grace)}`;
    const seconds = Number(grace);
    return Math.max(seconds > 10 ? seconds - 5 : seconds - 1, 1) * 1000;
  }
  return 5000;
}

/**
 * Parses the CLI arguments (without `node` and the script). `env` gives the environment variables
 * Istio's ztunnel reads for what has no flag set (`CONNECTION_TERMINATION_DEADLINE`,
 * `TERMINATION_GRACE_PERIOD_SECONDS`, `ISTIO_META_CLUSTER_ID`, `CLUSTER_ID`, `TRUST_DOMAIN`,
 * `CLUSTER_DOMAIN`, `IPV6_ENABLED`);
 * default none.
 */
export function parseZtunnelCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = {},
): ZtunnelCli {
  const options = Object.fromEntries(
    Object.entries(ZTUNNEL_FLAGS as Record<string, FlagSpec>).map(([name, spec]) => [
      name,
      spec.default === undefined ? { type: spec.type } : { type: spec.type, default: spec.default },
    ]),
  ) as Record<string, { type: "string" | "boolean"; default?: string }>;
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: withoutSeparators(argv),
      options,
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    return { kind: "error", message: (err as Error).message };
  }
  if (values.help === true) return { kind: "help" };
  if (values["no-original-source"] === true && values["zds-socket"] === undefined)
    return { kind: "error", message: "--no-original-source applies to in-pod mode: add --zds-socket <path>" };
  const timeout = positiveInteger(
    "socks5-handshake-timeout-ms",
    String(values["socks5-handshake-timeout-ms"]),
  );
  if (typeof timeout === "string") return { kind: "error", message: timeout };
  const max = positiveInteger("socks5-max-handshakes", String(values["socks5-max-handshakes"]));
  if (typeof max === "string") return { kind: "error", message: max };
  const onDemandTimeout = positiveInteger("on-demand-timeout-ms", String(values["on-demand-timeout-ms"]));
  if (typeof onDemandTimeout === "string") return { kind: "error", message: onDemandTimeout };
  const deadline = terminationDeadlineMs(values["termination-deadline-ms"] as string | undefined, env);
  if (typeof deadline === "string") return { kind: "error", message: deadline };
  const cluster = clusterIdFrom(
    values["cluster-id"] as string | undefined,
    env,
    ZTUNNEL_CLUSTER_ID_VARIABLES,
  );
  if (cluster.kind === "error") return cluster;
  // ztunnel's IPV6_ENABLED (a Rust bool: exactly true or false); only the DNS proxy reads it here.
  const ipv6Text = env.IPV6_ENABLED;
  if (ipv6Text !== undefined && ipv6Text !== "true" && ipv6Text !== "false")
    return { kind: "error", message: `IPV6_ENABLED must be true or false, got ${JSON.stringify(ipv6Text)}` };
  const inPodMode = values["zds-socket"] !== undefined || values.dedicated !== undefined;
  const dnsFlags = ["no-dns-proxy", "dns-nameservers"].filter((f) => values[f] !== undefined);
  if (!inPodMode && dnsFlags.length > 0)
    return {
      kind: "error",
      message: `--${dnsFlags[0]} applies to in-pod and dedicated mode: add --zds-socket or --dedicated`,
    };
  if (values["no-dns-proxy"] === true && values["dns-nameservers"] !== undefined)
    return { kind: "error", message: "--dns-nameservers has no use with --no-dns-proxy" };
  const nameserversText = values["dns-nameservers"];
  const nameservers =
    typeof nameserversText === "string" ? nameserversText.split(",").map((n) => n.trim()) : undefined;
  if (nameservers?.some((n) => n === ""))
    return {
      kind: "error",
      message: `--dns-nameservers has an empty entry: ${JSON.stringify(nameserversText)}`,
    };
  const clusterDomain = clusterDomainFrom(values["cluster-domain"] as string | undefined, env);
  if (clusterDomain.kind === "error") return clusterDomain;
  const trustDomain = trustDomainFrom(values["trust-domain"] as string | undefined, env);
  if (trustDomain.kind === "error") return trustDomain;
  // On-demand lookups leave most Services unknown: the DNS proxy would forward their names.
  if (values["on-demand"] === true && inPodMode && values["no-dns-proxy"] !== true)
    return {
      kind: "error",
      message: "--on-demand leaves the DNS proxy without most Service names: add --no-dns-proxy",
    };
  const nodeIp =
    typeof values["node-ip"] === "string" ? values["node-ip"] : defaultNodeIp(String(values.node));
  const adminIpText = values["admin-ip"];
  let adminIp = defaultAdminIp(nodeIp);
  if (typeof adminIpText === "string") {
    const canonical = canonicalIp(adminIpText);
    if (canonical === undefined || !isLoopbackIp(canonical.text))
      return {
        kind: "error",
        message: `--admin-ip must be a loopback address (127.0.0.0/8 or ::1), got ${JSON.stringify(adminIpText)}`,
      };
    adminIp = canonical.text;
  }
  const dedicatedText = values.dedicated;
  const netnsPath = values["dedicated-netns"];
  let dedicated: { workload: { namespace: string; name: string }; netnsPath?: string } | undefined;
  if (typeof dedicatedText === "string") {
    const [namespace, name, extra] = dedicatedText.split("/");
    if (extra !== undefined || !namespace || !name)
      return {
        kind: "error",
        message: `--dedicated takes namespace/name, got ${JSON.stringify(dedicatedText)}`,
      };
    if (values["zds-socket"] !== undefined)
      return {
        kind: "error",
        message: "--dedicated serves one workload without a node agent: drop --zds-socket",
      };
    dedicated = { workload: { namespace, name }, ...(typeof netnsPath === "string" ? { netnsPath } : {}) };
  } else if (netnsPath !== undefined) {
    return { kind: "error", message: "--dedicated-netns needs --dedicated namespace/name" };
  }
  // Istio's ztunnel names itself in xDS from the downward API's POD_NAME and POD_NAMESPACE.
  const podName = env.POD_NAME ?? "";
  const podNamespace = env.POD_NAMESPACE ?? "";
  if ((podName === "") !== (podNamespace === ""))
    return { kind: "error", message: "POD_NAME and POD_NAMESPACE go together: set both or neither" };
  return {
    kind: "run",
    args: values as ZtunnelArgs,
    nodeIp,
    adminIp,
    clusterId: cluster.clusterId,
    trustDomain: trustDomain.value,
    network: (values.network as string | undefined) ?? env.NETWORK ?? "",
    ...(podName === "" ? {} : { pod: { name: podName, namespace: podNamespace } }),
    socks5: { handshakeTimeoutMs: timeout, maxHandshakes: max },
    terminationDeadlineMs: deadline,
    ...(values["on-demand"] === true ? { onDemand: { timeoutMs: onDemandTimeout } } : {}),
    ...(dedicated === undefined ? {} : { dedicated }),
    ...(inPodMode
      ? {
          dns:
            values["no-dns-proxy"] === true
              ? false
              : {
                  ...(nameservers === undefined ? {} : { nameservers }),
                  clusterDomain: clusterDomain.value,
                  ...(ipv6Text === undefined ? {} : { ipv6: ipv6Text === "true" }),
                },
        }
      : {}),
  };
}
