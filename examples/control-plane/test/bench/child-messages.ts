// The IPC handshake between the scale benches and their child processes.
import type { ChildProcess } from "node:child_process";

/** Resolves with the first IPC message of `kind` from `child`; rejects if the child exits first. */
export function next<T>(child: ChildProcess, kind: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`child exited with ${code} before ${kind}`));
    const onMessage = (m: { kind: string }) => {
      if (m.kind !== kind) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      resolve(m as T);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}
