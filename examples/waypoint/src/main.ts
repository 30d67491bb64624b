import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { PATH_NORMALIZATIONS, type PathNormalization } from "@ambient/policy";
import { pino } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { startWaypoint } from "./waypoint.js";

const usage = `usage: pnpm start -- [--name waypoint] [--namespace demo] [--ip 127.10.0.6] [--node node-a]
       [--control-plane 127.0.0.1:15012] [--mesh-dir <repo>/mesh] [--state-dir <repo>/.mesh-state]
       [--path-normalization BASE] [--log-level info]`;

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
      "mesh-dir": { type: "string", default: repo("mesh/") },
      "state-dir": { type: "string", default: repo(".mesh-state/") },
      "path-normalization": { type: "string", default: "BASE" },
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
const logger = pino({ level: values["log-level"], base: { waypoint: `${values.namespace}/${values.name}` } });
const stateDir = values["state-dir"];
let rootCertPem: string;
let token: string;
try {
  rootCertPem = readFileSync(join(stateDir, "root-cert.pem"), "utf8");
  token = readFileSync(join(stateDir, "tokens", `${values.node}.jwt`), "utf8").trim();
} catch (err) {
  logger.error({ err: (err as Error).message }, "cannot read the mesh root or the node token");
  process.exit(1);
}
const registry = new Registry();
collectDefaultMetrics({ register: registry });
const waypoint = await startWaypoint({
  gateway: { name: values.name, namespace: values.namespace },
  ip: values.ip,
  nodeName: values.node,
  token,
  rootCertPem,
  controlPlaneAddress: values["control-plane"],
  meshDir: values["mesh-dir"],
  pathNormalization: pathNormalization as PathNormalization,
  logger,
  registry,
});
await waypoint.ready;
const stop = () => {
  waypoint.close().then(() => process.exit(0));
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
