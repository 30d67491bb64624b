import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  clusterDomainFrom,
  clusterIdFrom,
  type SettingChoice,
  settingFrom,
  type TokenFileReader,
  tokenFileReader,
  trustDomainFrom,
  trustDomainProblem,
  warnMissingProxyNodeFlags,
} from "@ambient/example-ztunnel";
import { PATH_NORMALIZATIONS, type PathNormalization } from "@ambient/policy";
import { pino } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { startWaypoint } from "./waypoint.js";

const usage = `usage: pnpm start -- [--name waypoint] [--namespace demo] [--ip 127.10.0.6] [--node node-a]
       [--control-plane 127.0.0.1:15012] [--cluster-id Kubernetes] [--network <name>] [--trust-domain cluster.local]
       [--trust-domain-aliases td,...] [--cluster-domain cluster.local] [--state-dir <repo>/.mesh-state]
       [--root-cert <file>] [--token-file <file>]
       [--path-normalization BASE] [--admin-ip <ip>] [--admin-port 15000] [--stats-port 15020]
       [--readiness-port 15021] [--termination-drain-ms 5000] [--no-access-log] [--log-level info]

  --name, --namespace     the waypoint Gateway this proxy serves (its routes and policies attach to it)
  --ip                    the waypoint pod's IP: HBONE on :15008, readiness and metrics listen here
  --node                  the node the waypoint pod runs on (its token gets the certificate)
  --control-plane         xDS and CA address (istio-proxy XDS_ADDRESS / CA_ADDRESS): routes, backends,
                          AuthorizationPolicies and RequestAuthentications all come from there
  --cluster-id            the cluster the waypoint runs in, sent as clusterid on xDS and CA calls and as
                          CLUSTER_ID in the xDS node metadata: a control plane serves the callers of its
                          own cluster only (default: ISTIO_META_CLUSTER_ID, as istio-proxy reads it, else
                          Kubernetes)
  --network               the network of the waypoint's pod, as the control plane names it: workloads are
                          looked up on it, endpoints of other networks never chosen (default:
                          ISTIO_META_NETWORK, as istio-proxy reads it, else none)
  --trust-domain          the mesh's SPIFFE trust domain (meshConfig trustDomain): the waypoint's identity
                          and the control plane's, spiffe://<domain>/ns/istio-system/sa/istiod (default:
                          TRUST_DOMAIN, as istio-proxy reads it, else cluster.local)
  --trust-domain-aliases  earlier trust domains of the mesh, comma-separated (meshConfig
                          trustDomainAliases): policy principals in them, in the trust domain or in
                          cluster.local match the same account in all (default none)
  --cluster-domain        the cluster's DNS domain: Service hosts are <name>.<namespace>.svc.<domain>
                          (default: CLUSTER_DOMAIN, as the ztunnel reads it, else cluster.local)
  --state-dir             the local mesh's state: root-cert.pem and tokens/<node>.jwt
  --root-cert             mesh root certificate(s), PEM (default <state-dir>/root-cert.pem)
  --token-file            the service-account token for CA and xDS calls, read again for every CA call
                          and xDS stream so a rotated projected token is used (default
                          <state-dir>/tokens/<node>.jwt)
  --path-normalization    NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES (meshConfig pathNormalization)
  --accept-http10         serve HTTP/1.0 requests, otherwise answered 426 (also on when ISTIO_META_HTTP10
                          is 1 or PILOT_HTTP10 is true, as Istio decides it)
  --admin-ip              loopback address of the admin listener (/config_dump); default --ip when it is
                          a loopback address, else 127.0.0.1; anything else is refused
  --admin-port            admin listener port (Envoy admin, 15000); 0 = ephemeral
  --stats-port            Prometheus port, /metrics and /stats/prometheus (15020); 0 = ephemeral
  --readiness-port        readiness port, /healthz/ready (15021); 0 = ephemeral
  --termination-drain-ms  on SIGTERM or SIGINT: how long requests in flight may take before the waypoint
                          closes (istio-proxy terminationDrainDuration, 5000); a second signal closes at once
  --no-access-log         no access log lines (one per request at info level, Istio's fields)
  --log-level             pino level: trace, debug, info, warn, error
  --help                  this text`;

const argv = process.argv.slice(2);
if (argv[0] === "--") argv.shift();
const repo = (path: string) => fileURLToPath(new URL(`../../../${path}`, import.meta.url));
let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    args: argv,
    options: {
      name: { type: "string", default: "waypoint" },
      namespace: { type: "string", default: "demo" },
      ip: { type: "string", default: "127.10.0.6" },
      node: { type: "string", default: "node-a" },
      "control-plane": { type: "string", default: "127.0.0.1:15012" },
      "cluster-id": { type: "string" },
      network: { type: "string" },
      "trust-domain": { type: "string" },
      "trust-domain-aliases": { type: "string" },
      "cluster-domain": { type: "string" },
      "state-dir": { type: "string", default: repo(".mesh-state/") },
      "root-cert": { type: "string" },
      "token-file": { type: "string" },
      "path-normalization": { type: "string", default: "BASE" },
      "accept-http10": { type: "boolean", default: false },
      "admin-ip": { type: "string" },
      "admin-port": { type: "string", default: "15000" },
      "stats-port": { type: "string", default: "15020" },
      "readiness-port": { type: "string", default: "15021" },
      "termination-drain-ms": { type: "string", default: "5000" },
      "no-access-log": { type: "boolean", default: false },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", default: false },
    },
  });
}
try {
  parsed = parse();
} catch (err) {
  console.error(`${(err as Error).message}\n${usage}`);
  process.exit(2);
}
const { values } = parsed;
if (values.help) {
  console.log(usage);
  process.exit(0);
}
const pathNormalization = values["path-normalization"];
if (!PATH_NORMALIZATIONS.includes(pathNormalization as PathNormalization)) {
  console.error(`--path-normalization must be one of ${PATH_NORMALIZATIONS.join(", ")}\n${usage}`);
  process.exit(2);
}
const port = (flag: "admin-port" | "stats-port" | "readiness-port"): number => {
  const text = values[flag];
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 65535) {
    console.error(`--${flag} must be a port number (0-65535)\n${usage}`);
    process.exit(2);
  }
  return n;
};
const ports = { admin: port("admin-port"), metrics: port("stats-port"), readiness: port("readiness-port") };
const drainText = values["termination-drain-ms"];
if (!/^\d{1,9}$/.test(drainText)) {
  console.error(`--termination-drain-ms must be a whole number of ms\n${usage}`);
  process.exit(2);
}
const terminationDrainMs = Number(drainText);
// Istio's waypoint takes HTTP/1.0 when the proxy's metadata HTTP10 is "1", or istiod runs with the
// boolean PILOT_HTTP10 on (Go's ParseBool spellings of true).
const acceptHttp10 =
  values["accept-http10"] ||
  process.env.ISTIO_META_HTTP10 === "1" ||
  ["1", "t", "T", "true", "TRUE", "True"].includes(process.env.PILOT_HTTP10 ?? "");
// istio-proxy reads ISTIO_META_CLUSTER_ID only (pilot-agent's options.go), not ztunnel's CLUSTER_ID.
const cluster = clusterIdFrom(values["cluster-id"], process.env, ["ISTIO_META_CLUSTER_ID"]);
if (cluster.kind === "error") {
  console.error(`${cluster.message}\n${usage}`);
  process.exit(2);
}
/** The value of a setting, or the usage and exit 2 when it is not a good one. */
const chosen = (choice: SettingChoice): string => {
  if (choice.kind === "ok") return choice.value;
  console.error(`${choice.message}\n${usage}`);
  process.exit(2);
};
const trustDomain = chosen(trustDomainFrom(values["trust-domain"], process.env));
const clusterDomain = chosen(clusterDomainFrom(values["cluster-domain"], process.env));
const trustDomainAliases = (values["trust-domain-aliases"] ?? "")
  .split(",")
  .map((td) => td.trim())
  .filter((td) => td !== "")
  .map((td) => chosen(settingFrom("--trust-domain-aliases", td, {}, [], "", trustDomainProblem)));
const logger = pino({ level: values["log-level"], base: { waypoint: `${values.namespace}/${values.name}` } });
warnMissingProxyNodeFlags(logger, "more CPU per request");
const stateDir = values["state-dir"];
let rootCertPem: string;
let token: TokenFileReader;
try {
  rootCertPem = readFileSync(values["root-cert"] ?? join(stateDir, "root-cert.pem"), "utf8");
  // Read again for every CA call and xDS stream: the kubelet rotates a projected token in place.
  token = tokenFileReader(values["token-file"] ?? join(stateDir, "tokens", `${values.node}.jwt`), (err) =>
    logger.warn({ err: err.message }, "cannot read the token again; using the last good one"),
  );
} catch (err) {
  logger.error({ err: (err as Error).message }, "cannot read the mesh root or the node token");
  process.exit(1);
}
const registry = new Registry();
collectDefaultMetrics({ register: registry });
let waypoint: Awaited<ReturnType<typeof startWaypoint>>;
try {
  waypoint = await startWaypoint({
    gateway: { name: values.name, namespace: values.namespace },
    ip: values.ip,
    nodeName: values.node,
    token,
    rootCertPem,
    controlPlaneAddress: values["control-plane"],
    clusterId: cluster.clusterId,
    network: values.network ?? process.env.ISTIO_META_NETWORK ?? "",
    trustDomain,
    trustDomainAliases,
    clusterDomain,
    pathNormalization: pathNormalization as PathNormalization,
    acceptHttp10,
    ports,
    ...(values["admin-ip"] === undefined ? {} : { adminIp: values["admin-ip"] }),
    accessLog: !values["no-access-log"],
    terminationDrainMs,
    logger,
    registry,
  });
} catch (err) {
  logger.error({ err: (err as Error).message }, "cannot start the waypoint");
  process.exit(1);
}
// The first signal drains (requests in flight have until the deadline), as istio-proxy does; a second
// one closes at once.
let signals = 0;
const stop = (signal: NodeJS.Signals) => {
  if (signals++ === 0) {
    logger.info({ signal, deadlineMs: terminationDrainMs }, "shutting down");
    waypoint.shutdown().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  } else {
    logger.info({ signal }, "second signal: closing at once");
    waypoint.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  }
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
waypoint.ready.catch((err: unknown) => {
  // Closed before it was ready (a signal) is not a failure; anything else is.
  if ((err as { code?: unknown }).code === "ERR_WAYPOINT_CLOSED") return;
  logger.error({ err: (err as Error).message }, "the waypoint cannot become ready");
  waypoint.close().finally(() => process.exit(1));
});
