import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { createPromClientSink } from "@ambient/telemetry";
import { pino } from "pino";
import * as prom from "prom-client";
import { startControlPlane } from "./control-plane.js";

const usage = `usage: control-plane [--mesh-dir DIR] [--state-dir DIR] [--listen HOST:PORT] [--admin HOST:PORT]
  --mesh-dir   manifests to serve (default: <repo>/mesh)
  --state-dir  CA, token key, root-cert.pem, tokens/ (default: <repo>/.mesh-state)
  --listen     gRPC TLS address for xDS and the CA (default 127.0.0.1:15012)
  --admin      admin HTTP address: /metrics, /debug/config, /ready (default 127.0.0.1:15014)
  --plaintext  also serve xDS without TLS or authentication here, e.g. 127.0.0.1:15010 (debugging only)
  --log-level  pino level (default info)`;

async function main(): Promise<void> {
  const repoRoot = resolve(import.meta.dirname, "../../..");
  const { values } = parseArgs({
    options: {
      "mesh-dir": { type: "string", default: resolve(repoRoot, "mesh") },
      "state-dir": { type: "string", default: resolve(repoRoot, ".mesh-state") },
      listen: { type: "string", default: "127.0.0.1:15012" },
      admin: { type: "string", default: "127.0.0.1:15014" },
      plaintext: { type: "string" },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(usage);
    return;
  }
  const logger = pino({ name: "control-plane", level: values["log-level"] });
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry });
  const cp = await startControlPlane({
    meshDir: resolve(values["mesh-dir"]),
    stateDir: resolve(values["state-dir"]),
    listen: values.listen,
    admin: values.admin,
    ...(values.plaintext === undefined ? {} : { plaintextListen: values.plaintext }),
    logger,
    metrics: createPromClientSink(prom, registry),
    metricsText: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
  });
  logger.info(
    { stateDir: resolve(values["state-dir"]), rootCert: resolve(values["state-dir"], "root-cert.pem") },
    "node tokens written to <state-dir>/tokens/<node>.jwt",
  );
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
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

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
