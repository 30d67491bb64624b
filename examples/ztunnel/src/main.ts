import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { startZtunnel } from "./ztunnel.js";

const usage = `usage: pnpm start -- --node node-a [--node-ip 127.20.0.1] [--control-plane 127.0.0.1:15012]
       [--state-dir <repo>/.mesh-state] [--root-cert <state-dir>/root-cert.pem]
       [--token-file <state-dir>/tokens/<node>.jwt] [--log-level info]`;

// `pnpm start -- --node node-b` passes the "--" through.
const argv = process.argv.slice(2);
if (argv[0] === "--") argv.shift();

const cliOptions = {
  node: { type: "string", default: "node-a" },
  "node-ip": { type: "string" },
  "control-plane": { type: "string", default: "127.0.0.1:15012" },
  "state-dir": {
    type: "string",
    default: fileURLToPath(new URL("../../../.mesh-state/", import.meta.url)),
  },
  "root-cert": { type: "string" },
  "token-file": { type: "string" },
  "log-level": { type: "string", default: "info" },
  help: { type: "boolean", default: false },
} as const;

function parseCli() {
  try {
    return parseArgs({ args: argv, options: cliOptions });
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
}

const { values } = parseCli();
if (values.help) {
  console.log(usage);
  process.exit(0);
}

const logger = pino({ level: values["log-level"], base: { node: values.node } });
// node-a -> 127.20.0.1, node-b -> 127.20.0.2, ... unless given.
const letter = /^node-([a-z])$/.exec(values.node)?.[1];
const nodeIp = values["node-ip"] ?? (letter ? `127.20.0.${letter.charCodeAt(0) - 96}` : "127.20.0.1");
const stateDir = values["state-dir"];

let rootCertPem: string;
let token: string;
try {
  rootCertPem = readFileSync(values["root-cert"] ?? join(stateDir, "root-cert.pem"), "utf8");
  token = readFileSync(values["token-file"] ?? join(stateDir, "tokens", `${values.node}.jwt`), "utf8").trim();
} catch (err) {
  logger.error(
    { err: (err as Error).message },
    "cannot read the mesh root or the node token (start the control plane first)",
  );
  console.error(usage);
  process.exit(1);
}

const registry = new Registry();
collectDefaultMetrics({ register: registry });
const ztunnel = await startZtunnel({
  nodeName: values.node,
  nodeIp,
  controlPlaneAddress: values["control-plane"],
  rootCertPem,
  token,
  logger,
  registry,
});
ztunnel.ready.then(
  () => logger.info({ socks5: ztunnel.addresses.socks5 }, "ready: point SOCKS5 clients here"),
  () => {},
);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    logger.info({ signal }, "shutting down");
    ztunnel.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
