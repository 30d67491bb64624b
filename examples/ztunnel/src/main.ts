import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { parseZtunnelCli, ztunnelUsage } from "./cli.js";
import { warnMissingProxyNodeFlags } from "./runtime-flags.js";
import { type TokenFileReader, tokenFileReader } from "./token-file.js";
import { startZtunnel } from "./ztunnel.js";

const cli = parseZtunnelCli(process.argv.slice(2), process.env);
if (cli.kind === "help") {
  process.stdout.write(ztunnelUsage());
  process.exit(0);
}
if (cli.kind === "error") {
  process.stderr.write(`${cli.message}\n\n${ztunnelUsage()}`);
  process.exit(2);
}
const values = {
  ...cli.args,
  node: cli.args.node ?? "node-a",
  "control-plane": cli.args["control-plane"] ?? "127.0.0.1:15012",
  "state-dir": cli.args["state-dir"] ?? fileURLToPath(new URL("../../../.mesh-state/", import.meta.url)),
  "log-level": cli.args["log-level"] ?? "info",
};

const logger = pino({ level: values["log-level"], base: { node: values.node } });
warnMissingProxyNodeFlags(logger, "bulk traffic can cost up to twice the CPU per byte");
// node-a -> 127.20.0.1, node-b -> 127.20.0.2, ... unless given; admin on loopback only.
const { nodeIp, adminIp } = cli;
const stateDir = values["state-dir"];

let rootCertPem: string;
let token: TokenFileReader;
try {
  rootCertPem = readFileSync(values["root-cert"] ?? join(stateDir, "root-cert.pem"), "utf8");
  // Read again for every CA call and xDS stream: the kubelet rotates a projected token in place.
  token = tokenFileReader(values["token-file"] ?? join(stateDir, "tokens", `${values.node}.jwt`), (err) =>
    logger.warn({ err: err.message }, "cannot read the node token again; using the last good one"),
  );
} catch (err) {
  logger.error(
    { err: (err as Error).message },
    "cannot read the mesh root or the node token (start the control plane first)",
  );
  process.stderr.write(ztunnelUsage());
  process.exit(1);
}

const registry = new Registry();
collectDefaultMetrics({ register: registry });
const ztunnel = await startZtunnel({
  nodeName: values.node,
  nodeIp,
  adminIp,
  controlPlaneAddress: values["control-plane"],
  clusterId: cli.clusterId,
  trustDomain: cli.trustDomain,
  network: cli.network,
  ...(cli.pod === undefined ? {} : { pod: cli.pod }),
  rootCertPem,
  token,
  logger,
  registry,
  socks5: cli.socks5,
  ...(values["zds-socket"] === undefined ? {} : { zdsSocketPath: values["zds-socket"] }),
  ...(values["no-original-source"] === true ? { inPod: { originalSource: false } } : {}),
  buildTag: values["build-tag"] ?? "unknown",
  terminationDeadlineMs: cli.terminationDeadlineMs,
  ...(cli.dedicated === undefined ? {} : { dedicated: cli.dedicated }),
  ...(cli.onDemand === undefined ? {} : { onDemand: cli.onDemand }),
  ...(cli.dns === undefined ? {} : { dns: cli.dns }),
});
// Whatever closes the proxy (a signal, POST /quitquitquit, a failed start) ends the process.
let exitCode = 0;
ztunnel.closed.then(
  () => process.exit(exitCode),
  (err: unknown) => {
    logger.error({ err: (err as Error).message }, "closing failed");
    process.exit(1);
  },
);
ztunnel.ready.then(
  () =>
    ztunnel.addresses.socks5 === undefined
      ? logger.info({}, "ready")
      : logger.info({ socks5: ztunnel.addresses.socks5 }, "ready: point SOCKS5 clients here"),
  (err: unknown) => {
    // Closing before ready (a signal) is not a failure; anything else, such as a dedicated workload
    // that xDS does not know, is.
    if ((err as { code?: unknown }).code === "ERR_ZTUNNEL_CLOSED") return;
    logger.error({ err: (err as Error).message }, "the proxy cannot become ready");
    exitCode = 1;
    ztunnel.close().catch(() => {});
  },
);

// The first signal drains (open connections have until the deadline), as Istio's ztunnel does; a
// second one closes at once. POST /quitquitquit on the admin port drains too.
let signals = 0;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (signals++ === 0) {
      logger.info({ signal, deadlineMs: cli.terminationDeadlineMs }, "shutting down");
      ztunnel.shutdown().catch(() => {});
    } else {
      logger.info({ signal }, "second signal: closing at once");
      ztunnel.close().catch(() => {});
    }
  });
}
