// The demo's live edit: change the HTTPRoute demo/web in a copy of the mesh folder and watch the
// waypoint follow, with no restart: the control plane sees the file change and pushes the new
// RouteConfiguration over xDS, and the next request is routed by it.
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LocalMesh } from "./local-mesh.js";

/** A copy of `dir` to run the demo from, so its edits never touch the folder itself. */
export async function copyMeshDir(dir: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const copy = await mkdtemp(join(tmpdir(), "ambient-demo-mesh-"));
  await cp(dir, copy, { recursive: true });
  return { dir: copy, remove: () => rm(copy, { recursive: true, force: true }) };
}

/** The rule of HTTPRoute demo/web (mesh/web.yaml) that sends requests without `x-version` to v1. */
export const DEFAULT_RULE = "- backendRefs: [{ name: web-v1, port: 80 }]";
const EDITED_RULE = "- backendRefs: [{ name: web-v2, port: 80 }]";

/** What the live edit saw. */
export interface LiveEditResult {
  /** False when the folder has no HTTPRoute demo/web rule to edit. */
  edited: boolean;
  /** The answer to `GET /hello` once the edit was in force (or the last one seen). */
  status: number;
  body: string;
  /** From the file write to the first answer routed by the edited route. */
  ms: number;
}

/**
 * Sends the default rule of HTTPRoute demo/web to web-v2 in `dir/web.yaml` and calls web.demo from
 * sleep-0 until the answer comes from web-v2 (at most `timeoutMs`). Each call is a new connection.
 */
export async function editRouteLive(mesh: LocalMesh, dir: string, timeoutMs = 5000): Promise<LiveEditResult> {
  const file = join(dir, "web.yaml");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return { edited: false, status: 0, body: "", ms: 0 };
  }
  if (!text.includes(DEFAULT_RULE)) return { edited: false, status: 0, body: "", ms: 0 };
  const since = Date.now();
  await writeFile(file, text.replace(DEFAULT_RULE, EDITED_RULE));
  for (;;) {
    const res = await mesh.httpCall("sleep-0", "127.30.0.2", 80, { method: "GET", path: "/hello" });
    const ms = Date.now() - since;
    if (res.body.startsWith("web-v2") || ms > timeoutMs) return { edited: true, ...res, ms };
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
