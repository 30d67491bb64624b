import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { describeStartFailure } from "./start-failure.js";

// The demo: start the mesh from the repository's mesh/ folder, send traffic that the policy allows and
// traffic it refuses, show the metrics, and stop (or keep running with --keep-running).
const usage = `usage: pnpm demo [-- options]

Starts the local demo mesh on 127.0.0.0/8 (a control plane, a ztunnel per node, the waypoints and an app
per pod from the manifests), sends allowed and refused traffic through it, prints what happened and stops.

options:
  --mesh-dir <dir>          folder of manifests to run (default: the repository's mesh/)
  --state-dir <dir>         keep the CA and the node tokens in this folder across runs
                            (default: in memory, a new CA every run)
  --control-plane <ip:port> where the control plane serves xDS and the CA (default 127.0.0.1:15012)
  --admin <ip:port>         the control plane's admin port, with the live mesh page at /dashboard
                            (default 127.0.0.1:15014; \`ambient dashboard\` opens it)
  --node-ip-prefix <a.b.c>  node n's ztunnel listens on <a.b.c>.<n> (default 127.20.0); pod addresses
                            come from the manifests
  --keep-running            leave the mesh up after the checks until Ctrl-C; edits in the mesh folder
                            reconfigure it
  -h, --help                print this help and exit`;

const argv = process.argv.slice(2);
// pnpm passes its "--" separator through to the script.
if (argv[0] === "--") argv.shift();
let values: {
  "mesh-dir": string;
  "state-dir"?: string | undefined;
  "control-plane": string;
  admin: string;
  "node-ip-prefix": string;
  "keep-running": boolean;
  help: boolean;
};
try {
  ({ values } = parseArgs({
    args: argv,
    options: {
      "mesh-dir": { type: "string", default: fileURLToPath(new URL("../../../mesh/", import.meta.url)) },
      "state-dir": { type: "string" },
      "control-plane": { type: "string", default: "127.0.0.1:15012" },
      admin: { type: "string", default: "127.0.0.1:15014" },
      "node-ip-prefix": { type: "string", default: "127.20.0" },
      "keep-running": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  }));
} catch (err) {
  console.error(`demo: ${(err as Error).message}\n\n${usage}`);
  process.exit(2);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}
if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(values["node-ip-prefix"])) {
  console.error(
    `demo: --node-ip-prefix takes three octets such as 127.20.0, not "${values["node-ip-prefix"]}"`,
  );
  process.exit(2);
}
const keepRunning = values["keep-running"];
// grpc-js prints its own copy of a failed bind; the demo reports failures itself, in one line.
process.env.GRPC_VERBOSITY ??= "NONE";
const { startLocalMesh } = await import("./local-mesh.js");
const { copyMeshDir, editRouteLive } = await import("./live-edit.js");
// The checks run on a copy of the folder, so the live edit below never touches it; --keep-running
// serves the folder itself, so that your own edits reconfigure the mesh.
const copy = keepRunning ? undefined : await copyMeshDir(values["mesh-dir"]);
let mesh: Awaited<ReturnType<typeof startLocalMesh>>;
try {
  mesh = await startLocalMesh({
    meshDir: copy?.dir ?? values["mesh-dir"],
    ...(values["state-dir"] === undefined ? {} : { stateDir: values["state-dir"] }),
    controlPlaneListen: values["control-plane"],
    controlPlaneAdmin: values.admin,
    nodeIpPrefix: values["node-ip-prefix"],
    log: (line) => console.log(`  ${line}`),
  });
} catch (err) {
  await copy?.remove();
  console.error(`demo: ${describeStartFailure(err)}`);
  process.exit(1);
}
const pageUrl = `http://${mesh.controlPlane.adminAddress}/dashboard`;
console.log(`  live mesh page: ${pageUrl}`);
let ok = true;
try {
  console.log("\nsleep-0 -> echo.demo (VIP 127.30.0.1:80), allowed by demo/echo-allow-sleep:");
  const seen = new Set<string>();
  for (let i = 1; i <= 4; i++) {
    const { reply, response } = await mesh.call("sleep-0", "127.30.0.1", 80, `hello #${i}`);
    console.log(`  call ${i}: socks reply ${reply}, answer: ${response}`);
    if (reply !== 0 || !response.includes(`hello #${i}`)) ok = false;
    seen.add(response.split(" ")[0] ?? "");
  }
  console.log(`  answered by ${[...seen].sort().join(" and ")} (balanced per connection across endpoints)`);

  console.log("\nstranger -> echo.demo, not in the allow list:");
  const denied = await mesh.call("stranger", "127.30.0.1", 80, "let me in");
  console.log(
    `  socks reply ${denied.reply} (2 = connection not allowed by ruleset), answer: "${denied.response}"`,
  );
  if (denied.reply !== 2 || denied.response !== "") ok = false;

  console.log(
    "\nsleep-0 -> web.demo (VIP 127.30.0.2:80) through the waypoint demo/waypoint (HTTPRoute demo/web):",
  );
  const steps: {
    from: string;
    method: string;
    headers?: Record<string, string>;
    status: number;
    by?: string;
  }[] = [
    { from: "sleep-0", method: "GET", status: 200, by: "web-v1" },
    { from: "sleep-0", method: "GET", headers: { "x-version": "v2" }, status: 200, by: "web-v2" },
    { from: "sleep-0", method: "POST", status: 403 },
    { from: "stranger", method: "GET", status: 403 },
  ];
  for (const step of steps) {
    const res = await mesh.httpCall(step.from, "127.30.0.2", 80, {
      method: step.method,
      path: "/hello",
      ...(step.headers ? { headers: step.headers } : {}),
    });
    const header = step.headers
      ? ` (${Object.entries(step.headers)
          .map(([k, v]) => `${k}: ${v}`)
          .join(", ")})`
      : "";
    console.log(`  ${step.from} ${step.method} /hello${header}: ${res.status} "${res.body}"`);
    if (res.status !== step.status || (step.by !== undefined && !res.body.startsWith(step.by))) ok = false;
  }
  console.log(
    "  (POST and other identities are refused by demo/web-get-from-sleep, attached to the waypoint)",
  );
  if (copy === undefined) {
    console.log(
      "  live edit: skipped with --keep-running; edit the HTTPRoutes in the folder and the waypoint follows",
    );
  } else {
    const edit = await editRouteLive(mesh, copy.dir);
    if (edit.edited) {
      console.log(
        `  live edit: HTTPRoute demo/web's default rule -> web-v2, no restart: GET /hello ${edit.status} "${edit.body}" ${edit.ms} ms after the edit`,
      );
      if (edit.status !== 200 || !edit.body.startsWith("web-v2")) ok = false;
    }
  }

  const webV1 = mesh.pods.find((p) => p.name === "web-v1");
  if (webV1 !== undefined) {
    console.log(`\nstranger -> web-v1's pod address ${webV1.ip}:8080 directly, skipping the waypoint:`);
    const direct = await mesh.httpCall("stranger", webV1.ip, 8080, { method: "POST", path: "/admin" });
    console.log(
      `  socks reply ${direct.reply} (refused by demo/web-only-from-waypoint: only the waypoint may call web pods)`,
    );
    if (direct.reply !== 2) ok = false;
  }

  const nodeB = mesh.ztunnels.get("node-b");
  if (nodeB !== undefined) {
    const lines = (await nodeB.metricsText())
      .split("\n")
      .filter((l) => l.startsWith("istio_tcp_connections_opened_total{"));
    console.log(
      `\nnode-b ztunnel metrics (${nodeB.addresses.metrics}/metrics), istio_tcp_connections_opened_total:`,
    );
    for (const line of lines) {
      const labels = /source_workload="([^"]*)".*destination_workload="([^"]*)"/.exec(line);
      console.log(
        `  ${labels ? `${labels[1]} -> ${labels[2]}` : line.slice(0, 80)}: ${line.split(" ").at(-1)}`,
      );
    }
  }
} finally {
  if (keepRunning && ok) {
    console.log(`\nthe mesh keeps running; Ctrl-C stops it. Live mesh page: ${pageUrl} (ambient dashboard)`);
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
  }
  await mesh.close();
  await copy?.remove();
}
console.log(ok ? "\nlocal mesh demo: OK" : "\nlocal mesh demo: FAILED");
process.exitCode = ok ? 0 : 1;
