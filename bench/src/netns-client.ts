/**
 * The load generator inside the client pod of the namespace mesh, run with `ip netns exec` so the
 * pod's capture rules apply to its connections as to any app's. One job per process, given as JSON:
 *   {"kind": "ping" | "connect", "route": {...}, "durationMs": n}  (the loopback bench's phases)
 *   {"kind": "echo", "route": {...}}                                (one byte there and back)
 * Prints `RESULT <json>` and exits 0, or prints the error and exits 1.
 */
import { connectToFirstByte, openRoute, pingPong } from "./load.js";
import type { NetnsRoute } from "./netns-topology.js";

export type ClientJob =
  | { kind: "ping" | "connect"; route: NetnsRoute; durationMs: number }
  | { kind: "echo"; route: NetnsRoute };

async function echoOnce(route: NetnsRoute): Promise<{ echoed: string }> {
  const socket = await openRoute(route);
  try {
    const echoed = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no echo within 5 s")), 5000);
      socket.once("data", (chunk: Buffer) => {
        clearTimeout(timer);
        resolve(chunk.toString());
      });
      socket.once("error", reject);
      socket.write("x");
    });
    return { echoed };
  } finally {
    socket.destroy();
  }
}

async function runJob(job: ClientJob): Promise<unknown> {
  if (job.kind === "echo") return echoOnce(job.route);
  if (job.kind === "ping") return pingPong(job.route, job.durationMs);
  return connectToFirstByte(job.route, job.durationMs);
}

try {
  const job = JSON.parse(process.argv[2] ?? "") as ClientJob;
  console.log(`RESULT ${JSON.stringify(await runJob(job))}`);
  process.exit(0);
} catch (err) {
  console.error(`netns client: ${(err as Error).message}`);
  process.exit(1);
}
