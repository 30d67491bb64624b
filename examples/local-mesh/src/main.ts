import { fileURLToPath } from "node:url";
import { startLocalMesh } from "./local-mesh.js";

// The demo: start the mesh from the repository's mesh/ folder, send traffic that the policy allows and
// traffic it refuses, show the metrics, and stop (or keep running with --keep-running).
const meshDir = fileURLToPath(new URL("../../../mesh/", import.meta.url));
const keepRunning = process.argv.includes("--keep-running");
const mesh = await startLocalMesh({ meshDir, log: (line) => console.log(`  ${line}`) });
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
    console.log("\nthe mesh keeps running; Ctrl-C stops it");
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
  }
  await mesh.close();
}
console.log(ok ? "\nlocal mesh demo: OK" : "\nlocal mesh demo: FAILED");
process.exitCode = ok ? 0 : 1;
