// `pnpm demo:netns` (as root, Linux): the demo mesh with one network namespace per pod and in-pod
// capture, driven over ZDS; cleans up every namespace it made, also on Ctrl-C.
import { startNetnsMesh } from "./netns/netns-mesh.js";
import { runScenario } from "./netns/scenario.js";
import { netnsUnavailable } from "./netns/topology.js";

const why = netnsUnavailable();
if (why !== undefined) {
  console.error(`demo:netns ${why}; the default demo (pnpm demo) needs none of this`);
  process.exit(1);
}
const log = (line: string) => console.log(line);
const mesh = await startNetnsMesh({ log });
let closing = false;
const shutdown = async (code: number) => {
  if (closing) return;
  closing = true;
  await mesh.close();
  process.exit(code);
};
process.once("SIGINT", () => void shutdown(130));
process.once("SIGTERM", () => void shutdown(143));
try {
  await runScenario(mesh, log);
  await shutdown(0);
} catch (err) {
  console.error((err as Error).message);
  await shutdown(1);
}
